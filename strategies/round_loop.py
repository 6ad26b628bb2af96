"""Flower's round loop, resumable: what ``flwr.serverapp.strategy.Strategy.start`` does, from any round.

Flower's own ``start`` always begins at round 1 with the initial model. A resumed run
(``resume=<run folder>``) begins after its last checkpointed round with that round's global model,
so the loop is written out here once, for every fedkd strategy.

Ctrl-C (:mod:`fedkd.utils.interrupt`) ends the loop between rounds, after the last round's
checkpoint, or while a round waits for replies (the grid raises there): the round in progress is
discarded and the checkpoint of the last complete round stands.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from fedkd.utils.interrupt import check_stop

EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]


def run_rounds(
    strategy: Strategy,
    grid: Grid,
    initial_arrays: ArrayRecord,
    evaluate_fn: EvaluateFn,
    num_rounds: int,
    timeout: float,
    train_config: ConfigRecord,
    evaluate_config: ConfigRecord,
    first_round: int = 1,
) -> Result:
    """Rounds ``first_round..num_rounds`` of train, optional federated evaluation and
    ``evaluate_fn`` (the central evaluation; also called for round 0 when starting fresh).
    A round whose aggregation returns no arrays keeps the previous global model."""
    result = Result()
    result.arrays = arrays = initial_arrays
    if first_round == 1:
        initial = evaluate_fn(0, initial_arrays)
        if initial is not None:
            result.evaluate_metrics_serverapp[0] = initial
    for server_round in range(first_round, num_rounds + 1):
        check_stop()  # Ctrl-C: no new round
        messages = strategy.configure_train(server_round, arrays, train_config, grid)
        replies = grid.send_and_receive(messages, timeout=timeout)
        new_arrays, train_metrics = strategy.aggregate_train(server_round, replies)
        if new_arrays is not None:
            result.arrays = arrays = new_arrays
        if train_metrics is not None:
            result.train_metrics_clientapp[server_round] = train_metrics
        messages = strategy.configure_evaluate(server_round, arrays, evaluate_config, grid)
        evaluate_metrics = strategy.aggregate_evaluate(server_round, grid.send_and_receive(messages, timeout=timeout))
        if evaluate_metrics is not None:
            result.evaluate_metrics_clientapp[server_round] = evaluate_metrics
        central = evaluate_fn(server_round, arrays)
        if central is not None:
            result.evaluate_metrics_serverapp[server_round] = central
    return result
