"""``flwr run``: num_clients follows the federation; Ray: a dead cluster address fails in one line, and
a local Ray runs its workers at the simulation's niceness."""

from __future__ import annotations

import os
import random
import socket
import time

import pytest
from fakes import FakeGrid, task_identity  # noqa: F401  (task_identity: an autouse fixture)

from fedkd.apps.federation import client_overrides, federation_config
from fedkd.apps.ray_setup import probe_address
from fedkd.apps.simulation import backend_config, simulate
from fedkd.errors import ConfigError
from fedkd.federated import records as R
from fedkd.federated.config import compose_sim_config


def test_a_client_takes_num_clients_from_its_node_unless_the_overrides_set_it():
    node = {R.PARTITION_ID: 1, R.NUM_PARTITIONS: 2}
    assert client_overrides(["dataset=digits"], node) == ["dataset=digits", "num_clients=2"]
    assert client_overrides(["num_clients=4"], node) == ["num_clients=4"]
    assert client_overrides(["rounds=2"], {R.PARTITION_ID: 0}) == ["rounds=2"]


def test_the_server_takes_num_clients_from_the_federation_unless_the_overrides_set_it():
    # Flower's default local federation has 2 SuperNodes; conf/sim.yaml says 10 clients.
    assert compose_sim_config([]).num_clients == 10
    grid = FakeGrid(2, random.Random(0))
    cfg = federation_config(grid, {"overrides": "dataset=digits rounds=2"})
    assert cfg.num_clients == 2 and cfg.rounds == 2 and grid.queries == 1
    grid = FakeGrid(2, random.Random(0))
    assert federation_config(grid, {"overrides": "num_clients=3"}).num_clients == 3  # kept; refused later in one line
    assert grid.queries == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def test_a_dead_backend_address_fails_in_seconds_with_one_line(tmp_path):
    port = _closed_port()
    started = time.monotonic()
    with pytest.raises(ConfigError) as exc:
        probe_address(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 5
    message = str(exc.value)
    assert "\n" not in message and f"backend.address=127.0.0.1:{port}" in message
    assert "connection refused" in message and "backend.address=null" in message
    probe_address("auto")  # left to Ray
    # The same line from the simulation, before the data is loaded or Ray starts.
    cfg = compose_sim_config(["dataset=digits", "num_clients=2", f"backend.address=127.0.0.1:{port}"])
    started = time.monotonic()
    with pytest.raises(ConfigError, match="no Ray cluster answers there"):
        simulate(cfg, tmp_path / "run")
    assert time.monotonic() - started < 10
    assert not (tmp_path / "run").exists()


def test_a_local_ray_runs_its_workers_at_the_simulations_niceness_and_a_cluster_keeps_its_own():
    local = backend_config(compose_sim_config([]), "/tmp/x")["init_args"]["_system_config"]
    assert local["worker_niceness"] == os.nice(0)  # this process's; Ray's 15 starves them beside CPU-bound work
    assert local["worker_register_timeout_seconds"] >= 300
    cluster = backend_config(compose_sim_config(["backend.address=10.0.0.7:6379"]), None)["init_args"]
    assert "_system_config" not in cluster


def test_pyproject_declares_no_federation_for_flwr_run_to_move():
    from fedkd.federated.loopback import REPO

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    flwr = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]
    assert "federations" not in flwr  # Flower 1.42 moves it to $FLWR_HOME and comments it out here
    assert flwr["app"]["config"]["overrides"] == ""  # so num_clients follows the federation by default
