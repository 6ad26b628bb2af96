"""Federated building blocks without a simulation: sampling, aggregation order, client handlers, config."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.common.config import flatten_dict, fuse_dicts, get_project_config, parse_config_args
from flwr.supercore.task_identity import TaskIdentity
from omegaconf import OmegaConf

from fedkd.clients.handlers import LOCAL_MODEL_KEY, STATE_KEY, handle_query, handle_train
from fedkd.clients.train import proximal_term
from fedkd.errors import ConfigError, FedkdError
from fedkd.federated import records as R
from fedkd.federated.config import compose_sim_config, config_from_run_config, plain
from fedkd.federated.data import client_model_config, client_split, partition_label_counts
from fedkd.federated.metrics import RoundRecorder
from fedkd.apps.server_app import check_models
from fedkd.utils.run_logger import RunLogger, read_metrics
from fedkd.strategies.fedavg import FedAvg
from fedkd.strategies.fedprox import FedProx
from fedkd.strategies.sampling import sample_partitions

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def task_identity():
    # Flower stamps new messages with the running task's identity; outside a run we set one.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 1
    yield


class FakeGrid:
    """Random node ids (as Flower's) behind stable partition ids; answers query messages."""

    def __init__(self, num_clients: int, rng: random.Random, online: int | None = None) -> None:
        ids = rng.sample(range(10**6, 10**7), num_clients)
        self.partition = dict(list(zip(ids, range(num_clients)))[:online])
        self.num_clients = num_clients
        self.queries = 0

    def get_node_ids(self):
        return list(self.partition)[::-1]

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            assert msg.metadata.message_type == MessageType.QUERY
            self.queries += 1
            metrics = MetricRecord({R.PARTITION_ID: self.partition[msg.metadata.dst_node_id], R.NUM_PARTITIONS: self.num_clients})
            replies.append(_reply(msg, RecordDict({R.METRICS: metrics})))
        return replies


def _arrays(**named: np.ndarray) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in named.items()})


def _reply(instruction: Message, content: RecordDict) -> Message:
    # A reply as the SuperLink delivers it: from the instruction's destination node.
    reply = Message(content, reply_to=instruction)
    reply.metadata.__dict__["_src_node_id"] = instruction.metadata.dst_node_id
    return reply


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
        instruction = Message(RecordDict({R.ARRAYS: arrays}), dst_node_id=int(rng.integers(1, 10**9)), message_type=MessageType.TRAIN)
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


@pytest.fixture(autouse=True)
def restore_threads():
    # Client handlers set torch's thread count (client_resources.num_cpus); keep other tests' setting.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cfg():
    return compose_sim_config(["dataset=digits", "num_clients=4", "model=lenet5_half", "keep_local_model=true"])


def _context(pid: int, parts: int = 4) -> Context:
    return Context(run_id=7, node_id=100 + pid, node_config={R.PARTITION_ID: pid, R.NUM_PARTITIONS: parts},
                   state=RecordDict(), run_config={})


def test_client_trains_its_partition_reports_labels_and_keeps_state(cfg):
    context = _context(2)
    config = ConfigRecord({R.SERVER_ROUND: 1, R.LOCAL_EPOCHS: 1, R.BATCH_SIZE: 32, R.LEARNING_RATE: 0.01})
    instruction = Message(RecordDict({R.CONFIG: config}), dst_node_id=102, message_type=MessageType.TRAIN)
    reply = handle_train(instruction, context, cfg)
    metrics = R.reply_metrics(reply)
    assert metrics[R.PARTITION_ID] == 2
    assert metrics[R.NUM_EXAMPLES] == len(client_split(cfg, 2))
    assert metrics[R.LABEL_COUNTS] == partition_label_counts(cfg)[2].tolist()
    assert np.isfinite(metrics[R.TRAIN_LOSS]) and 0 <= metrics[R.TRAIN_ACCURACY] <= 1
    assert metrics[R.CLIENT_SECONDS] >= metrics[R.TRAIN_SECONDS] > 0
    assert context.state[STATE_KEY]["rounds-trained"] == 1
    kept = context.state[LOCAL_MODEL_KEY]
    assert all(np.array_equal(kept[k].numpy(), reply.content[R.ARRAYS][k].numpy()) for k in kept)
    config[R.SERVER_ROUND] = 2
    handle_train(Message(RecordDict({R.CONFIG: config}), dst_node_id=102, message_type=MessageType.TRAIN), context, cfg)
    assert context.state[STATE_KEY]["rounds-trained"] == 2 and context.state[STATE_KEY]["last-round"] == 2


