"""Compare strategies over seeds from finished run folders.

Layout read (and written by ``fedkd-compare``)::

    <root>/runs/<strategy>/seed<k>/metrics.jsonl   one row per round (``step`` = round)
    <root>/runs/<strategy>/seed<k>/summary.json
    <root>/runs/<strategy>/seed<k>/tb/             so ``tensorboard --logdir <root>/runs`` shows them side by side

The report: ``report.md`` and ``report.json`` (final accuracy mean ± std over seeds, rounds to a
target accuracy, server and client seconds per round) and ``accuracy.png`` (test accuracy per
round, mean with a min-max band over seeds); ``report.md`` first lists the settings compared
(:mod:`fedkd.report.settings`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedkd.errors import FedkdError
from fedkd.report.plots import integer_x_ticks, pyplot
from fedkd.report.settings import settings_lines
from fedkd.utils.run_logger import METRICS_FILE, read_metrics

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# Per-round keys the federated runs write (see fedkd/federated/metrics.py).
ACCURACY = "test_accuracy"
HOLDOUT_ACCURACY = "holdout_accuracy"  # runs with evaluate_on=holdout (choosing settings)
SERVER_SECONDS = "aggregate_seconds"  # server-side aggregation (and distillation) time
CLIENT_SECONDS = "client_seconds_max"  # the slowest sampled client's handler time


@dataclass
class Run:
    strategy: str
    seed: str
    rounds: list[dict]
    folder: Path | None = None  # the run folder (its saved config heads the report)

    @property
    def accuracy_key(self) -> str:
        """``test_accuracy``, or ``holdout_accuracy`` for a run that evaluated on a holdout."""
        return HOLDOUT_ACCURACY if any(HOLDOUT_ACCURACY in r for r in self.rounds) else ACCURACY

    def curve(self) -> np.ndarray:
        key = self.accuracy_key
        return np.array([r[key] for r in self.rounds if key in r], dtype=float)


def find_runs(root: str | Path) -> list[Run]:
    """Every ``<root>/runs/<strategy>/<seed>/`` folder that holds a metrics file."""
    runs_dir = Path(root) / "runs"
    runs = [
        Run(path.parent.parent.name, path.parent.name, read_metrics(path.parent), path.parent)
        for path in sorted(runs_dir.glob(f"*/*/{METRICS_FILE}"))
    ]
    runs = [r for r in runs if len(r.curve())]
    if not runs:
        raise FedkdError(
            f"no finished runs under {runs_dir} (expected <strategy>/<seed>/{METRICS_FILE}); "
            "run fedkd-compare without report_only, or point report_only at a compare folder"
        )
    return runs


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _rounds_to(curve: np.ndarray, target: float) -> int | None:
    hits = np.flatnonzero(curve >= target)
    return int(hits[0]) + 1 if hits.size else None


def summarize(runs: list[Run], target: float) -> list[dict]:
    """One row per strategy: final accuracy mean/std over seeds, rounds to ``target``, seconds/round."""
    rows = []
    for strategy in sorted({r.strategy for r in runs}, key=[r.strategy for r in runs].index):
        group = [r for r in runs if r.strategy == strategy]
        finals = [float(r.curve()[-1]) for r in group]
        reached = [_rounds_to(r.curve(), target) for r in group]
        acc_mean, acc_std = _mean_std(finals)
        server = _mean_std([float(np.mean([x.get(SERVER_SECONDS, np.nan) for x in r.rounds])) for r in group])
        client = _mean_std([float(np.mean([x.get(CLIENT_SECONDS, np.nan) for x in r.rounds])) for r in group])
        rows.append(
            {
                "strategy": strategy,
                "evaluated_on": group[0].accuracy_key.removesuffix("_accuracy"),
                "seeds": len(group),
                "rounds": int(np.median([len(r.curve()) for r in group])),
                "final_accuracy_mean": acc_mean,
                "final_accuracy_std": acc_std,
                "final_accuracies": finals,
                "target_accuracy": target,
                "rounds_to_target": reached,
                "rounds_to_target_mean": _mean_std([float(x) for x in reached if x is not None])[0],
                "seeds_reaching_target": sum(x is not None for x in reached),
                "server_seconds_per_round": server[0],
                "client_seconds_per_round": client[0],
            }
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    target = rows[0]["target_accuracy"] if rows else 0
    split = rows[0].get("evaluated_on", "test") if rows else "test"
    lines = [
        f"| strategy | seeds | rounds | final {split} accuracy (mean ± std) | rounds to {target:.0%} (seeds reaching) "
        "| server s/round | client s/round |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        reached = r["seeds_reaching_target"]
        reach = "-" if reached == 0 else f"{r['rounds_to_target_mean']:.1f} ({reached}/{r['seeds']})"
        accuracy = f"{100 * r['final_accuracy_mean']:.2f} ± {100 * r['final_accuracy_std']:.2f}"
        lines.append(
            f"| {r['strategy']} | {r['seeds']} | {r['rounds']} | {accuracy} "
            f"| {reach} | {r['server_seconds_per_round']:.2f} | {r['client_seconds_per_round']:.2f} |"
        )
    return "\n".join(lines)


def draw_accuracy(runs: list[Run], ax: Axes, title: str = "") -> None:
    """Test accuracy per round per strategy on ``ax``: mean over seeds, shaded min-max band."""
    for strategy in sorted({r.strategy for r in runs}, key=[r.strategy for r in runs].index):
        curves = [r.curve() for r in runs if r.strategy == strategy]
        length = min(len(c) for c in curves)
        stack = np.stack([c[:length] for c in curves])
        x = np.arange(1, length + 1)
        (line,) = ax.plot(x, stack.mean(0), marker="o" if length < 15 else None, label=f"{strategy} (n={len(curves)})")
        ax.fill_between(x, stack.min(0), stack.max(0), color=line.get_color(), alpha=0.2)
    integer_x_ticks(ax)  # rounds are whole numbers
    ax.set_xlabel("round")
    ax.set_ylabel(f"{runs[0].accuracy_key.removesuffix('_accuracy')} accuracy" if runs else "test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()


def plot(runs: list[Run], path: str | Path, title: str = "") -> None:
    """Write :func:`draw_accuracy`'s plot to ``path`` (PNG)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    try:
        draw_accuracy(runs, ax, title)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def render(root: str | Path, target: float, title: str = "") -> str:
    """Write ``report.md``, ``report.json`` and ``accuracy.png`` under ``root``; return the table."""
    root = Path(root)
    runs = find_runs(root)
    rows = summarize(runs, target)
    table = markdown_table(rows)
    (root / "report.json").write_text(json.dumps(rows, indent=2) + "\n")
    settings = settings_lines([(r.strategy, r.seed, r.folder) for r in runs if r.folder is not None])
    head = "".join(line + "\n" for line in settings) + "\n" if settings else ""
    (root / "report.md").write_text(
        f"# {title or 'Strategy comparison'}\n\n{head}{table}\n\n![accuracy](accuracy.png)\n"
    )
    plot(runs, root / "accuracy.png", title)
    return table
