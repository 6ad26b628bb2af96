"""The server's memory of client models: the window, replacement by a newer reply, state."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from flwr.app import MetricRecord, RecordDict

from fedkd.errors import ConfigError
from fedkd.federated import records as R
from fedkd.strategies.client_memory import ClientMemory
from fedkd.strategies.updates import ClientUpdate


def reply(pid: int, value: float) -> ClientUpdate:
    """A reply whose one weight tensor is filled with ``value`` and whose histogram names the client."""
    model = torch.nn.Linear(2, 1)
    torch.nn.init.constant_(model.weight, value)
    counts = [pid, 1, 0]
    metrics = MetricRecord({R.NUM_EXAMPLES: 10, R.PARTITION_ID: pid, R.LABEL_COUNTS: counts})
    return ClientUpdate(pid, pid, RecordDict({R.ARRAYS: R.to_arrays(model), R.METRICS: metrics}))


def weight(entry) -> float:
    return float(R.state_dict(entry.arrays)["weight"][0, 0])


def test_one_round_memory_is_the_round_itself():
    memory = ClientMemory(1)
    memory.remember(1, [reply(0, 1.0), reply(1, 1.0)])
    members = memory.remember(2, [reply(2, 2.0), reply(3, 2.0)])
    assert [m.partition_id for m in members] == [2, 3]


def test_window_keeps_recent_clients_and_the_newest_reply_of_each():
    memory = ClientMemory(3)
    memory.remember(1, [reply(0, 1.0), reply(1, 1.0)])
    memory.remember(2, [reply(2, 2.0)])
    members = memory.remember(3, [reply(1, 3.0), reply(3, 3.0)])
    # the round's replies first (in reply order), then older ones by partition id
    assert [m.partition_id for m in members] == [1, 3, 0, 2]
    assert [weight(m) for m in members] == [3.0, 3.0, 1.0, 2.0]  # client 1's round-1 model was replaced
    assert [m.server_round for m in members] == [3, 3, 1, 2]
    np.testing.assert_array_equal(members[2].label_counts, [0, 1, 0])
    members = memory.remember(4, [reply(4, 4.0)])  # round 1 leaves the window [2, 4]
    assert [m.partition_id for m in members] == [4, 1, 2, 3]


def test_state_round_trip_restores_the_same_members():
    memory = ClientMemory(2)
    memory.remember(1, [reply(0, 1.0)])
    memory.remember(2, [reply(5, 2.0)])
    state = memory.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = ClientMemory(2)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    a = memory.remember(3, [reply(7, 3.0)])
    b = restored.remember(3, [reply(7, 3.0)])
    seen = [[(m.partition_id, m.server_round, weight(m)) for m in members] for members in (a, b)]
    assert seen[0] == seen[1]
    assert [m.label_counts.tolist() for m in a] == [m.label_counts.tolist() for m in b]


def test_a_window_below_one_round_is_a_one_line_error():
    with pytest.raises(ConfigError, match="teacher_memory_rounds") as raised:
        ClientMemory(0)
    assert "\n" not in str(raised.value)


def test_an_unbounded_memory_keeps_every_client_and_can_keep_another_payload():
    memory = ClientMemory(None, option="strategy.memory_rounds")
    memory.remember(1, [reply(0, 1.0)])
    kept = [R.to_arrays(torch.nn.Linear(2, 1))]  # what the strategy keeps instead of the weights (MIFA: the update)
    members = memory.remember(50, [reply(1, 2.0)], kept)
    assert [(m.partition_id, m.server_round) for m in members] == [(1, 50), (0, 1)]
    assert members[0].arrays is kept[0] and weight(members[1]) == 1.0
    np.testing.assert_array_equal(members[0].label_counts, [1, 1, 0])
    with pytest.raises(ValueError):  # one payload per reply
        memory.remember(51, [reply(2, 1.0), reply(3, 1.0)], kept)


def test_the_window_error_names_the_strategys_own_option():
    with pytest.raises(ConfigError, match="strategy.memory_rounds") as raised:
        ClientMemory(0, option="strategy.memory_rounds")
    assert "\n" not in str(raised.value)
