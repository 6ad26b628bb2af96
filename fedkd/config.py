"""Typed schemas for the entry points' configs, registered in Hydra's ConfigStore.

Hydra validates types against these dataclasses when it composes a config (``epochs=abc`` fails
at start, naming the key). Groups whose fields depend on the chosen option (``model``,
``partition``, ...) are ``Any`` here: each of their nodes names its ``_target_``, whose signature is
its schema (:mod:`fedkd.utils.option_schema`). The ``check_*`` functions add the range checks a type
cannot express and check every option node; :func:`check_composed` runs them before Hydra writes
anything (:func:`fedkd.cli.guard.preflight`).
"""

from __future__ import annotations

from dataclasses import MISSING as NO_DEFAULT
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from fedkd.utils.option_schema import check_nested, check_option_node
from fedkd.utils.option_types import Range

#: The Hydra config folder (``conf/`` at the repository root; a Flower app bundle carries it too).
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def ranged(default: Any = NO_DEFAULT, low: float | None = None, high: float | None = None, *,
           low_open: bool = False, high_open: bool = False, factory: Any = NO_DEFAULT) -> Any:
    """A numeric schema field and its valid range: ``low <= value <= high`` (strict with
    ``low_open``/``high_open``); a ``None`` bound is no bound. :func:`check_ranges` enforces it for
    every entry point, so no numeric setting goes unchecked (tests/unit/test_config.py walks the
    schemas and fails for a numeric field without a range)."""
    metadata = {"range": Range(low, high, low_open, high_open)}
    if factory is not NO_DEFAULT:  # a list of numbers (each is checked)
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class DatasetConfig:
    _target_: str = "fedkd.data.load_dataset"
    name: str = MISSING
    root: str | None = None
    download: bool = False
    image_size: int | None = ranged(None, low=1)
    seed: int = ranged(0, low=0)
    test_fraction: float = ranged(0.2, low=0, high=1, low_open=True, high_open=True)
    max_train: int | None = ranged(None, low=1)
    max_test: int | None = ranged(None, low=1)
    # Your own data (dataset=image_folder|arrays|hf; see docs/your_data_and_model.md):
    hub: str | None = None  # a Hugging Face hub name (dataset=hf), instead of root
    num_classes: int | None = ranged(None, low=2)  # null: from the folders, the ClassLabel feature or the largest label
    image_key: str | None = None  # dataset=hf: the image column (null: the first Image feature)
    label_key: str | None = None  # dataset=hf: the label column (null: the first ClassLabel, or 'label')
    train_split: str = "train"  # dataset=hf: split names
    test_split: str = "test"


@dataclass
class RunConfig:
    """Keys every entry point shares."""

    seed: int = ranged(0, low=0)
    device: str = "auto"
    debug: bool = False  # show tracebacks instead of one-line errors
    tensorboard: bool = True
    dataset: DatasetConfig = field(default_factory=DatasetConfig)


@dataclass
class AugmentConfig:
    """Random training-batch augmentation of supervised training (off by default)."""

    shift: int = ranged(0, low=0)  # shift each image by up to this many pixels (zero fill): RandomCrop(padding=shift)
    hflip: bool = False  # random horizontal flips (natural images, clothes; not digits)


@dataclass
class TrainConfig(RunConfig):
    """``fedkd-train``: supervised training of one model (baselines, teachers)."""

    model: Any = MISSING
    optim: Any = MISSING
    epochs: int = ranged(5, low=1)
    batch_size: int = ranged(64, low=1)
    eval_batch_size: int = ranged(1024, low=1)
    cosine_lr: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    resume: str | None = None  # a run folder: continue that run after its last complete epoch


@dataclass
class ClientResourcesConfig:
    """Resources Ray reserves for one simulated client (``fedkd-sim``)."""

    num_cpus: float = ranged(1.0, low=0, low_open=True)
    num_gpus: float | None = ranged(None, low=0)  # null: 0 without CUDA, a quarter GPU per client with CUDA


