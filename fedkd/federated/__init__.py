"""Federated glue on Flower: what the apps, strategies and clients share.

- :mod:`fedkd.federated.config`: compose the ``fedkd-sim`` config (both launch paths use it).
- :mod:`fedkd.federated.data`: each client's partition, label counts and model, from the config.
- :mod:`fedkd.federated.records`: the keys and helpers of the messages clients and server exchange.
- :mod:`fedkd.federated.metrics`: the per-round recorder (metrics file, TensorBoard, progress line).
- :mod:`fedkd.federated.server_run`: what a strategy knows of the run (spec, data, device, models).
- :mod:`fedkd.federated.resume`, :mod:`~fedkd.federated.robust`, :mod:`~fedkd.federated.faults`,
  :mod:`~fedkd.federated.certs`, :mod:`~fedkd.federated.loopback`: resume, robust aggregation,
  injected faults, TLS certificates, a loopback deployment.

Layers above it: the strategies (:mod:`fedkd.strategies`) and clients (:mod:`fedkd.clients`), and
on top what Flower runs (:mod:`fedkd.apps`: the ``ServerApp``, the ``ClientApp``, the simulation).
"""
