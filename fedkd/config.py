"""Typed schemas for the entry points' configs, registered in Hydra's ConfigStore.

Hydra validates types against these dataclasses when it composes a config (``epochs=abc`` fails
at start, naming the key). Groups whose fields depend on the chosen option (``model``,
``partition``, ...) stay untyped here; their builders check their own values.
:func:`check` adds the range checks a type cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from fedkd.errors import ConfigError

#: The Hydra config folder (``conf/`` at the repository root; a Flower app bundle carries it too).
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


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
    # Your own data (dataset=image_folder|arrays|hf; see docs/your_data_and_model.md):
    hub: str | None = None  # a Hugging Face hub name (dataset=hf), instead of root
    num_classes: int | None = None  # null: from the folders, the ClassLabel feature or the largest label
    image_key: str | None = None  # dataset=hf: the image column (null: the first Image feature)
    label_key: str | None = None  # dataset=hf: the label column (null: the first ClassLabel, or 'label')
    train_split: str = "train"  # dataset=hf: split names
    test_split: str = "test"


@dataclass
class RunConfig:
    """Keys every entry point shares."""

    seed: int = 0
    device: str = "auto"
    debug: bool = False  # show tracebacks instead of one-line errors
    tensorboard: bool = True
    dataset: DatasetConfig = field(default_factory=DatasetConfig)


@dataclass
class AugmentConfig:
    """Random training-batch augmentation of supervised training (off by default)."""

    shift: int = 0  # shift each image by up to this many pixels (zero fill): RandomCrop(padding=shift)
    hflip: bool = False  # random horizontal flips (natural images, clothes; not digits)


@dataclass
class TrainConfig(RunConfig):
    """``fedkd-train``: supervised training of one model (baselines, teachers)."""

    model: Any = MISSING
    optim: Any = MISSING
    epochs: int = 5
    batch_size: int = 64
    eval_batch_size: int = 1024
    cosine_lr: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    resume: str | None = None  # a run folder: continue that run after its last complete epoch


@dataclass
class ClientResourcesConfig:
    """Resources Ray reserves for one simulated client (``fedkd-sim``)."""

    num_cpus: float = 1.0
    num_gpus: float | None = None  # null: 0 without CUDA, a quarter GPU per client with CUDA


@dataclass
class BackendConfig:
    """Flower's Ray simulation backend (``fedkd-sim`` only; ``flwr run`` takes its own settings)."""

    address: str | None = None  # an existing Ray cluster to join ("HOST:PORT", "auto"); null: a local Ray per run
    num_cpus: int | None = None  # CPUs Ray may use (null: all of this machine's)
    num_gpus: int | None = None  # GPUs Ray may use (null: all visible)
    log_to_driver: bool = False  # true shows the client processes' stdout/stderr (debugging)
    temp_dir: str | None = None  # Ray's session folder (null: a fresh folder under the system temp dir)
    keep_logs: bool = False  # keep Ray's session folder (its logs) after the run


@dataclass
class FaultsConfig:
    """Fault injection (``fedkd-sim``): fractions of clients, chosen by partition id, that misbehave.

    See :mod:`fedkd.federated.faults`.
    """

    raise_fraction: float = 0.0  # the train handler raises
    hang_fraction: float = 0.0  # sleeps past round_timeout
    nonfinite_fraction: float = 0.0  # replies NaN/Inf weights
    malformed_fraction: float = 0.0  # replies wrongly shaped weights
    scaled_fraction: float = 0.0  # replies w0 + scale * (w - w0)
    scale: float = 100.0
    hang_seconds: float | None = None  # null: round_timeout + 5
    seed: int = 0


