"""``fedkd-sim`` joins an existing Ray cluster (``backend.address``) instead of starting its own Ray.

The cluster is a one-node ``ray start --head`` on 127.0.0.1 with its own temp dir and its own
ports, so that concurrent test runs (and their Ray instances) are left alone. It is stopped by
killing its process group, not with ``ray stop``: that command ends every Ray process of the
machine, other runs' included.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, run_cli

# `ray start` options whose defaults are fixed ports (6379, 10001, 8265, 52365, ...): each gets a
# free one, or two clusters on the same machine would collide.
PORT_OPTIONS = (
    "port", "ray-client-server-port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
    "runtime-env-agent-port", "metrics-export-port", "node-manager-port", "object-manager-port",
)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together, so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _processes_mentioning(text: str) -> list[int]:
    """Ids of processes whose command line contains ``text`` (the cluster's temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, timeout: float = 90) -> Iterator[tuple[str, Path]]:
    """A one-node Ray cluster on 127.0.0.1 for the duration of the block; yields its address and temp dir."""
    temp_dir = tempfile.mkdtemp(prefix="fedkd-rc-")  # short: Ray's socket paths live under it
    ports = dict(zip(PORT_OPTIONS, free_ports(len(PORT_OPTIONS))))
    argv = [
        str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
        "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}",
        *(f"--{option}={port}" for option, port in ports.items()),
    ]
    log_path = Path(temp_dir) / "ray-start.log"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    with log_path.open("w") as log:
        head = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)  # its own process group: stopped as one below
    try:
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in log_path.read_text():
            assert head.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, (
                f"Ray head not up within {timeout:.0f} s: {log_path.read_text()[-3000:]}"
            )
            time.sleep(0.5)
        yield f"127.0.0.1:{ports['port']}", Path(temp_dir)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)
        # Anything of this cluster outside the group (workers the raylet started), by its temp dir.
        for pid in _processes_mentioning(temp_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_backend_address_joins_a_cluster_with_the_configured_client_resources():
    from fedkd.apps.simulation import backend_config
    from fedkd.errors import ConfigError
    from fedkd.federated.config import compose_sim_config

    cfg = compose_sim_config(["backend.address=10.0.0.7:6379", "client_resources.num_cpus=2",
                              "client_resources.num_gpus=0.5"])
    backend = backend_config(cfg, None)
    assert backend["init_args"]["address"] == "10.0.0.7:6379"
    assert not {"num_cpus", "num_gpus", "_temp_dir"} & set(backend["init_args"])  # the cluster's own
    assert backend["client_resources"] == {"num_cpus": 2.0, "num_gpus": 0.5}  # still from config
    local = backend_config(compose_sim_config(["backend.num_cpus=3"]), "/tmp/x")["init_args"]
    assert "address" not in local and local["num_cpus"] == 3 and local["_temp_dir"] == "/tmp/x"
    for key, value in (("num_cpus", "4"), ("num_gpus", "1"), ("temp_dir", "/tmp/ray")):
        cfg = compose_sim_config(["backend.address=auto", f"backend.{key}={value}"])
        with pytest.raises(ConfigError, match=f"backend.{key}=null") as exc:
            backend_config(cfg, None)
        assert "\n" not in str(exc.value)


@pytest.mark.slow  # a Ray head of its own plus a simulation: 1-2 minutes on two busy cores
def test_fedkd_sim_runs_two_rounds_on_a_one_node_cluster(tmp_path):
    from fedkd.utils.run_logger import read_metrics

    with ray_head(num_cpus=2) as (address, temp_dir):
        started = time.time()
        done = run_cli(
            "fedkd-sim", "dataset=digits", "num_clients=2", "rounds=2", "client_resources.num_cpus=1",
            f"backend.address={address}", f"hydra.run.dir={tmp_path / 'run'}", timeout=240,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        # The clients ran in the cluster's workers: their logs are in its session folder.
        logs = temp_dir / "session_latest" / "logs"
        worker_logs = [p for p in logs.glob("worker-*") if p.stat().st_mtime >= started - 1]
        assert worker_logs, sorted(p.name for p in logs.iterdir())
    rows = [r for r in read_metrics(tmp_path / "run") if "test_accuracy" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert (tmp_path / "run" / "model.pt").is_file() and (tmp_path / "run" / "partition.png").is_file()
