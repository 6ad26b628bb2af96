"""Client replies as the strategies see them: :class:`ClientUpdate` and the clients' mean metrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from fedkd.federated import records as R


@dataclass
class ClientUpdate:
    """One client's train reply, decoded: what :meth:`FedAvg.aggregate` works with."""

    partition_id: int
    node_id: int
    content: RecordDict  # the reply as received: "arrays" and "metrics"

    @property
    def arrays(self) -> ArrayRecord:
        """The client's trained weights (its model's ``state_dict``)."""
        return next(iter(self.content.array_records.values()))

    @property
    def metrics(self) -> MetricRecord:
        return next(iter(self.content.metric_records.values()))

    @property
    def num_examples(self) -> int:
        return int(self.metrics[R.NUM_EXAMPLES])

    @property
    def label_counts(self) -> np.ndarray:
        """Label histogram of the client's partition, shape ``(num_classes,)``."""
        return np.asarray(self.metrics[R.LABEL_COUNTS], dtype=np.int64)

    @classmethod
    def from_reply(cls, message: Message) -> ClientUpdate:
        metrics = R.reply_metrics(message)
        return cls(int(metrics[R.PARTITION_ID]), message.metadata.src_node_id, message.content)


def weighted_client_metrics(contents: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Example-weighted mean of the clients' loss and accuracy (train or evaluate replies).

    Replaces Flower's default, which would also average ids and label histograms.
    """
    keys = (R.TRAIN_LOSS, R.TRAIN_ACCURACY, R.EVAL_LOSS, R.EVAL_ACCURACY)
    weights = np.array([float(next(iter(c.metric_records.values()))[weighted_by_key]) for c in contents])
    weights = weights / weights.sum()
    out = MetricRecord()
    for key in keys:
        values = [next(iter(c.metric_records.values())).get(key) for c in contents]
        if all(isinstance(v, int | float) for v in values):
            out[key] = float(np.dot(weights, np.asarray(values, dtype=np.float64)))
    return out
