"""Server-side strategies (installed as ``fedkd.strategies``), subclasses of Flower's message-API ``FedAvg``.

Each is one class plus one ``conf/strategy/<name>.yaml`` whose ``_target_`` names it; the
ServerApp instantiates it with ``num_clients``, ``seed``, the central ``evaluate_fn`` and the
per-round ``recorder`` (see :class:`fedkd.strategies.fedavg.FedAvg`).
"""
