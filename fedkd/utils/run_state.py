"""Checkpoint and resume of a centralized run (``fedkd-train``, ``fedkd-distill``) after every epoch.

After each epoch the entry point writes ``train_state.pt`` into the run folder, atomically
(:func:`fedkd.utils.checkpoint.atomic_save`: a temporary file renamed over the old one, so a crash
while writing leaves the previous epoch's state intact). It holds

- the epoch, and the entry point's own parts: model (student), optimiser, LR scheduler, the
  synthesizer's state, the teacher's checkpoint path, the last epoch's loop metrics;
- the rows of ``metrics.jsonl`` so far (rewritten from them on resume, so a row written after the
  last checkpoint is not duplicated);
- the RNG states (torch, CUDA, NumPy, Python and the run's data-order generator) at the end of
  that epoch;
- the config that matters for the results, to refuse resuming with a different one;
- the SHA-256 of each input file the run depends on (``fedkd-distill``: its teacher), to refuse
  resuming after one of them was replaced or removed.

``fedkd-train <same overrides> resume=<run folder>`` (``fedkd-distill`` alike) continues at the
epoch after the last complete one, in that folder. Everything is read with
``torch.load(weights_only=True)``: tensors and plain values only. The federated server's
counterpart is :mod:`fedkd.federated.resume`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fedkd.errors import CheckpointError, ConfigError
from fedkd.utils.checkpoint import atomic_save, file_sha256
from fedkd.utils.run_logger import METRICS_FILE
from fedkd.utils.seeding import rng_state, set_rng_state

STATE_FILE = "train_state.pt"
FORMAT = "fedkd-train-state-v1"

#: The console command of each config that checkpoints with this module (for messages).
COMMANDS = {"train": "fedkd-train", "centralized": "fedkd-distill"}

#: Config keys that do not change a run's results: they may differ between a run and its resume.
#: (``epochs`` is not among them: the cosine learning-rate schedule spans all epochs.)
NOT_IDENTITY = ("resume", "hydra", "debug", "tensorboard", "device", "eval_batch_size", "threads")


def config_identity(cfg: DictConfig, ignore: tuple[str, ...] = NOT_IDENTITY) -> dict[str, Any]:
    """The resolved config without the keys in ``ignore`` (what must match between a run and its
    resume; the federated server passes its own ``ignore``, :data:`fedkd.federated.resume.NOT_IDENTITY`)."""
    # Mask first: Hydra's own node (present in the preflight's config) does not resolve outside a run.
    kept = [k for k in cfg if k not in ignore]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, kept), resolve=True)


def rewrite_metrics(folder: Path, lines: list[str]) -> None:
    """Replace ``<folder>/metrics.jsonl`` with ``lines`` (JSON rows), atomically: on resume the file
    goes back to what it held at the checkpoint, so rows of unfinished epochs or rounds vanish."""
    target = folder / METRICS_FILE
    tmp = target.with_name(f".{METRICS_FILE}.resume.tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(target)


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s weights and buffers, detached and on the CPU."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def training_parts(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler | None
) -> dict[str, Any]:
    """What every centralized loop checkpoints: the model (student), its optimiser and LR scheduler."""
    return {
        "model": cpu_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
    }


def read_state_file(
    cfg: DictConfig,
    file_name: str,
    fmt: str,
    *,
    command: str,
    unit: str,
    kind: str,
    identity: Callable[[DictConfig], dict[str, Any]],
    verify_config: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """``(folder, state)`` of ``<cfg.resume>/<file_name>``, with one-line errors for a missing folder
    or file, an unreadable file (truncated, corrupted, or pickled objects: ``weights_only``), another
    format, and (unless ``verify_config`` is False) a config that differs from the run's.

    Shared by the centralized runs' and the federated server's resume; ``command``, ``unit`` and
    ``kind`` word the messages (``fedkd-sim``, ``round``, ``server state``)."""
    folder = Path(str(cfg.resume)).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"resume={folder} is not a folder; give the run folder of an earlier {command} run")
    path = folder / file_name
    if not path.is_file():
        raise CheckpointError(
            f"resume={folder} holds no run to resume (no {file_name}); give the folder of a {command} run "
            f"that completed at least one {unit}, or start a new run without resume"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupted, or pickled objects (refused by weights_only)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise CheckpointError(
            f"{path} cannot be read ({reason}); it is truncated or corrupted: start a new run without resume"
        ) from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise CheckpointError(f"{path} is not a fedkd {kind}; give the folder of a {command} run")
    if verify_config:
        check_identity(cfg, folder, state, identity)
    return folder, state


#: Import paths that moved, as ``(old prefix, new prefix)``: a run folder written before a move
#: still resumes (its saved ``_target_`` values are read with the new names).
RENAMED_TARGETS = (("strategies.", "fedkd.strategies."), ("clients.", "fedkd.clients."))


def _renamed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _renamed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v) for v in value]
    if isinstance(value, str):
        for old, new in RENAMED_TARGETS:
            if value.startswith(old):
                return new + value[len(old):]
    return value


def unknown_keys(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys of ``saved`` (a run's config identity) that this version's config ``now``
    does not have: a key is unknown when ``now`` lacks it while the node holding it is the same
    option in both (every plain value the two nodes share is equal: ``_target_``, ``name``...).
    A node of another option (``model=resnet8`` against the run's ``lenet5``) is a config that
    differs, not an unknown key."""
    shared = saved.keys() & now.keys()
    nodes = {k for k in shared if isinstance(saved[k], dict) and isinstance(now[k], dict)}
    same_option = all(saved[k] == now[k] for k in shared - nodes)
    found = [f"{prefix}{k}" for k in saved.keys() - now.keys()] if same_option else []
    for k in nodes:
        found += unknown_keys(saved[k], now[k], f"{prefix}{k}.")
    return sorted(found)