@dataclass
class BackendConfig:
    """Flower's Ray simulation backend (``fedkd-sim`` only; ``flwr run`` takes its own settings)."""

    address: str | None = None  # an existing Ray cluster to join ("HOST:PORT", "auto"); null: a local Ray per run
    num_cpus: int | None = ranged(None, low=1)  # CPUs Ray may use (null: all of this machine's)
    num_gpus: int | None = ranged(None, low=0)  # GPUs Ray may use (null: all visible)
    log_to_driver: bool = False  # true shows the client processes' stdout/stderr (debugging)
    temp_dir: str | None = None  # Ray's session folder (null: a fresh folder under the system temp dir)
    keep_logs: bool = False  # keep Ray's session folder (its logs) after the run


@dataclass
class FaultsConfig:
    """Fault injection (``fedkd-sim``): fractions of clients, chosen by partition id, that misbehave.

    See :mod:`fedkd.federated.faults`.
    """

    raise_fraction: float = ranged(0.0, low=0, high=1)  # the train handler raises
    hang_fraction: float = ranged(0.0, low=0, high=1)  # sleeps past round_timeout
    nonfinite_fraction: float = ranged(0.0, low=0, high=1)  # replies NaN/Inf weights
    malformed_fraction: float = ranged(0.0, low=0, high=1)  # replies wrongly shaped weights
    scaled_fraction: float = ranged(0.0, low=0, high=1)  # replies w0 + scale * (w - w0)
    scale: float = ranged(100.0)
    hang_seconds: float | None = ranged(None, low=0, low_open=True)  # null: round_timeout + 5
    seed: int = ranged(0, low=0)


