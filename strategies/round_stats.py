"""One round's measurements, from sampling to the central evaluation, the metrics row they make,
and the check that the run has not diverged."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from fedkd.errors import FedkdError
from fedkd.federated import records as R
from fedkd.strategies.updates import ClientUpdate


@dataclass
class RoundStats:
    """What one round measures between ``configure_train`` and the central evaluation."""

    started: float = field(default_factory=time.perf_counter)
    sampled: list[int] = field(default_factory=list)
    bytes_sent: int = 0
    bytes_received: int = 0
    train_done: float | None = None
    aggregate_seconds: float = 0.0
    client: dict[str, float] = field(default_factory=dict)
    evaluate: dict[str, float] = field(default_factory=dict)
    server: dict[str, float] = field(default_factory=dict)  # strategy-specific server metrics
    global_arrays: ArrayRecord | None = None  # what the clients were sent (the reference for screening)
    replies: dict[str, int] = field(default_factory=dict)  # ok / failed / late / nonfinite / malformed
    skipped: bool = False  # too few usable replies, or a non-finite aggregate: the global model is kept
    clipped: int = 0  # updates whose norm was clipped


def client_stats(updates: list[ClientUpdate]) -> dict[str, float]:
    """Example-weighted train loss/accuracy and the clients' timings (for the overhead split).

    ``*_critical`` is the busiest worker process's total: simulated clients share Ray workers and
    run one after another on each, so the round cannot be shorter than that worker's work.
    """
    weights = np.array([u.num_examples for u in updates], dtype=np.float64)
    weights /= weights.sum()

    def column(key: str) -> np.ndarray:
        return np.array([float(u.metrics[key]) for u in updates])

    def critical(values: np.ndarray) -> float:
        workers = [int(u.metrics.get(R.WORKER, i)) for i, u in enumerate(updates)]
        busy: dict[int, float] = {}
        for worker, value in zip(workers, values, strict=True):
            busy[worker] = busy.get(worker, 0.0) + float(value)
        return max(busy.values())

    train_s, client_s = column(R.TRAIN_SECONDS), column(R.CLIENT_SECONDS)
    return {
        "train_loss": float(weights @ column(R.TRAIN_LOSS)),
        "train_accuracy": float(weights @ column(R.TRAIN_ACCURACY)),
        "client_train_seconds_max": float(train_s.max()),
        "client_train_seconds_sum": float(train_s.sum()),
        "client_train_seconds_critical": critical(train_s),
        "client_seconds_max": float(client_s.max()),
        "client_seconds_sum": float(client_s.sum()),
        "client_seconds_critical": critical(client_s),
    }


def metrics_row(stats: RoundStats, central: dict[str, float], eval_seconds: float, end: float) -> dict[str, Any]:
    """The round's row for the metrics file: the central evaluation, the clients' figures, the
    strategy's server figures, the reply counts and the round's timings and traffic."""
    train_done = stats.train_done or end
    row: dict[str, Any] = {k: float(v) for k, v in central.items()}
    row.update(
        {
            "train_loss": stats.client.get("train_loss"),
            "train_accuracy": stats.client.get("train_accuracy"),
            **stats.evaluate,
            **stats.server,
            "clients": len(stats.sampled),
            **{f"replies_{k}": v for k, v in stats.replies.items()},
            "round_skipped": int(stats.skipped),
            "updates_clipped": stats.clipped,
            "round_seconds": end - stats.started,
            "train_phase_seconds": train_done - stats.started,  # sampling to the last reply (aggregation excluded)
            "aggregate_seconds": stats.aggregate_seconds,
            "eval_seconds": eval_seconds,
            "bytes_sent": stats.bytes_sent,
            "bytes_received": stats.bytes_received,
            **{k: v for k, v in stats.client.items() if k not in ("train_loss", "train_accuracy")},
        }
    )
    return {k: v for k, v in row.items() if v is not None}


def check_not_diverged(server_round: int, central: dict[str, float]) -> None:
    """Raise when a central evaluation loss is NaN or infinite: every later round would report
    chance accuracy as if it were a result."""
    diverged = sorted(k for k, v in central.items() if k.endswith("_loss") and not math.isfinite(float(v)))
    if diverged:
        raise FedkdError(
            f"round {server_round}: the global model's {diverged[0]} is {float(central[diverged[0]])} (the run "
            "diverged); lower optim.lr (or the strategy's server step) and start a new run"
        )
