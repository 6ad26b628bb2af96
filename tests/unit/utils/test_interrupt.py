"""Ctrl-C: the one-line message from a run's folder, the handler's first and second press, and the
server's grid that stops waiting for replies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from fedkd.utils import interrupt
from fedkd.utils.interrupt import Interrupted, RunInfo


def _describe(monkeypatch, config_name, folder, overrides):
    monkeypatch.setattr(interrupt, "_run", RunInfo(config_name, folder, overrides))


def test_the_message_names_the_checkpointed_round_and_the_command_that_resumes(tmp_path, monkeypatch):
    _describe(monkeypatch, "sim", tmp_path, ["dataset=digits", "overrides=a b", "resume=/old", "hydra.run.dir=/x"])
    assert interrupt.message() == (
        "fedkd: interrupted before round 1 completed; nothing to resume, run the command again")
    torch.save({"round": 3, "arrays": {"w": torch.zeros(2)}}, tmp_path / "server_state.pt")
    assert interrupt.message() == (
        f"fedkd: interrupted after round 3; resume with fedkd-sim dataset=digits 'overrides=a b' resume={tmp_path}")
    _describe(monkeypatch, "centralized", tmp_path, ["synthesizer=dfad"])
    torch.save({"epoch": 2}, tmp_path / "train_state.pt")
    assert interrupt.message() == (
        f"fedkd: interrupted after epoch 2; resume with fedkd-distill synthesizer=dfad resume={tmp_path}")


def test_the_message_of_a_comparison_names_its_unfinished_run(tmp_path, monkeypatch):
    _describe(monkeypatch, "compare", tmp_path, ["strategies=[fedavg,fedftg]", "overrides=['rounds=3']"])
    (tmp_path / "runs/fedavg/seed0").mkdir(parents=True)
    (tmp_path / "runs/fedavg/seed0/summary.json").write_text("{}")
    (tmp_path / "runs/fedftg/seed0").mkdir(parents=True)
    torch.save({"round": 2}, tmp_path / "runs/fedftg/seed0/server_state.pt")
    assert interrupt.message() == (
        f"fedkd: interrupted in runs/fedftg/seed0 after round 2; continue with fedkd-compare "
        f"'strategies=[fedavg,fedftg]' \"overrides=['rounds=3']\" hydra.run.dir={tmp_path} "
        "(finished runs are kept, that run resumes after round 2)")


def test_the_first_ctrl_c_raises_in_the_main_thread_and_sets_the_stop_flag():
    # A terminal's foreground default; a test process started in the background inherits SIGINT ignored.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with interrupt.handle_sigint():
            assert interrupt.armed() and not interrupt.STOP.is_set()
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            assert interrupt.STOP.is_set()
            with pytest.raises(Interrupted):
                interrupt.check_stop()
        assert not interrupt.armed() and not interrupt.STOP.is_set()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


SECOND_PRESS = """
import time
from fedkd.utils import interrupt
with interrupt.handle_sigint():
    try:
        print("ready", flush=True)
        time.sleep(30)
    except KeyboardInterrupt:
        print("stopping", flush=True)
        time.sleep(30)  # a slow clean-up: the second Ctrl-C ends it
"""


def test_sigterm_stops_the_run_as_ctrl_c_does_with_exit_code_143():
    """``kill`` / ``timeout`` / a scheduler: the same clean stop, the exit code of a SIGTERM (128 + 15)."""
    # A process's default; an in-process simulation earlier in this worker leaves Ray's handler installed.
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with interrupt.handle_sigint():
            assert interrupt.exit_code() == 130
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            assert interrupt.STOP.is_set() and interrupt.exit_code() == 143
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and not interrupt.STOP.is_set()
        with interrupt.handle_sigint():  # a fresh run starts from Ctrl-C's code again
            assert interrupt.exit_code() == 130
    finally:
        signal.signal(signal.SIGTERM, before)


def test_rearm_takes_sigterm_back_from_the_handler_ray_init_leaves():
    """``ray.init`` puts ``sys.exit(15)`` on SIGTERM; after a simulation the command's stop handler
    is back (a later SIGTERM stops with the one line and 143), and nothing is installed outside a run."""

    def rays(signum, frame):  # what ray.init installs
        sys.exit(signum)

    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with interrupt.handle_sigint():
            signal.signal(signal.SIGTERM, rays)
            interrupt.rearm()
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            assert interrupt.exit_code() == 143
        signal.signal(signal.SIGTERM, rays)
        interrupt.rearm()  # no run holds the signal: Ray's stays
        assert signal.getsignal(signal.SIGTERM) is rays
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_second_ctrl_c_exits_at_once_with_the_one_line_message():
    proc = subprocess.Popen([sys.executable, "-c", SECOND_PRESS], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGINT)
    assert proc.stdout.readline().strip() == "stopping"
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert err.strip() == "fedkd: interrupted before the run started"


class _SilentGrid:
    """Accepts messages and never replies (clients that are gone)."""

    def push_messages(self, messages):
        return [str(i) for i, _ in enumerate(messages)]

    def pull_messages(self, ids):
        return []


def test_the_servers_grid_stops_waiting_for_replies_at_ctrl_c(monkeypatch):
    from fedkd.federated.stoppable_grid import StoppableGrid

    grid = StoppableGrid(_SilentGrid())
    assert grid.send_and_receive([object()], timeout=0.3) == []  # the timeout still ends a wait
    # with the command line's handler (as handle_sigint leaves it) and without (a script calling simulate())
    for owned in ((signal.SIGINT,), ()):
        monkeypatch.setattr(interrupt, "_owned", owned)
        timer = threading.Timer(0.3, interrupt.STOP.set)
        timer.start()
        started = time.monotonic()
        try:
            with pytest.raises(Interrupted):
                grid.send_and_receive([object()], timeout=3600)
        finally:
            interrupt.STOP.clear()
        assert time.monotonic() - started < 2
