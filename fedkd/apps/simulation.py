"""The one place that calls Flower's simulation engine.

``flwr.simulation.run_simulation`` is deprecated since Flower 1.41 (1.42 still runs it); when fedkd moves
to ``flwr run`` for in-process runs, :func:`simulate` is the only function to change.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from fedkd.apps.client_app import make_client_app
from fedkd.apps.ray_setup import local_system_config, probe_address
from fedkd.apps.server_app import make_server_app, quiet_flower
from fedkd.apps.sim_interrupt import QuietAfterStop, script_stops_at_first_interrupt, wind_down
from fedkd.config import check_sim
from fedkd.errors import ConfigError
from fedkd.federated.client_errors import ClientTracebacks
from fedkd.federated.faults import INJECTED
from fedkd.utils import interrupt

log = logging.getLogger("fedkd.sim")

GPU_SHARE = 0.25  # with CUDA and client_resources.num_gpus=null, four clients share one GPU


def client_resources(cfg: DictConfig) -> dict[str, float]:
    """Ray resources of one client: ``num_cpus`` and ``num_gpus`` (null: 0 on CPU, a quarter GPU on CUDA)."""
    gpus = cfg.client_resources.num_gpus
    if gpus is None:
        gpus = GPU_SHARE if torch.cuda.is_available() and cfg.device != "cpu" else 0.0
    return {"num_cpus": float(cfg.client_resources.num_cpus), "num_gpus": float(gpus)}


def parallel_clients(cfg: DictConfig) -> int:
    """How many clients train at once: Ray's CPUs (and GPUs) divided by one client's share."""
    res = client_resources(cfg)
    cpus = cfg.backend.num_cpus or os.cpu_count() or 1
    slots = int(cpus // res["num_cpus"])
    if res["num_gpus"] > 0:
        gpus = cfg.backend.num_gpus if cfg.backend.num_gpus is not None else torch.cuda.device_count()
        slots = min(slots, int(gpus // res["num_gpus"]))
    return max(1, min(slots, int(cfg.num_clients)))


def check_cluster(cfg: DictConfig) -> None:
    """With ``backend.address`` Ray joins a running cluster, which has its own resources and session folder."""
    if cfg.backend.get("address") is None:
        return
    local_only = [k for k in ("num_cpus", "num_gpus", "temp_dir") if cfg.backend.get(k) is not None]
    if local_only:
        raise ConfigError(
            f"backend.{local_only[0]} applies to a local Ray instance, not to the cluster at backend.address="
            f"{cfg.backend.address}; set backend.{local_only[0]}=null "
            "(size the cluster with `ray start --num-cpus/--num-gpus`)"
        )


def backend_config(cfg: DictConfig, temp_dir: str | None) -> dict[str, Any]:
    """Flower's backend config for Ray: client resources and ``ray.init`` arguments.

    Flower passes ``init_args`` to ``ray.init``: with ``backend.address`` that joins the cluster
    there (whose nodes then run the clients), otherwise it starts a local Ray in ``temp_dir``.
    """
    init_args: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": bool(cfg.backend.log_to_driver)}
    if cfg.backend.get("address") is not None:
        check_cluster(cfg)  # before Ray starts: its own error for these is a ValueError deep in ray.init
        init_args["address"] = str(cfg.backend.address)
        return {"client_resources": client_resources(cfg), "init_args": init_args}
    init_args["_temp_dir"] = temp_dir
    init_args["_system_config"] = local_system_config()  # clients keep up on a busy machine (fedkd.apps.ray_setup)
    if cfg.backend.num_cpus is not None:
        init_args["num_cpus"] = int(cfg.backend.num_cpus)
    if cfg.backend.num_gpus is not None:
        init_args["num_gpus"] = int(cfg.backend.num_gpus)
    return {"client_resources": client_resources(cfg), "init_args": init_args}


class _DropDeprecation(logging.Filter):
    """Hide Flower's run_simulation deprecation warning (known; see the module docstring), and its
    tracebacks of faults injected on purpose (``faults.raise_fraction``; the server logs one line each)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "deprecated" not in message and INJECTED not in message


