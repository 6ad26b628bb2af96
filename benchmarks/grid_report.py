"""The federated grid's summary, rendered from the per-run JSON files (``federated_grid.py``).

Kept apart from the runner so the table re-renders anywhere from committed results alone.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

STRATEGY_ORDER = ("fedavg", "fedprox", "fedgen", "fedftg", "fedftg_coboost")
LAST = 5  # rounds in the "mean of the last rounds" column


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    # one seed has no spread to report: its std is NaN, and the tables show the mean alone
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def _fmt(mean: float, std: float, scale: float = 100.0, signed: bool = False) -> str:
    if math.isnan(mean):
        return "-"
    text = f"{scale * mean:{'+' if signed else ''}.2f}"
    return text if math.isnan(std) else f"{text} ± {scale * std:.2f}"


def load(results: Path) -> dict[str, dict[str, list[dict]]]:
    """``{setting: {row: [run, ...]}}`` from ``results/<setting>/<row>_seed<k>.json``."""
    grid: dict[str, dict[str, list[dict]]] = {}
    for path in sorted(results.glob("*/*_seed*.json")):
        run = json.loads(path.read_text())
        grid.setdefault(run["setting"], {}).setdefault(run["row"], []).append(run)
    return grid


def rounds_to(curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, a in enumerate(curve) if a >= target), None)


def cell(runs: list[dict], baseline: list[dict] | None, target: float, last: int = LAST) -> dict:
    """One row x setting: final accuracy, paired difference to the baseline, timings, teacher figures."""
    finals = [r["final_accuracy"] for r in runs]
    # Skewed settings make the global model swing from round to round: the mean of the last rounds
    # shows the level a run settled at, next to the final round's figure.
    lasts = [statistics.fmean(r["curve"][-last:]) for r in runs]
    by_seed = {r["seed"]: r["final_accuracy"] for r in baseline or []}
    diffs = [r["final_accuracy"] - by_seed[r["seed"]] for r in runs if r["seed"] in by_seed]
    reached = [rounds_to(r["curve"], target) for r in runs]

    def mean_of(key: str) -> float:
        return _mean_std([r["means"].get(key) for r in runs])[0]

    helped = [r["distillation_helped_share"] for r in runs if r.get("distillation_helped_share") is not None]
    return {
        "seeds": sorted(r["seed"] for r in runs),
        "final": _mean_std(finals), "finals": finals, "last_rounds": _mean_std(lasts),
        "diff_to_fedavg": _mean_std(diffs) if baseline and runs is not baseline else (float("nan"), float("nan")),
        "paired_seeds": len(diffs),
        "rounds_to_target": _mean_std([float(x) for x in reached if x is not None])[0],
        "seeds_reaching": sum(x is not None for x in reached),
        "server_s": mean_of("aggregate_seconds") + mean_of("eval_seconds"),
        "aggregate_s": mean_of("aggregate_seconds"),
        # per round, diagnostics subtracted where they ran (they run every k rounds)
        "server_without_diagnostics_s": mean_of("server_seconds_without_diagnostics"),
        "train_phase_s": mean_of("train_phase_seconds"),
        "teacher_mean": mean_of("teacher_mean_accuracy"),
        "teacher_logit": mean_of("teacher_logit_weighted_accuracy"),
        "teacher_label_true": mean_of("teacher_label_weighted_accuracy_true_label"),
        "teacher_boosted": mean_of("teacher_boosted_accuracy"),
        "agreement": mean_of("teacher_intended_label_agreement"),
        "gain": mean_of("distillation_gain"),
        "helped_share": statistics.fmean(helped) if helped else float("nan"),
    }


def table(grid: dict[str, dict[str, list[dict]]], target: float, last: int = LAST) -> tuple[str, dict]:
    lines, cells = [], {}
    for setting in sorted(grid):
        rows = grid[setting]
        baseline = rows.get("fedavg")
        lines += [f"### {setting}", "",
                  (f"| row | seeds | final accuracy % | Δ to FedAvg (paired) | mean of the last {last} rounds % "
                   f"| rounds to {target:.0%} "
                   "| server s/round (aggregate + eval; without diagnostics) | client training phase s/round "
                   "| teacher mean / logit-weighted / label-weighted (true label) % | intended-label agreement % "
                   "| distillation helped (share of rounds) |"),
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        order = sorted(rows, key=lambda r: (STRATEGY_ORDER.index(r) if r in STRATEGY_ORDER else len(STRATEGY_ORDER), r))
        for row in order:
            c = cells.setdefault(setting, {})[row] = cell(rows[row], baseline, target, last)
            reach = ("-" if not c["seeds_reaching"]
                     else f"{c['rounds_to_target']:.1f} ({c['seeds_reaching']}/{len(c['seeds'])})")
            teacher = "-" if math.isnan(c["teacher_mean"]) else " / ".join(
                "-" if math.isnan(c[k]) else f"{100 * c[k]:.1f}"
                for k in ("teacher_mean", "teacher_logit", "teacher_label_true"))
            if not math.isnan(c["teacher_boosted"]):  # Co-Boosting's re-weighted teacher, after the round
                teacher += f"; boosted {100 * c['teacher_boosted']:.1f}"
            agree = "-" if math.isnan(c["agreement"]) else f"{100 * c['agreement']:.1f}"
            helped = "-" if math.isnan(c["helped_share"]) else f"{c['helped_share']:.2f} (gain {100 * c['gain']:+.2f})"
            diff = "-" if row == "fedavg" else _fmt(*c["diff_to_fedavg"], signed=True)
            lines.append(f"| {row} | {len(c['seeds'])} | {_fmt(*c['final'])} | {diff} | {_fmt(*c['last_rounds'])} "
                         f"| {reach} | {c['server_s']:.2f}; {c['server_without_diagnostics_s']:.2f} "
                         f"| {c['train_phase_s']:.2f} | {teacher} | {agree} | {helped} |")
        lines.append("")
    return "\n".join(lines), cells


def summary_table(cells: dict) -> str:
    """One line per setting: each row's final accuracy (mean ± std, seeds) and paired difference to FedAvg."""
    rows = sorted({row for c in cells.values() for row in c},
                  key=lambda r: (STRATEGY_ORDER.index(r) if r in STRATEGY_ORDER else len(STRATEGY_ORDER), r))
    lines = ["| setting | " + " | ".join(rows) + " |", "| --- |" + " --- |" * len(rows)]
    for setting in sorted(cells):
        parts = []
        for row in rows:
            c = cells[setting].get(row)
            if c is None:
                parts.append("-")
                continue
            text = f"{_fmt(*c['final'])} (n={len(c['seeds'])})"
            if row != "fedavg" and c["paired_seeds"]:
                text += f", Δ {_fmt(*c['diff_to_fedavg'], signed=True)}"
            parts.append(text)
        lines.append(f"| {setting} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def skewed_line(cells: dict, skewed: tuple[str, ...]) -> str:
    """Mean paired difference to FedAvg over the skewed settings, per row (cells present only)."""
    parts = []
    rows = sorted({row for s in skewed for row in cells.get(s, {})} - {"fedavg"})
    for row in rows:
        diffs = [cells[s][row]["diff_to_fedavg"][0] for s in skewed if row in cells.get(s, {})]
        diffs = [d for d in diffs if math.isfinite(d)]
        worst = min(diffs) if diffs else float("nan")
        if diffs:
            parts.append(f"{row} {100 * statistics.fmean(diffs):+.2f} (over {len(diffs)} of {len(skewed)} settings; "
                         f"worst cell {100 * worst:+.2f})")
    if not parts:
        return ""
    return ("Mean difference to FedAvg over the skewed settings (Dirichlet 0.1, shards; 10 and 50 clients), points: "
            + "; ".join(parts))


NON_DISTILLATION = ("fedavg", "fedprox", "mifa", "fedavg_memory")  # rows that average models and nothing more


def best_baseline_line(cells: dict, settings: tuple[str, ...]) -> str:
    """Each distilling row against the best non-distillation row of each setting (MIFA included), on the
    mean final accuracies: the mean difference over the settings it ran on, and its worst one."""
    parts = []
    rows = sorted({row for s in settings for row in cells.get(s, {})} - set(NON_DISTILLATION))
    for row in rows:
        diffs = []
        for s in settings:
            base = [cells[s][b]["final"][0] for b in NON_DISTILLATION if b in cells.get(s, {})]
            if row in cells.get(s, {}) and base:
                diffs.append(cells[s][row]["final"][0] - max(base))
        if diffs:
            parts.append(f"{row} {100 * statistics.fmean(diffs):+.2f} (over {len(diffs)} of {len(settings)}; "
                         f"worst {100 * min(diffs):+.2f})")
    if not parts:
        return ""
    return (f"Against the best of {', '.join(NON_DISTILLATION)} in each of those settings (means), points: "
            + "; ".join(parts))


GENERATOR_COST = ("fedftg_memory_labelled_proxy", "fedftg_memory_k3_bnsparse_proxy")  # (real images, generator)


def generator_cost_line(grid: dict[str, dict[str, list[dict]]]) -> str:
    """The generator's cost where both rows of :data:`GENERATOR_COST` ran: the labelled real-image
    reference minus FedFTG with the same clients, final accuracy paired by seed (mean ± std)."""
    real, generated = GENERATOR_COST
    parts = []
    for setting, rows in sorted(grid.items()):
        by_seed = {r["seed"]: r["final_accuracy"] for r in rows.get(generated, [])}
        pairs = [(r["final_accuracy"], by_seed[r["seed"]]) for r in rows.get(real, []) if r["seed"] in by_seed]
        if pairs:
            (m_real, _), (m_gen, _) = _mean_std([a for a, _ in pairs]), _mean_std([b for _, b in pairs])
            parts.append(f"{setting} {_fmt(*_mean_std([a - b for a, b in pairs]), signed=True)} "
                         f"({100 * m_real:.2f} against {100 * m_gen:.2f}, {len(pairs)} seeds)")
    if not parts:
        return ""
    return f"The generator's cost ({real} minus {generated}, same clients, paired by seed), points: " + "; ".join(parts)


def plot(grid: dict[str, dict[str, list[dict]]], results: Path) -> None:
    """One PNG per setting: accuracy per round, mean over seeds with a min-max band."""
    import numpy as np

    from fedkd.report.plots import integer_x_ticks, pyplot

    plt = pyplot()
    for setting, rows in grid.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
        try:
            for row, runs in sorted(rows.items()):
                length = min(len(r["curve"]) for r in runs)
                stack = np.array([r["curve"][:length] for r in runs])
                x = np.arange(1, length + 1)
                (line,) = ax.plot(x, stack.mean(0), marker="o" if length < 3 else None, label=f"{row} (n={len(runs)})")
                ax.fill_between(x, stack.min(0), stack.max(0), color=line.get_color(), alpha=0.2)
            integer_x_ticks(ax)
            ax.set(xlabel="round", ylabel=f"{runs[0]['evaluated_on']} accuracy", title=setting)
            ax.grid(alpha=0.3)
            ax.legend()
            fig.tight_layout()
            fig.savefig(results / setting / "accuracy.png")
        finally:
            plt.close(fig)


def render(results: Path, prefix: Path, target: float, skewed: tuple[str, ...], last: int = LAST) -> str:
    """Write ``<prefix>.md``, ``<prefix>.json`` and each setting's PNG; return the text (``last``: the
    rounds the "mean of the last rounds" column averages)."""
    grid = load(results)
    if not grid:
        return f"no finished runs under {results}"
    text, cells = table(grid, target, last)
    # the lines across settings, where their cells exist (a one-shot or tuning grid has none of some)
    lines = [skewed_line(cells, skewed), best_baseline_line(cells, skewed), generator_cost_line(grid)]
    text = "\n\n".join(["## Summary: final accuracy %, mean ± std over seeds (one seed: the value alone); "
                         "Δ: paired difference to FedAvg", summary_table(cells), *filter(None, lines),
                         f"## Per setting\n\n{text}"])
    prefix.with_suffix(".md").write_text(text)
    prefix.with_suffix(".json").write_text(json.dumps(cells, indent=1) + "\n")
    plot(grid, results)
    return text
