"""Client handlers without a simulation: training a partition, reporting it, keeping state."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedkd.clients.handlers import LOCAL_MODEL_KEY, STATE_KEY, handle_query, handle_train
from fedkd.errors import ConfigError
from fedkd.federated import records as R
from fedkd.federated.data import client_split, partition_label_counts


@pytest.fixture(autouse=True)
def task_identity():
    # Flower stamps new messages with the running task's identity; outside a run we set one.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 1


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
