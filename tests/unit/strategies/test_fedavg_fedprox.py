"""Strategies without a simulation: sampling by partition id, aggregation order, failing clients, FedProx."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from fakes import FakeGrid, _arrays, _reply, task_identity  # noqa: F401  (task_identity: an autouse fixture)
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from fedkd.clients.train import proximal_term
from fedkd.errors import ConfigError, FedkdError
from fedkd.federated import records as R
from fedkd.strategies.fedavg import FedAvg
from fedkd.strategies.fedprox import FedProx
from fedkd.strategies.sampling import sample_partitions


def _sampled(strategy: FedAvg, grid: FakeGrid, server_round: int) -> list[int]:
    arrays = _arrays(w=np.zeros(3, dtype=np.float32))
    messages = strategy.configure_train(server_round, arrays, ConfigRecord(), grid)
    return sorted(grid.partition[m.metadata.dst_node_id] for m in messages)


def test_sampling_depends_on_seed_and_round_not_on_order():
    ids = list(range(10))
    shuffled = random.Random(3).sample(ids, len(ids))
    for rnd in range(1, 6):
        assert sample_partitions(ids, 0.3, 2, seed=5, server_round=rnd) == sample_partitions(shuffled, 0.3, 2, 5, rnd)
    draws = [tuple(sample_partitions(ids, 0.3, 2, seed=s, server_round=1)) for s in range(6)]
    assert len(set(draws)) > 1, "different seeds should sample different clients"
    assert len(sample_partitions(ids, 0.5, 2, 0, 1)) == 5
    assert len(sample_partitions(ids, 0.1, 3, 0, 1)) == 3  # the minimum wins
    assert sample_partitions(ids, 1.0, 2, 0, 1) == ids


def test_strategy_samples_partitions_not_random_node_ids():
    runs = []
    for grid_seed in (1, 2):  # two runs: different random node ids, same experiment seed
        grid = FakeGrid(10, random.Random(grid_seed))
        strategy = FedAvg(num_clients=10, seed=42, fraction_train=0.4, min_train_clients=2)
        runs.append([_sampled(strategy, grid, rnd) for rnd in (1, 2, 3)])
        assert grid.queries == 10, "each node is asked for its partition once"
    assert runs[0] == runs[1]
    assert all(len(s) == 4 for s in runs[0])
    other = FedAvg(num_clients=10, seed=43, fraction_train=0.4, min_train_clients=2)
    assert [_sampled(other, FakeGrid(10, random.Random(1)), r) for r in (1, 2, 3)] != runs[0]


def test_missing_clients_time_out_with_a_clear_error():
    grid = FakeGrid(4, random.Random(0), online=3)
    strategy = FedAvg(num_clients=4, seed=0, node_timeout=0.5)
    with pytest.raises(FedkdError, match="only 3 of the 4 clients"):
        strategy.configure_train(1, ArrayRecord(), ConfigRecord(), grid)


def _train_replies(num: int) -> list[Message]:
    rng = np.random.default_rng(0)
    replies = []
    for pid in range(num):
        arrays = _arrays(w=rng.normal(size=(5, 3)).astype(np.float32), n=np.array(10 * pid + 3, dtype=np.int64))
        metrics = MetricRecord(
            {
                R.NUM_EXAMPLES: int(rng.integers(5, 50)), R.PARTITION_ID: pid, R.LABEL_COUNTS: [pid, 1, 2],
                R.TRAIN_LOSS: float(pid), R.TRAIN_ACCURACY: 0.5, R.TRAIN_SECONDS: 1.0, R.CLIENT_SECONDS: 1.5,
            }
        )
        instruction = Message(RecordDict({R.ARRAYS: arrays}), dst_node_id=int(rng.integers(1, 10**9)),
                              message_type=MessageType.TRAIN)
        replies.append(_reply(instruction, RecordDict({R.ARRAYS: arrays, R.METRICS: metrics})))
    return replies


def test_aggregation_is_independent_of_reply_order_and_weighted_by_examples():
    replies = _train_replies(7)
    results = []
    for order in range(3):
        strategy = FedAvg(num_clients=7, seed=0)
        shuffled = random.Random(order).sample(replies, len(replies))
        arrays, metrics = strategy.aggregate_train(1, shuffled)
        results.append(arrays)
        assert sorted(strategy.client_label_counts) == list(range(7))
        assert strategy.client_label_counts[3].tolist() == [3, 1, 2]
    for other in results[1:]:  # bitwise equal: replies are sorted by partition id before summing
        assert all(np.array_equal(results[0][k].numpy(), other[k].numpy()) for k in results[0])
    weights = np.array([R.reply_metrics(m)[R.NUM_EXAMPLES] for m in replies], dtype=np.float64)
    expected = sum(w * m.content[R.ARRAYS]["w"].numpy() for w, m in zip(weights / weights.sum(), replies))
    np.testing.assert_allclose(results[0]["w"].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert results[0]["n"].numpy().dtype == np.int64, "integer buffers keep their dtype"
    losses = np.arange(7.0)
    assert metrics[R.TRAIN_LOSS] == pytest.approx(float(weights @ losses / weights.sum()))


def test_all_clients_failing_stops_the_run_with_the_reason():
    from flwr.app import Error

    instruction = Message(RecordDict(), dst_node_id=5, message_type=MessageType.TRAIN)
    failed = Message(Error(code=0, reason="ValueError: boom"), reply_to=instruction)
    with pytest.raises(FedkdError, match="boom"):
        FedAvg(num_clients=1, seed=0).aggregate_train(1, [failed])


def test_fedprox_sends_mu_and_the_proximal_term_is_half_mu_squared_distance():
    grid = FakeGrid(4, random.Random(0))
    strategy = FedProx(num_clients=4, seed=0, proximal_mu=0.3)
    messages = list(strategy.configure_train(1, _arrays(w=np.zeros(2, dtype=np.float32)), ConfigRecord(), grid))
    assert len(messages) == 4
    assert all(m.content[R.CONFIG][R.PROXIMAL_MU] == pytest.approx(0.3) for m in messages)
    model = torch.nn.Linear(3, 2)
    term = proximal_term(model, mu=0.3)
    assert term(model, None, None).item() == 0.0
    with torch.no_grad():
        model.weight.add_(1.0)  # 6 weights moved by 1
    assert term(model, None, None).item() == pytest.approx(0.5 * 0.3 * 6)
    with pytest.raises(ConfigError):
        FedProx(num_clients=4, proximal_mu=-1.0)


def test_a_diverged_global_model_stops_the_run_in_one_line():
    """A NaN test loss means every later round reports chance accuracy: the run stops, naming the round."""
    rows = []

    class Recorder:
        def record(self, server_round: int, row: dict) -> None:
            rows.append(server_round)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        return MetricRecord({"test_accuracy": 0.1, "test_loss": float("nan")})

    strategy = FedAvg(num_clients=2, seed=0, evaluate_fn=evaluate, recorder=Recorder())
    with pytest.raises(FedkdError, match=r"round 3: the global model's test_loss is nan \(the run diverged\)"):
        strategy.end_of_round(3, _arrays(w=np.zeros(2, dtype=np.float32)))
    assert rows == [3]  # the round's row is written before the run stops