@dataclass
class SimConfig(RunConfig):
    """``fedkd-sim``: federated training on Flower (FedAvg, FedProx, ...) with N simulated clients."""

    model: Any = MISSING
    client_models: Any = None  # optional per-client model configs (see fedkd.federated.data)
    optim: Any = MISSING
    partition: Any = MISSING
    strategy: Any = MISSING
    num_clients: int = 10
    rounds: int = 10
    local_epochs: int = 1
    local_batch_size: int = 32  # a client's local training batch
    eval_batch_size: int = 1024
    keep_local_model: bool = False  # clients keep their trained weights in Context.state
    node_timeout: float = 120.0  # seconds the server waits for all clients to connect
    round_timeout: float = 3600.0  # seconds the server waits for one round's replies
    client_resources: ClientResourcesConfig = field(default_factory=ClientResourcesConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    resume: str | None = None  # a run folder: continue that run after its last complete round


@dataclass
class CompareConfig:
    """``fedkd-compare``: strategies x seeds on one ``fedkd-sim`` config, then the report."""

    strategies: list[str] = field(default_factory=lambda: ["fedavg", "fedftg"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    overrides: list[str] = field(default_factory=list)
    strategy_overrides: dict[str, list[str]] = field(default_factory=dict)
    target_accuracy: float = 0.7
    title: str = ""
    report_only: str | None = None
    debug: bool = False


@dataclass
class TeacherConfig:
    """The teacher of ``fedkd-distill``: a checkpoint, or a model trained first when there is none."""

    checkpoint: str | None = None  # a fedkd model .pt (its architecture is read from the file)
    model: Any = MISSING  # architecture to train when checkpoint is null
    optim: Any = MISSING
    epochs: int = 10
    batch_size: int = 128
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class CentralizedConfig(RunConfig):
    """``fedkd-distill``: data-free distillation of one teacher into a student."""

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: Any = MISSING
    optim: Any = MISSING  # the student's optimizer
    synthesizer: Any = MISSING  # the synthesizer (conf/synthesizer/)
    student_terms: Any = field(default_factory=dict)  # extra student losses by name (conf/student_terms/)
    epochs: int = 10
    iterations_per_epoch: int = 50
    student_batch_size: int = 256  # samples per student step
    eval_batch_size: int = 1024
    cosine_lr: bool = True
    keep_best_on_test: bool = False  # also save the student that scored best on the test set (plots only)
    preview_images: int = 64
    threads: int | None = None  # torch CPU threads (null: torch's default)
    resume: str | None = None  # a run folder: continue that run after its last complete epoch


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="sim_schema", node=SimConfig)
    cs.store(name="compare_schema", node=CompareConfig)
    cs.store(name="centralized_schema", node=CentralizedConfig)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)


def require_positive(cfg: DictConfig, *keys: str) -> None:
    """Raise a :class:`ConfigError` naming the first of ``keys`` that is not > 0."""
    for key in keys:
        value = cfg
        for part in key.split("."):
            value = value[part]
        if value is None or value <= 0:
            raise ConfigError(f"{key} must be > 0 (got {value}); set {key}=<positive number>")


def check_augment(augment: DictConfig, key: str) -> None:
    if augment.shift < 0:
        raise ConfigError(f"{key}.shift must be >= 0 pixels (got {augment.shift}); set e.g. {key}.shift=2, or 0 for none")


def check_train(cfg: DictConfig) -> None:
    require_positive(cfg, "epochs", "batch_size", "eval_batch_size")
    check_augment(cfg.augment, "augment")


def check_sim(cfg: DictConfig) -> None:
    require_positive(cfg, "num_clients", "rounds", "local_epochs", "local_batch_size", "eval_batch_size")
    require_positive(cfg, "client_resources.num_cpus")


def check_centralized(cfg: DictConfig) -> None:
    require_positive(cfg, "epochs", "iterations_per_epoch", "student_batch_size", "eval_batch_size", "teacher.epochs",
                     "teacher.batch_size")
    check_augment(cfg.teacher.augment, "teacher.augment")
    if cfg.threads is not None:
        require_positive(cfg, "threads")


#: Keys renamed in 0.2 (one name per concept), per config: old override key -> new. The old names
#: keep working until 0.3, with a one-line notice (:func:`renamed_overrides`).
RENAMED_KEYS: dict[str, dict[str, str]] = {
    "centralized": {
        "distill": "synthesizer",  # the config group: one name in fedkd-distill and the strategy
        "batch_size": "student_batch_size",
        "synthesizer.iterations": "synthesizer.synthesis_steps",
    },
    "sim": {
        "batch_size": "local_batch_size",
        "distill": "synthesizer",
        "strategy.iterations": "strategy.iterations_per_round",
        "strategy.batch_size": "strategy.student_batch_size",
        "strategy.synthesizer.iterations": "strategy.synthesizer.synthesis_steps",
    },
}


def _rename_key(key: str, table: dict[str, str]) -> str:
    """``key`` under its new name: every renamed prefix replaced (``distill.iterations`` passes
    through ``synthesizer.iterations`` to ``synthesizer.synthesis_steps``)."""
    for _ in range(len(table) + 1):
        match = next((old for old in sorted(table, key=len, reverse=True) if key == old or key.startswith(old + ".")), None)
        if match is None:
            break
        key = table[match] + key[len(match):]
    return key


def renamed_overrides(config_name: str, overrides: list[str]) -> tuple[list[str], list[str]]:
    """``overrides`` with renamed keys replaced, and one notice per replaced override.

    Handles ``key=value``, ``+key=``, ``~key``, ``group@package=option`` (both sides renamed).
    """
    table = RENAMED_KEYS.get(config_name, {})
    out, notices = [], []
    for item in overrides:
        prefix = item[: len(item) - len(item.lstrip("+~"))]
        body = item[len(prefix):]
        key, sep, value = body.partition("=")
        group, at, package = key.partition("@")
        new_key = _rename_key(group, table) + (at + _rename_key(package, table) if at else "")
        if new_key != key:
            new = f"{prefix}{new_key}{sep}{value}"
            notices.append(f"fedkd: deprecated: {item} is now {new} (the old name works until 0.3)")
            item = new
        out.append(item)
    return out, notices
