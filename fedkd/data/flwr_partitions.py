"""Flower's partitioners (flwr-datasets) on our in-memory labels.

``conf/partition/flwr_*.yaml`` select one of ``flwr_datasets.partitioner`` by class name; it is
called like our own partitioners, ``(labels, num_clients, seed)``, and returns one index array per
client, so label counts and strategies work unchanged.

flwr-datasets partitions a Hugging Face ``datasets.Dataset``. We build one holding only the labels
and each sample's index, shuffle it as ``FederatedDataset(shuffle=True, seed=seed)`` does, let the
partitioner split it, and read the indices back. With the same training set order (e.g. the same
Hugging Face dataset through ``dataset=hf``) and ``seed`` equal to the baseline's (Flower's default
is 42), the clients get exactly the samples a Flower baseline's clients get.

Unlike ours, some of Flower's partitioners leave samples out (``ShardPartitioner`` drops an
incomplete last shard unless ``keep_incomplete_shard=true``; ``DistributionPartitioner`` may not
use every sample); every sample still goes to at most one client.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import numpy as np

from fedkd.data.partitions import Partition, _check_sizes
from fedkd.errors import ConfigError
from fedkd.utils.option_types import Forward, NonNegativeInt, PositiveInt, Supplied

LABEL_COLUMN = "label"
INDEX_COLUMN = "fedkd_index"


def _plain(value: Any) -> Any:
    """OmegaConf lists/dicts (Hydra passes them to partial functions) as Python ones."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig) else value


def partitioner_class(name: str) -> type:
    """The flwr-datasets partitioner class called ``name``; a one-line error lists the usable ones."""
    from fedkd.data.hf import require

    module = require("flwr_datasets.partitioner", "partition=flwr_*")
    base = module.Partitioner
    usable = sorted(
        n for n, c in vars(module).items()
        if isinstance(c, type) and issubclass(c, base) and c is not base and not n.startswith("Vertical")
    )
    cls = getattr(module, name, None)
    if name not in usable or cls is None:
        raise ConfigError(
            f"partition.partitioner '{name}' is not a flwr-datasets partitioner of samples; "
            f"choose one of: {', '.join(usable)}"
        )
    return cls


def flower(
    labels: np.ndarray,
    num_clients: Supplied[PositiveInt],
    seed: Supplied[NonNegativeInt] = 0,
    min_size: NonNegativeInt = 1,
    partitioner: str = "IidPartitioner",
    shuffle_dataset: bool = True,
    **options: Annotated[Any, Forward(choice="partitioner", lookup=partitioner_class)],
) -> Partition:
    """Split ``labels``' indices among ``num_clients`` with flwr-datasets' ``partitioner``.

    Args:
        labels: the training labels, in the training set's order.
        num_clients: passed as ``num_partitions`` (partitioners without that argument, such as
            ``NaturalIdPartitioner`` or ``SizePartitioner``, must produce exactly this many).
        seed: the partitioner's ``seed`` (when it takes one) and the dataset shuffle's.
        min_size: every client needs at least this many samples (checked after partitioning).
        partitioner: a class name of ``flwr_datasets.partitioner`` (``DirichletPartitioner``, ...).
        shuffle_dataset: shuffle the samples first with ``seed``, as ``FederatedDataset`` does by default.
        options: the partitioner's own arguments (``alpha``, ``num_shards_per_partition``, ...);
            ``partition_by`` defaults to the label column.
    """
    labels = np.asarray(labels)
    _check_sizes(len(labels), num_clients, min_size)
    cls = partitioner_class(partitioner)
    from fedkd.data.hf import require

    datasets = require("datasets", "partition=flwr_*")
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: _plain(v) for k, v in options.items()}
    unknown = sorted(k for k in kwargs if k not in params)
    if unknown:
        accepted = ", ".join(p for p in params if p not in ("self", "num_partitions"))
        raise ConfigError(f"{partitioner} takes no option {', '.join(unknown)}; its options are: {accepted}")
    if "num_partitions" in params:
        kwargs["num_partitions"] = num_clients
    if "partition_by" in params:
        kwargs.setdefault("partition_by", LABEL_COLUMN)
    if "seed" in params:
        kwargs.setdefault("seed", seed)
    table = datasets.Dataset.from_dict({LABEL_COLUMN: labels.astype(np.int64), INDEX_COLUMN: np.arange(len(labels))})
    if shuffle_dataset:
        table = table.shuffle(seed=seed)
    try:
        split = cls(**kwargs)
        split.dataset = table
        parts = [np.asarray(split.load_partition(i)[INDEX_COLUMN], dtype=np.int64) for i in range(split.num_partitions)]
    except (ValueError, TypeError, KeyError) as exc:  # e.g. Dirichlet's min_partition_size not reached in 10 draws
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(
            f"{partitioner} cannot split {len(labels)} samples among {num_clients} clients ({first}); "
            "change the partition options or num_clients"
        ) from None
    if len(parts) != num_clients:
        raise ConfigError(
            f"{partitioner} made {len(parts)} partitions but num_clients={num_clients}; "
            f"set num_clients={len(parts)} or change the partitioner's options"
        )
    smallest = min(range(num_clients), key=lambda i: len(parts[i]))
    if len(parts[smallest]) < min_size:
        raise ConfigError(
            f"{partitioner} gave client {smallest} {len(parts[smallest])} samples, "
            f"fewer than partition.min_size={min_size}; "
            "lower partition.min_size or num_clients, or change the partitioner's options"
        )
    return [np.sort(p) for p in parts]
