"""``fedkd-compare``: run strategies on the same data, partition, seeds and rounds; report them.

    fedkd-compare strategies=[fedavg,fedftg] seeds=[0,1,2] \
        "overrides=['dataset=fashion_mnist','partition.alpha=0.1','rounds=10']"
    fedkd-compare report_only=outputs/compare/<time>     # re-render from finished runs
    fedkd-compare strategies=[fedavg,ftg_global] \
        "+strategy_overrides.ftg_global=[strategy=fedftg,strategy.global_teacher_weight=0.5]"

A name in ``strategies`` that is not an option of ``conf/strategy/`` is a variant: its
``strategy_overrides`` entry names the strategy (``strategy=fedftg``) and its settings, and its
runs go under its own name.

Every run goes to ``<out>/runs/<strategy>/seed<k>/`` (its own metrics, TensorBoard events,
checkpoint, summary), so ``tensorboard --logdir <out>/runs`` shows them side by side. A run
whose ``summary.json`` exists is not run again: an interrupted comparison continues where it
stopped. A run folder whose saved config (``resolved_config.yaml``) differs from the one composed
now in a key that changes results is refused before anything runs, naming the keys; with
``rerun_changed=true`` it moves to ``<out>/stale/<strategy>/seed<k>.<n>/`` and runs again. The
report (``report.md``, ``report.json``, ``accuracy.png``) is written at the end.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fedkd.cli.common import hydra_entry, hydra_output_dir
from fedkd.config import CompareConfig, check_ranges
from fedkd.errors import ConfigError
from fedkd.report.compare import render
from fedkd.utils.run_logger import RUN_CONFIG, SUMMARY_FILE
from fedkd.utils.run_state import config_changes, config_identity

log = logging.getLogger("fedkd.compare")

#: Keys of a run's config that do not change its results, so a run kept from earlier may have had
#: other values: where and how it ran (device, Ray, timeouts), what it logged, how it was resumed,
#: the evaluation batch, whether data could be downloaded. Everything else counts -- ``rounds``
#: too (the final accuracy is the last round's), and ``dataset.root`` (an image folder's root is
#: its data). Dotted keys name keys of nested nodes.
NOT_COMPARED = (
    "hydra", "resume", "debug", "tensorboard", "device", "backend", "client_resources", "node_timeout",
    "round_timeout", "eval_batch_size", "dataset.download",
)
#: Where ``rerun_changed=true`` moves a run made with another config (never deleted).
STALE_DIR = "stale"
#: Changed keys the refusal names before "and N more".
SHOWN_CHANGES = 4


@dataclass
class PlannedRun:
    """One (strategy, seed) run of the comparison: its folder, config and state."""

    strategy: str
    seed: int
    folder: Path
    cfg: DictConfig
    changes: list[tuple[str, Any, Any]]  # saved -> now, for a folder that holds a run made with another config

    @property
    def finished(self) -> bool:
        return (self.folder / SUMMARY_FILE).exists()


def _identity(cfg: DictConfig) -> dict[str, Any]:
    """The config of a run as compared: :func:`config_identity` without :data:`NOT_COMPARED`."""
    identity = config_identity(cfg, tuple(k for k in NOT_COMPARED if "." not in k))
    for dotted in (k for k in NOT_COMPARED if "." in k):
        *parents, leaf = dotted.split(".")
        node = identity
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return identity


def saved_changes(folder: Path, cfg: DictConfig) -> list[tuple[str, Any, Any]]:
    """How ``cfg`` differs from the config saved in the run folder ``folder`` (none saved: no change)."""
    saved = folder / RUN_CONFIG
    if not saved.is_file():
        return []
    return config_changes(_identity(OmegaConf.load(saved)), _identity(cfg))


def plan(cfg: DictConfig, root: Path) -> list[PlannedRun]:
    """Every (strategy, seed) run of ``cfg`` under ``root/runs``, its config composed now."""
    from fedkd.federated.config import compose_sim_config

    if not cfg.strategies or not cfg.seeds:
        raise ConfigError(
            "strategies and seeds must each name at least one entry; e.g. strategies=[fedavg,fedftg] seeds=[0]"
        )
    runs = []
    for strategy in cfg.strategies:
        extra = list(cfg.strategy_overrides.get(strategy, []))
        choice = next((o for o in extra if o.startswith("strategy=")), f"strategy={strategy}")
        extra = [o for o in extra if o != choice]
        for seed in cfg.seeds:
            folder = root / "runs" / str(strategy) / f"seed{seed}"
            sim_cfg = compose_sim_config([choice, f"seed={seed}", *cfg.overrides, *extra])
            runs.append(PlannedRun(str(strategy), int(seed), folder, sim_cfg, saved_changes(folder, sim_cfg)))
    return runs


def _shown(value: Any) -> str:
    """A saved or new value, short: an option node by its name or target."""
    if isinstance(value, dict):
        value = value.get("name") or str(value.get("_target_", "{...}")).rsplit(".", 1)[-1]
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_stale(runs: list[PlannedRun], root: Path, rerun_changed: bool) -> None:
    """Refuse, in one line, runs kept from earlier that were made with another config."""
    stale = [run for run in runs if run.changes]
    if not stale or rerun_changed:
        return
    first = stale[0]
    shown = ", ".join(f"{key} {_shown(old)} -> {_shown(new)}" for key, old, new in first.changes[:SHOWN_CHANGES])
    more = len(first.changes) - SHOWN_CHANGES
    others = f" (and {len(stale) - 1} more run{'s' if len(stale) > 2 else ''})" if len(stale) > 1 else ""
    raise ConfigError(
        f"{first.folder.relative_to(root)}{others} in {root} was made with another config: "
        f"{shown}{f' and {more} more' if more > 0 else ''}; write the comparison to a new folder "
        f"(hydra.run.dir=PATH), or set rerun_changed=true to run them again (the old runs move to {root / STALE_DIR})"
    )


def move_aside(run: PlannedRun, root: Path) -> Path:
    """Move a run made with another config to ``root/stale/<strategy>/seed<k>.<n>`` (the first free ``n``)."""
    parent = root / STALE_DIR / run.strategy
    parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while (parent / f"{run.folder.name}.{n}").exists():
        n += 1
    target = parent / f"{run.folder.name}.{n}"
    shutil.move(str(run.folder), str(target))
    return target


def check_before_start(cfg: DictConfig) -> None:
    """The checks of ``fedkd-compare`` before Hydra writes into the comparison's folder: the ranges,
    and no run kept from earlier made with another config (unless ``rerun_changed``)."""
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    check_ranges(cfg, CompareConfig)
    if cfg.report_only:
        return
    root = Path(str(cfg.hydra.run.dir)).expanduser()
    backup = get_gh_backup()  # composing the runs' configs replaces the entry point's Hydra
    try:
        check_stale(plan(cfg, root), root, bool(cfg.get("rerun_changed", False)))
    finally:
        restore_gh_from_backup(backup)


def run_all(cfg: DictConfig, root: Path) -> None:
    """Run every (strategy, seed) pair not finished yet under ``root/runs``."""
    from fedkd.apps.simulation import simulate
    from fedkd.federated.resume import STATE_FILE

    runs = plan(cfg, root)
    check_stale(runs, root, bool(cfg.get("rerun_changed", False)))
    for run in runs:
        if run.changes:
            log.info("%s seed %s: made with another config, moved to %s", run.strategy, run.seed, move_aside(run, root))
        if run.finished:
            log.info("%s seed %s: finished earlier, kept", run.strategy, run.seed)
            continue
        sim_cfg = run.cfg
        if (run.folder / STATE_FILE).exists():  # interrupted after a complete round: continue it
            sim_cfg = OmegaConf.merge(sim_cfg, {"resume": str(run.folder)})
            log.info("%s seed %s: interrupted earlier, resuming", run.strategy, run.seed)
        log.info("%s seed %s -> %s", run.strategy, run.seed, run.folder)
        simulate(sim_cfg, run.folder)


def compare(cfg: DictConfig, root: Path) -> str:
    check_ranges(cfg, CompareConfig)
    if cfg.report_only:
        root = Path(cfg.report_only).expanduser()
    else:
        run_all(cfg, root)
    table = render(root, float(cfg.target_accuracy), title=cfg.title)
    log.info("report: %s\n%s", root / "report.md", table)
    print(table)
    return table


@hydra_entry("compare", check=check_before_start)
def main(cfg: DictConfig, resume: None) -> None:
    """``fedkd-compare`` (``resume`` is always ``None``: an interrupted comparison continues by itself)."""
    compare(cfg, hydra_output_dir())


if __name__ == "__main__":
    main()
