"""What every Hydra entry point shares: config path, one-line errors, run context."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fedkd.cli.guard import preflight
from fedkd.config import register_schemas
from fedkd.errors import FedkdError
from fedkd.utils.device import resolve_device
from fedkd.utils.run_logger import RunLogger
from fedkd.utils.seeding import seed_everything

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")

log = logging.getLogger("fedkd")


def quiet_libraries() -> None:
    """Keep Flower's and Ray's chatter off the console (Hydra routes the root logger there)."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    for name in ("flwr", "ray", "filelock", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.WARNING)


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
                argv = sys.argv[1:]
                try:
                    sys.argv.extend(preflight(CONF_DIR, config_name, argv))
                except FedkdError as exc:
                    if "debug=true" in argv:
                        raise
                    fail(str(exc))
            return entry(*args, **kwargs)

        return checked

    return decorate


def hydra_output_dir() -> Path:
    """The current Hydra run's output folder."""
    return Path(HydraConfig.get().runtime.output_dir)


@dataclass
class RunContext:
    """Per-run essentials: output folder, device, seeded generator and the metrics logger."""

    cfg: DictConfig
    out_dir: Path
    device: torch.device
    generator: torch.Generator
    logger: RunLogger

    @classmethod
    def create(cls, cfg: DictConfig, out_dir: str | Path | None = None) -> RunContext:
        out = Path(out_dir) if out_dir is not None else hydra_output_dir()
        device = resolve_device(cfg.device)
        generator = seed_everything(cfg.seed)
        logger = RunLogger(out, tensorboard=cfg.get("tensorboard", True))
        # Hydra keeps the unresolved config in .hydra/; scripts want the values that ran.
        (out / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        return cls(cfg=cfg, out_dir=out, device=device, generator=generator, logger=logger)
