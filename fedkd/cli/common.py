"""What every Hydra entry point shares: the config folder, one-line errors, one composition and its checks."""

from __future__ import annotations

import functools
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from fedkd.cli.guard import compose_error, load_resume, preflight
from fedkd.cli.help import help_text, wants_help
from fedkd.cli.hints import override_error
from fedkd.cli.launch import compose, hydra_app, launch_job, single_run
from fedkd.config import CONF_DIR, register_schemas
from fedkd.errors import FedkdError
from fedkd.utils import interrupt
from fedkd.utils.run_context import RunContext, hydra_output_dir, quiet_libraries

__all__ = ["CONF_DIR", "RunContext", "fail", "hydra_entry", "hydra_output_dir", "quiet_libraries"]

log = logging.getLogger("fedkd")

#: A task's ``resume`` before the run state was read (a run started by ``hydra.main`` itself).
_UNREAD = object()


def fail(message: str) -> None:
    """Print one line to stderr and exit 2: the end of every user-fixable error."""
    print(f"fedkd: error: {message}", file=sys.stderr)
    sys.exit(2)


def _user_error(exc: BaseException | None) -> FedkdError | None:
    """The :class:`FedkdError` behind ``exc``, if any (Hydra's ``instantiate`` wraps errors)."""
    while exc is not None:
        if isinstance(exc, FedkdError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


Task = Callable[[DictConfig, Any], object]

#: What a run that failed before writing results leaves in its folder besides the job's log and
#: empty folders: Hydra's config files and what a run writes before its first round or epoch.
NO_RESULTS = (".hydra", ".hydra-resume", "resolved_config.yaml", "partition.png")
#: The most bytes of a TensorBoard events file that holds no event yet (its header: 88 bytes).
EMPTY_EVENTS = 128


def _run_folder(cfg: DictConfig) -> Path | None:
    """The folder Hydra is about to write the run into, or ``None`` when it does not resolve here."""
    try:
        return Path(str(cfg.hydra.run.dir)).expanduser().resolve()
    except Exception:
        return None


def discard_unused(folder: Path, job_log: str) -> bool:
    """Remove ``folder`` (a run folder this start created) when it holds nothing but
    :data:`NO_RESULTS`, the job's log ``job_log``, an empty ``metrics.jsonl``, TensorBoard files
    without events and empty folders; return whether it was removed. A folder holding anything
    else is kept as it is."""
    if not folder.is_dir():
        return False
    for item in folder.rglob("*"):
        top = item.relative_to(folder).parts[0]
        if item.is_dir() or top in NO_RESULTS or (item.parent == folder and item.name == job_log):
            continue
        if item.parent == folder and item.name == "metrics.jsonl" and item.stat().st_size == 0:
            continue
        if top == "tb" and item.name.startswith("events.out.tfevents") and item.stat().st_size <= EMPTY_EVENTS:
            continue
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def hydra_entry(config_name: str, hands_resume: bool = True,
                check: Callable[[DictConfig], None] | None = None) -> Callable[[Task], Callable[..., object]]:
    """Turn ``task(cfg, resume)`` into a console entry point on ``conf/<config_name>.yaml``.

    ``resume`` is the state of the run ``resume=<folder>`` continues, read once
    (:func:`fedkd.cli.guard.load_resume`), or ``None``; with ``hands_resume=False`` the state is
    only checked and the task gets ``None`` (it reads the state where it runs). A
    :class:`FedkdError` raised by the task ends the process with its one-line message and exit
    code 2; ``debug=true`` re-raises it with the traceback.

    A command line of overrides is composed once (:mod:`fedkd.cli.launch`) and checked before Hydra
    writes into the run folder (:func:`fedkd.cli.guard.preflight`); one with Hydra's flags
    (``--cfg``, ``-m``, ``--hydra-help``...) goes to ``hydra.main``; ``--help`` prints the tool's own
    page (:mod:`fedkd.cli.help`). ``check(cfg)``, if given, is the entry point's own check of the
    composed config, after the shared ones and before Hydra writes. A start that fails before the
    run wrote results leaves no run folder behind (:func:`discard_unused`); a folder that existed
    before the start is never removed.
    """

    def decorate(task: Task) -> Callable[..., object]:
        @functools.wraps(task)
        def run(cfg: DictConfig, resume: Any = _UNREAD) -> object:
            quiet_libraries()
            interrupt.describe(_run_info(config_name))  # what a Ctrl-C's message names
            try:
                if resume is _UNREAD:  # started by hydra.main: no preflight read the state
                    resume = load_resume(config_name, cfg) if hands_resume else None
                return task(cfg, resume)
            except Exception as exc:
                user_error = _user_error(exc)
                if user_error is None or cfg.get("debug", False):
                    raise
                fail(str(user_error))

        entry = hydra.main(config_path=CONF_DIR, config_name=config_name, version_base="1.3")(run)

        @functools.wraps(entry)
        def main(*args: object, **kwargs: object) -> object:
            register_schemas()
            argv = sys.argv[1:]
            if not args and not kwargs and wants_help(argv):
                return print_help(run, config_name, [a for a in argv if not a.startswith("-")])
            if args or kwargs or not single_run(argv):
                return entry(*args, **kwargs)
            with hydra_app(CONF_DIR, run) as app:
                try:
                    try:
                        cfg = compose(app, config_name, argv)
                    except Exception as exc:
                        again = functools.partial(compose, app, config_name)
                        raise override_error(again, config_name, argv, exc) or compose_error(config_name, exc) from None
                    # Before Hydra writes into the run folder: the folder is usable and holds no
                    # earlier run, or the run to resume is valid (fedkd.cli.guard).
                    state = preflight(config_name, cfg)
                    if check is not None:
                        check(cfg)
                except Exception as exc:
                    user_error = _user_error(exc)  # a check may build what Hydra's instantiate wraps
                    if user_error is None or "debug=true" in argv:
                        raise
                    fail(str(user_error))
                folder = _run_folder(cfg)
                created = folder is not None and not folder.exists()
                try:
                    return launch_job(
                        app, config_name, cfg, functools.partial(run, resume=state if hands_resume else None)
                    )
                except BaseException:  # a one-line error (exit 2), a crash, Ctrl-C
                    if created and discard_unused(folder, f"{cfg.hydra.job.name}.log"):
                        log.debug("removed %s: the run wrote nothing", folder)
                    raise

        return interruptible(main)

    return decorate


def _run_info(config_name: str) -> interrupt.RunInfo:
    """The running job as a Ctrl-C's message names it: its folder and its command line's overrides."""
    from hydra.core.hydra_config import HydraConfig

    return interrupt.RunInfo(config_name, hydra_output_dir(), list(HydraConfig.get().overrides.task))


def interruptible(main: Callable[..., object]) -> Callable[..., object]:
    """``main`` under the Ctrl-C handler (:mod:`fedkd.utils.interrupt`): the first Ctrl-C stops the
    run cleanly and ends it with one line naming the last complete epoch or round and the command
    that resumes it, exit code 130; a second one exits at once."""

    @functools.wraps(main)
    def wrapped(*args: object, **kwargs: object) -> object:
        interrupt.describe(None)
        with interrupt.handle_sigint():
            try:
                return main(*args, **kwargs)
            except KeyboardInterrupt:
                interrupt.exit_interrupted()

    return wrapped


def print_help(task: Callable[..., Any], config_name: str, overrides: list[str]) -> None:
    """Print the entry point's ``--help`` page, its config composed with ``overrides`` (or without
    them when they do not compose)."""
    with hydra_app(CONF_DIR, task) as app:
        try:
            cfg = compose(app, config_name, overrides)
        except Exception:
            cfg = compose(app, config_name, [])
        print(help_text(config_name, cfg, app.config_loader.get_group_options))
