"""Ctrl-C: a real ``fedkd-sim`` / ``fedkd-train`` stops within seconds and says in one line how to
resume (exit code 130, no traceback); the command it names finishes the federated run."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fedkd.utils import interrupt
from fedkd.utils.run_logger import read_metrics

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "HYDRA_FULL_ERROR": "0"}
#: Seconds from Ctrl-C to the end of the process that the tests allow.
STOP_WITHIN = 15


def _default_sigint() -> None:
    # A job started in the background of a non-interactive shell ignores SIGINT, and its children
    # inherit that: give the command the default a terminal's foreground job has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ctrl_c_when_checkpointed(argv: list[str], state: Path, log_path: Path, timeout: float = 300,
                             signum: int = signal.SIGINT):
    """Start ``argv`` in its own process group, send the group SIGINT (a terminal's Ctrl-C) once the
    checkpoint ``state`` exists (a round or epoch is complete); return ``(exit code, seconds to exit, output)``.
    With ``signum=SIGTERM`` the signal goes to the process alone, as ``kill`` and ``timeout`` send it."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=ENV,
                                cwd=REPO, start_new_session=True, preexec_fn=_default_sigint)
        try:
            deadline = time.monotonic() + timeout
            while not state.is_file():
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, f"no {state.name} within {timeout:.0f} s"
                time.sleep(0.1)
            if signum == signal.SIGINT:
                os.killpg(proc.pid, signal.SIGINT)
            else:
                os.kill(proc.pid, signum)
            sent = time.monotonic()
            try:
                proc.wait(timeout=STOP_WITHIN)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running {STOP_WITHIN} s after signal {signum}: {log_path.read_text()[-2000:]}")
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    return proc.returncode, took, log_path.read_text()


def _resume_command(output: str, pattern: str) -> tuple[int, list[str]]:
    last = output.strip().splitlines()[-1]
    found = re.fullmatch(pattern, last)
    assert found is not None, output[-2000:]
    return int(found.group(1)), shlex.split(found.group(2))


def test_ctrl_c_stops_fedkd_sim_within_seconds_and_the_named_command_finishes_the_run(tmp_path):
    run = tmp_path / "run"
    argv = [str(BIN / "fedkd-sim"), "dataset=digits", "num_clients=4", "rounds=4", "client_resources.num_cpus=1",
            f"hydra.run.dir={run}"]
    code, took, output = ctrl_c_when_checkpointed(argv, run / "server_state.pt", tmp_path / "sim.log")
    assert code == 130, output[-2000:]
    assert took < STOP_WITHIN
    assert "Traceback" not in output and "Error" not in output, output[-3000:]
    done, command = _resume_command(output, r"fedkd: interrupted after round (\d+); resume with (fedkd-sim .*)")
    assert command[-1] == f"resume={run}"
    assert 1 <= done < 4
    # The checkpoint is that round's; the metrics hold its rows (a later, unfinished round's row is dropped on resume).
    assert [r["step"] for r in read_metrics(run)][:done] == list(range(1, done + 1))
    resumed = subprocess.run([str(BIN / command[0]), *command[1:]], capture_output=True, text=True, timeout=300,
                             env=ENV, cwd=REPO, stdin=subprocess.DEVNULL)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["rounds_completed"] == 4
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4]


def test_sigterm_stops_fedkd_sim_in_one_line_and_leaves_no_ray_process(tmp_path):
    """``kill <pid>``: Ray's own handlers (an abort with stack dumps in every process) give way to the
    same clean stop as Ctrl-C, exit code 143; none of the run's Ray processes outlives it."""
    run, ray_dir = tmp_path / "run", Path(tempfile.mkdtemp(prefix="fedkd-t-"))  # short: Ray's socket paths
    argv = [str(BIN / "fedkd-sim"), "dataset=digits", "num_clients=4", "rounds=4", "client_resources.num_cpus=1",
            f"backend.temp_dir={ray_dir}", f"hydra.run.dir={run}"]
    try:
        code, took, output = ctrl_c_when_checkpointed(argv, run / "server_state.pt", tmp_path / "sim.log",
                                                      signum=signal.SIGTERM)
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert code == 143 and took < STOP_WITHIN, output[-2000:]
    assert "Traceback" not in output and "SIGTERM" not in output and "Error" not in output, output[-3000:]
    done, command = _resume_command(output, r"fedkd: interrupted after round (\d+); resume with (fedkd-sim .*)")
    assert 1 <= done < 4 and command[-1] == f"resume={run}"
    deadline = time.monotonic() + 10
    while (left := subprocess.run(["pgrep", "-f", str(ray_dir)], capture_output=True, text=True).stdout.split()):
        assert time.monotonic() < deadline, f"Ray processes left: {left}"
        time.sleep(0.5)


#: A script that runs a simulation itself, without the command line's handlers.
SCRIPT = """
import sys
from fedkd.apps.simulation import simulate
from fedkd.federated.config import compose_sim_config
simulate(compose_sim_config(sys.argv[2:]), sys.argv[1])
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_script_calling_simulate_ends_at_an_interrupt_and_leaves_no_ray_process(tmp_path, signum):
    """A script or a notebook (no handler of fedkd's installed): the interrupt that ends the simulation
    engine in the main thread also ends the server's thread, which would otherwise wait for replies
    that never come and keep the process alive for good. A Ctrl-C raised in the engine at once left
    its worker threads waiting on a Ray that was shut down (the process hung at exit, 1 run in 5)."""
    run, ray_dir = tmp_path / "run", Path(tempfile.mkdtemp(prefix="fedkd-t-"))
    argv = [sys.executable, "-c", SCRIPT, str(run), "dataset=digits", "num_clients=4", "rounds=20",
            "client_resources.num_cpus=1", f"backend.temp_dir={ray_dir}"]
    try:
        code, took, output = ctrl_c_when_checkpointed(argv, run / "server_state.pt", tmp_path / "script.log",
                                                      signum=signum)
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert took < STOP_WITHIN and code != 0, output[-2000:]
    if signum == signal.SIGTERM:
        assert code == signal.SIGTERM, output[-2000:]  # Ray's handler: sys.exit(15), as without fedkd
    else:  # the script gets its KeyboardInterrupt once the engine has ended, not inside the engine's wait
        assert output.rstrip().endswith("KeyboardInterrupt") and "sim_interrupt.py" in output, output[-2000:]
    deadline = time.monotonic() + 10
    while (left := subprocess.run(["pgrep", "-f", str(ray_dir)], capture_output=True, text=True).stdout.split()):
        assert time.monotonic() < deadline, f"Ray processes left: {left}"
        time.sleep(0.5)


def test_ctrl_c_stops_fedkd_train_after_its_last_epoch_and_names_the_command_that_resumes(tmp_path):
    run = tmp_path / "run"
    argv = [str(BIN / "fedkd-train"), "dataset=digits", "epochs=4", "device=cpu", f"hydra.run.dir={run}"]
    code, took, output = ctrl_c_when_checkpointed(argv, run / "train_state.pt", tmp_path / "train.log")
    assert code == 130 and took < STOP_WITHIN, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    done, command = _resume_command(output, r"fedkd: interrupted after epoch (\d+); resume with (fedkd-train .*)")
    assert command == ["fedkd-train", "dataset=digits", "epochs=4", "device=cpu", f"resume={run}"]
    # The checkpoint holds the epoch the line names (that a resume from it ends like an uninterrupted
    # run is tests/integration/test_reliability_resume_centralized.py's).
    assert 1 <= done < 4 and interrupt.last_step(run / "train_state.pt", "epoch") == done
