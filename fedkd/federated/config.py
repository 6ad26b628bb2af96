"""Compose the ``fedkd-sim`` configuration, the same way for both launch paths.

``fedkd-sim a=1 b=2`` (Hydra) and ``flwr run . -c 'overrides="a=1 b=2"'`` (Flower) must run the same
experiment. The first composes ``conf/sim.yaml`` through ``hydra.main``; the second carries the
same override strings in Flower's run config, and :func:`config_from_run_config` composes them
with :func:`compose_sim_config` (Hydra's compose API, same search path, same schema).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from fedkd.config import CONF_DIR, register_schemas
from fedkd.errors import ConfigError

CONFIG_NAME = "sim"

# Keys of [tool.flwr.app.config] in pyproject.toml (Flower's run config).
RUN_CONFIG_OVERRIDES = "overrides"  # Hydra overrides, space separated: "dataset=digits rounds=2"
RUN_CONFIG_OUT_DIR = "out-dir"  # where the server writes metrics, checkpoint, summary


def compose_sim_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/sim.yaml`` with Hydra ``overrides`` (``["strategy=fedprox", "rounds=5"]``).

    Raises :class:`ConfigError` with Hydra's one-line reason when an override does not apply.
    """
    register_schemas()
    # compose() needs its own GlobalHydra; one left by an earlier compose would refuse to start.
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(config_name=CONFIG_NAME, overrides=list(overrides))
    except HydraException as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ConfigError(f"cannot compose the fedkd-sim config ({reason}); fix the override") from None


def parse_overrides(text: str) -> list[str]:
    """Split a run-config ``overrides`` string into Hydra overrides (shell-style quoting kept)."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"run config '{RUN_CONFIG_OVERRIDES}' cannot be split ({exc}); balance its quotes") from None


def config_from_run_config(run_config: Mapping[str, Any]) -> DictConfig:
    """The config a ``flwr run`` app uses: ``conf/sim.yaml`` composed with ``run_config["overrides"]``."""
    return compose_sim_config(parse_overrides(str(run_config.get(RUN_CONFIG_OVERRIDES, ""))))


def plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python containers (what is compared, pickled, written)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
