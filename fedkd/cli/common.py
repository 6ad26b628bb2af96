"""What every Hydra entry point shares: the config folder, one-line errors, the preflight."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig

from fedkd.cli.guard import preflight
from fedkd.config import CONF_DIR, register_schemas
from fedkd.config_renames import renamed_overrides
from fedkd.errors import FedkdError
from fedkd.utils.run_context import RunContext, hydra_output_dir, quiet_libraries

__all__ = ["CONF_DIR", "RunContext", "fail", "hydra_entry", "hydra_output_dir", "quiet_libraries"]

log = logging.getLogger("fedkd")


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


def hydra_entry(config_name: str) -> Callable[[Callable[[DictConfig], object]], Callable[[], None]]:
    """Turn ``task(cfg)`` into a console entry point on ``conf/<config_name>.yaml``.

    A :class:`FedkdError` raised by the task ends the process with its one-line message and exit
    code 2; ``debug=true`` re-raises it with the traceback.
    """

    def decorate(task: Callable[[DictConfig], object]) -> Callable[[], None]:
        @functools.wraps(task)
        def run(cfg: DictConfig) -> object:
            quiet_libraries()
            try:
                return task(cfg)
            except Exception as exc:
                user_error = _user_error(exc)
                if user_error is None or cfg.get("debug", False):
                    raise
                fail(str(user_error))

        register_schemas()
        entry = hydra.main(config_path=CONF_DIR, config_name=config_name, version_base="1.3")(run)

        @functools.wraps(entry)
        def checked(*args: object, **kwargs: object) -> object:
            # Before Hydra writes into the run folder: the overrides compose, the folder is usable
            # and holds no earlier run (fedkd.cli.guard).
            if not args and not kwargs:
                argv, notices = renamed_overrides(config_name, sys.argv[1:])
                for notice in notices:
                    print(notice, file=sys.stderr)
                sys.argv[1:] = argv
                try:
                    sys.argv.extend(preflight(CONF_DIR, config_name, argv))
                except FedkdError as exc:
                    if "debug=true" in argv:
                        raise
                    fail(str(exc))
            return entry(*args, **kwargs)

        return checked

    return decorate
