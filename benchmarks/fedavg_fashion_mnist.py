#!/usr/bin/env python
"""FedAvg on Fashion-MNIST, 10 clients: Dirichlet alpha 0.1 and 0.5, IID as control (a benchmark, not a test).

    .venv/bin/python benchmarks/fedavg_fashion_mnist.py            # 10 rounds per setting (~25 min on 2 CPU cores)
    .venv/bin/python benchmarks/fedavg_fashion_mnist.py --rounds 5 --settings iid

Runs ``fedkd-sim``'s simulation (Flower + Ray, 1 CPU per client) for each setting and prints, per
setting, the final test accuracy (the last round's global model), seconds per round and how a
round splits into local training, other client work, server aggregation and Flower/Ray overhead.
Writes benchmarks/results/fedavg_fashion_mnist.json and the table to a .txt beside it; the runs'
own outputs (metrics.jsonl, TensorBoard, model.pt) go to outputs/benchmarks/fedavg_fashion_mnist/.

Overhead, per round after the first (round 1 includes starting Ray's workers):
    T = train phase: server sends the global model .. last reply aggregated (wall clock)
    H = client work on the busiest Ray worker: sum of its clients' handler seconds
        (clients share the workers, one client at a time per worker)
    L = the part of H spent in the local training loop
    A = server aggregation
    Flower/Ray overhead O = T - H - A   (messaging, scheduling, moving weights between processes)
    overhead %  = O / T;   "not training" % = (T - L) / T (adds data/model set-up in the client)
Central evaluation on the test set (E) comes after the train phase; round = T + E.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from statistics import mean

import torch

from fedkd.apps.simulation import parallel_clients, simulate
from fedkd.federated.config import compose_sim_config
from fedkd.utils.run_logger import read_metrics

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
RUNS = REPO / "outputs" / "benchmarks" / "fedavg_fashion_mnist"

SETTINGS = {
    "dirichlet_0.1": ["partition=dirichlet", "partition.alpha=0.1"],
    "dirichlet_0.5": ["partition=dirichlet", "partition.alpha=0.5"],
    "iid": ["partition=iid"],
}
COMMON = [
    "dataset=fashion_mnist", "model=small_cnn", "strategy=fedavg", "num_clients=10",
    "local_epochs=1", "local_batch_size=32", "seed=0", "client_resources.num_cpus=1",
]


def overhead(rows: list[dict]) -> dict[str, float]:
    """Mean per-round time split over rounds 2.. (see the module docstring)."""
    later = rows[1:] or rows
    T = mean(r["train_phase_seconds"] for r in later)
    H = mean(r["client_seconds_critical"] for r in later)
    L = mean(r["client_train_seconds_critical"] for r in later)
    A = mean(r["aggregate_seconds"] for r in later)
    E = mean(r["eval_seconds"] for r in later)
    overhead_s = T - H - A  # O in the module docstring
    return {
        "round_seconds": mean(r["round_seconds"] for r in later),
        "first_round_seconds": rows[0]["round_seconds"],
        "train_phase_seconds": T,
        "client_seconds_busiest_worker": H,
        "local_training_seconds_busiest_worker": L,
        "aggregate_seconds": A,
        "eval_seconds": E,
        "flower_ray_overhead_seconds": overhead_s,
        "overhead_percent": 100 * overhead_s / T,
        "not_training_percent": 100 * (T - L) / T,
        "bytes_per_round": mean(r["bytes_sent"] + r["bytes_received"] for r in later),
    }


def table(results: dict[str, dict]) -> str:
    head = (
        f"{'setting':<15}{'rounds':>7}{'final acc':>10}{'best acc (rnd)':>16}{'s/round':>9}{'1st rnd s':>10}"
        f"{'train T':>9}{'client H':>9}{'local L':>9}{'aggr A':>8}{'eval E':>8}{'O s':>7}{'O %':>7}{'T-L %':>7}"
    )
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        o = r["timing"]
        lines.append(
            f"{name:<15}{r['rounds']:>7}{r['final_test_accuracy']:>10.4f}"
            f"{r['best_test_accuracy']:>10.4f} ({r['best_round']:>2}){o['round_seconds']:>9.1f}"
            f"{o['first_round_seconds']:>10.1f}"
            f"{o['train_phase_seconds']:>9.2f}{o['client_seconds_busiest_worker']:>9.2f}"
            f"{o['local_training_seconds_busiest_worker']:>9.2f}{o['aggregate_seconds']:>8.2f}{o['eval_seconds']:>8.2f}"
            f"{o['flower_ray_overhead_seconds']:>7.2f}{o['overhead_percent']:>7.1f}{o['not_training_percent']:>7.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--results", type=Path, default=RESULTS / "fedavg_fashion_mnist.json")
    args = parser.parse_args(argv)

    results: dict[str, dict] = {}
    started = time.perf_counter()
    for name in args.settings:
        cfg = compose_sim_config([*COMMON, *SETTINGS[name], f"rounds={args.rounds}"])
        out = RUNS / name
        if (out / "metrics.jsonl").exists():
            (out / "metrics.jsonl").unlink()  # RunLogger appends; one benchmark run per folder
        print(f"== {name}: {' '.join(SETTINGS[name])}, {args.rounds} rounds -> {out}", flush=True)
        summary = simulate(cfg, out)
        rows = read_metrics(out)
        results[name] = {
            "overrides": [*COMMON, *SETTINGS[name], f"rounds={args.rounds}"],
            "rounds": len(rows),
            "final_test_accuracy": summary["final_test_accuracy"],
            "best_test_accuracy": summary["best_test_accuracy"],
            "best_round": summary["best_round"],
            "total_seconds": summary["total_seconds"],
            "timing": overhead(rows),
            "test_accuracy_per_round": [r["test_accuracy"] for r in rows],
        }
    cfg = compose_sim_config(COMMON)
    text = "\n".join(
        [
            f"FedAvg, Fashion-MNIST, 10 clients, small_cnn, 1 local epoch, batch 32, SGD lr 0.01; "
            f"{parallel_clients(cfg)} clients train at once (1 CPU each). Timings: mean of rounds 2..N, seconds.",
            table(results),
            "T train phase (send .. aggregated), H client handler time on the busiest Ray worker, L its local "
            "training loop, A aggregation, E central test-set evaluation; Flower/Ray overhead O = T - H - A, "
            "O % = O/T, T-L % = share of the train phase not in local training. s/round = T + E.",
            f"final acc = last round's global model; best acc is the best round seen (for reference only). "
            f"Total wall time {time.perf_counter() - started:.0f}s.",
        ]
    )
    print(text)
    payload = {
        "benchmark": "fedavg_fashion_mnist",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "cuda": torch.cuda.is_available(), "python": sys.version.split()[0]},
        "wall_seconds": time.perf_counter() - started,
        "settings": results,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(payload, indent=2) + "\n")
    args.results.with_suffix(".txt").write_text(text + "\n")
    print(f"wrote {args.results} and {args.results.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
