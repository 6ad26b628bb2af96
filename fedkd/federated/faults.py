"""Fault injection for simulations: clients that raise, hang, or send non-finite, malformed or scaled weights.

``conf/sim.yaml``'s ``faults`` block gives a fraction of the clients for each kind. Which clients
misbehave is fixed for the run: a generator seeded with ``faults.seed`` permutes the partition
ids and deals out the kinds in order (``raise``, ``hang``, ``nonfinite``, ``malformed``,
``scaled``), ``round(fraction * num_clients)`` clients each. A faulty client misbehaves in every
round it is sampled:

- ``raise``: its train handler raises (the server gets an error reply);
- ``hang``: it sleeps ``hang_seconds`` (default ``round_timeout + 5``) before training, so its
  reply misses the round;
- ``nonfinite``: it replies its trained weights with NaN and Inf written into them;
- ``malformed``: it replies weights of the wrong shape (one tensor loses its last row);
- ``scaled``: it replies ``w0 + scale * (w - w0)`` (``w0`` the model it started from): a large
  scaled update, the model-poisoning case robust aggregation is for.
"""

from __future__ import annotations

import functools
import time

import numpy as np
from flwr.app import Array, ArrayRecord
from omegaconf import DictConfig

from fedkd.errors import ConfigError

KINDS = ("raise", "hang", "nonfinite", "malformed", "scaled")
INJECTED = "fedkd injected fault"  # in the error a raising client reports (the server tells it from real bugs)


class InjectedFault(RuntimeError):
    """Raised by a client configured to fail (``faults.raise_fraction``)."""


def fractions(faults: DictConfig | dict | None) -> dict[str, float]:
    """``{kind: fraction}`` from the ``faults`` config (missing keys: 0)."""
    faults = faults or {}
    return {kind: float(faults.get(f"{kind}_fraction", 0.0) or 0.0) for kind in KINDS}


@functools.lru_cache(maxsize=16)
def _assignment(items: tuple[tuple[str, float], ...], num_clients: int, seed: int) -> dict[int, str]:
    shares = dict(items)
    for kind, share in shares.items():
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"faults.{kind}_fraction must be in [0, 1] (got {share}); use e.g. 0.1")
    counts = {kind: int(round(share * num_clients)) for kind, share in shares.items()}
    if sum(counts.values()) > num_clients:
        raise ConfigError(
            f"the faults fractions add up to {sum(counts.values())} of {num_clients} clients; lower faults.*_fraction"
        )
    order = np.random.default_rng(seed).permutation(num_clients)
    out: dict[int, str] = {}
    start = 0
    for kind in KINDS:
        for pid in order[start : start + counts[kind]]:
            out[int(pid)] = kind
        start += counts[kind]
    return out


def assignment(cfg: DictConfig) -> dict[int, str]:
    """``{partition_id: kind}`` of the faulty clients of the run ``cfg`` (empty without faults)."""
    faults = cfg.get("faults")
    shares = fractions(faults)
    if not any(shares.values()):
        return {}
    return _assignment(tuple(shares.items()), int(cfg.num_clients), int((faults or {}).get("seed", 0) or 0))


def fault_of(cfg: DictConfig, partition_id: int) -> str | None:
    return assignment(cfg).get(partition_id)


def before_training(kind: str | None, cfg: DictConfig, partition_id: int) -> None:
    """Raise or hang, for clients configured to."""
    if kind == "raise":
        raise InjectedFault(f"{INJECTED}: client {partition_id} raises (faults.raise_fraction)")
    if kind == "hang":
        seconds = cfg.faults.get("hang_seconds")
        time.sleep(float(seconds) if seconds is not None else float(cfg.round_timeout) + 5.0)


def corrupt(kind: str | None, arrays: ArrayRecord, start: ArrayRecord, cfg: DictConfig) -> ArrayRecord:
    """The reply's weights as a ``nonfinite``, ``malformed`` or ``scaled`` client sends them."""
    if kind not in ("nonfinite", "malformed", "scaled"):
        return arrays
    out = ArrayRecord()
    floats = [k for k, a in arrays.items() if np.issubdtype(np.dtype(a.dtype), np.floating) and a.numpy().size > 1]
    for key, array in arrays.items():
        value = array.numpy().copy()
        if kind == "nonfinite" and key == floats[0]:
            flat = value.reshape(-1)
            flat[0], flat[-1] = np.nan, np.inf
        elif kind == "malformed" and key == floats[0]:
            value = np.ascontiguousarray(value[:-1])
        elif kind == "scaled" and np.issubdtype(value.dtype, np.floating):
            base = start[key].numpy()
            value = (base + float(cfg.faults.scale) * (value - base)).astype(value.dtype)
        out[key] = Array(np.array(value, order="C"))
    return out
