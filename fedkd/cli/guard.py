"""Checks an entry point runs before Hydra writes anything: the config composes, the output folder is usable.

Hydra writes ``.hydra/*.yaml`` and ``<job>.log`` into the run folder before the task starts, and
prints multi-line messages for overrides it cannot apply. :func:`preflight` runs first, so

- an override that does not compose (unknown group option, wrong type, unknown key) ends with one
  ``fedkd: error:`` line instead of Hydra's report;
- an output folder that cannot be created or written is refused before anything is written;
- an output folder that already holds a run is refused (its files keep their bytes), unless the
  config resumes that run (``resume=<folder>``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from fedkd.config import check_composed
from fedkd.errors import ConfigError, FedkdError

#: Files whose presence at the top of a folder means a run already wrote there.
RUN_MARKERS = ("summary.json", "model.pt", "student.pt", "teacher.pt", "generator.pt", "server_state.pt", "train_state.pt")


def check_resume(config_name: str, cfg: DictConfig) -> None:
    """Load the run state ``cfg.resume`` points at with the entry point's own reader, which raises
    a one-line :class:`FedkdError` when the folder holds no run, a damaged state, another config or
    an input file (a distillation's teacher) changed since the checkpoint.

    ``fedkd-sim`` resumes from the server's ``server_state.pt`` (:mod:`fedkd.federated.resume`);
    ``fedkd-train`` and ``fedkd-distill`` from ``train_state.pt`` (:mod:`fedkd.utils.run_state`).
    Imported here, only when resuming: the federated module pulls in Flower.
    """
    if config_name == "sim":
        from fedkd.federated.resume import ResumeState

        ResumeState.load(cfg)
    else:
        from fedkd.utils.run_state import RunState

        RunState.load(cfg, config_name)


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


def compose_checked(config_dir: str, config_name: str, overrides: Sequence[str]) -> DictConfig:
    """Compose ``config_name`` with ``overrides`` (and Hydra's own config); one-line error when it fails."""
    from fedkd.config import register_schemas

    register_schemas()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    except Exception as exc:  # Hydra's and OmegaConf's errors: missing option, wrong type, bad syntax
        reason = _one_line(str(exc)) or type(exc).__name__
        if exc.__cause__ is not None and "\n" not in str(exc).strip():  # "Error merging override x=y": why
            reason = f"{reason}; {_one_line(str(exc.__cause__), 150)}"
        raise ConfigError(
            f"the overrides do not fit conf/{config_name}.yaml ({reason}); fix the override "
            f"(see conf/{config_name}.yaml and its groups, or --help)"
        ) from None


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


def preflight(config_dir: str, config_name: str, argv: Sequence[str]) -> list[str]:
    """Check the command line of a Hydra entry before Hydra runs; raise :class:`FedkdError` on a problem.

    Returns overrides to add: with ``resume=DIR`` the run continues in ``DIR``, so Hydra's run
    folder becomes ``DIR`` and Hydra's own files go to ``DIR/.hydra-resume`` (the run's
    ``.hydra/`` keeps the original command). Command lines with Hydra flags (``--help``,
    ``--cfg``, ``-m``...) are left to Hydra.
    """
    if any(arg.startswith("-") for arg in argv):
        return []
    cfg = compose_checked(config_dir, config_name, argv)
    check_composed(config_name, cfg)  # every key's type and range, those of option nodes too
    resume = cfg.get("resume")
    if resume:
        folder = Path(str(resume)).expanduser().resolve()
        check_resume(config_name, cfg)  # a folder that holds no run, a damaged state file, another config
        if any(arg.startswith("hydra.run.dir=") for arg in argv):
            given = Path(str(cfg.hydra.run.dir)).expanduser().resolve()
            if given != folder:
                raise ConfigError(
                    f"resume={folder} continues that run in its own folder, but hydra.run.dir={given}; leave hydra.run.dir out"
                )
        check_writable(folder)
        extra = [] if any(arg.startswith("hydra.run.dir=") for arg in argv) else [f"hydra.run.dir={folder}"]
        return [*extra, "hydra.output_subdir=.hydra-resume"]
    try:
        out = Path(str(cfg.hydra.run.dir)).expanduser()
    except Exception:  # an unresolvable run dir: Hydra reports it itself
        return []
    check_output_dir(out.resolve())
    return []
