"""Test doubles shared by the strategy tests: a Flower-like grid of nodes with random ids, and the
task identity Flower stamps on messages (set here, outside a run)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedkd.data import get_spec
from fedkd.datafree import EnsembleTeacher, Teacher, class_weights_from_counts
from fedkd.federated import records as R
from fedkd.models import batchnorm_layers, build_model


@pytest.fixture(autouse=True)
def task_identity():
    # Flower stamps new messages with the running task's identity; outside a run we set one.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 1



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
            metrics = MetricRecord(
                {R.PARTITION_ID: self.partition[msg.metadata.dst_node_id], R.NUM_PARTITIONS: self.num_clients}
            )
            replies.append(_reply(msg, RecordDict({R.METRICS: metrics})))
        return replies


def _arrays(**named: np.ndarray) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in named.items()})


def _reply(instruction: Message, content: RecordDict) -> Message:
    # A reply as the SuperLink delivers it: from the instruction's destination node.
    reply = Message(content, reply_to=instruction)
    reply.metadata.__dict__["_src_node_id"] = instruction.metadata.dst_node_id
    return reply


def hook_count(*models) -> int:
    """Forward hooks attached anywhere in ``models``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for model in models for m in model.modules())


class LabelSpyEnsemble(EnsembleTeacher):
    """Two copies of ``model`` weighted per class by :data:`SPY_COUNTS` (the FedFTG server's label
    weighting); records, at every call, whether the caller passed one target label per sample."""

    def __init__(self, model) -> None:
        import copy

        super().__init__([model, copy.deepcopy(model)], class_weights_from_counts(SPY_COUNTS), weighting="label")
        self.calls: list[bool] = []

    def forward(self, x, labels=None):
        self.calls.append(labels is not None and len(labels) == len(x))
        return super().forward(x, labels)


#: Two clients' label counts: the first holds classes 0 and 1, the second 1 and 2.
SPY_COUNTS = [[30, 30, 0, 0, 0, 0, 0, 0, 0, 0], [0, 10, 40, 0, 0, 0, 0, 0, 0, 0]]


class SpyTeacher(Teacher):
    """A teacher that records, at every call, whether autograd is on and how many hooks its model has."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.calls: list[tuple[bool, int]] = []

    def forward(self, x, labels=None):
        self.calls.append((torch.is_grad_enabled(), hook_count(self.model)))
        return super().forward(x, labels)


def random_bn_lenet(seed: int) -> torch.nn.Module:
    """A digits LeNet-5 with non-trivial BN running statistics (so eval-mode BN is not the identity)."""
    torch.manual_seed(seed)
    model = build_model("lenet5", get_spec("digits"))
    for bn in batchnorm_layers(model):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    return model.eval()
