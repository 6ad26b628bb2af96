"""What each client holds, derived from the config alone: its partition, label counts and model.

Clients and server compute these from the same composed config, so nothing about the data
needs to travel in messages: a client given ``partition-id`` by its SuperNode selects its shard,
and the server can know every partition's label histogram (:func:`partition_label_counts`)
without seeing a sample.

Three sets of training images belong to no client: the holdout (``evaluate_on=holdout``, the last
``holdout_size`` images, for choosing settings), the proxy (``proxy_size`` images drawn, seeded,
from the rest): unlabeled real images the server distils on (FedDF, ``strategy=feddf``), and the
validation split (``validation_size`` images drawn, seeded, from what the proxy leaves): labelled
images a server selects its student on (``strategy.keep_best_on_validation``, FedDF's early
stopping). The server gets the proxy as :func:`proxy_images`, images only; its labels are read by
nobody but the one labelled reference that asks for them (:func:`server_proxy`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fedkd.data import DataBundle, Split, label_counts
from fedkd.data.evaluation import evaluation_split as data_evaluation_split
from fedkd.data.evaluation import holdout_count
from fedkd.data.specs import DatasetSpec
from fedkd.data.unlabeled import load_unlabeled
from fedkd.errors import ConfigError
from fedkd.models import build_from_config, model_config


def _key(node: Any) -> str:
    """A hashable, order-stable key for a config subtree (cache key)."""
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    return json.dumps(plain, sort_keys=True)


@functools.lru_cache(maxsize=4)
def _dataset(dataset_key: str) -> DataBundle:
    return instantiate(OmegaConf.create(json.loads(dataset_key)))


def load_data(cfg: DictConfig) -> DataBundle:
    """The run's dataset, loaded once per process (each simulated client process reuses it)."""
    return _dataset(_key(cfg.dataset))


#: Mixed into ``cfg.seed`` for the proxy's and the validation split's draws: streams of their own,
#: not the partitioner's.
PROXY_STREAM = 0x70726F78
VALIDATION_STREAM = 0x76616C69


@functools.lru_cache(maxsize=4)
def _proxy(pool: int, size: int, seed: int) -> np.ndarray:
    """``size`` sorted indices drawn from ``0..pool-1`` (seeded): random, not the last ones, so a
    dataset stored class by class (an image folder) still gives a proxy of every class."""
    if size == 0:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, PROXY_STREAM]).choice(pool, size, replace=False)).astype(np.int64)


@functools.lru_cache(maxsize=4)
def _validation(pool: int, proxy: int, size: int, seed: int) -> np.ndarray:
    """``size`` sorted indices drawn (seeded) from ``0..pool-1`` outside the proxy: adding a validation
    split leaves the proxy as it was."""
    if size == 0:
        return np.empty(0, dtype=np.int64)
    rest = np.setdiff1d(np.arange(pool), _proxy(pool, proxy, seed))
    return np.sort(np.random.default_rng([seed, VALIDATION_STREAM]).choice(rest, size, replace=False)).astype(np.int64)


@functools.lru_cache(maxsize=4)
def _partitions(
    dataset_key: str, partition_key: str, num_clients: int, seed: int, pool: int, proxy: int = 0, validation: int = 0
) -> tuple[np.ndarray, ...]:
    partitioner = instantiate(OmegaConf.create(json.loads(partition_key)))
    labels = _dataset(dataset_key).train.y.numpy()[:pool]
    if proxy == 0 and validation == 0:  # the first pool images, partitioned as they always were
        return tuple(partitioner(labels, num_clients, seed=seed))
    server = np.union1d(_proxy(pool, proxy, seed), _validation(pool, proxy, validation, seed))
    owned = np.setdiff1d(np.arange(pool), server)  # sorted: the pool without the server's images
    return tuple(owned[np.asarray(part, dtype=np.int64)] for part in partitioner(labels[owned], num_clients, seed=seed))


def holdout_size(cfg: DictConfig) -> int:
    """Training images kept from every client for the server's evaluation (``evaluate_on=holdout``), else 0."""
    return holdout_count(cfg.get("evaluate_on", "test"), int(cfg.get("holdout_size", 0)), len(load_data(cfg).train))


def _client_pool(cfg: DictConfig) -> int:
    """Training images outside the holdout: the first ones, which the clients and the proxy share out."""
    return len(load_data(cfg).train) - holdout_size(cfg)


PROXY_REMEDY = ("set proxy_size=<n> (that many training images no client holds, given to the server without labels) "
                "or proxy_path=<a folder or .npy/.npz file of your own unlabeled images>")


def _server_images(cfg: DictConfig, key: str, room: int, outside: str) -> int:
    """``cfg[key]``: a count of training images kept from every client, checked to leave them some of
    the ``room`` images (those outside ``outside``)."""
    size = cfg.get(key, 0)
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < room:
        raise ConfigError(
            f"{key}={size!r} must be an integer from 0 and leave the clients images ({room} training images "
            f"outside {outside}); set {key} between 0 and {room - 1}"
        )
    return size


def proxy_size(cfg: DictConfig) -> int:
    """Training images kept from every client as the server's unlabeled proxy (``proxy_size``; 0: none)."""
    return _server_images(cfg, "proxy_size", _client_pool(cfg), "the holdout")


