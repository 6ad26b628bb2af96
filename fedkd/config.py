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
           low_open: bool = False, high_open: bool = False, factory: Any = NO_DEFAULT, doc: str = "") -> Any:
    """A numeric schema field and its valid range: ``low <= value <= high`` (strict with
    ``low_open``/``high_open``); a ``None`` bound is no bound. :func:`check_ranges` enforces it for
    every entry point, so no numeric setting goes unchecked (tests/unit/test_config.py walks the
    schemas and fails for a numeric field without a range). ``doc``: as :func:`setting`."""
    metadata = {"range": Range(low, high, low_open, high_open), "help": doc}
    if factory is not NO_DEFAULT:  # a list of numbers (each is checked)
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def setting(default: Any = NO_DEFAULT, doc: str = "", *, factory: Any = NO_DEFAULT) -> Any:
    """A schema field and its one-line description, which ``--help`` lists (:mod:`fedkd.cli.help`)."""
    if factory is not NO_DEFAULT:
        return field(default_factory=factory, metadata={"help": doc})
    return field(default=default, metadata={"help": doc})


def field_help(schema: type, name: str) -> str:
    """The one-line description of ``schema``'s field ``name`` ("" when it has none)."""
    found = next((f for f in fields(schema) if f.name == name), None)
    return "" if found is None else str(found.metadata.get("help", ""))


@dataclass
class DatasetConfig:
    _target_: str = "fedkd.data.load_dataset"
    name: str = setting(MISSING, "the dataset's name (set by the dataset option)")
    root: str | None = setting(None, "the folder of the data files (null: the dataset's default folder)")
    download: bool = setting(False, "let torchvision download missing files (needs internet)")
    image_size: int | None = ranged(None, low=1, doc="resize the images to this side (null: their own size)")
    seed: int = ranged(0, low=0, doc="seed of the train/test split of datasets that have none")
    test_fraction: float = ranged(0.2, low=0, high=1, low_open=True, high_open=True,
                                  doc="share held out for testing by datasets without a test split")
    max_train: int | None = ranged(None, low=1, doc="use only the first this many training images (null: all)")
    max_test: int | None = ranged(None, low=1, doc="use only the first this many test images (null: all)")
    # Your own data (dataset=image_folder|arrays|hf; see docs/your_data_and_model.md):
    hub: str | None = setting(None, "dataset=hf: a Hugging Face hub name, instead of root")
    num_classes: int | None = ranged(None, low=2, doc="null: from the folders, the ClassLabel or the largest label")
    image_key: str | None = setting(None, "dataset=hf: the image column (null: the first Image feature)")
    label_key: str | None = setting(None, "dataset=hf: the label column (null: the first ClassLabel, or 'label')")
    train_split: str = setting("train", "dataset=hf: the training split's name")
    test_split: str = setting("test", "dataset=hf: the test split's name")


@dataclass
class RunConfig:
    """Keys every entry point shares."""

    seed: int = ranged(0, low=0, doc="seed of every random choice of the run (initial weights, order, sampling)")
    device: str = setting("auto", "auto (CUDA when present), cpu, cuda or cuda:<index>")
    debug: bool = setting(False, "show tracebacks instead of one-line errors")
    tensorboard: bool = setting(True, "write TensorBoard events into the run folder (tb/)")
    dataset: DatasetConfig = setting(factory=DatasetConfig, doc="the data (conf/dataset/)")


@dataclass
class AugmentConfig:
    """Random training-batch augmentation of supervised training (off by default)."""

    shift: int = ranged(0, low=0, doc="shift each image by up to this many pixels (RandomCrop(padding=shift))")
    hflip: bool = setting(False, "random horizontal flips (natural images, clothes; not digits)")


@dataclass
class TrainConfig(RunConfig):
    """``fedkd-train``: supervised training of one model (baselines, teachers)."""

    model: Any = setting(MISSING, "the architecture to train (conf/model/)")
    optim: Any = setting(MISSING, "the optimizer (conf/optim/)")
    epochs: int = ranged(5, low=1, doc="passes over the training set")
    batch_size: int = ranged(64, low=1, doc="training batch")
    eval_batch_size: int = ranged(1024, low=1, doc="batch of the test-set evaluation")
    cosine_lr: bool = setting(True, "cosine learning-rate decay over all epochs")
    augment: AugmentConfig = setting(factory=AugmentConfig, doc="random training-batch augmentation")
    resume: str | None = setting(None, "a run folder: continue that run after its last complete epoch")