def check_before_start(cfg: DictConfig) -> None:
    """Fail on config mistakes (data, partition, client models) before Ray starts its workers.

    The same functions the server and clients call later, so the one-line error is theirs; the
    data and partitions are cached in this process, where the ServerApp uses them again.
    """
    from fedkd.federated.data import partitions
    from fedkd.federated.faults import assignment
    from fedkd.federated.sanity import check_run_inputs
    from fedkd.training.optimizers import optimizer_factory

    check_run_inputs(cfg)  # the data can teach; every client architecture takes its images, one output per class
    partitions(cfg)
    assignment(cfg)  # fault-injection fractions
    optimizer_factory(instantiate(cfg.optim), "optim")  # the clients' optimiser (torch checks its values)


def simulate(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run the federated experiment ``cfg`` on Flower's simulation engine; return the run summary.

    ``cfg.num_clients`` virtual SuperNodes (partition ids ``0..num_clients-1``) run the ClientApp
    in Ray worker processes; the ServerApp runs in this process and writes to ``out_dir``.
    """
    quiet_flower()  # before the import: alembic logs its plugins at INFO when first imported
    from flwr.simulation import run_simulation

    check_sim(cfg)
    if cfg.backend.get("address") is not None:
        check_cluster(cfg)
        probe_address(str(cfg.backend.address))  # seconds, where ray.init retries a dead address for minutes
    check_before_start(cfg)
    if not interrupt.armed():  # called from a script: a stop that ended an earlier run here is over
        interrupt.STOP.clear()
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    # Ray's C++ core would answer SIGTERM with an abort and a stack dump in every process; its Python
    # handler (sys.exit) is left, and turned into a clean stop below.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    # A local Ray keeps logs and sockets in its session folder; a fresh one per run, removed
    # afterwards. A cluster (backend.address) keeps its own.
    cluster = cfg.backend.get("address") is not None
    temp_dir = None if cluster else cfg.backend.temp_dir or tempfile.mkdtemp(prefix="fedkd-ray-")
    summary: dict[str, Any] = {}
    flwr_logger = logging.getLogger("flwr")
    quiet = _DropDeprecation()
    flwr_logger.addFilter(quiet)
    tracebacks = ClientTracebacks(show=bool(cfg.get("debug", False)))  # a client's traceback: to the run log
    flwr_logger.addFilter(tracebacks)
    after_stop = QuietAfterStop()  # Ctrl-C: the engine's complaints about its interrupted work stay off the console
    flwr_logger.addFilter(after_stop)
    # Flower prints its warnings with its own handler; propagating them too would print them twice.
    propagate, flwr_logger.propagate = flwr_logger.propagate, False
    terminated = False
    try:
        with script_stops_at_first_interrupt():
            run_simulation(
                server_app=make_server_app(cfg, out_dir, result=summary),
                client_app=make_client_app(cfg),
                num_supernodes=int(cfg.num_clients),
                backend_config=backend_config(cfg, temp_dir),
            )
    except KeyboardInterrupt:  # Ctrl-C left the engine; the ServerApp's thread follows (fedkd.apps.sim_interrupt)
        interrupt.STOP.set()  # set already by the handler (the command line's, or a script's first Ctrl-C)
        wind_down()
        raise
    except SystemExit as ended:  # SIGTERM once Ray runs: ray.init put sys.exit(15) in the place of our handler
        if ended.code != signal.SIGTERM:
            raise
        interrupt.request_stop(signal.SIGTERM)  # the ServerApp's thread sees it, as after Ctrl-C
        wind_down()
        if not interrupt.armed():  # a script's SIGTERM: end as Ray's handler asked (exit code 15)
            terminated = True
            raise
        raise KeyboardInterrupt from None
    finally:
        interrupt.rearm()  # ray.init took SIGTERM over; the rest of the command is ours again
        flwr_logger.removeFilter(quiet)
        flwr_logger.removeFilter(tracebacks)
        flwr_logger.removeFilter(after_stop)
        flwr_logger.propagate = propagate
        if temp_dir is None:
            pass  # a cluster's logs stay in its own session folder
        elif cfg.backend.keep_logs:
            log.info("Ray logs kept in %s", temp_dir)
        elif not cfg.backend.temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
        if terminated:  # at once if the engine's threads still wait on the stopped Ray: they would hold the exit
            interrupt.exit_if_held(signal.SIGTERM)
    return summary