#: How :func:`config_changes` shows a key one side lacks.
ABSENT = "(absent)"


def config_changes(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, saved value, value now)`` for every value of two config identities that differs,
    sorted by key (a key one side lacks: :data:`ABSENT`). Nodes of the same option (the same
    ``_target_``, or none) are compared key by key; a node of another option is one change."""
    saved = _renamed(saved)
    found = []
    for key in sorted(set(saved) | set(now), key=str):
        old, new = saved.get(key, ABSENT), now.get(key, ABSENT)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict) and old.get("_target_") == new.get("_target_"):
            found += config_changes(old, new, f"{prefix}{key}.")
        else:
            found.append((f"{prefix}{key}", old, new))
    return found


def check_identity(cfg: DictConfig, folder: Path, state: dict[str, Any],
                   identity: Callable[[DictConfig], dict[str, Any]]) -> None:
    """Refuse, in one line, a config other than the one the run had: naming the keys of the run's
    config this version does not know (:func:`unknown_keys`), else the keys that differ."""
    saved = _renamed(json.loads(state["config"]))
    now = identity(cfg)
    if saved != now:
        unknown = unknown_keys(saved, now)
        if unknown:
            names = ", ".join(f"'{key}'" for key in unknown)
            raise ConfigError(
                f"run folder {folder} was saved with key{'s' if len(unknown) > 1 else ''} {names}, which this "
                "version does not know; start a new run"
            )
        keys = [key for key, _, _ in config_changes(saved, now)]
        raise ConfigError(
            f"resume={folder}: the config differs from the run's in {', '.join(keys)}; resume with the run's "
            f"overrides (see {folder / 'resolved_config.yaml'})"
        )


def _fingerprint(path: Path, folder: Path) -> dict[str, str]:
    path, folder = path.resolve(), folder.resolve()
    stored = path.relative_to(folder) if path.is_relative_to(folder) else path
    return {"path": str(stored), "sha256": file_sha256(path)}


def check_inputs(folder: Path, inputs: dict[str, dict[str, str]]) -> None:
    """Refuse, in one line, to resume when an input file the run recorded is missing or changed."""
    for label, record in inputs.items():
        path = folder / record["path"]  # an absolute stored path stays as it is
        if not path.is_file():
            raise CheckpointError(
                f"{label} {path} of the run at {folder} is missing; put it back, or start a new run without resume"
            )
        if file_sha256(path) != record["sha256"]:
            raise CheckpointError(
                f"{label} {path} has changed since the run at {folder} was checkpointed (its SHA-256 differs); "
                "put the original file back, or start a new run without resume"
            )


class RunCheckpointer:
    """Writes ``train_state.pt`` for one run: call :meth:`save` at the end of every epoch."""

    def __init__(self, out_dir: str | Path, cfg: DictConfig, config_name: str,
                 generator: torch.Generator | None = None, inputs: dict[str, str | Path] | None = None) -> None:
        self.folder = Path(out_dir)
        self.path = self.folder / STATE_FILE
        self.config_name = config_name
        self.identity = json.dumps(config_identity(cfg), sort_keys=True)
        self.generator = generator
        # Files the run reads and a resume must find unchanged, hashed once: {label: {path, sha256}}.
        # A path inside the run folder is kept relative to it (the folder may be moved).
        self.inputs = {label: _fingerprint(Path(path), self.folder) for label, path in (inputs or {}).items()}

    def save(self, epoch: int, parts: dict[str, Any]) -> None:
        """Write the run's state after ``epoch``: ``parts`` (tensors and plain values), the metrics
        rows written so far and the RNG states as they are now."""
        metrics = self.folder / METRICS_FILE
        rows = [line for line in metrics.read_text().splitlines() if line.strip()] if metrics.is_file() else []
        state = {
            "format": FORMAT,
            "entry": self.config_name,
            "epoch": int(epoch),
            "rows": rows,
            "rng": rng_state(self.generator),
            "config": self.identity,
            "inputs": self.inputs,
            "parts": parts,
        }
        atomic_save(state, self.path)


@dataclass
class RunState:
    """A run's ``train_state.pt``, checked against the config that resumes it."""

    folder: Path
    epoch: int
    parts: dict[str, Any]
    rows: list[str]
    rng: dict[str, Any]

    @classmethod
    def load(cls, cfg: DictConfig, config_name: str) -> RunState:
        """Read ``<cfg.resume>/train_state.pt``; one-line errors for every way it can be unusable."""
        command = COMMANDS[config_name]
        folder, state = read_state_file(cfg, STATE_FILE, FORMAT, command=command, unit="epoch", kind="run state",
                                        identity=config_identity, verify_config=False)
        if state["entry"] != config_name:
            other = COMMANDS.get(state["entry"], state["entry"])
            raise ConfigError(f"resume={folder} is a {other} run, not a {command} run; resume it with {other}")
        check_identity(cfg, folder, state, config_identity)
        check_inputs(folder, state.get("inputs", {}))  # states written before inputs were recorded have none
        return cls(folder, int(state["epoch"]), dict(state["parts"]), list(state["rows"]), state["rng"])

    def restore_training(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    ) -> None:
        """Load :func:`training_parts` back into ``model``, ``optimizer`` and ``scheduler``."""
        model.load_state_dict(self.parts["model"])
        optimizer.load_state_dict(self.parts["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(self.parts["scheduler"])

    def rewrite_metrics(self) -> None:
        """``metrics.jsonl`` as it was at the checkpoint: rows of later, unfinished epochs dropped.
        Call before the run's logger opens the file."""
        rewrite_metrics(self.folder, self.rows)

    def restore_rng(self, generator: torch.Generator | None = None) -> None:
        """Put the RNG states (and ``generator``'s) back as they were after the checkpointed epoch.
        Call last, right before the loop continues: building models consumes random numbers."""
        set_rng_state(self.rng, generator)