def proxy_indices(cfg: DictConfig) -> np.ndarray:
    """Training-set indices of the proxy: ``proxy_size`` of the images outside the holdout, drawn with
    ``cfg.seed`` (empty with ``proxy_size=0``); no client holds any of them."""
    return _proxy(_client_pool(cfg), proxy_size(cfg), int(cfg.seed)).copy()


def proxy_images(cfg: DictConfig) -> torch.Tensor | None:
    """The server's unlabeled proxy: the images at :func:`proxy_indices` and nothing else -- their labels
    stay behind here, so nothing downstream can read them -- or the user's own unlabeled images at
    ``proxy_path`` (:func:`fedkd.data.unlabeled.load_unlabeled`). ``None`` when neither is set."""
    if cfg.get("proxy_path"):
        if proxy_size(cfg):
            raise ConfigError("proxy_size and proxy_path both give the server a proxy; set one (the other 0 or null)")
        return load_unlabeled(cfg.proxy_path, load_data(cfg).spec)
    index = proxy_indices(cfg)
    return load_data(cfg).train.x[torch.from_numpy(index)].clone() if len(index) else None


VALIDATION_REMEDY = "set validation_size=<n> (that many labelled training images no client holds, for the server)"


def validation_size(cfg: DictConfig) -> int:
    """Labelled training images kept from every client for the server's validation (``validation_size``; 0: none)."""
    return _server_images(cfg, "validation_size", _client_pool(cfg) - proxy_size(cfg), "the holdout and the proxy")


def validation_indices(cfg: DictConfig) -> np.ndarray:
    """Training-set indices of the validation split: ``validation_size`` of the images outside the
    holdout and the proxy, drawn with ``cfg.seed``; no client holds any of them."""
    return _validation(_client_pool(cfg), proxy_size(cfg), validation_size(cfg), int(cfg.seed)).copy()


def server_validation(cfg: DictConfig) -> Split | None:
    """The server's labelled validation split (images and labels at :func:`validation_indices`), for a
    strategy that selects its student on it (``strategy.keep_best_on_validation``); ``None`` without one."""
    index = validation_indices(cfg)
    return load_data(cfg).train.subset(index) if len(index) else None


def labelled_proxy(cfg: DictConfig) -> Split | None:
    """The proxy with its labels, for the one reference that reads them on purpose (a server
    synthesizer with ``labelled: true``, ``strategy=fedftg_labelled_proxy``); ``None`` without a proxy.
    A user's ``proxy_path`` carries no labels: a one-line :class:`ConfigError`."""
    if cfg.get("proxy_path"):
        raise ConfigError("strategy.synthesizer.labelled=true reads the proxy's labels and proxy_path images carry "
                          "none; set proxy_size=<n> (proxy_path=null) or strategy.synthesizer.labelled=false")
    index = proxy_indices(cfg)
    return load_data(cfg).train.subset(index) if len(index) else None


def server_proxy(cfg: DictConfig) -> torch.Tensor | Split | None:
    """What the server is given of the proxy: its images (:func:`proxy_images`), or, for a server
    synthesizer that asks for labels (``strategy.synthesizer.labelled``), the labelled split."""
    synthesizer = cfg.get("strategy", {}).get("synthesizer") or {}
    return labelled_proxy(cfg) if synthesizer.get("labelled", False) else proxy_images(cfg)


def partitions(cfg: DictConfig) -> tuple[np.ndarray, ...]:
    """Training-set indices of every client (``cfg.partition`` applied with ``cfg.seed``), never
    touching the holdout (the last ``holdout_size`` training images when ``evaluate_on=holdout``),
    the proxy (:func:`proxy_indices`) nor the validation split (:func:`validation_indices`). Without
    either the partitioner sees the same labels as it always did, so the partitions are unchanged."""
    args = (_key(cfg.dataset), _key(cfg.partition), int(cfg.num_clients), int(cfg.seed), _client_pool(cfg))
    proxy, validation = proxy_size(cfg), validation_size(cfg)
    return _partitions(*args, proxy, validation) if proxy or validation else _partitions(*args)


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
            raise ConfigError(
                "client_models is an empty list; give at least one model config or set client_models=null"
            )
        entry = choice[partition_id % len(choice)]
    elif OmegaConf.is_dict(choice) or isinstance(choice, Mapping):
        entry = {int(k): v for k, v in choice.items()}.get(partition_id, cfg.model)
    else:
        raise ConfigError(
            f"client_models must be a list or a mapping of model configs (got {choice!r}); see conf/sim.yaml"
        )
    if "name" not in entry and "_target_" not in entry:
        raise ConfigError(
            f"client_models entry {entry!r} has no 'name' nor '_target_'; write e.g. {{name: lenet5_half}}"
        )
    return entry


def client_model_configs(cfg: DictConfig) -> list[dict[str, Any]]:
    """The plain model config of every client, by partition id."""
    return [model_config(client_model_config(cfg, pid)) for pid in range(cfg.num_clients)]


def build_client_model(cfg: DictConfig, partition_id: int, spec: DatasetSpec) -> nn.Module:
    """Build (untrained) the model client ``partition_id`` trains."""
    return build_from_config(client_model_config(cfg, partition_id), spec)
