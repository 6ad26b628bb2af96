"""Federated learning on Flower: the glue between the Hydra config, the apps and the simulation.

- :mod:`fedkd.federated.config`: compose the ``fedkd-sim`` config (both launch paths use it).
- :mod:`fedkd.federated.data`: each client's partition, label counts and model, from the config.
- :mod:`fedkd.federated.records`: the keys and helpers of the messages clients and server exchange.
- :mod:`fedkd.federated.metrics`: the per-round recorder (metrics file, TensorBoard, progress line).
- :mod:`fedkd.federated.server_app`: the ``ServerApp`` (global model, central evaluation, summary).
- :mod:`fedkd.federated.simulation`: the one call into Flower's simulation engine.

The ``ClientApp`` lives in :mod:`clients.app`, the strategies in :mod:`strategies`.
"""
