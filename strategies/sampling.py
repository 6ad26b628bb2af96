"""Client sampling by partition id with a seeded generator.

Flower gives nodes random ids that change from run to run; sampling among them (as Flower's
``sample_nodes`` does with ``random.sample``) would pick different clients for the same seed.
Partition ids are stable (``0..num_clients-1``), so sampling happens among them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

TRAIN_STREAM = 0
EVALUATE_STREAM = 1


def sample_size(available: int, fraction: float, minimum: int) -> int:
    """``max(floor(available * fraction), minimum)``, at most ``available`` (Flower's rule)."""
    return min(available, max(int(available * fraction), minimum))


def sample_partitions(
    available: Iterable[int], fraction: float, minimum: int, seed: int, server_round: int, stream: int = TRAIN_STREAM
) -> list[int]:
    """The sorted partition ids sampled for ``server_round``.

    The draw depends only on (``seed``, ``stream``, ``server_round``) and the set of available
    ids, never on their order or on earlier rounds, so a seed gives the same clients every run.
    """
    ids = sorted({int(i) for i in available})
    k = sample_size(len(ids), fraction, minimum)
    if k >= len(ids):
        return ids
    rng = np.random.default_rng([seed % 2**32, stream, server_round])
    return sorted(int(i) for i in rng.choice(ids, size=k, replace=False))
