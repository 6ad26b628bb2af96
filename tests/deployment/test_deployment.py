"""The same ServerApp and ClientApp on a real Flower deployment: SuperLink + 2 SuperNodes on loopback.

Starts ``flower-superlink`` and two ``flower-supernode`` processes (insecure, 127.0.0.1, each with
``--node-config "partition-id=i num-partitions=2"``), runs ``flwr run . loopback`` for two rounds,
checks the run's outputs (``flwr run --stream`` exits 0 even when a run fails) and stops the
processes, also when the run fails. Each message starts a fresh ClientApp process (torch
import), so this takes about a minute on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedkd.federated.loopback import LoopbackDeployment
from fedkd.utils.run_logger import read_metrics

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's bookkeeping is left


def test_loopback_deployment_runs_two_rounds_and_stops(tmp_path):
    out = tmp_path / "run"
    deployment = LoopbackDeployment(2, tmp_path / "deployment")
    with deployment:
        pids = [p.pid for p in deployment.processes]
        result = deployment.run("dataset=digits rounds=2", out, timeout=400)
        logs = deployment.logs()
    assert not any(_alive(pid) for pid in pids), "SuperLink/SuperNode processes left running"
    assert (out / "metrics.jsonl").is_file(), result.output[-3000:] + logs[-3000:]
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["clients"] == 2 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds_completed"] == 2 and summary["final_test_accuracy"] > 0.3
    assert (out / "model.pt").is_file()
    assert "round 2/2" in result.output  # the ServerApp's progress lines reach `flwr run --stream`
