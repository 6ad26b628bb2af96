"""``fedkd-sim``: federated training on Flower's simulation engine.

    fedkd-sim strategy=fedavg dataset=fashion_mnist partition.alpha=0.1 num_clients=20 rounds=50
    fedkd-sim strategy=fedprox strategy.proximal_mu=0.1 partition=iid

The same config runs on a real Flower deployment with ``flwr run .`` (see docs/federated.md).
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fedkd.apps.simulation import simulate
from fedkd.cli.common import hydra_entry


@hydra_entry("sim", hands_resume=False)
def main(cfg: DictConfig, resume: None) -> None:
    """``fedkd-sim``. The server state of ``resume=`` is checked before Hydra writes anything, but
    not handed on (``resume`` is ``None``): the ServerApp reads it where it runs, as under ``flwr run``."""
    simulate(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