@dataclass
class SimConfig(RunConfig):
    """``fedkd-sim``: federated training on Flower (FedAvg, FedProx, ...) with N simulated clients."""

    model: Any = MISSING
    client_models: Any = None  # optional per-client model configs (see fedkd.federated.data)
    optim: Any = MISSING
    partition: Any = MISSING
    strategy: Any = MISSING
    num_clients: int = ranged(10, low=1)
    rounds: int = ranged(10, low=1)
    local_epochs: int = ranged(1, low=1)
    local_batch_size: int = ranged(32, low=1)  # a client's local training batch
    eval_batch_size: int = ranged(1024, low=1)
    keep_local_model: bool = False  # clients keep their trained weights in Context.state
    # seconds the server waits for all clients to connect (Ray workers on a busy machine start slowly)
    node_timeout: float = ranged(300.0, low=0, low_open=True)
    round_timeout: float = ranged(3600.0, low=0, low_open=True)  # seconds the server waits for one round's replies
    client_resources: ClientResourcesConfig = field(default_factory=ClientResourcesConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    resume: str | None = None  # a run folder: continue that run after its last complete round
    # test, or holdout: the last holdout_size training images, no client's (to choose settings)
    evaluate_on: str = "test"
    holdout_size: int = ranged(5000, low=1)
    # training images no client holds, drawn from outside the holdout: the server's unlabeled proxy (strategy=feddf)
    proxy_size: int = ranged(0, low=0)


@dataclass
class CompareConfig:
    """``fedkd-compare``: strategies x seeds on one ``fedkd-sim`` config, then the report."""

    strategies: list[str] = field(default_factory=lambda: ["fedavg", "fedftg"])
    seeds: list[int] = ranged(low=0, factory=lambda: [0, 1, 2])
    overrides: list[str] = field(default_factory=list)
    strategy_overrides: dict[str, list[str]] = field(default_factory=dict)
    target_accuracy: float = ranged(0.7, low=0, high=1)
    title: str = ""
    report_only: str | None = None
    debug: bool = False


@dataclass
class TeacherConfig:
    """The teacher of ``fedkd-distill``: a checkpoint, or a model trained first when there is none."""

    checkpoint: str | None = None  # a fedkd model .pt (its architecture is read from the file)
    model: Any = MISSING  # architecture to train when checkpoint is null
    optim: Any = MISSING
    epochs: int = ranged(10, low=1)
    batch_size: int = ranged(128, low=1)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class CentralizedConfig(RunConfig):
    """``fedkd-distill``: data-free distillation of one teacher into a student."""

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: Any = MISSING
    optim: Any = MISSING  # the student's optimizer
    synthesizer: Any = MISSING  # the synthesizer (conf/synthesizer/)
    student_terms: Any = field(default_factory=dict)  # extra student losses by name (conf/student_terms/)
    epochs: int = ranged(10, low=1)
    iterations_per_epoch: int = ranged(50, low=1)
    student_batch_size: int = ranged(256, low=1)  # samples per student step
    eval_batch_size: int = ranged(1024, low=1)
    cosine_lr: bool = True
    keep_best_on_test: bool = False  # also save the student that scored best on the test set (plots only)
    preview_images: int = ranged(64, low=0)
    evaluate_on: str = "test"  # test, or holdout: the last holdout_size training images (to choose settings)
    holdout_size: int = ranged(5000, low=1)
    threads: int | None = ranged(None, low=1)  # torch CPU threads (null: torch's default)
    resume: str | None = None  # a run folder: continue that run after its last complete epoch


_registered = False


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore (the configs' ``defaults`` name them); once per
    process, later calls do nothing."""
    global _registered
    if _registered:
        return
    _registered = True
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="sim_schema", node=SimConfig)
    cs.store(name="compare_schema", node=CompareConfig)
    cs.store(name="centralized_schema", node=CentralizedConfig)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)


def check_ranges(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """Raise a one-line :class:`ConfigError` for the first numeric value of ``cfg`` outside the
    range its ``schema`` field declares (:func:`ranged`); nested schemas are checked too."""
    for f in fields(schema):
        if f.name not in cfg:
            continue
        value, key = cfg[f.name], f"{prefix}{f.name}"
        if f.default_factory is not NO_DEFAULT and is_dataclass(f.default_factory) and isinstance(value, DictConfig):
            check_ranges(value, f.default_factory, f"{key}.")
            continue
        if "range" in f.metadata:
            f.metadata["range"].check(key, list(value) if isinstance(value, ListConfig) else value)


#: Fields that hold model configs, built by fedkd.models.build_from_config rather than instantiate:
#: a registry model (``name``, with or without the registry's ``_target_``) is checked against its
#: builder here; your own class (``model._target_``) when it is built, where the data's arguments
#: are filled in and ``name`` is only a label.
MODEL_FIELDS = ("model", "student", "client_models")
REGISTRY_BUILDERS = ("fedkd.models.build_model", "fedkd.models.registry.build_model")  # as fedkd.models.registry


def _check_model(node: Any, key: str) -> None:
    if isinstance(node, DictConfig) and node.get("_target_", REGISTRY_BUILDERS[0]) in REGISTRY_BUILDERS:
        check_option_node(node, key, default_target=REGISTRY_BUILDERS[0])


def check_options(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """Raise a one-line :class:`ConfigError` for the first key of an option node of ``cfg`` (the
    schema's ``Any`` fields: ``model``, ``strategy``, ...) that its target does not take, or whose
    value has the wrong type or lies outside its range; nested schemas are checked too."""
    hints = get_type_hints(schema)
    for f in fields(schema):
        if f.name not in cfg or OmegaConf.is_missing(cfg, f.name):
            continue
        value, key = cfg[f.name], f"{prefix}{f.name}"
        if f.default_factory is not NO_DEFAULT and is_dataclass(f.default_factory) and isinstance(value, DictConfig):
            check_options(value, f.default_factory, f"{key}.")
        elif hints[f.name] is Any and f.name in MODEL_FIELDS:
            if isinstance(value, ListConfig):
                for i, entry in enumerate(value):
                    _check_model(entry, f"{key}[{i}]")
            elif isinstance(value, DictConfig) and ("_target_" in value or "name" in value):
                _check_model(value, key)
            elif isinstance(value, DictConfig):  # client_models as {partition_id: model config}
                for pid, entry in value.items():
                    _check_model(entry, f"{key}.{pid}")
        elif hints[f.name] is Any:
            check_nested(value, key)


def check_train(cfg: DictConfig) -> None:
    check_ranges(cfg, TrainConfig)
    check_options(cfg, TrainConfig)


def check_sim(cfg: DictConfig) -> None:
    check_ranges(cfg, SimConfig)
    check_options(cfg, SimConfig)


def check_centralized(cfg: DictConfig) -> None:
    check_ranges(cfg, CentralizedConfig)
    check_options(cfg, CentralizedConfig)


def check_composed(config_name: str, cfg: DictConfig) -> None:
    """The check of the entry point whose config is ``conf/<config_name>.yaml`` (none for others)."""
    checks = {"train": check_train, "sim": check_sim, "centralized": check_centralized}
    if config_name in checks:
        checks[config_name](cfg)