def test_client_reports_partition_and_rejects_mismatched_node_config(cfg):
    query = Message(RecordDict(), dst_node_id=101, message_type=MessageType.QUERY)
    assert R.reply_metrics(handle_query(query, _context(1), cfg))[R.PARTITION_ID] == 1
    with pytest.raises(ConfigError, match="num-partitions=8"):
        handle_query(query, _context(1, parts=8), cfg)
    with pytest.raises(ConfigError, match="partition-id 5"):
        handle_query(query, _context(5, parts=4), cfg)


def test_label_counts_cover_the_training_set(cfg):
    counts = partition_label_counts(cfg)
    assert counts.shape == (4, 10)
    assert counts.sum() == sum(len(client_split(cfg, p)) for p in range(4))


def test_client_models_per_partition_and_fedavg_refuses_mixed_architectures(cfg):
    mixed = OmegaConf.merge(cfg, {"client_models": [{"name": "lenet5"}, {"name": "lenet5_half"}]})
    assert [client_model_config(mixed, p).name for p in range(4)] == ["lenet5", "lenet5_half"] * 2
    single = OmegaConf.merge(cfg, {"client_models": {3: {"name": "small_cnn"}}})
    assert [client_model_config(single, p).name for p in range(4)] == ["lenet5_half"] * 3 + ["small_cnn"]
    check_models(cfg, FedAvg(num_clients=4))
    with pytest.raises(ConfigError, match="averages weights"):
        check_models(mixed, FedAvg(num_clients=4))


def test_recorder_writes_one_row_per_round_and_a_summary(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        recorder = RoundRecorder(logger, rounds=3, echo=lambda line: None)
        for rnd, acc in enumerate([0.5, 0.7, 0.6], start=1):
            recorder.record(rnd, {"test_accuracy": acc, "test_loss": 1.0 / rnd, "round_seconds": 2.0, "bytes_sent": 10})
        summary = recorder.summary()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    assert summary["final_test_accuracy"] == 0.6 and summary["best_test_accuracy"] == 0.7 and summary["best_round"] == 2
    assert summary["bytes_sent"] == 30
    assert json.loads((tmp_path / "summary.json").read_text())["best_round"] == 2


def test_hydra_entry_and_flwr_run_compose_the_same_config():
    overrides = "strategy=fedprox strategy.proximal_mu=0.05 dataset=digits partition.alpha=0.1 num_clients=4 rounds=2"
    # Launch path 1: the Hydra console entry (prints the composed job config and exits).
    shown = subprocess.run(
        [str(BIN / "fedkd-sim"), *overrides.split(), "--cfg", "job"],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=True,
    ).stdout
    hydra_cfg = OmegaConf.to_container(OmegaConf.create(shown), resolve=True)
    # Launch path 2: what `flwr run . -c 'overrides="..."'` hands the apps as run config.
    project = get_project_config(REPO)
    run_config = fuse_dicts(
        flatten_dict(project["tool"]["flwr"]["app"]["config"]), parse_config_args([f'overrides="{overrides}"'])
    )
    flwr_cfg = plain(config_from_run_config(run_config))
    assert flwr_cfg == hydra_cfg
    assert flwr_cfg["strategy"]["proximal_mu"] == 0.05 and flwr_cfg["num_clients"] == 4
    assert project["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "fedkd.apps.server_app:app", "clientapp": "fedkd.apps.client_app:app",
    }
