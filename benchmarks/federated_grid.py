"""FedAvg against generator-based aggregation across heterogeneous settings: a grid, run in parts.

Fashion-MNIST from Debian's package folder (a 12,000-image training subset, the whole test set),
``small_cnn`` with 16/32 channels, 20 rounds of 1 local epoch. The grid:

- partitions: Dirichlet 0.1, Dirichlet 0.5, shards with 2 classes per client;
- clients: 10 all taking part, and 50 with 20 % sampled per round (by partition id, seeded);
- rows: FedAvg, FedProx, FedGen, FedFTG (its settings in ``ROWS``), 3 seeds each;
- FedDF rows (``feddf``, ``feddf_memory``): not data-free, they distil on real unlabeled images.
  Their ``proxy_size=2000`` keeps 2,000 training images from every client for the server, so their
  clients share 10,000 images where every other row's share all 12,000: FedDF pays for its proxy
  with client data (the other rows' partitions stay as they were, and their results valid);
- FedDF with its authors' early stopping (``feddf_validated``, ``feddf_memory_validated``): the server also
  keeps 500 labelled images from the clients and keeps each round's best student on them;
- one-shot (DENSE-style) as its own row set: one round, 10 local epochs, on the 10-client settings;
- the horizon (``--mode horizon``): Dirichlet 0.1 and shards with 50 clients at 20 %, 100 rounds, the
  memory rows and their baselines; final, mean of the last 10 rounds, rounds to 70 %.

Each setting x row x seed is one run folder of ``fedkd-compare``'s machinery
(``<out>/<setting>/runs/<row>/seed<k>``), run in its own process; a finished run is never re-run
and an interrupted one resumes after its last complete round. Every finished run also leaves a
small JSON under ``benchmarks/results/federated_grid/`` (committed), and the summary re-renders
from those, so the grid can be filled in parts, on any machine::

    .venv/bin/python benchmarks/federated_grid.py --rows fedavg,fedprox --seeds 0        # some runs
    .venv/bin/python benchmarks/federated_grid.py --settings dir0.1_c10 --rows fedftg      # one cell
    .venv/bin/python benchmarks/federated_grid.py --report-only                            # re-render

The summary (``benchmarks/results/federated_grid.{json,md}`` and one PNG per setting): final test
accuracy mean ± std over seeds, the difference to FedAvg paired by seed (mean ± std), rounds to
the target accuracy, the server's and the clients' training-phase seconds per round, and for the
generator strategies the teacher figures and the share of rounds in which distillation helped.
The test set only reports: nothing is chosen on it. FedFTG's options are chosen by ``--mode tune``
(a setting of its own, seed 100, evaluated on 3,000 training images no client holds) before the
grid runs; ``--mode one_shot`` runs the one-shot row set, and ``--mode tune_one_shot`` chooses among the
one-shot servers the same way (two 20-client settings of their own, seed 100, holdout).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

COMMON = ["dataset=fashion_mnist", "dataset.max_train=12000", "model.channels=16", "local_epochs=1", "rounds=20",
          "client_resources.num_cpus=1", "tensorboard=false"]
C50 = ["num_clients=50", "strategy.fraction_train=0.2"]
SETTINGS: dict[str, list[str]] = {
    "dir0.1_c10": ["partition=dirichlet", "partition.alpha=0.1", "num_clients=10"],
    "dir0.5_c10": ["partition=dirichlet", "partition.alpha=0.5", "num_clients=10"],
    "shards2_c10": ["partition=shards", "partition.classes_per_client=2", "num_clients=10"],
    "dir0.1_c50": ["partition=dirichlet", "partition.alpha=0.1", *C50],
    "dir0.5_c50": ["partition=dirichlet", "partition.alpha=0.5", *C50],
    "shards2_c50": ["partition=shards", "partition.classes_per_client=2", *C50],
}
SKEWED = ("dir0.1_c10", "shards2_c10", "dir0.1_c50", "shards2_c50")
ONE_SHOT = ["experiment=one_shot", "local_epochs=10", "rounds=1"]

# The generator strategy's settings for the grid, chosen by ``--mode tune`` (holdout, seed 100):
# options level within a point there, and half the server budget kept the accuracy, so the grid
# runs FedFTG's own label-weighted ensemble at 5 iterations of 64 samples per round (the server's
# seconds then stay near 2x the client-training phase on a 2-core CPU); diagnostics every 2 rounds.
# The rows keep the teacher the grid's FedFTG runs were made with: every remembered client, each on the
# whole batch for the BN statistics (today's defaults, a 3-client cap and label-sparse BN statistics,
# came later: rows fedftg_memory_k3_bnsparse and docs/federated.md#the-servers-cost).
BEFORE_COST_DEFAULTS = ["strategy.teacher_members_per_class=null", "strategy.synthesizer.bn_label_sparse=false"]


def coboost(row: list[str]) -> list[str]:
    """``row`` with Co-Boosting's synthesizer, which holds FedFTG's generator as its ``base``."""
    pin = BEFORE_COST_DEFAULTS[1]
    return [o for o in row if o != pin] + ["synthesizer@strategy.synthesizer=coboost", pin.replace(".bn_", ".base.bn_")]


FEDFTG_BUDGET = ["strategy=fedftg", "strategy.iterations_per_round=5", "strategy.synthesizer.batch_size=64",
                 "strategy.student_batch_size=64", "strategy.diagnostics_every=2", "strategy.diagnostics_samples=1000",
                 *BEFORE_COST_DEFAULTS]
FEDFTG = [*FEDFTG_BUDGET, "strategy.teacher_memory_rounds=1"]  # the paper's teacher: the round's clients only
# DFRD at the same server budget (its generator has no BN term); its teacher figures every 10 rounds
DFRD_BUDGET = ["strategy=dfrd", *FEDFTG_BUDGET[1:-1], "strategy.diagnostics_every=10"]
# FedDF distils on real images: 2,000 of the 12,000 training images form the server's unlabeled proxy,
# which no client holds (so its clients share 10,000), at FedFTG's server budget: 10 student steps of 64.
FEDDF = ["strategy=feddf", "proxy_size=2000", "strategy.iterations_per_round=10", "strategy.student_batch_size=64",
         "strategy.diagnostics_every=2", "strategy.diagnostics_samples=1000"]
# FedDF's early stopping: 500 labelled training images no client holds, the best student on them kept
VALIDATED = ["validation_size=500", "strategy.keep_best_on_validation=true"]
ROWS: dict[str, list[str]] = {
    "fedavg": ["strategy=fedavg"],
    "fedprox": ["strategy=fedprox"],
    "fedgen": ["strategy=fedgen"],
    "fedftg": FEDFTG,
    # Co-Boosting's hard samples and ensemble re-weighting in every round (authors' settings): level with
    # or above FedFTG on both tuning settings (holdout: +0.23 and +0.94 points), so it meets the grid
    "fedftg_coboost": coboost(FEDFTG),
    # The teacher keeps every client's latest model for 10 rounds (holdout: 78.20 % against
    # 66.43 % with the round's ten clients, FedAvg 62.90 %); with full participation it changes nothing
    "fedftg_memory": [*FEDFTG_BUDGET, "strategy.teacher_memory_rounds=10"],
    # the same with at most 3 remembered clients per class in the teacher (the server's cost bounded)
    "fedftg_memory_k3": [*FEDFTG_BUDGET, "strategy.teacher_memory_rounds=10", "strategy.teacher_members_per_class=3"],
    # ... and each member's BN statistics from the samples of its own labels (the BN term label-sparse too)
    "fedftg_memory_k3_bnsparse": [*FEDFTG_BUDGET, "strategy.teacher_memory_rounds=10",
                                  "strategy.teacher_members_per_class=3", "strategy.synthesizer.bn_label_sparse=true"],
    # FedDF (Lin et al., NeurIPS 2020): the average distilled from the mean of the clients' logits on the
    # proxy; the paper's teacher (the round's clients), and with fedftg_memory's 10-round client memory
    "feddf": [*FEDDF, "strategy.teacher_memory_rounds=1"],
    "feddf_memory": [*FEDDF, "strategy.teacher_memory_rounds=10"],
    # FedDF with its authors' early stopping: after each of the 10 steps the student is evaluated on 500 labelled
    # training images no client holds (validation_size, set a priori: 4 % of the subset) and the best is kept,
    # the average included -- these clients share 9,500 images
    "feddf_validated": [*FEDDF, "strategy.teacher_memory_rounds=1", *VALIDATED],
    "feddf_memory_validated": [*FEDDF, "strategy.teacher_memory_rounds=10", *VALIDATED],
    # FedAvg whose clients hold what feddf_validated's hold (the server's 2,500 images kept from them): its
    # data-matched baseline
    "fedavg_feddf_clients": ["strategy=fedavg", "proxy_size=2000", "validation_size=500"],
    # FedDF with fedftg_memory's teacher: each class's logit from the remembered clients weighted by their
    # shares of it (label counts only; the proxy's labels stay unread), the real-data reference matched to it
    "feddf_memory_lc": [*FEDDF, "strategy.teacher_memory_rounds=10", "strategy.class_weighting=label_counts",
                        "strategy.diagnostics_every=10"],
    # FedFTG on MIFA: the student starts from MIFA's step (10-round windows for both memories), with
    # today's FedFTG defaults: does distilling without data add to the memory MIFA already uses?
    "fedftg_mifa": ["strategy=fedftg_mifa", *FEDFTG_BUDGET[1:], "strategy.teacher_memory_rounds=10",
                    "strategy.memory_rounds=10", "strategy.teacher_members_per_class=3",
                    "strategy.synthesizer.bn_label_sparse=true"],
    # The generator's cost: FedFTG as fedftg_memory_k3_bnsparse with the proxy's 2,000 real images, each with
    # its label for the teacher's weighting, in place of generated samples (a reference, not a method), and
    # FedFTG itself with the same 2,000 images kept from the clients, so that both runs' clients hold the same
    "fedftg_memory_labelled_proxy": ["strategy=fedftg_labelled_proxy", "proxy_size=2000",
                                     "strategy.iterations_per_round=5", "strategy.student_batch_size=64",
                                     "strategy.diagnostics_every=2", "strategy.diagnostics_samples=1000",
                                     "strategy.teacher_memory_rounds=10"],
    "fedftg_memory_k3_bnsparse_proxy": [*FEDFTG_BUDGET, "strategy.teacher_memory_rounds=10", "proxy_size=2000",
                                        "strategy.teacher_members_per_class=3",
                                        "strategy.synthesizer.bn_label_sparse=true"],
    # DFRD (Luo et al., NeurIPS 2023) at FedFTG's server budget: the paper's teacher (the round's clients),
    # and with fedftg_memory's 10-round memory; options as conf/synthesizer/dfrd.yaml, not tuned on the grid
    "dfrd": [*DFRD_BUDGET, "strategy.teacher_memory_rounds=1"],
    "dfrd_memory": [*DFRD_BUDGET, "strategy.teacher_memory_rounds=10"],
    # MIFA (Gu et al., NeurIPS 2021): the mean of every client's latest update, absent clients' stale ones
    # included, with fedftg_memory's 10-round window (the paper keeps them for good: memory_rounds=null)
    "mifa": ["strategy=mifa", "strategy.memory_rounds=10"],
    # the same memory in FedAvg's plain form: the example-weighted mean of the remembered models
    "fedavg_memory": ["strategy=fedavg_memory", "strategy.memory_rounds=10"],
}
ONE_SHOT_ROWS: dict[str, list[str]] = {
    "fedavg": ["strategy=fedavg"],
    "one_shot_fedftg": ["strategy=one_shot_fedftg"],
    # Co-Boosting (ICLR 2024): the paper's method with its authors' settings, nothing tuned here
    "one_shot_coboost": ["strategy=one_shot_coboost"],
    # ablation: Co-Boosting started from one-shot FedFTG's per-class logit weights instead of the plain mean
    "one_shot_coboost_logit": ["strategy=one_shot_coboost", "strategy.class_weighting=label_counts"],
}
# Choosing FedFTG's options: a setting of its own (Dirichlet 0.2, 20 clients, 12 rounds, seed 100),
# evaluated on a holdout of training images no client holds; the grid's settings and seeds never decide.
TUNE_SETTING = {
    "tune_dir0.2_c20": ["partition=dirichlet", "partition.alpha=0.2", "num_clients=20", "rounds=12",
                        "evaluate_on=holdout", "holdout_size=3000"],
    # partial participation: the teacher holds only the round's sampled clients
    "tune_dir0.2_c50": ["partition=dirichlet", "partition.alpha=0.2", "num_clients=50", "strategy.fraction_train=0.2",
                        "rounds=12", "evaluate_on=holdout", "holdout_size=3000"],
}
# Choosing the one-shot server: one round of 10 local epochs on two settings of their own,
# 20 clients, evaluated on the same holdout; the grid's one-shot settings and seeds never decide.
TUNE_ONE_SHOT_SETTING = {
    "tune_one_shot_dir0.2_c20": ["partition=dirichlet", "partition.alpha=0.2", "num_clients=20",
                                 "evaluate_on=holdout", "holdout_size=3000", *ONE_SHOT],
    "tune_one_shot_shards3_c20": ["partition=shards", "partition.classes_per_client=3", "num_clients=20",
                                  "evaluate_on=holdout", "holdout_size=3000", *ONE_SHOT],
}
TUNE_BUDGET = ["strategy=fedftg", "strategy.iterations_per_round=10", "strategy.synthesizer.batch_size=64",
               "strategy.student_batch_size=64", "strategy.diagnostics_samples=1000", *BEFORE_COST_DEFAULTS]
TUNE_BASE = [*TUNE_BUDGET, "strategy.teacher_memory_rounds=1"]
# DFRD as the grid's dfrd_memory runs it (FedFTG's half budget, the 10-round memory, every client)
DFRD_TUNE = ["strategy=dfrd", "strategy.iterations_per_round=5", "strategy.synthesizer.batch_size=64",
             "strategy.student_batch_size=64", "strategy.diagnostics_samples=1000", "strategy.teacher_memory_rounds=10"]
TUNE_ROWS: dict[str, list[str]] = {
    "fedavg": ["strategy=fedavg"],
    "ftg_base": TUNE_BASE,
    "ftg_global": [*TUNE_BASE, "strategy.global_teacher_weight=0.5"],
    "ftg_conf": [*TUNE_BASE, "strategy.ensemble_weighting=confidence"],
    "ftg_safe": [*TUNE_BASE, "strategy.safeguard=0.9"],
    "ftg_half": [*TUNE_BASE, "strategy.iterations_per_round=5"],
    "ftg_logit": [*TUNE_BASE, "strategy.ensemble_weighting=logit"],
    "ftg_half_global": [*TUNE_BASE, "strategy.iterations_per_round=5", "strategy.global_teacher_weight=0.5"],
    "ftg_half_conf": [*TUNE_BASE, "strategy.iterations_per_round=5", "strategy.ensemble_weighting=confidence"],
    # Co-Boosting's hard samples and ensemble re-weighting (authors' settings) on the label-weighted teacher
    "ftg_half_coboost": coboost([*TUNE_BASE, "strategy.iterations_per_round=5"]),
    # With 20 % participation the teacher holds ten clients; keep every client's latest model
    # for 5 or 10 rounds (about 67 % or 89 % of the clients at 20 % a round)
    "ftg_half_mem5": [*TUNE_BUDGET, "strategy.iterations_per_round=5", "strategy.teacher_memory_rounds=5"],
    "ftg_half_mem10": [*TUNE_BUDGET, "strategy.iterations_per_round=5", "strategy.teacher_memory_rounds=10"],
    # the server's cost bounded: 3 clients per class, BN statistics label-sparse (against ftg_half_mem10)
    "ftg_half_mem10_k3_bnsparse": [*TUNE_BUDGET, "strategy.iterations_per_round=5", "strategy.teacher_memory_rounds=10",
                                   "strategy.teacher_members_per_class=3", "strategy.synthesizer.bn_label_sparse=true"],
    # DFRD's own options (set a priori in conf/synthesizer/dfrd.yaml) against the same budget and memory:
    # without the moving-average generator, a slower average, and the 3-client cap of FedFTG's teacher
    "dfrd_half_mem10": DFRD_TUNE,
    "dfrd_half_mem10_noema": [*DFRD_TUNE, "strategy.synthesizer.ema_weight=0.0"],
    "dfrd_half_mem10_decay09": [*DFRD_TUNE, "strategy.synthesizer.ema_decay=0.9"],
    "dfrd_half_mem10_k3": [*DFRD_TUNE, "strategy.teacher_members_per_class=3"],
}
# The horizon: the two partial-participation settings where the rows part most, run to 100 rounds, with
# the memory rows and their baselines; reported: final, mean of the last 10 rounds, rounds to 70 %.
HORIZON_SETTINGS = {f"h100_{name}": [*SETTINGS[name], "rounds=100"] for name in ("dir0.1_c50", "shards2_c50")}
# FedFTG with the memory as configured by default now (3 clients per class, label-sparse BN statistics)
HORIZON_ROWS = {name: ROWS[name] for name in ("fedavg", "mifa", "fedftg_memory_k3_bnsparse", "feddf_memory")}
# Per-round keys the per-run JSON keeps the mean of (when the run logged them).
MEANS = ("aggregate_seconds", "train_phase_seconds", "client_train_seconds_critical", "round_seconds", "eval_seconds",
         "server_seconds", "server_seconds_average", "server_seconds_ensemble", "server_seconds_diagnostics",
         "server_seconds_synthesis", "server_seconds_distillation", "server_seconds_images", "server_seconds_other",
         "teacher_mean_accuracy", "teacher_logit_weighted_accuracy", "teacher_label_weighted_accuracy_true_label",
         "teacher_confidence_weighted_accuracy_true_label", "teacher_intended_label_agreement",
         "teacher_boosted_accuracy",
         "member_weight_min", "member_weight_max", "teacher_members",
         "student_accuracy_before", "student_accuracy_after", "distillation_gain", "average_teacher_agreement",
         "student_teacher_agreement")


def cells(mode: str) -> dict[str, tuple[list[str], dict[str, list[str]]]]:
    """``{setting name: (overrides, rows)}`` of the grid, its one-shot row set, or the tuning runs."""
    if mode == "one_shot":
        return {f"one_shot_{name}": ([*o, *ONE_SHOT], ONE_SHOT_ROWS)
                for name, o in SETTINGS.items() if name.endswith("_c10")}
    if mode == "tune":
        return {name: (o, TUNE_ROWS) for name, o in TUNE_SETTING.items()}
    if mode == "tune_one_shot":
        return {name: (o, ONE_SHOT_ROWS) for name, o in TUNE_ONE_SHOT_SETTING.items()}
    if mode == "horizon":
        return {name: (o, HORIZON_ROWS) for name, o in HORIZON_SETTINGS.items()}
    return {name: (o, ROWS) for name, o in SETTINGS.items()}


def result_path(results: Path, setting: str, row: str, seed: int) -> Path:
    return results / setting / f"{row}_seed{seed}.json"


def run_one(out: Path, setting: str, row: str, seed: int, overrides: list[str], row_overrides: list[str]) -> None:
    """One run through ``fedkd-compare``'s machinery (a variant row names its strategy in its overrides)."""
    from omegaconf import OmegaConf

    from fedkd.cli.compare import run_all

    cfg = OmegaConf.create({"strategies": [row], "seeds": [seed], "overrides": [*COMMON, *overrides],
                            "strategy_overrides": {row: row_overrides}})
    run_all(cfg, out / setting)


