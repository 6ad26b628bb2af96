"""Checks an entry point runs before Hydra writes anything: the config composes, the output folder is usable.

Hydra writes ``.hydra/*.yaml`` and ``<job>.log`` into the run folder before the task starts, and
prints multi-line messages for overrides it cannot apply. :func:`fedkd.cli.launch.launch_job`
composes the config once; between composing and running the job, so

- an override that does not compose (unknown group option, wrong type, unknown key) ends with one
  ``fedkd: error:`` line instead of Hydra's report (:func:`compose_error`);
- an output folder that cannot be created or written is refused before anything is written;
- an output folder that already holds a run is refused (its files keep their bytes), unless the
  config resumes that run (``resume=<folder>``), whose state :func:`preflight` reads once and
  returns for the job.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, read_write

from fedkd.cli.inputs import check_run_inputs
from fedkd.config import check_composed
from fedkd.errors import ConfigError, FedkdError

#: Files whose presence at the top of a folder means a run already wrote there.
RUN_MARKERS = (
    "summary.json", "model.pt", "student.pt", "teacher.pt", "generator.pt", "server_state.pt", "train_state.pt",
)


#: The entry points that resume a run (``resume=<folder>``).
RESUMABLE = ("train", "centralized", "sim")


def load_resume(config_name: str, cfg: DictConfig) -> Any:
    """The run state ``cfg.resume`` points at (``None`` without ``resume``), read with the entry
    point's own reader, which raises a one-line :class:`FedkdError` when the folder holds no run, a
    damaged state, another config or an input file (a distillation's teacher) changed since the
    checkpoint.

    ``fedkd-sim`` resumes from the server's ``server_state.pt`` (:mod:`fedkd.federated.resume`);
    ``fedkd-train`` and ``fedkd-distill`` from ``train_state.pt`` (:mod:`fedkd.utils.run_state`).
    Imported here, only when resuming: the federated module pulls in Flower.
    """
    if config_name not in RESUMABLE or not cfg.get("resume"):
        return None
    if config_name == "sim":
        from fedkd.federated.resume import ResumeState

        return ResumeState.load(cfg)
    from fedkd.utils.run_state import RunState

    return RunState.load(cfg, config_name)


def holds_run(folder: Path) -> str | None:
    """The first file showing that ``folder`` holds a (finished or interrupted) run, else ``None``."""
    if not folder.is_dir():
        return None
    for name in RUN_MARKERS:
        if (folder / name).exists():
            return name
    metrics = folder / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        return metrics.name
    return None


def check_writable(folder: Path) -> None:
    """Raise a :class:`FedkdError` when ``folder`` cannot be created or written to."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise FedkdError(
            f"output folder {folder} cannot be created: {probe} is a file, not a folder; "
            "choose another folder with hydra.run.dir=PATH"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise FedkdError(
            f"output folder {folder} cannot be written ({probe} is not writable); "
            "choose a writable folder with hydra.run.dir=PATH"
        )


def check_output_dir(folder: Path, resuming: bool = False) -> None:
    """The output folder must be writable and, unless ``resuming``, hold no earlier run."""
    check_writable(folder)
    if resuming:
        return
    marker = holds_run(folder)
    if marker is not None:
        raise FedkdError(
            f"output folder {folder} already holds a run ({marker}) and would be overwritten; "
            "choose a new folder with hydra.run.dir=PATH, or continue that run with resume=PATH where supported"
        )


def compose_error(config_name: str, exc: Exception) -> ConfigError:
    """The one-line error for overrides that do not compose (Hydra's and OmegaConf's errors:
    missing option, wrong type, unknown key, bad syntax)."""
    reason = _one_line(str(exc)) or type(exc).__name__
    if exc.__cause__ is not None and "\n" not in str(exc).strip():  # "Error merging override x=y": why
        reason = f"{reason}; {_one_line(str(exc.__cause__), 150)}"
    return ConfigError(
        f"the overrides do not fit conf/{config_name}.yaml ({reason}); fix the override "
        f"(see conf/{config_name}.yaml and its groups, or --help)"
    )


def _one_line(text: str, limit: int = 300) -> str:
    """Hydra's multi-line report as one line: the first two lines, and a list that follows a colon."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    head = lines[:2]
    if head[-1].endswith(":") and len(lines) > len(head):  # "Available options in 'dataset':" + one per line
        options = []
        for line in lines[len(head):]:
            if line.endswith(":"):  # the next section ("Config search path:")
                break
            if not line.endswith("_schema"):  # typed schemas Hydra lists beside the real options
                options.append(line)
        head[-1] = f"{head[-1]} {', '.join(options)}"
    return "; ".join(head)[:limit]


def _overridden(cfg: DictConfig, key: str) -> bool:
    """Whether the command line set Hydra's ``key`` (``hydra.run.dir``...)."""
    return any(item.split("=", 1)[0].lstrip("+~") == key for item in cfg.hydra.overrides.hydra)


def _set_hydra(cfg: DictConfig, values: dict[str, str]) -> None:
    """Set keys of the composed config's ``hydra`` node, recorded in ``hydra.overrides.hydra``
    (``.hydra/hydra.yaml``) as if given on the command line, before the run mode Hydra adds last."""
    with read_write(cfg.hydra):
        recorded = list(cfg.hydra.overrides.hydra)
        at = len(recorded) - 1 if recorded and recorded[-1].startswith("hydra.mode=") else len(recorded)
        for key, value in values.items():
            OmegaConf.update(cfg.hydra, key, value, force_add=False)
            recorded.insert(at, f"hydra.{key}={value}")
            at += 1
        cfg.hydra.overrides.hydra = recorded


def preflight(config_name: str, cfg: DictConfig) -> Any:
    """Check the composed config of a Hydra entry before Hydra writes anything; raise
    :class:`FedkdError` on a problem. Returns the run state to resume (:func:`load_resume`), read
    once here and handed to the job, or ``None``.

    With ``resume=DIR`` the run continues in ``DIR``: Hydra's run folder becomes ``DIR`` and Hydra's
    own files go to ``DIR/.hydra-resume`` (the run's ``.hydra/`` keeps the original command).
    """
    check_composed(config_name, cfg)  # every key's type and range, those of option nodes too
    resume = cfg.get("resume")
    if resume:
        folder = Path(str(resume)).expanduser().resolve()
        state = load_resume(config_name, cfg)  # a folder that holds no run, a damaged state file, another config
        given_dir = _overridden(cfg, "hydra.run.dir")
        if given_dir:
            given = Path(str(cfg.hydra.run.dir)).expanduser().resolve()
            if given != folder:
                raise ConfigError(
                    f"resume={folder} continues that run in its own folder, but hydra.run.dir={given}; "
                    "leave hydra.run.dir out"
                )
        check_writable(folder)
        _set_hydra(cfg, {**({} if given_dir else {"run.dir": str(folder)}), "output_subdir": ".hydra-resume"})
        return state
    try:
        out = Path(str(cfg.hydra.run.dir)).expanduser()
    except Exception:  # an unresolvable run dir: Hydra reports it itself
        return None
    check_output_dir(out.resolve())
    check_run_inputs(config_name, cfg)  # data and models (fedkd.cli.inputs): before the run folder exists
    return None
