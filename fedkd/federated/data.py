"""What each client holds, derived from the config alone: its partition, label counts and model.

Clients and server compute these from the same composed config, so nothing about the data
needs to travel in messages: a client given ``partition-id`` by its SuperNode selects its shard,
and the server can know every partition's label histogram (:func:`partition_label_counts`)
without seeing a sample.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fedkd.data import DataBundle, Split, label_counts
from fedkd.data.evaluation import evaluation_split as data_evaluation_split
from fedkd.data.evaluation import holdout_count
from fedkd.data.specs import DatasetSpec
from fedkd.errors import ConfigError
from fedkd.models import build_from_config, model_config


def _key(node: Any) -> str:
    """A hashable, order-stable key for a config subtree (cache key)."""
    return json.dumps(OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node, sort_keys=True)


@functools.lru_cache(maxsize=4)
def _dataset(dataset_key: str) -> DataBundle:
    return instantiate(OmegaConf.create(json.loads(dataset_key)))


def load_data(cfg: DictConfig) -> DataBundle:
    """The run's dataset, loaded once per process (each simulated client process reuses it)."""
    return _dataset(_key(cfg.dataset))


@functools.lru_cache(maxsize=4)
def _partitions(dataset_key: str, partition_key: str, num_clients: int, seed: int, pool: int) -> tuple[np.ndarray, ...]:
    labels = _dataset(dataset_key).train.y.numpy()[:pool]
    partitioner = instantiate(OmegaConf.create(json.loads(partition_key)))
    return tuple(partitioner(labels, num_clients, seed=seed))


def holdout_size(cfg: DictConfig) -> int:
    """Training images kept from every client for the server's evaluation (``evaluate_on=holdout``), else 0."""
    return holdout_count(cfg.get("evaluate_on", "test"), int(cfg.get("holdout_size", 0)), len(load_data(cfg).train))


def partitions(cfg: DictConfig) -> tuple[np.ndarray, ...]:
    """Training-set indices of every client (``cfg.partition`` applied with ``cfg.seed``), never
    touching the holdout (the last ``holdout_size`` training images when ``evaluate_on=holdout``)."""
    pool = len(load_data(cfg).train) - holdout_size(cfg)
    return _partitions(_key(cfg.dataset), _key(cfg.partition), int(cfg.num_clients), int(cfg.seed), pool)


def evaluation_split(cfg: DictConfig) -> tuple[str, Split]:
    """``(name, split)`` the server evaluates the global model on: the test set, or with
    ``evaluate_on=holdout`` the last ``holdout_size`` training images, which no client holds --
    for choosing settings (a strategy's options) without looking at the test set."""
    return data_evaluation_split(load_data(cfg), cfg.get("evaluate_on", "test"), int(cfg.get("holdout_size", 0)))


def check_partition_id(cfg: DictConfig, partition_id: int) -> None:
    if not 0 <= partition_id < cfg.num_clients:
        raise ConfigError(
            f"partition-id {partition_id} is outside 0..{cfg.num_clients - 1} (num_clients={cfg.num_clients}); "
            "give each SuperNode --node-config 'partition-id=<0..num_clients-1>' or set num_clients"
        )


def client_split(cfg: DictConfig, partition_id: int) -> Split:
    """The training samples of client ``partition_id``."""
    check_partition_id(cfg, partition_id)
    return load_data(cfg).train.subset(partitions(cfg)[partition_id])


def partition_label_counts(cfg: DictConfig) -> np.ndarray:
    """Label histogram of every partition, shape ``(num_clients, num_classes)``.

    The same numbers each client reports under ``label-counts`` in its train reply.
    """
    data = load_data(cfg)
    return label_counts(data.train.y.numpy(), list(partitions(cfg)), data.spec.num_classes)


def client_model_config(cfg: DictConfig, partition_id: int) -> DictConfig:
    """The model config client ``partition_id`` trains: ``cfg.model`` unless ``cfg.client_models`` says otherwise.

    ``client_models`` may be a list (entry ``partition_id % len``: groups of architectures) or a
    mapping ``{partition_id: config}`` (entries for single clients; others keep ``cfg.model``).
    An entry is a model config (``{name: lenet5_half, batch_norm: true}``).
    """
    check_partition_id(cfg, partition_id)
    choice = cfg.get("client_models")
    if choice is None:
        return cfg.model
    if OmegaConf.is_list(choice) or isinstance(choice, list | tuple):
        if len(choice) == 0:
            raise ConfigError("client_models is an empty list; give at least one model config or set client_models=null")
        entry = choice[partition_id % len(choice)]
    elif OmegaConf.is_dict(choice) or isinstance(choice, Mapping):
        entry = {int(k): v for k, v in choice.items()}.get(partition_id, cfg.model)
    else:
        raise ConfigError(f"client_models must be a list or a mapping of model configs (got {choice!r}); see conf/sim.yaml")
    if "name" not in entry and "_target_" not in entry:
        raise ConfigError(f"client_models entry {entry!r} has no 'name' nor '_target_'; write e.g. {{name: lenet5_half}}")
    return entry


def client_model_configs(cfg: DictConfig) -> list[dict[str, Any]]:
    """The plain model config of every client, by partition id."""
    return [model_config(client_model_config(cfg, pid)) for pid in range(cfg.num_clients)]


def build_client_model(cfg: DictConfig, partition_id: int, spec: DatasetSpec) -> nn.Module:
    """Build (untrained) the model client ``partition_id`` trains."""
    return build_from_config(client_model_config(cfg, partition_id), spec)
