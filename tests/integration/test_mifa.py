"""MIFA and FedAvg over a memory of every client's latest reply (strategies/mifa.py): the step on tiny
arrays against hand-computed values, the memory's exact round trip through a checkpoint, bad
options, and short real runs on digits with partial participation -- the real server
(:func:`fedkd.apps.server_app.run_server`) and the real client handlers, in this process (no Ray:
seconds instead of a minute), one of them killed after round 2 and resumed."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import FakeGrid, _arrays, _reply, task_identity  # noqa: F401  (task_identity: an autouse fixture)
from flwr.app import ArrayRecord, ConfigRecord, Context, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedkd.errors import ConfigError
from fedkd.federated import records as R
from fedkd.federated.config import compose_sim_config
from fedkd.federated.resume import STATE_FILE
from fedkd.strategies.fedavg import FedAvg
from fedkd.strategies.mifa import MIFA, FedAvgMemory
from fedkd.strategies.updates import ClientUpdate
from fedkd.utils.checkpoint import load_checkpoint
from fedkd.utils.run_logger import read_metrics

CHANCE = 0.1


# ----------------------------------------------------------------------------- the step, by hand
def _update(pid: int, w: list[float], n: int = 0, examples: int = 10) -> ClientUpdate:
    """A reply whose weights are ``w`` (float32) and a BatchNorm-like integer counter ``n``."""
    arrays = _arrays(w=np.array(w, dtype=np.float32), n=np.array(n, dtype=np.int64))
    metrics = MetricRecord({R.NUM_EXAMPLES: examples, R.PARTITION_ID: pid, R.LABEL_COUNTS: [examples, 0]})
    return ClientUpdate(pid, pid, RecordDict({R.ARRAYS: arrays, R.METRICS: metrics}))


def _round(strategy, server_round: int, global_w: list[float], updates: list[ClientUpdate], n: int = 0) -> ArrayRecord:
    """One round of ``strategy`` on 4 clients: send ``global_w``, aggregate ``updates``."""
    sent = _arrays(w=np.array(global_w, dtype=np.float32), n=np.array(n, dtype=np.int64))
    strategy.configure_train(server_round, sent, ConfigRecord(), FakeGrid(4, random.Random(0)))
    arrays, _ = strategy.aggregate(server_round, updates)
    return arrays


def _w(arrays: ArrayRecord) -> np.ndarray:
    return arrays["w"].numpy()


# Two rounds of 4 clients: clients 0 and 1 train from w0 = 0, then clients 1 and 2 from w1.
ROUND1 = [_update(0, [1.0, 2.0], n=2), _update(1, [3.0, 4.0], n=2)]
W1 = [1.0, 1.5]  # 0 + (1/4) * ((1, 2) + (3, 4)): the paper's 1/N over all four clients, two of them still zero
ROUND2 = [_update(1, [2.0, 2.0], n=4), _update(2, [5.0, 1.5], n=4)]
# G_0 = (1, 2) (stale), G_1 = (2, 2) - (1, 1.5) = (1, 0.5), G_2 = (5, 1.5) - (1, 1.5) = (4, 0)
W2 = [1.0 + 6.0 / 4, 1.5 + 2.5 / 4]


def test_mifa_moves_the_global_model_by_the_mean_remembered_update_over_all_clients():
    strategy = MIFA(num_clients=4, seed=0)
    first = _round(strategy, 1, [0.0, 0.0], ROUND1)
    np.testing.assert_allclose(_w(first), W1)
    assert first["n"].numpy().dtype == np.int64 and int(first["n"].numpy()) == 1  # 0 + (2 + 2) / 4
    second = _round(strategy, 2, W1, ROUND2, n=1)
    np.testing.assert_allclose(_w(second), W2)
    server = strategy._round.server
    assert server["memory_clients"] == 3 and server["memory_age_mean"] == pytest.approx(1 / 3)
    # The memory holds the updates, the stale one as it came
    np.testing.assert_allclose(strategy.memory.entries[0].arrays["w"].numpy(), [1.0, 2.0])
    np.testing.assert_allclose(strategy.memory.entries[1].arrays["w"].numpy(), [1.0, 0.5])
    # A server learning rate scales the step; "remembered" divides by the updates held instead of N
    scaled = MIFA(num_clients=4, seed=0, server_lr=2.0)
    _round(scaled, 1, [0.0, 0.0], ROUND1)
    np.testing.assert_allclose(_w(_round(scaled, 2, W1, ROUND2)), [1.0 + 12.0 / 4, 1.5 + 5.0 / 4])
    held = MIFA(num_clients=4, seed=0, average_over="remembered")
    np.testing.assert_allclose(_w(_round(held, 1, [0.0, 0.0], ROUND1)), [2.0, 3.0])  # round 1: the mean model
    # G_0 = (1, 2), G_1 = (2, 2) - (2, 3) = (0, -1), G_2 = (5, 1.5) - (2, 3) = (3, -1.5)
    np.testing.assert_allclose(_w(_round(held, 2, [2.0, 3.0], ROUND2)), [2.0 + 4.0 / 3, 3.0 - 0.5 / 3])


def test_fedavg_memory_averages_the_remembered_models_and_differs_from_mifa_once_entries_are_stale():
    strategy = FedAvgMemory(num_clients=4, seed=0)
    np.testing.assert_allclose(_w(_round(strategy, 1, [0.0, 0.0], ROUND1)), [2.0, 3.0])
    # Client 0's model (1, 2) is stale; clients 1 and 2 sent (2, 2) and (5, 1.5); equal example counts
    second = _round(strategy, 2, [2.0, 3.0], ROUND2)
    np.testing.assert_allclose(_w(second), [8.0 / 3, 5.5 / 3])
    mifa = MIFA(num_clients=4, seed=0, average_over="remembered")
    _round(mifa, 1, [0.0, 0.0], ROUND1)
    assert not np.allclose(_w(_round(mifa, 2, [2.0, 3.0], ROUND2)), _w(second))
    # Example weights: a client with three times the data counts three times
    weighted = FedAvgMemory(num_clients=4, seed=0)
    arrays = _round(weighted, 1, [0.0, 0.0], [_update(0, [1.0, 2.0]), _update(1, [3.0, 4.0], examples=30)])
    np.testing.assert_allclose(_w(arrays), [2.5, 3.5])


def test_with_a_one_round_memory_both_are_fedavg():
    rng = np.random.default_rng(0)
    replies = [_update(p, rng.normal(size=2).tolist(), examples=e) for p, e in enumerate((5, 20, 9))]
    fedavg, _ = FedAvg(num_clients=4, seed=0).aggregate(1, replies)
    plain = FedAvgMemory(num_clients=4, seed=0, memory_rounds=1)
    _round(plain, 1, [0.0, 0.0], [_update(3, [9.0, 9.0])])
    assert np.array_equal(_w(_round(plain, 2, [0.0, 0.0], replies)), _w(fedavg))  # client 3 forgotten; bit for bit
    equal = [_update(p, u.arrays["w"].numpy().tolist()) for p, u in enumerate(replies)]
    uniform, _ = FedAvg(num_clients=4, seed=0).aggregate(1, equal)
    mifa = MIFA(num_clients=4, seed=0, memory_rounds=1, average_over="remembered")
    _round(mifa, 1, [0.0, 0.0], [_update(3, [9.0, 9.0])])
    np.testing.assert_allclose(_w(_round(mifa, 2, [0.5, -0.5], equal)), _w(uniform), rtol=1e-6)


def test_clip_norm_clips_each_update_before_it_is_remembered():
    strategy = MIFA(num_clients=4, seed=0, clip_norm=1.0)
    _round(strategy, 1, [0.0, 0.0], [_update(0, [3.0, 4.0]), _update(1, [0.3, 0.4])])
    np.testing.assert_allclose(strategy.memory.entries[0].arrays["w"].numpy(), [0.6, 0.8], rtol=1e-6)  # norm 5 -> 1
    np.testing.assert_allclose(strategy.memory.entries[1].arrays["w"].numpy(), [0.3, 0.4], rtol=1e-6)
    assert strategy._round.clipped == 1


@pytest.mark.parametrize("make", [MIFA, FedAvgMemory])
def test_the_memory_survives_a_safe_save_and_the_next_round_is_bit_identical(make):
    strategy = make(num_clients=4, seed=0, memory_rounds=3)
    _round(strategy, 1, [0.0, 0.0], ROUND1)
    _round(strategy, 2, W1, ROUND2)
    buffer = io.BytesIO()
    torch.save(strategy.state_dict(), buffer)
    buffer.seek(0)
    restored = make(num_clients=4, seed=0, memory_rounds=3)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert sorted(restored.memory.entries) == [0, 1, 2]
    third = [_update(3, [0.1, -0.7], n=6)]
    a, b = _round(strategy, 3, W2, third, n=3), _round(restored, 3, W2, third, n=3)
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_bad_options_end_in_one_line():
    cases = [
        (lambda: MIFA(num_clients=4, server_lr=0.0), "strategy.server_lr"),
        (lambda: MIFA(num_clients=4, average_over="sampled"), "strategy.average_over"),
        (lambda: MIFA(num_clients=4, aggregation="median"), "strategy.aggregation"),
        (lambda: MIFA(num_clients=4, memory_rounds=0), "strategy.memory_rounds"),
        (lambda: FedAvgMemory(num_clients=4, memory_rounds=-2), "strategy.memory_rounds"),
        (lambda: FedAvgMemory(num_clients=4, aggregation="mode"), "strategy.aggregation"),
    ]
    for make, key in cases:
        with pytest.raises(ConfigError, match=key) as raised:
            make()
        assert "\n" not in str(raised.value) and "; " in str(raised.value), str(raised.value)
    # FedAvgMemory takes FedAvg's robust rules over its memory
    median = FedAvgMemory(num_clients=4, seed=0, aggregation="median")
    _round(median, 1, [0.0, 0.0], [_update(0, [0.0, 0.0]), _update(1, [1.0, 1.0]), _update(2, [9.0, 9.0])])
    np.testing.assert_allclose(_w(median.aggregate(1, [_update(3, [2.0, 2.0])])[0]), [1.5, 1.5])


# ----------------------------------------------------------------------------- real runs, in this process
SIM = ["dataset=digits", "num_clients=6", "strategy.fraction_train=0.5", "partition.alpha=0.5", "model=lenet5_half",
       "client_resources.num_cpus=1", "device=cpu", "seed=1", "tensorboard=false"]


class Killed(BaseException):
    """The server process dies (nothing catches a BaseException on the way out)."""


class LocalGrid:
    """Flower's Grid, in this process: one node per partition, each message answered by the
    ClientApp's own handlers with that node's context; ``kill_at``: die when round ``kill_at``'s
    train instructions are sent."""

    def __init__(self, cfg, kill_at: int | None = None) -> None:
        from fedkd.clients.handlers import handle_query, handle_train

        self.cfg, self.kill_at = cfg, kill_at
        self.handlers = {MessageType.QUERY: handle_query, MessageType.TRAIN: handle_train}
        n = int(cfg.num_clients)
        self.contexts = {
            5000 + p: Context(run_id=7, node_id=5000 + p, node_config={R.PARTITION_ID: p, R.NUM_PARTITIONS: n},
                              state=RecordDict(), run_config={})
            for p in range(n)
        }

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            kind = msg.metadata.message_type
            if kind == MessageType.TRAIN and msg.content[R.CONFIG][R.SERVER_ROUND] == self.kill_at:
                raise Killed
            reply = self.handlers[kind](msg, self.contexts[msg.metadata.dst_node_id], self.cfg)
            replies.append(_reply(msg, reply.content))  # from the node it was sent to, as the SuperLink delivers it
        return replies


def _serve(overrides: list[str], out: Path, kill_at: int | None = None) -> dict:
    from fedkd.apps.server_app import run_server

    cfg = compose_sim_config([*SIM, *overrides])
    # Flower stamps messages with the running task's identity (module fixtures run before fakes' autouse one)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 1
    threads = torch.get_num_threads()
    try:
        return run_server(LocalGrid(cfg, kill_at), cfg, out)
    finally:
        torch.set_num_threads(threads)  # the client handlers set it to client_resources.num_cpus


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mifa") / "run"
    _serve(["strategy=mifa", "rounds=3"], out)
    return out


def test_mifa_learns_with_partial_participation_and_remembers_absent_clients(reference):
    rows = read_metrics(reference)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["clients"] for r in rows] == [3, 3, 3]
    memory = [r["memory_clients"] for r in rows]
    assert memory[0] == 3 and memory == sorted(memory) and memory[-1] > 3  # absent clients' updates stay
    assert rows[0]["memory_age_mean"] == 0 and rows[-1]["memory_age_mean"] > 0
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["strategy"] == "MIFA" and summary["final_test_accuracy"] > 2 * CHANCE
    state = torch.load(reference / STATE_FILE, weights_only=True)
    assert len(state["strategy"]["client_memory"]) == memory[-1]


def test_a_run_killed_after_round_2_and_resumed_ends_exactly_like_an_uninterrupted_one(reference, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Killed):
        _serve(["strategy=mifa", "rounds=3"], out, kill_at=3)
    state = torch.load(out / STATE_FILE, weights_only=True)
    assert state["round"] == 2 and not (out / "summary.json").exists()
    remembered = state["strategy"]["client_memory"]
    assert any(int(e["round"]) == 1 for e in remembered.values()), "a stale update to carry over"

    _serve(["strategy=mifa", "rounds=3", f"resume={out}"], out)
    rows, expected = read_metrics(out), read_metrics(reference)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row, want in zip(rows, expected, strict=True):
        for key in ("test_accuracy", "test_loss", "train_loss", "memory_clients", "memory_age_mean"):
            assert row[key] == want[key], (row["step"], key, row[key], want[key])
    ours, theirs = (load_checkpoint(run / "model.pt")["state_dict"] for run in (out, reference))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_fedavg_memory_runs_on_the_same_memory(tmp_path):
    summary = _serve(["strategy=fedavg_memory", "rounds=2"], tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert summary["strategy"] == "FedAvgMemory" and [r["memory_clients"] for r in rows][0] == 3
    assert rows[-1]["memory_clients"] > 3 and np.isfinite(summary["final_test_accuracy"])
