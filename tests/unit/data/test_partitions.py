"""Partition invariants: coverage, disjointness, determinism, skew, minimum sizes, errors."""

from __future__ import annotations

import numpy as np
import pytest

from fedkd.data import partitions as P
from fedkd.errors import ConfigError

LABELS = np.random.default_rng(0).integers(0, 10, size=3000)
PARTITIONERS = {
    "iid": lambda **kw: P.iid(LABELS, 10, **kw),
    "dirichlet": lambda **kw: P.dirichlet(LABELS, 10, alpha=0.3, **kw),
    "shards": lambda **kw: P.shards(LABELS, 10, classes_per_client=2, **kw),
    "quantity": lambda **kw: P.quantity(LABELS, 10, beta=0.5, **kw),
}


@pytest.mark.parametrize("name", PARTITIONERS)
def test_every_sample_assigned_exactly_once(name):
    parts = PARTITIONERS[name](seed=1, min_size=5)
    assert len(parts) == 10
    allidx = np.concatenate(parts)
    assert len(allidx) == len(LABELS)
    assert np.array_equal(np.sort(allidx), np.arange(len(LABELS)))
    assert min(len(p) for p in parts) >= 5


@pytest.mark.parametrize("name", PARTITIONERS)
def test_same_seed_same_split_and_other_seed_differs(name):
    a, b, c = (PARTITIONERS[name](seed=s) for s in (3, 3, 4))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def _mean_max_share(parts):
    counts = P.label_counts(LABELS, parts, 10)
    return float((counts.max(1) / counts.sum(1)).mean())


def test_small_alpha_skews_labels_more_than_large_alpha():
    skewed = _mean_max_share(P.dirichlet(LABELS, 10, seed=0, alpha=0.1))
    mild = _mean_max_share(P.dirichlet(LABELS, 10, seed=0, alpha=100.0))
    iid = _mean_max_share(P.iid(LABELS, 10, seed=0))
    assert skewed > 0.5 > 0.2 > mild
    assert abs(mild - iid) < 0.05


def test_shards_give_few_classes_per_client():
    counts = P.label_counts(LABELS, P.shards(LABELS, 10, seed=0, classes_per_client=2), 10)
    assert ((counts > 0).sum(1) <= 3).all()


def test_quantity_skew_keeps_labels_balanced_but_sizes_uneven():
    parts = P.quantity(LABELS, 10, seed=0, beta=0.3, min_size=20)
    sizes = np.array([len(p) for p in parts])
    assert sizes.max() > 3 * sizes.min()
    assert sizes.min() >= 20


def test_label_counts_sum_to_partition_sizes():
    parts = P.dirichlet(LABELS, 7, seed=2, alpha=0.5)
    counts = P.label_counts(LABELS, parts, 10)
    assert counts.shape == (7, 10)
    assert np.array_equal(counts.sum(1), [len(p) for p in parts])
    assert np.array_equal(counts.sum(0), np.bincount(LABELS, minlength=10))


@pytest.mark.parametrize(
    "call, key",
    [
        (lambda: P.dirichlet(LABELS, 10, alpha=0.0), "partition.alpha"),
        (lambda: P.dirichlet(LABELS, 10, alpha=-1), "partition.alpha"),
        (lambda: P.iid(LABELS, 5000), "num_clients"),
        (lambda: P.iid(LABELS, 10, min_size=400), "partition.min_size"),
        (lambda: P.dirichlet(LABELS, 50, alpha=0.01, min_size=55), "partition.min_size"),
        (lambda: P.quantity(LABELS, 10, beta=0), "partition.beta"),
        (lambda: P.shards(LABELS, 10, classes_per_client=0), "partition.classes_per_client"),
    ],
)
def test_invalid_partition_settings_name_the_key(call, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as exc:
        call()
    assert "\n" not in str(exc.value)
