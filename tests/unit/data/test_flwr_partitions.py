"""Flower's partitioners through conf/partition/flwr_*.yaml: invariants, seeds, the exact split of
Flower's own FederatedDataset, errors, and the label-skew statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fedkd.data import partitions as P
from fedkd.errors import ConfigError

pytest.importorskip("flwr_datasets")
from fedkd.data.flwr_partitions import flower  # noqa: E402

CONF = Path(__file__).resolve().parents[3] / "conf" / "partition"
LABELS = np.random.default_rng(0).integers(0, 10, size=2000)
CONFIGS = sorted(p.stem for p in CONF.glob("flwr_*.yaml"))


def _partitioner(name: str, **overrides):
    cfg = OmegaConf.merge(OmegaConf.load(CONF / f"{name}.yaml"), overrides)
    return instantiate(cfg)


def test_every_flower_config_is_there():
    assert {"flwr_iid", "flwr_dirichlet", "flwr_shard", "flwr_pathological", "flwr_linear", "flwr_square",
            "flwr_exponential"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_flower_configs_split_disjointly_and_follow_the_seed(name):
    clients = 5 if name == "flwr_exponential" else 8  # exponential sizes need few clients
    parts = _partitioner(name)(LABELS, clients, seed=3)
    again = _partitioner(name)(LABELS, clients, seed=3)
    other = _partitioner(name)(LABELS, clients, seed=4)
    assert len(parts) == clients and all(len(p) > 0 for p in parts)
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined) and joined.max() < len(LABELS)  # each sample at most once
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))
    counts = P.label_counts(LABELS, parts, 10)  # what strategies receive
    assert counts.sum() == len(joined)
    if name == "flwr_pathological":
        assert ((counts > 0).sum(1) <= 2).all()


def test_same_split_as_flowers_federated_dataset(tmp_path):
    """A Flower baseline's clients (FederatedDataset, shuffled with seed 42, DirichletPartitioner
    seeded 42) hold exactly the samples our clients get with seed=42."""
    from flwr_datasets import FederatedDataset
    from flwr_datasets.partitioner import DirichletPartitioner

    csv = tmp_path / "labels.csv"
    csv.write_text("row,label\n" + "".join(f"{i},{y}\n" for i, y in enumerate(LABELS)))
    fds = FederatedDataset(
        dataset="csv", data_files={"train": str(csv)}, cache_dir=str(tmp_path / "cache"),
        partitioners={"train": DirichletPartitioner(num_partitions=6, partition_by="label", alpha=0.3, seed=42)},
    )
    theirs = [np.sort(np.asarray(fds.load_partition(i)["row"])) for i in range(6)]
    ours = _partitioner("flwr_dirichlet", alpha=0.3)(LABELS, 6, seed=42)
    assert all(np.array_equal(a, b) for a, b in zip(theirs, ours))


def test_generic_config_takes_any_partitioner_and_its_options():
    sizes = [100, 300, 600]
    parts = _partitioner("flwr", partitioner="InnerDirichletPartitioner", partition_sizes=sizes, alpha=0.5)(
        LABELS, 3, seed=0
    )
    assert [len(p) for p in parts] == sizes
    by_class = _partitioner("flwr", partitioner="NaturalIdPartitioner")(LABELS, 10, seed=0)
    assert all(len(np.unique(LABELS[p])) == 1 for p in by_class)  # one class per client


@pytest.mark.parametrize(
    "overrides, clients, needle",
    [
        ({"partitioner": "NoSuchPartitioner"}, 4, "not a flwr-datasets partitioner of samples; choose one of"),
        ({"partitioner": "VerticalEvenPartitioner"}, 4, "choose one of"),
        ({"partitioner": "DirichletPartitioner", "beta": 1}, 4, "takes no option beta; its options are"),
        ({"partitioner": "NaturalIdPartitioner"}, 4, "made 10 partitions but num_clients=4"),
        ({"partitioner": "LinearPartitioner", "min_size": 200}, 5, "fewer than partition.min_size=200"),
        ({"partitioner": "ExponentialPartitioner"}, 20, "ExponentialPartitioner cannot split"),
    ],
)
def test_bad_flower_partition_is_one_line(overrides, clients, needle):
    with pytest.raises(ConfigError) as info:
        _partitioner("flwr", **overrides)(LABELS, clients, seed=0)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_missing_extra_names_the_install_command():
    from fedkd.data.hf import require

    with pytest.raises(ConfigError, match=r"pip install 'fedkd\[hf\]'"):
        require("no_such_module_for_fedkd", "partition=flwr_*")


def test_label_skew_statistics_on_a_known_partition():
    labels = np.array([0] * 10 + [1] * 10)
    iid = [np.r_[0:5, 10:15], np.r_[5:10, 15:20]]
    split = [np.arange(10), np.arange(10, 18)]  # 2 samples of class 1 left out
    s_iid, s_split = P.label_skew(labels, iid, 2), P.label_skew(labels, split, 2)
    assert s_iid["tv_to_global"] == 0 and s_iid["classes_per_client"] == 2 and s_iid["max_class_share"] == 0.5
    assert s_split["tv_to_global"] == 0.5 and s_split["classes_per_client"] == 1 and s_split["classes_for_90pct"] == 1
    assert s_split["unassigned"] == pytest.approx(0.1) and s_split["size_cv"] == pytest.approx(1 / 9)


def test_small_alpha_skews_flower_dirichlet_like_ours():
    ours = P.label_skew(LABELS, P.dirichlet(LABELS, 10, seed=0, alpha=0.1), 10)
    theirs = P.label_skew(LABELS, flower(LABELS, 10, seed=0, partitioner="DirichletPartitioner", alpha=0.1), 10)
    mild = P.label_skew(LABELS, flower(LABELS, 10, seed=0, partitioner="DirichletPartitioner", alpha=100.0), 10)
    assert theirs["tv_to_global"] > 0.4 and ours["tv_to_global"] > 0.4 and mild["tv_to_global"] < 0.15
