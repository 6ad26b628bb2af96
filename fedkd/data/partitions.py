"""Split a training set's indices among federated clients.

Every partitioner takes the label array, the number of clients, a seed and a minimum client size
and returns one index array per client. Each sample goes to exactly one client; the same seed
gives the same split.

These four are written here, on in-memory labels, with no extra dependency; Flower's own
partitioners (flwr-datasets, the optional extra ``fedkd[hf]``) are available next to them through
:mod:`fedkd.data.flwr_partitions` (``conf/partition/flwr_*.yaml``). :func:`label_skew` measures a
partition's label skew, to compare the two (``python -m fedkd.data.skew_table``).
"""

from __future__ import annotations

import numpy as np

from fedkd.errors import ConfigError
from fedkd.utils.option_types import NonNegativeInt, PositiveFloat, PositiveInt, Supplied

Partition = list[np.ndarray]

_MAX_TRIES = 1000


def _check_sizes(n: int, num_clients: int, min_size: int) -> None:
    if num_clients < 1:
        raise ConfigError(f"num_clients must be at least 1 (got {num_clients}); set num_clients=1 or more")
    if num_clients * max(min_size, 1) > n:
        raise ConfigError(
            f"num_clients={num_clients} with partition.min_size={min_size} needs at least "
            f"{num_clients * max(min_size, 1)} samples but the training set has {n}; "
            "lower num_clients or partition.min_size"
        )


def iid(
    labels: np.ndarray, num_clients: Supplied[PositiveInt], seed: Supplied[NonNegativeInt] = 0,
    min_size: NonNegativeInt = 1,
) -> Partition:
    """Shuffle and deal out equal shares (sizes differ by at most one)."""
    labels = np.asarray(labels)
    _check_sizes(len(labels), num_clients, min_size)
    order = np.random.default_rng(seed).permutation(len(labels))
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def dirichlet(
    labels: np.ndarray, num_clients: Supplied[PositiveInt], seed: Supplied[NonNegativeInt] = 0,
    min_size: NonNegativeInt = 1, alpha: PositiveFloat = 0.5,
) -> Partition:
    """Label skew: each class is split among clients with proportions ~ Dir(alpha).

    Small alpha gives each client few classes; large alpha approaches IID. Proportions are
    redrawn until every client holds at least ``min_size`` samples.
    """
    if not alpha > 0:
        raise ConfigError(
            f"partition.alpha must be > 0 (got {alpha}); use e.g. 0.1 for strong skew or 100 for near-IID"
        )
    labels = np.asarray(labels)
    _check_sizes(len(labels), num_clients, min_size)
    rng = np.random.default_rng(seed)
    class_indices = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(_MAX_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for idx in class_indices:
            idx = rng.permutation(idx)
            cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, alpha))) * len(idx)).astype(int)[:-1]
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].append(chunk)
        result = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in result) >= min_size:
            return result
    raise ConfigError(
        f"partition.min_size={min_size} could not be met with alpha={alpha} for {num_clients} clients "
        f"in {_MAX_TRIES} draws; lower partition.min_size or num_clients, or raise partition.alpha"
    )


def shards(
    labels: np.ndarray, num_clients: Supplied[PositiveInt], seed: Supplied[NonNegativeInt] = 0,
    min_size: NonNegativeInt = 1, classes_per_client: PositiveInt = 2,
) -> Partition:
    """Pathological non-IID (McMahan et al.): sort by label, cut into ``num_clients * k`` shards,
    give each client ``k`` random shards, so each client sees about ``k`` classes (at most as many as
    ``labels`` hold: more would not skew anything)."""
    labels = np.asarray(labels)
    classes = len(np.unique(labels))
    if not 1 <= classes_per_client <= classes:
        raise ConfigError(
            f"partition.classes_per_client must be >= 1 and <= {classes}, the dataset's class count "
            f"(got {classes_per_client}); use e.g. 2"
        )
    _check_sizes(len(labels), num_clients, min_size)
    rng = np.random.default_rng(seed)
    # Stable sort with a random tie-break so equal labels are not always in index order.
    order = np.lexsort((rng.random(len(labels)), labels))
    pieces = np.array_split(order, num_clients * classes_per_client)
    assignment = rng.permutation(len(pieces)).reshape(num_clients, classes_per_client)
    result = [np.sort(np.concatenate([pieces[s] for s in row])) for row in assignment]
    if min(len(p) for p in result) < min_size:
        raise ConfigError(
            f"partition.min_size={min_size} cannot be met by shards; lower partition.min_size or num_clients"
        )
    return result


def quantity(
    labels: np.ndarray, num_clients: Supplied[PositiveInt], seed: Supplied[NonNegativeInt] = 0,
    min_size: NonNegativeInt = 1, beta: PositiveFloat = 0.5,
) -> Partition:
    """Quantity skew: labels IID, client sizes ~ Dir(beta) (each at least ``min_size``)."""
    if not beta > 0:
        raise ConfigError(f"partition.beta must be > 0 (got {beta}); use e.g. 0.5")
    labels = np.asarray(labels)
    n = len(labels)
    _check_sizes(n, num_clients, min_size)
    rng = np.random.default_rng(seed)
    spare = n - num_clients * min_size
    sizes = min_size + np.floor(rng.dirichlet(np.full(num_clients, beta)) * spare).astype(int)
    sizes[: n - sizes.sum()] += 1  # hand out the rounding remainder
    order = rng.permutation(n)
    return [np.sort(p) for p in np.split(order, np.cumsum(sizes)[:-1])]


def label_counts(labels: np.ndarray, partition: Partition, num_classes: int) -> np.ndarray:
    """Per-client label histogram, shape (num_clients, num_classes)."""
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[idx], minlength=num_classes) for idx in partition])


def label_skew(labels: np.ndarray, partition: Partition, num_classes: int) -> dict[str, float]:
    """Label-skew statistics of a partition, averaged over clients.

    - ``classes_per_client``: classes a client holds at least one sample of;
    - ``classes_for_90pct``: fewest classes that make up 90% of a client's samples;
    - ``max_class_share``: share of a client's largest class;
    - ``tv_to_global``: total-variation distance of a client's label distribution to the global one
      (0: IID labels, towards 1: disjoint);
    - ``size_cv``: coefficient of variation of client sizes (quantity skew);
    - ``unassigned``: fraction of samples no client got.
    """
    labels = np.asarray(labels)
    counts = label_counts(labels, partition, num_classes).astype(np.float64)
    sizes = counts.sum(1)
    shares = counts / np.maximum(sizes, 1)[:, None]
    global_share = np.bincount(labels, minlength=num_classes) / max(len(labels), 1)
    cumulative = np.sort(shares, axis=1)[:, ::-1].cumsum(1)  # largest classes first
    return {
        "classes_per_client": float((counts > 0).sum(1).mean()),
        "classes_for_90pct": float((cumulative < 0.9 - 1e-9).sum(1).mean() + 1),
        "max_class_share": float(shares.max(1).mean()),
        "tv_to_global": float(0.5 * np.abs(shares - global_share).sum(1).mean()),
        "size_cv": float(sizes.std() / max(sizes.mean(), 1e-12)),
        "unassigned": float(1 - sizes.sum() / max(len(labels), 1)),
    }
