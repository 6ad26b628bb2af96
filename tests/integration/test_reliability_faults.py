"""Faulty and malicious clients: fault injection, reply screening, skipped rounds, robust aggregation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from omegaconf import OmegaConf

from fedkd.clients.train import local_train
from fedkd.data import load_dataset
from fedkd.data.partitions import iid
from fedkd.errors import ConfigError
from fedkd.federated import faults
from fedkd.federated import records as R
from fedkd.federated.metrics import RoundRecorder
from fedkd.models import build_model
from fedkd.strategies.fedavg import ClientUpdate, FedAvg
from fedkd.strategies.round_stats import RoundStats
from fedkd.training import evaluate, fit
from fedkd.utils.checkpoint import load_checkpoint
from fedkd.utils.run_logger import RunLogger, read_metrics

BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def task_identity():
    # Flower stamps new messages with the running task's identity; outside a run we set one.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 1
    yield


def _cfg(num_clients: int = 10, **fractions: float):
    return OmegaConf.create({"num_clients": num_clients, "round_timeout": 1.0,
                             "faults": {**{f"{k}_fraction": v for k, v in fractions.items()},
                                        "scale": 100.0, "seed": 0}})


def test_faulty_clients_are_chosen_by_partition_id_with_a_seeded_generator():
    cfg = _cfg(**{"raise": 0.2, "hang": 0.1, "nonfinite": 0.1, "malformed": 0.1})
    chosen = faults.assignment(cfg)
    kinds = sorted(chosen.values())
    assert kinds == ["hang", "malformed", "nonfinite", "raise", "raise"]
    assert faults.assignment(cfg) == chosen  # same seed, same clients
    other = OmegaConf.merge(cfg, {"faults": {"seed": 1}})
    assert faults.assignment(other) != chosen
    with pytest.raises(ConfigError, match="add up"):
        faults.assignment(_cfg(**{"raise": 0.6, "hang": 0.6}))
    with pytest.raises(ConfigError, match=r"raise_fraction must be in \[0, 1\]"):
        faults.assignment(_cfg(**{"raise": 1.5}))


def _reply(instruction: Message, content: RecordDict) -> Message:
    reply = Message(content, reply_to=instruction)
    reply.metadata.__dict__["_src_node_id"] = instruction.metadata.dst_node_id
    return reply


def _instruction(node: int) -> Message:
    return Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)


def _content(pid: int, arrays: ArrayRecord, examples: int = 10) -> RecordDict:
    metrics = MetricRecord({
        R.NUM_EXAMPLES: examples, R.PARTITION_ID: pid, R.LABEL_COUNTS: [1, 2, 3], R.TRAIN_LOSS: 1.0,
        R.TRAIN_ACCURACY: 0.5, R.TRAIN_SECONDS: 0.1, R.CLIENT_SECONDS: 0.2,
    })
    return RecordDict({R.ARRAYS: arrays, R.METRICS: metrics})


def _bad_round(strategy: FedAvg):
    """Seven clients sampled: two good replies, one each non-finite, malformed (shape), malformed
    (metrics), failed; one never replies (late)."""
    rng = np.random.default_rng(0)
    base = {"w": rng.normal(size=(4, 3)).astype(np.float32), "n": np.array(3, dtype=np.int64)}
    glob = ArrayRecord({k: Array(v) for k, v in base.items()})
    strategy._round = RoundStats(global_arrays=glob, sampled=list(range(7)))
    cfg = _cfg()

    def arrays(shift: float) -> ArrayRecord:
        return ArrayRecord({"w": Array(base["w"] + shift), "n": Array(base["n"])})

    good = [arrays(1.0), arrays(3.0)]
    replies = [_reply(_instruction(10), _content(0, good[0], 10)), _reply(_instruction(11), _content(1, good[1], 30))]
    replies.append(_reply(_instruction(12), _content(2, faults.corrupt("nonfinite", arrays(2.0), glob, cfg))))
    replies.append(_reply(_instruction(13), _content(3, faults.corrupt("malformed", arrays(2.0), glob, cfg))))
    no_weight = _content(4, arrays(2.0))
    del no_weight[R.METRICS][R.NUM_EXAMPLES]
    replies.append(_reply(_instruction(14), no_weight))
    replies.append(Message(Error(code=0, reason=f"InjectedFault: {faults.INJECTED}"), reply_to=_instruction(15)))
    return replies, base


def test_server_drops_bad_replies_counts_each_kind_and_averages_the_rest(tmp_path):
    with RunLogger(tmp_path) as logger:
        strategy = FedAvg(num_clients=7, seed=0, recorder=RoundRecorder(logger, 1))
        replies, base = _bad_round(strategy)
        arrays, _ = strategy.aggregate_train(1, replies)
        expected = base["w"] + (10 * 1.0 + 30 * 3.0) / 40
        np.testing.assert_allclose(arrays["w"].numpy(), expected, rtol=1e-6)
        assert arrays["n"].numpy().dtype == np.int64
        strategy.end_of_round(1, arrays)
    row = read_metrics(tmp_path)[0]
    assert {k: row[f"replies_{k}"] for k in ("ok", "failed", "late", "nonfinite", "malformed")} == {
        "ok": 2, "failed": 1, "late": 1, "nonfinite": 1, "malformed": 2,
    }
    assert row["round_skipped"] == 0


def test_round_with_too_few_usable_replies_is_skipped_with_a_warning(tmp_path, caplog):
    with RunLogger(tmp_path) as logger:
        strategy = FedAvg(num_clients=7, seed=0, recorder=RoundRecorder(logger, 1), min_replies=3)
        replies, _ = _bad_round(strategy)
        with caplog.at_level("WARNING", logger="fedkd.sim"):
            arrays, metrics = strategy.aggregate_train(1, replies)
        assert arrays is None and metrics is None  # Flower keeps the previous global model
        assert any("round 1 skipped" in r.getMessage() and "min_replies=3" in r.getMessage() for r in caplog.records)
        strategy.end_of_round(1, strategy._round.global_arrays)
    assert read_metrics(tmp_path)[0]["round_skipped"] == 1


def test_robust_options_are_checked():
    with pytest.raises(ConfigError, match="strategy.aggregation"):
        FedAvg(num_clients=3, aggregation="mode")
    with pytest.raises(ConfigError, match="trim_fraction"):
        FedAvg(num_clients=3, aggregation="trimmed_mean", trim_fraction=0.5)
    with pytest.raises(ConfigError, match="clip_norm"):
        FedAvg(num_clients=3, clip_norm=0)


MODEL = "lenet5_half"  # with BatchNorm: its running statistics and integer counter are aggregated too


@pytest.fixture(scope="module")
def poisoned_round():
    """One FedAvg round on digits, for real: a pre-trained global model, five IID clients that
    fine-tune it one epoch, and client 4 replying a 100x scaled update."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small model, busy 2-core machine: one thread is the quickest
    torch.manual_seed(0)
    data = load_dataset("digits")
    model = build_model(MODEL, data.spec)
    fit(model, data.train, data.test, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), 3, 64,
        torch.device("cpu"), generator=torch.Generator().manual_seed(0), progress=False)
    glob = R.to_arrays(model)
    parts = iid(data.train.y.numpy(), 5, seed=0)
    updates = []
    for pid, idx in enumerate(parts):
        local = build_model(MODEL, data.spec)
        local.load_state_dict(R.state_dict(glob))
        split = data.train.subset(idx)
        local_train(local, split, lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9), 0.02, 1, 32,
                    torch.device("cpu"), torch.Generator().manual_seed(pid))
        arrays = R.to_arrays(local)
        if pid == 4:
            arrays = faults.corrupt("scaled", arrays, glob, _cfg())
        reply = _reply(_instruction(100 + pid), _content(pid, arrays, len(split)))
        updates.append(ClientUpdate.from_reply(reply))

    def accuracy(**options) -> float:
        strategy = FedAvg(num_clients=5, seed=0, **options)
        strategy._round = RoundStats(global_arrays=glob)
        arrays, _ = strategy.aggregate(1, updates)
        model.load_state_dict(R.state_dict(arrays))
        return evaluate(model, data.test, torch.device("cpu"))["accuracy"]

    honest = FedAvg(num_clients=5, seed=0)
    honest._round = RoundStats(global_arrays=glob)
    model.load_state_dict(R.state_dict(honest.aggregate(1, updates[:4])[0]))
    yield accuracy, evaluate(model, data.test, torch.device("cpu"))["accuracy"]
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "options",
    [
        {"aggregation": "median"},
        {"aggregation": "trimmed_mean", "trim_fraction": 0.2},
        {"aggregation": "krum", "num_malicious": 1},
        {"aggregation": "multikrum", "num_malicious": 1},
        {"clip_norm": 2.0},
    ],
    ids=["median", "trimmed_mean", "krum", "multikrum", "clip_norm"],
)
def test_robust_aggregation_keeps_accuracy_where_plain_averaging_breaks(poisoned_round, options):
    accuracy, honest = poisoned_round
    assert honest > 0.8, "the honest clients' average is a good model"
    plain = accuracy()
    assert plain < 0.5 * honest, f"a 100x scaled update should break plain averaging (got {plain:.3f})"
    robust = accuracy(**options)
    assert robust > honest - 0.08, f"{options}: {robust:.3f} vs honest average {honest:.3f}"


def test_simulation_survives_forty_percent_faulty_clients(tmp_path):
    """fedkd-sim with 10 clients, of which one each raises, hangs past round_timeout, sends NaN/Inf
    weights and sends a wrongly shaped tensor in every round: the run finishes, counts them, and
    its global model is finite and better than chance."""
    out = tmp_path / "run"
    done = subprocess.run(
        [str(BIN / "fedkd-sim"), "dataset=digits", "num_clients=10", "rounds=2", "client_resources.num_cpus=1",
         "partition=iid", "round_timeout=25", "faults.hang_seconds=30",
         "faults.raise_fraction=0.1", "faults.hang_fraction=0.1", "faults.nonfinite_fraction=0.1",
         "faults.malformed_fraction=0.1", f"hydra.run.dir={out}"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert row["clients"] == 10
        assert row["replies_failed"] == 1 and row["replies_nonfinite"] == 1 and row["replies_malformed"] == 1
        assert row["replies_late"] >= 1 and row["replies_ok"] + row["replies_late"] == 7
        assert row["round_skipped"] == 0
        assert np.isfinite(row["test_accuracy"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_test_accuracy"] > 0.3
    state = load_checkpoint(out / "model.pt")["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