@dataclass
class ClientResourcesConfig:
    """Resources Ray reserves for one simulated client (``fedkd-sim``)."""

    num_cpus: float = ranged(1.0, low=0, low_open=True, doc="CPUs Ray reserves per client")
    num_gpus: float | None = ranged(None, low=0, doc="null: 0 without CUDA, a quarter GPU per client with CUDA")


@dataclass
class BackendConfig:
    """Flower's Ray simulation backend (``fedkd-sim`` only; ``flwr run`` takes its own settings)."""

    address: str | None = setting(None, 'a Ray cluster to join ("HOST:PORT", "auto"); null: a local Ray per run')
    num_cpus: int | None = ranged(None, low=1, doc="CPUs Ray may use (null: all of this machine's)")
    num_gpus: int | None = ranged(None, low=0, doc="GPUs Ray may use (null: all visible)")
    log_to_driver: bool = setting(False, "true shows the client processes' stdout/stderr (debugging)")
    temp_dir: str | None = setting(None, "Ray's session folder (null: a fresh folder under the system temp dir)")
    keep_logs: bool = setting(False, "keep Ray's session folder (its logs) after the run")


@dataclass
class FaultsConfig:
    """Fault injection (``fedkd-sim``): fractions of clients, chosen by partition id, that misbehave.

    See :mod:`fedkd.federated.faults`.
    """

    raise_fraction: float = ranged(0.0, low=0, high=1, doc="clients whose train handler raises")
    hang_fraction: float = ranged(0.0, low=0, high=1, doc="clients that sleep past round_timeout")
    nonfinite_fraction: float = ranged(0.0, low=0, high=1, doc="clients that reply NaN/Inf weights")
    malformed_fraction: float = ranged(0.0, low=0, high=1, doc="clients that reply wrongly shaped weights")
    scaled_fraction: float = ranged(0.0, low=0, high=1, doc="clients that reply w0 + scale * (w - w0)")
    scale: float = ranged(100.0, doc="the scale of scaled_fraction's updates")
    hang_seconds: float | None = ranged(None, low=0, low_open=True,
                                        doc="seconds a hanging client sleeps (null: round_timeout + 5)")
    seed: int = ranged(0, low=0, doc="seed of the choice of misbehaving clients")


@dataclass
class SimConfig(RunConfig):
    """``fedkd-sim``: federated training on Flower (FedAvg, FedProx, ...) with N simulated clients."""

    model: Any = setting(MISSING, "the global model's architecture (conf/model/)")
    client_models: Any = setting(None, "per-client model configs: a list (round-robin) or {partition_id: config}")
    optim: Any = setting(MISSING, "the clients' local optimizer (conf/optim/)")
    partition: Any = setting(MISSING, "how the training set is split among the clients (conf/partition/)")
    strategy: Any = setting(MISSING, "the federated algorithm run by the server (conf/strategy/)")
    num_clients: int = ranged(10, low=1, doc="simulated clients, one per partition")
    rounds: int = ranged(10, low=1, doc="federated rounds")
    local_epochs: int = ranged(1, low=1, doc="a client's epochs per round")
    local_batch_size: int = ranged(32, low=1, doc="a client's local training batch")
    eval_batch_size: int = ranged(1024, low=1, doc="batch of the server's evaluation")
    keep_local_model: bool = setting(False, "clients keep their trained weights in Context.state")
    # Ray workers on a busy machine start slowly.
    node_timeout: float = ranged(300.0, low=0, low_open=True, doc="seconds the server waits for all clients to connect")
    round_timeout: float = ranged(3600.0, low=0, low_open=True, doc="seconds the server waits for one round's replies")
    client_resources: ClientResourcesConfig = setting(factory=ClientResourcesConfig, doc="what Ray reserves per client")
    backend: BackendConfig = setting(factory=BackendConfig, doc="Flower's Ray simulation backend")
    faults: FaultsConfig = setting(factory=FaultsConfig, doc="fault injection: fractions of clients that misbehave")
    resume: str | None = setting(None, "a run folder: continue that run after its last complete round")
    evaluate_on: str = setting("test", "test, or holdout: the last holdout_size training images, no client's")
    holdout_size: int = ranged(5000, low=1, doc="images of the holdout (evaluate_on=holdout)")
    proxy_size: int = ranged(0, low=0, doc="training images no client holds: the server's proxy (strategy=feddf)")
    proxy_path: str | None = setting(None, "your own unlabeled proxy instead: an image folder or a .npy/.npz file")
    validation_size: int = ranged(0, low=0, doc="labelled training images no client holds: the server's validation "
                                  "split (strategy.keep_best_on_validation)")


