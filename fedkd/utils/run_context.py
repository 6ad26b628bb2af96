"""The per-run essentials every entry point and the ServerApp share: output folder, device,
seeded generator, metrics logger; and quiet third-party loggers."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fedkd.utils.device import resolve_device
from fedkd.utils.run_logger import RunLogger
from fedkd.utils.seeding import seed_everything


def quiet_libraries() -> None:
    """Keep Flower's and Ray's chatter off the console (Hydra routes the root logger there)."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    for name in ("flwr", "ray", "filelock", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.WARNING)


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
