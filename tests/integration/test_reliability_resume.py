"""Checkpoint and resume of a federated run: a run killed with SIGKILL and resumed ends as one never interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import sigkill_when

from fedkd.federated.resume import STATE_FILE
from fedkd.utils.checkpoint import load_checkpoint
from fedkd.utils.run_logger import read_metrics

BIN = Path(sys.executable).parent
SIM = ["dataset=digits", "num_clients=2", "rounds=3", "model=lenet5_half", "client_resources.num_cpus=1", "device=cpu",
       "seed=3"]
ENV = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "HYDRA_FULL_ERROR": "0"}


def _sim(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "fedkd-sim"), *SIM, *overrides], capture_output=True, text=True, timeout=300,
                          env=ENV, stdin=subprocess.DEVNULL)


def _state_round(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["round"])
    except Exception:  # not written yet (the rename is atomic, so never half a file)
        return 0


def _kill_leftovers(marker: str) -> list[int]:
    """SIGKILL processes of the killed run that left its process group (Ray's daemons), found by
    their Ray session folder on the command line; returns their pids."""
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except ProcessLookupError:
                pass
    return killed


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = _sim(f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_run_killed_with_sigkill_and_resumed_ends_like_an_uninterrupted_one(reference, tmp_path):
    out = tmp_path / "run"
    # Ray's session folder, to find its daemons afterwards; short, as Ray's socket paths must be.
    ray_dir = Path(tempfile.mkdtemp(prefix="fkr-", dir="/tmp"))
    try:  # kill as soon as round 1 is checkpointed
        returncode = sigkill_when(
            [str(BIN / "fedkd-sim"), *SIM, f"hydra.run.dir={out}", f"backend.temp_dir={ray_dir}"],
            tmp_path / "killed.log", lambda: _state_round(out / STATE_FILE) >= 1, timeout=240, env=ENV, poll=0.1,
        )
    finally:
        _kill_leftovers(str(ray_dir))
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert returncode == -signal.SIGKILL
    killed_at = _state_round(out / STATE_FILE)
    assert 1 <= killed_at < 3, "killed in the middle of the run"
    assert not (out / "summary.json").exists()

    resumed = _sim(f"resume={out}")  # same overrides; continues in the run's folder
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resuming {out}" in resumed.stdout + resumed.stderr

    rows, expected = read_metrics(out), read_metrics(reference)
    assert [r["step"] for r in rows] == [1, 2, 3], "one row per round, none duplicated"
    for row, want in zip(rows, expected, strict=True):
        for key in ("test_accuracy", "test_loss", "train_loss", "train_accuracy"):
            assert row[key] == want[key], (row["step"], key, row[key], want[key])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_test_accuracy"] == json.loads((reference / "summary.json").read_text())["final_test_accuracy"]
    ours, theirs = (load_checkpoint(out / "model.pt")["state_dict"],
                    load_checkpoint(reference / "model.pt")["state_dict"])
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert (out / ".hydra" / "overrides.yaml").read_text() != (out / ".hydra-resume" / "overrides.yaml").read_text()


def test_checkpoint_after_every_round_holds_the_run_state(reference):
    state = torch.load(reference / STATE_FILE, map_location="cpu", weights_only=True)
    assert state["round"] == 3
    assert [r["round"] for r in state["rows"]] == [1, 2, 3]
    assert set(state["rng"]) >= {"torch", "numpy", "python"}
    assert set(state["strategy"]["client_label_counts"]) == {"0", "1"}
    final = load_checkpoint(reference / "model.pt")["state_dict"]
    assert all(torch.equal(state["arrays"][k], final[k]) for k in final)
    assert not list(reference.glob(f".{STATE_FILE}.*")), "no temporary file left behind"


def test_compare_resumes_an_interrupted_run_and_keeps_finished_ones(tmp_path, monkeypatch):
    """fedkd-compare over a folder where one run finished and one was killed after a round."""
    from flwr.app import ArrayRecord
    from omegaconf import OmegaConf

    import fedkd.apps.simulation as simulation
    from fedkd.cli.compare import run_all
    from fedkd.federated.config import compose_sim_config
    from fedkd.federated.resume import ServerCheckpointer
    from fedkd.strategies.fedavg import FedAvg

    class Rows:
        rows: list = []

    overrides = ["dataset=digits", "num_clients=2", "rounds=2"]
    finished, killed = tmp_path / "runs" / "fedavg" / "seed0", tmp_path / "runs" / "fedavg" / "seed1"
    finished.mkdir(parents=True)
    (finished / "summary.json").write_text("{}\n")
    killed.mkdir(parents=True)
    sim_cfg = compose_sim_config(["strategy=fedavg", "seed=1", *overrides])
    ServerCheckpointer(killed, sim_cfg, FedAvg(num_clients=2), Rows())(1, ArrayRecord({"w": torch.zeros(2)}))
    calls = []
    monkeypatch.setattr(simulation, "simulate", lambda cfg, out: calls.append((cfg, out)))
    cfg = OmegaConf.create({"strategies": ["fedavg"], "seeds": [0, 1, 2], "overrides": overrides,
                            "strategy_overrides": {}})
    run_all(cfg, tmp_path)
    assert [out for _, out in calls] == [killed, tmp_path / "runs" / "fedavg" / "seed2"]
    assert calls[0][0].resume == str(killed) and calls[1][0].resume is None


def test_compare_runs_a_named_variant_of_a_strategy_under_its_own_name(tmp_path, monkeypatch):
    """A row not in conf/strategy names its strategy in its overrides; its runs go under its own name."""
    from omegaconf import OmegaConf

    import fedkd.apps.simulation as simulation
    from fedkd.cli.compare import run_all

    calls = []
    monkeypatch.setattr(simulation, "simulate", lambda cfg, out: calls.append((cfg, out)))
    cfg = OmegaConf.create({"strategies": ["fedavg", "ftg_global"], "seeds": [0], "overrides": ["dataset=digits"],
                            "strategy_overrides": {
                                "ftg_global": ["strategy=fedftg", "strategy.global_teacher_weight=0.5"]}})
    run_all(cfg, tmp_path)
    (plain, plain_out), (variant, variant_out) = calls
    assert plain.strategy._target_.endswith("FedAvg") and plain_out == tmp_path / "runs" / "fedavg" / "seed0"
    assert variant.strategy._target_.endswith("FedFTG") and variant.strategy.global_teacher_weight == 0.5
    assert variant_out == tmp_path / "runs" / "ftg_global" / "seed0"