@dataclass
class CompareConfig:
    """``fedkd-compare``: strategies x seeds on one ``fedkd-sim`` config, then the report."""

    strategies: list[str] = setting(factory=lambda: ["fedavg", "fedftg"],
                                    doc="options of conf/strategy/, or variants named in strategy_overrides")
    seeds: list[int] = ranged(low=0, factory=lambda: [0, 1, 2], doc="one run per strategy and seed")
    overrides: list[str] = setting(factory=list, doc="fedkd-sim settings of every run: overrides=['rounds=20',...]")
    strategy_overrides: dict[str, list[str]] = setting(
        factory=dict, doc="settings for one strategy: +strategy_overrides.fedftg=['strategy.iterations_per_round=10']")
    target_accuracy: float = ranged(0.7, low=0, high=1, doc='the report\'s "rounds to reach" this accuracy')
    title: str = setting("", "the report's title")
    report_only: str | None = setting(None, "a finished compare folder: re-render its report, run nothing")
    rerun_changed: bool = setting(False, "runs kept from earlier with another config move to stale/ and run again")
    debug: bool = setting(False, "show tracebacks instead of one-line errors")


@dataclass
class TeacherConfig:
    """The teacher of ``fedkd-distill``: a checkpoint, or a model trained first when there is none."""

    checkpoint: str | None = setting(None, "a fedkd model .pt (its architecture is read from the file)")
    model: Any = setting(MISSING, "the architecture to train when checkpoint is null (conf/model/)")
    optim: Any = setting(MISSING, "the optimizer of the teacher's training (conf/optim/)")
    epochs: int = ranged(10, low=1, doc="epochs of the teacher's training")
    batch_size: int = ranged(128, low=1, doc="batch of the teacher's training")
    augment: AugmentConfig = setting(factory=AugmentConfig, doc="augmentation of the teacher's training")


@dataclass
class CentralizedConfig(RunConfig):
    """``fedkd-distill``: data-free distillation of one teacher into a student."""

    teacher: TeacherConfig = setting(factory=TeacherConfig, doc="the teacher: a checkpoint, or trained first")
    student: Any = setting(MISSING, "the student's architecture (conf/model/)")
    optim: Any = setting(MISSING, "the student's optimizer (conf/optim/)")
    synthesizer: Any = setting(MISSING, "how the inputs of the student's steps are made (conf/synthesizer/)")
    student_terms: Any = setting(factory=dict, doc="extra student losses by name (conf/student_terms/)")
    epochs: int = ranged(10, low=1, doc="distillation epochs")
    iterations_per_epoch: int = ranged(50, low=1, doc="synthesizer steps per epoch, each followed by student steps")
    student_batch_size: int = ranged(256, low=1, doc="samples per student step")
    eval_batch_size: int = ranged(1024, low=1, doc="batch of the test-set evaluation")
    cosine_lr: bool = setting(True, "cosine decay of the student's learning rate over all iterations")
    keep_best_on_test: bool = setting(False, "also save the student that scored best on the test set (plots only)")
    preview_images: int = ranged(64, low=0, doc="synthetic samples saved per epoch (samples/; 0: none)")
    evaluate_on: str = setting("test", "test, or holdout: the last holdout_size training images (to choose settings)")
    holdout_size: int = ranged(5000, low=1, doc="images of the holdout (evaluate_on=holdout)")
    threads: int | None = ranged(None, low=1, doc="torch CPU threads (null: torch's default)")
    resume: str | None = setting(None, "a run folder: continue that run after its last complete epoch")


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
