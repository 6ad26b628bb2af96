"""Shared fixtures: small real data (scikit-learn's digits), a CLI runner, and the federated
comparison run that the strategy tests (FedFTG, FedGen) share: Ray simulations are the slow part
of the suite, so one ``fedkd-compare`` of the three strategies serves all of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Two cores on CI: keep torch from oversubscribing them when pytest and a subprocess both run. Under
# pytest-xdist (`make test` runs two workers) each worker gets one thread: the workers are the parallelism.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
torch.set_num_threads(1 if XDIST_WORKER else min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def digits():
    from fedkd.data import load_dataset

    return load_dataset("digits")


def run_cli(cmd: str, *overrides: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a console entry point (e.g. ``fedkd-train``) with Hydra overrides; capture output."""
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [str(BIN / cmd), *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def run_entry_point(cmd: str, args: list[str], monkeypatch) -> int:
    """Run ``fedkd-train``/``-distill``/``-sim`` in-process, as its console script does; the exit code."""
    from fedkd.cli import distill, sim, train

    monkeypatch.setattr(sys, "argv", [cmd, *args])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    try:
        {"fedkd-train": train.main, "fedkd-distill": distill.main, "fedkd-sim": sim.main}[cmd]()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


@pytest.fixture
def cli():
    return run_cli


# A small federated setting on digits, and a tiny server budget per strategy: the tests check
# behaviour, the benchmarks check quality.
SMALL_SIM = ["dataset=digits", "num_clients=4", "rounds=2", "partition.alpha=0.5", "client_resources.num_cpus=1"]
FEDFTG_BUDGET = ["strategy.iterations_per_round=4", "strategy.student_batch_size=64",
                 "strategy.synthesizer.batch_size=64", "strategy.image_every=1", "strategy.diagnostics_every=1"]
FEDGEN_BUDGET = ["strategy.generator_steps=20", "strategy.generator_batch_size=64"]


def _hydra_list(items: list[str]) -> str:
    return "[" + ",".join(f"'{o}'" for o in items) + "]"


@pytest.fixture(scope="session")
def compare_dir(tmp_path_factory):
    """``fedkd-compare`` of FedAvg, FedFTG and FedGen on digits (4 clients, 2 rounds, one seed),
    run as a user runs it."""
    # Under pytest-xdist the workers share one run: the first makes it, the others wait for it.
    shared = tmp_path_factory.getbasetemp().parent if XDIST_WORKER else tmp_path_factory.getbasetemp()
    out = shared / "compare"
    with FileLock(f"{out}.lock"):
        if not (out / "report.json").exists():
            _run_compare(out)
    return out


def _run_compare(out: Path) -> None:
    done = run_cli(
        "fedkd-compare", "strategies=[fedavg,fedftg,fedgen]", "seeds=[0]", f"overrides={_hydra_list(SMALL_SIM)}",
        f"+strategy_overrides.fedftg={_hydra_list(FEDFTG_BUDGET)}",
        f"+strategy_overrides.fedgen={_hydra_list(FEDGEN_BUDGET)}",
        "target_accuracy=0.5", f"hydra.run.dir={out}", timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def client_updates(cfg, run, seed: int = 0, epochs: int = 1, same_start: bool = False) -> list:
    """Train replies as a strategy receives them, from (briefly) trained client models; with
    ``same_start`` every client starts from the server's initial model, as in a real round."""
    from flwr.app import MetricRecord, RecordDict

    from fedkd.clients.train import local_train
    from fedkd.federated import records as R
    from fedkd.federated.data import client_split, partition_label_counts
    from fedkd.models import build_from_config
    from fedkd.strategies.fedavg import ClientUpdate

    counts = partition_label_counts(cfg)
    updates = []
    for pid in range(cfg.num_clients):
        torch.manual_seed(seed + pid)
        model = build_from_config(run.client_model_configs[pid], run.spec)
        if same_start:
            model.load_state_dict(R.state_dict(run.initial_group_arrays(run.group_of(pid))))
        split = client_split(cfg, pid)
        local_train(model, split, torch.optim.SGD, 0.05, epochs, 32, torch.device("cpu"),
                    torch.Generator().manual_seed(pid))
        metrics = MetricRecord({R.NUM_EXAMPLES: len(split), R.PARTITION_ID: pid, R.LABEL_COUNTS: counts[pid].tolist()})
        updates.append(ClientUpdate(pid, pid, RecordDict({R.ARRAYS: R.to_arrays(model), R.METRICS: metrics})))
    return updates


@pytest.fixture(scope="session")
def fedftg_replies(tmp_path_factory):
    """FedFTG's four digits clients' replies after 5 local epochs from the server's initial model:
    an average well above chance (trained once per session; the strategy tests only read them)."""
    from fedkd.federated.config import compose_sim_config

    cfg = compose_sim_config(SMALL_SIM + FEDFTG_BUDGET + ["strategy=fedftg"])
    _, run = bound_strategy(cfg, tmp_path_factory.mktemp("fedftg_clients"))
    return client_updates(cfg, run, epochs=5, same_start=True)


def bound_strategy(cfg, out_dir, proxy="from cfg"):
    """``cfg.strategy`` instantiated and bound to a CPU ServerRun on the run's data (no Flower run),
    holding what the ServerApp hands it of the proxy (``server_proxy``), or ``proxy`` when given, and
    of the validation split (``server_validation``)."""
    from hydra.utils import instantiate

    from fedkd.federated.data import client_model_configs, load_data, server_proxy, server_validation
    from fedkd.federated.server_run import ServerRun
    from fedkd.utils.run_logger import RunLogger

    data = load_data(cfg)
    torch.manual_seed(0)
    run = ServerRun.create(data.spec, data.test, torch.device("cpu"), RunLogger(out_dir), client_model_configs(cfg),
                           proxy=server_proxy(cfg) if proxy == "from cfg" else proxy, validation=server_validation(cfg))
    strategy = instantiate(cfg.strategy, num_clients=cfg.num_clients, seed=0)
    strategy.bind(run)
    return strategy, run


def global_accuracy(run, arrays) -> float:
    """Test accuracy of the single-architecture global model ``arrays`` on ``run``'s evaluation split."""
    from fedkd.federated import records as R
    from fedkd.models import build_from_config
    from fedkd.training import evaluate

    model = build_from_config(run.client_model_configs[0], run.spec)
    model.load_state_dict(R.state_dict(arrays))
    return evaluate(model, run.test, run.device)["accuracy"]


def sigkill_when(
    argv: list[str], log_path: Path, ready, timeout: float, env: dict | None = None, poll: float = 0.05
) -> int:
    """Start ``argv`` in its own process group and SIGKILL the whole group as soon as ``ready()``
    holds (a checkpoint exists); returns the exit code (``-SIGKILL``). Fails if the process ends
    first (its log tail in the message) or ``ready()`` does not hold within ``timeout`` seconds."""
    import signal
    import time

    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while not ready():
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, f"not ready within {timeout:.0f} s"
                time.sleep(poll)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    return proc.returncode


@pytest.fixture(scope="session")
def digits_teacher(digits):
    """A LeNet-5 trained on digits once per session (about 97% test accuracy)."""
    from fedkd.models import build_model
    from fedkd.training import evaluate, fit
    from fedkd.utils.seeding import seed_everything

    # One thread: the same teacher, bit for bit, whichever test module asks for it first.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = seed_everything(0)
        model = build_model("lenet5", digits.spec)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        fit(model, digits.train, digits.test, opt, 5, 64, torch.device("cpu"), generator=gen, progress=False)
    finally:
        torch.set_num_threads(threads)
    acc = evaluate(model, digits.test, torch.device("cpu"))["accuracy"]
    assert acc > 0.9
    return model.eval()


def same_arrays(a, b) -> bool:
    """Whether two ArrayRecords hold the same keys and bit-for-bit the same arrays."""
    return set(a) == set(b) and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def one_line_error(make) -> str:
    """The one-line user error ``make()`` raises (as the command line would print it)."""
    from fedkd.cli.common import _user_error

    with pytest.raises(Exception) as raised:  # noqa: PT011 -- Hydra's instantiate wraps it; the CLI unwraps it
        make()
    error = _user_error(raised.value)
    assert error is not None and "\n" not in str(error), raised.value
    return str(error)
