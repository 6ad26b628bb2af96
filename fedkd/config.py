"""Typed schemas for the entry points' configs, registered in Hydra's ConfigStore.

Hydra validates types against these dataclasses when it composes a config (``epochs=abc`` fails
at start, naming the key). Groups whose fields depend on the chosen option (``model``,
``partition``, ...) stay untyped here; their builders check their own values.
:func:`check` adds the range checks a type cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from fedkd.errors import ConfigError


@dataclass
class DatasetConfig:
    _target_: str = "fedkd.data.load_dataset"
    name: str = MISSING
    root: str | None = None
    download: bool = False
    image_size: int | None = None
    seed: int = 0
    test_fraction: float = 0.2
    max_train: int | None = None
    max_test: int | None = None


@dataclass
class RunConfig:
    """Keys every entry point shares."""

    seed: int = 0
    device: str = "auto"
    debug: bool = False  # show tracebacks instead of one-line errors
    tensorboard: bool = True
    dataset: DatasetConfig = field(default_factory=DatasetConfig)


@dataclass
class TrainConfig(RunConfig):
    """``fedkd-train``: supervised training of one model (baselines, teachers)."""

    model: Any = MISSING
    optim: Any = MISSING
    epochs: int = 5
    batch_size: int = 64
    eval_batch_size: int = 1024
    cosine_lr: bool = True


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)


def require_positive(cfg: DictConfig, *keys: str) -> None:
    """Raise a :class:`ConfigError` naming the first of ``keys`` that is not > 0."""
    for key in keys:
        value = cfg
        for part in key.split("."):
            value = value[part]
        if value is None or value <= 0:
            raise ConfigError(f"{key} must be > 0 (got {value}); set {key}=<positive number>")


def check_train(cfg: DictConfig) -> None:
    require_positive(cfg, "epochs", "batch_size", "eval_batch_size")
