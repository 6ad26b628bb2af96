"""Short federated simulations on digits (4 clients, 2 rounds) through Flower's simulation engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedkd.apps.simulation import simulate
from fedkd.data import load_dataset
from fedkd.federated.config import compose_sim_config
from fedkd.federated.loopback import LoopbackDeployment
from fedkd.models.checkpoint import model_from_checkpoint
from fedkd.training import evaluate
from fedkd.utils.run_logger import read_metrics

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHANCE = 0.1  # ten digit classes
SMALL = ["dataset=digits", "num_clients=4", "rounds=2", "client_resources.num_cpus=1"]


@pytest.fixture(scope="module")
def fedavg_run(tmp_path_factory):
    """``fedkd-sim`` run as a user runs it (console entry, Hydra overrides)."""
    out = tmp_path_factory.mktemp("fedavg")
    done = subprocess.run(
        [str(BIN / "fedkd-sim"), "strategy=fedavg", *SMALL, f"hydra.run.dir={out}"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout + done.stderr


def test_fedavg_learns_above_chance_and_saves_the_final_model(fedavg_run):
    out, _ = fedavg_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds_completed"] == 2
    assert summary["final_test_accuracy"] > 3 * CHANCE
    assert summary["best_test_accuracy"] >= summary["final_test_accuracy"]
    assert summary["total_seconds"] > 0
    # The checkpoint is the final global model: it scores the summary's final accuracy.
    model, meta = model_from_checkpoint(out / "model.pt", load_dataset("digits").spec)
    assert meta["model_config"]["name"] == "small_cnn" and meta["strategy"] == "FedAvg"
    test = load_dataset("digits").test
    assert evaluate(model, test, model.head.weight.device)["accuracy"] == pytest.approx(summary["final_test_accuracy"])


def test_metrics_file_has_one_row_per_round(fedavg_run):
    out, _ = fedavg_run
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        for key in ("test_accuracy", "test_loss", "train_loss", "round_seconds", "bytes_sent", "bytes_received"):
            assert key in row, key
        assert row["clients"] == 4
        # Every sampled client received and returned one full model.
        assert row["bytes_sent"] == row["bytes_received"] > 4 * 400_000
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())


def test_console_shows_one_line_per_round_and_no_flower_debug(fedavg_run):
    _, console = fedavg_run
    assert "round 1/2" in console and "round 2/2" in console
    assert "final test accuracy" in console
    assert "DEBUG" not in console
    assert "INFO" not in console.replace("[fedkd.sim][INFO]", ""), console[-2000:]


def test_fedprox_learns_above_chance(tmp_path):
    cfg = compose_sim_config(["strategy=fedprox", "strategy.proximal_mu=0.1", *SMALL])
    summary = simulate(cfg, tmp_path)
    assert summary["final_test_accuracy"] > 3 * CHANCE
    assert summary["strategy"] == "FedProx"
    assert len(read_metrics(tmp_path)) == 2


@pytest.mark.slow
def test_flwr_run_on_a_simulation_superlink_gives_the_same_run(fedavg_run, tmp_path):
    """``flwr run .`` (the apps compose the config from the run config) reproduces ``fedkd-sim``."""
    out, _ = fedavg_run
    flwr_out = tmp_path / "run"
    with LoopbackDeployment(4, tmp_path / "superlink", simulation=True) as superlink:
        result = superlink.run(" ".join(["strategy=fedavg", *SMALL]), flwr_out, timeout=300)
    assert (flwr_out / "metrics.jsonl").is_file(), result.output[-3000:]
    # flwr run --stream exits 0 even when the run fails: compare what the run wrote.
    ours, theirs = read_metrics(out), read_metrics(flwr_out)
    assert [r["test_accuracy"] for r in theirs] == [r["test_accuracy"] for r in ours]
    assert [r["test_loss"] for r in theirs] == pytest.approx([r["test_loss"] for r in ours], rel=1e-6)