def collect(run_dir: Path, setting: str, row: str, seed: int, overrides: list[str]) -> dict:
    """The finished run's figures for the committed per-run JSON."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    key = "holdout_accuracy" if any("holdout_accuracy" in r for r in rows) else "test_accuracy"
    summary = json.loads((run_dir / "summary.json").read_text())
    means = {}
    for name in MEANS:
        values = [r[name] for r in rows if name in r]
        if values:
            means[name] = statistics.fmean(values)
    # The server's seconds per round without the diagnostics, round by round (they run only every k rounds).
    server = [r["aggregate_seconds"] + r.get("eval_seconds", 0.0) - r.get("server_seconds_diagnostics", 0.0)
              for r in rows if "aggregate_seconds" in r]
    if server:
        means["server_seconds_without_diagnostics"] = statistics.fmean(server)
    gains = [r["distillation_gain"] for r in rows if "distillation_gain" in r and r.get("student_loss") is not None]
    return {
        "setting": setting, "row": row, "seed": seed, "overrides": overrides,
        "evaluated_on": key.removesuffix("_accuracy"),
        "curve": [r[key] for r in rows if key in r], "final_accuracy": rows[-1][key], "means": means,
        "distillation_helped_share": (sum(g > 0 for g in gains) / len(gains)) if gains else None,
        "distilled_rounds": len(gains), "total_seconds": summary.get("total_seconds"),
    }


def run_grid(args: argparse.Namespace) -> None:
    for setting, (overrides, rows) in cells(args.mode).items():
        if args.settings and setting.removeprefix("one_shot_").removeprefix("h100_") not in args.settings:
            continue
        for row, row_overrides in rows.items():
            if args.rows and row not in args.rows:
                continue
            for seed in args.seeds:
                target = result_path(args.results, setting, row, seed)
                run_dir = args.out / setting / "runs" / row / f"seed{seed}"
                if args.recollect and target.exists() and (run_dir / "summary.json").exists():
                    collected = collect(run_dir, setting, row, seed, [*COMMON, *overrides, *row_overrides])
                    target.write_text(json.dumps(collected, indent=1) + "\n")
                    continue
                if target.exists():
                    continue
                if args.recollect:
                    continue
                started = time.perf_counter()
                one = [sys.executable, __file__, "--one", setting, row, str(seed), "--out", str(args.out)]
                proc = subprocess.run(one, cwd=REPO, check=False)
                if proc.returncode != 0 or not (run_dir / "summary.json").exists():
                    print(f"FAILED {setting} {row} seed {seed} (exit {proc.returncode})", flush=True)
                    continue
                result = collect(run_dir, setting, row, seed, [*COMMON, *overrides, *row_overrides])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(result, indent=1) + "\n")
                print(f"{setting} {row} seed {seed}: final {result['final_accuracy']:.4f} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)


def main() -> None:
    from grid_report import render  # benchmarks/grid_report.py

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", type=lambda s: s.split(","), default=None, help="comma-separated; default all")
    parser.add_argument("--rows", type=lambda s: s.split(","), default=None, help="comma-separated; default all")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--mode", choices=("grid", "one_shot", "tune", "tune_one_shot", "horizon"), default="grid",
                        help="the round grid, its one-shot row set, the tuning runs of either (holdout), "
                             "or the 100-round horizon")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--recollect", action="store_true",
                        help="rewrite the per-run JSON of finished runs from their run folders (runs nothing new)")
    parser.add_argument("--target", type=float, default=0.80)
    parser.add_argument("--out", type=Path, default=None, help="run folders (default outputs/benchmarks/<name>)")
    parser.add_argument("--results", type=Path, default=None, help="per-run JSON folder (default by --evaluate-on)")
    parser.add_argument("--one", nargs=3, metavar=("SETTING", "ROW", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    name = {"grid": "federated_grid", "one_shot": "federated_grid_one_shot", "tune": "federated_grid_tuning",
            "tune_one_shot": "federated_grid_tuning_one_shot", "horizon": "federated_horizon"}[args.mode]
    args.results = args.results or RESULTS / name
    args.out = args.out or REPO / "outputs" / "benchmarks" / name
    if args.one:
        setting, row, seed = args.one
        modes = ("grid", "one_shot", "tune", "tune_one_shot", "horizon")
        every = {k: v for mode in modes for k, v in cells(mode).items()}
        overrides, rows = every[setting]
        run_one(args.out, setting, row, int(seed), overrides, rows[row])
        return
    if not args.report_only:
        run_grid(args)
    if args.mode == "horizon":  # rounds to 70 % and the mean of the last 10 of the 100 rounds
        print(render(args.results, RESULTS / name, 0.70, tuple(HORIZON_SETTINGS), last=10))
        return
    print(render(args.results, RESULTS / name, args.target, SKEWED))


if __name__ == "__main__":
    main()
