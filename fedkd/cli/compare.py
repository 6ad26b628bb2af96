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
stopped. The report (``report.md``, ``report.json``, ``accuracy.png``) is written at the end.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from fedkd.cli.common import hydra_entry, hydra_output_dir
from fedkd.config import CompareConfig, check_ranges
from fedkd.errors import ConfigError
from fedkd.report.compare import render
from fedkd.utils.run_logger import SUMMARY_FILE

log = logging.getLogger("fedkd.compare")


def run_all(cfg: DictConfig, root: Path) -> None:
    """Run every (strategy, seed) pair not finished yet under ``root/runs``."""
    from fedkd.apps.simulation import simulate
    from fedkd.federated.config import compose_sim_config
    from fedkd.federated.resume import STATE_FILE

    if not cfg.strategies or not cfg.seeds:
        raise ConfigError(
            "strategies and seeds must each name at least one entry; e.g. strategies=[fedavg,fedftg] seeds=[0]"
        )
    for strategy in cfg.strategies:
        for seed in cfg.seeds:
            run_dir = root / "runs" / str(strategy) / f"seed{seed}"
            if (run_dir / SUMMARY_FILE).exists():
                log.info("%s seed %s: finished earlier, kept", strategy, seed)
                continue
            extra = list(cfg.strategy_overrides.get(strategy, []))
            choice = next((o for o in extra if o.startswith("strategy=")), f"strategy={strategy}")
            extra = [o for o in extra if o != choice]
            if (run_dir / STATE_FILE).exists():  # interrupted after a complete round: continue it
                extra.append(f"resume={run_dir}")
                log.info("%s seed %s: interrupted earlier, resuming", strategy, seed)
            sim_cfg = compose_sim_config([choice, f"seed={seed}", *cfg.overrides, *extra])
            log.info("%s seed %s -> %s", strategy, seed, run_dir)
            simulate(sim_cfg, run_dir)


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


@hydra_entry("compare")
def main(cfg: DictConfig, resume: None) -> None:
    """``fedkd-compare`` (``resume`` is always ``None``: an interrupted comparison continues by itself)."""
    compare(cfg, hydra_output_dir())


if __name__ == "__main__":
    main()
