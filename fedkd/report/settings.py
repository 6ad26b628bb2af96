"""What a comparison compares: the settings its runs share, read from their saved configs.

``report.md`` heads its table with them (dataset, model, partition, clients and the fraction
sampled per round, rounds, local epochs, seeds), so a report read later says what it measured. A
setting whose value differs between strategies (a strategy's own ``fraction_train``) is given per
strategy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fedkd.utils.run_logger import RUN_CONFIG

#: Datasets whose name alone does not say which data they are: the report adds ``dataset.root``.
OWN_DATA = ("image_folder", "arrays", "hf")


def partition_label(cfg: DictConfig) -> str:
    """``dirichlet(alpha=0.5, min_size=10)``: the partition function and its parameters."""
    part = cfg.partition
    name = str(part.get("_target_", "partition")).rsplit(".", 1)[-1]
    args = ", ".join(f"{k}={v}" for k, v in part.items() if not str(k).startswith("_"))
    return f"{name}({args})"


def _dataset(cfg: DictConfig) -> str:
    data = cfg.dataset
    text = str(data.name)
    if text in OWN_DATA:
        text += f" ({data.get('root') or data.get('hub')})"
    limits = [f"{k}={data.get(k)}" for k in ("max_train", "max_test", "image_size") if data.get(k) is not None]
    return f"{text}, {', '.join(limits)}" if limits else text


def _model(cfg: DictConfig) -> str:
    model = cfg.model
    text = str(model.get("name") or str(model.get("_target_", "?")).rsplit(".", 1)[-1])
    if cfg.get("client_models"):
        text += " (per-client models: client_models)"
    return text


#: The report's settings: label and how to read it from a run's config.
SETTINGS: tuple[tuple[str, Callable[[DictConfig], Any]], ...] = (
    ("dataset", _dataset),
    ("model", _model),
    ("partition", partition_label),
    ("clients", lambda c: c.num_clients),
    ("fraction sampled per round", lambda c: c.strategy.get("fraction_train", "-")),
    ("rounds", lambda c: c.rounds),
    ("local epochs", lambda c: c.local_epochs),
    ("evaluated on", lambda c: c.get("evaluate_on", "test")),
)


def _read(run_dir: Path) -> DictConfig | None:
    try:
        return OmegaConf.load(run_dir / RUN_CONFIG)
    except Exception:  # a run folder without its config (written by hand, or by an older version)
        return None


def settings_lines(run_dirs: Sequence[tuple[str, str, Path]]) -> list[str]:
    """Markdown bullet lines of the settings of the runs ``(strategy, seed folder, run folder)``;
    none when no run saved its config."""
    configs = [(strategy, cfg) for strategy, _, folder in run_dirs if (cfg := _read(folder)) is not None]
    if not configs:
        return []
    lines = []
    for label, read in SETTINGS:
        values: dict[str, list[str]] = {}
        for strategy, cfg in configs:
            try:
                value = str(read(cfg))
            except Exception:  # a key this run's config lacks
                value = "?"
            values.setdefault(strategy, [])
            if value not in values[strategy]:
                values[strategy].append(value)
        distinct = {v for vs in values.values() for v in vs}
        if len(distinct) == 1:
            lines.append(f"- {label}: {distinct.pop()}")
        else:
            lines.append(f"- {label}: " + "; ".join(f"{s} {' / '.join(vs)}" for s, vs in values.items()))
    seeds = sorted({seed.removeprefix("seed") for _, seed, _ in run_dirs}, key=lambda s: (len(s), s))
    lines.append(f"- seeds: {', '.join(seeds)}")
    return lines
