"""What every Hydra entry point shares: the config folder, one-line errors, one composition and its checks."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

from fedkd.cli.guard import compose_error, load_resume, preflight
from fedkd.cli.launch import compose, hydra_app, launch_job, single_run
from fedkd.config import CONF_DIR, register_schemas
from fedkd.errors import FedkdError
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


def hydra_entry(config_name: str, hands_resume: bool = True) -> Callable[[Task], Callable[..., object]]:
    """Turn ``task(cfg, resume)`` into a console entry point on ``conf/<config_name>.yaml``.

    ``resume`` is the state of the run ``resume=<folder>`` continues, read once
    (:func:`fedkd.cli.guard.load_resume`), or ``None``; with ``hands_resume=False`` the state is
    only checked and the task gets ``None`` (it reads the state where it runs). A
    :class:`FedkdError` raised by the task ends the process with its one-line message and exit
    code 2; ``debug=true`` re-raises it with the traceback.

    A command line of overrides is composed once (:mod:`fedkd.cli.launch`) and checked before Hydra
    writes into the run folder (:func:`fedkd.cli.guard.preflight`); one with Hydra's flags
    (``--help``, ``--cfg``, ``-m``...) goes to ``hydra.main``.
    """

    def decorate(task: Task) -> Callable[..., object]:
        @functools.wraps(task)
        def run(cfg: DictConfig, resume: Any = _UNREAD) -> object:
            quiet_libraries()
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
            if args or kwargs or not single_run(argv):
                return entry(*args, **kwargs)
            with hydra_app(CONF_DIR, run) as app:
                try:
                    try:
                        cfg = compose(app, config_name, argv)
                    except Exception as exc:
                        raise compose_error(config_name, exc) from None
                    # Before Hydra writes into the run folder: the folder is usable and holds no
                    # earlier run, or the run to resume is valid (fedkd.cli.guard).
                    state = preflight(config_name, cfg)
                except Exception as exc:
                    user_error = _user_error(exc)  # a check may build what Hydra's instantiate wraps
                    if user_error is None or "debug=true" in argv:
                        raise
                    fail(str(user_error))
                return launch_job(app, config_name, cfg, functools.partial(run, resume=state if hands_resume else None))

        return main

    return decorate
