"""FedAvg with reproducible client sampling, central evaluation and per-round metrics.

Subclass of Flower's message-API :class:`flwr.serverapp.strategy.FedAvg`; Flower's
``Strategy.start`` loop drives it unchanged. What this class changes:

- clients are sampled by partition id with a seeded generator (:mod:`fedkd.strategies.sampling`),
  learning each node's partition id once with a query message;
- replies are sorted by partition id before aggregation (floating-point sums depend on order),
  and handed to :meth:`FedAvg.aggregate` as :class:`ClientUpdate` objects that carry each
  client's partition id, label histogram and weights: the hook other strategies override;
- the server evaluates the global model on the test set after every round (``evaluate_fn``)
  and writes one row per round to the ``recorder`` (test accuracy/loss, mean client loss,
  round time, bytes sent and received, client timings).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.serverapp.strategy import Result

from fedkd.errors import FedkdError
from fedkd.federated import records as R
from fedkd.federated.metrics import RoundRecorder
from fedkd.federated.robust import all_finite, check_options, clip_update_norms, combine
from fedkd.federated.server_run import ServerRun
from fedkd.strategies.messages import build_messages, split_replies
from fedkd.strategies.partition_directory import PartitionDirectory
from fedkd.strategies.round_loop import EvaluateFn, run_rounds
from fedkd.strategies.round_stats import RoundStats, check_not_diverged, client_stats, metrics_row
from fedkd.strategies.sampling import EVALUATE_STREAM, TRAIN_STREAM, sample_partitions
from fedkd.strategies.screening import enough_replies, group_reference, screen_replies
from fedkd.strategies.updates import ClientUpdate, weighted_client_metrics
from fedkd.utils.option_types import NonNegativeInt, PositiveFloat, PositiveInt, Range, Supplied, UnitFloat

__all__ = ["ClientUpdate", "EvaluateFn", "FedAvg", "weighted_client_metrics"]

log = logging.getLogger("fedkd.sim")


class FedAvg(FlowerFedAvg):
    """Federated averaging (weighted by ``num-examples``) over clients sampled by partition id.

    Parameters beyond Flower's: ``num_clients`` (partitions ``0..num_clients-1``), ``seed``
    (sampling), ``evaluate_fn(round, arrays) -> MetricRecord`` with ``test_accuracy`` and
    ``test_loss`` (the server's central evaluation), ``recorder`` (per-round rows),
    ``node_timeout`` (seconds to wait for all clients to connect). ``min_available_clients``
    defaults to ``num_clients``: a run starts once every partition is online, so a seed gives
    the same sample in every run. ``method``: the name the log, ``summary.json`` and the checkpoints
    give the run (default: the class's); a config that runs one method on another's class names it
    (``conf/strategy/feddf.yaml`` runs FedDF on :class:`~fedkd.strategies.fedftg.FedFTG`).
    """

    #: Whether the strategy averages client weights, so every client must train ``cfg.model``'s
    #: architecture (the ServerApp checks ``client_models``). Strategies that aggregate
    #: knowledge instead (distillation) set it to False.
    averages_weights: bool = True

    def __init__(
        self,
        *,
        num_clients: Supplied[PositiveInt],
        seed: Supplied[NonNegativeInt] = 0,
        fraction_train: Annotated[float, Range(0, 1, low_open=True)] = 1.0,
        min_train_clients: NonNegativeInt = 2,
        fraction_evaluate: UnitFloat = 0.0,
        min_evaluate_clients: NonNegativeInt = 0,
        min_available_clients: NonNegativeInt | None = None,
        evaluate_fn: Supplied[EvaluateFn | None] = None,
        recorder: Supplied[RoundRecorder | None] = None,
        node_timeout: Supplied[PositiveFloat] = 120.0,
        min_replies: PositiveInt = 1,
        aggregation: str = "mean",
        trim_fraction: Annotated[float, Range(0, 0.5, high_open=True)] = 0.2,
        num_malicious: NonNegativeInt = 1,
        clip_norm: PositiveFloat | None = None,
        method: str | None = None,
    ) -> None:
        check_options(aggregation, trim_fraction, num_malicious, clip_norm)
        if min_replies < 1:
            raise FedkdError(f"strategy.min_replies must be >= 1 (got {min_replies}); use 1 or more")
        super().__init__(
            fraction_train=fraction_train,
            # Flower warns when fraction_evaluate is 0 ("evaluation skipped"); that is our default
            # (the server evaluates centrally), so it is set after the parent's check.
            fraction_evaluate=fraction_evaluate or 1.0,
            min_train_nodes=min(min_train_clients, num_clients),
            min_evaluate_nodes=min(min_evaluate_clients, num_clients),
            min_available_nodes=num_clients if min_available_clients is None else min_available_clients,
            weighted_by_key=R.NUM_EXAMPLES,
            arrayrecord_key=R.ARRAYS,
            configrecord_key=R.CONFIG,
            train_metrics_aggr_fn=weighted_client_metrics,
            evaluate_metrics_aggr_fn=weighted_client_metrics,
        )
        self.fraction_evaluate = fraction_evaluate
        if fraction_evaluate == 0.0:
            self.min_evaluate_nodes = 0
        self.num_clients = num_clients
        self.seed = seed
        self.method = method or type(self).__name__
        self.evaluate_fn = evaluate_fn
        self.recorder = recorder
        self.node_timeout = node_timeout
        self.partitions = PartitionDirectory(num_clients, node_timeout, build_messages)
        self.client_label_counts: dict[int, np.ndarray] = {}  # partition id -> label histogram
        self.min_replies = int(min_replies)
        self.aggregation = aggregation
        self.trim_fraction = float(trim_fraction)
        self.num_malicious = int(num_malicious)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.server_run: ServerRun | None = None
        # Called as checkpointer(round, global arrays) after each round's row (fedkd.federated.resume).
        self.checkpointer: Callable[[int, ArrayRecord], None] | None = None
        self._round = RoundStats()

    # ------------------------------------------------------------------ the run
    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: EvaluateFn | None = None,
        first_round: int = 1,
    ) -> Result:
        """Flower's round loop from ``first_round`` to ``num_rounds`` (:func:`run_rounds`: a resumed
        run starts after round 1 from its checkpointed global model), with :meth:`end_of_round` as
        its ``evaluate_fn``."""
        self.summary()
        return run_rounds(
            self, grid, initial_arrays, evaluate_fn or self.end_of_round, num_rounds, timeout,
            ConfigRecord() if train_config is None else train_config,
            ConfigRecord() if evaluate_config is None else evaluate_config, first_round,
        )

    # ------------------------------------------------------------------ checkpoint and resume
    def state_dict(self) -> dict[str, Any]:
        """What the strategy keeps across rounds, as tensors and plain values (``torch.load(weights_only=True)``
        reads it back). FedAvg: the clients' label histograms. Subclasses with more state (a
        generator, its optimiser, per-client models) extend the dict: ``{**super().state_dict(), ...}``."""
        counts = self.client_label_counts
        return {"client_label_counts": {str(pid): torch.as_tensor(c) for pid, c in counts.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (on resume, before the first resumed round)."""
        self.client_label_counts = {
            int(pid): counts.numpy().astype(np.int64) for pid, counts in state.get("client_label_counts", {}).items()
        }

    def bind(self, run: ServerRun) -> None:
        """Receive the run's data spec, test split, device, logger and client model configs, once
        before the first round. FedAvg keeps it only to screen mixed-architecture replies;
        server-side distillation needs more of it. Subclasses call ``super().bind(run)``."""
        self.server_run = run
        if run.validation is not None and not self.uses_validation:
            log.warning("%s reads no validation split: the %d labelled images kept from the clients for it go "
                        "unused; set validation_size=0", self.method, len(run.validation))

    @property
    def uses_validation(self) -> bool:
        """Whether the strategy reads the server's labelled validation split (``validation_size``)."""
        return False

    def record_server_metrics(self, metrics: dict[str, float]) -> None:
        """Add strategy-specific figures (distillation losses, server seconds) to this round's row."""
        self._round.server.update(metrics)

    def summary(self) -> None:
        """Log the configuration (Flower's lines plus the sampling seed)."""
        super().summary()
        log.debug("%s: %d clients, sampling seed %d", self.method, self.num_clients, self.seed)

    # ------------------------------------------------------------------ which node is which client
    @property
    def node_partition(self) -> dict[int, int]:
        """``{node_id: partition_id}`` of the nodes seen so far."""
        return self.partitions.node_partition

    def connected_partitions(self, grid: Grid) -> dict[int, int]:
        """``{partition_id: node_id}`` of the connected clients, once ``min_available_nodes`` are online."""
        return self.partitions.connected(grid, self.min_available_nodes)

    def _messages(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid,
        fraction: float, minimum: int, stream: int, message_type: str,
    ) -> list[Message]:
        if fraction == 0.0:
            return []
        online = self.connected_partitions(grid)
        chosen = sample_partitions(online, fraction, minimum, self.seed, server_round, stream)
        config[R.SERVER_ROUND] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        if stream == TRAIN_STREAM:
            self._round.sampled = chosen
        self._round.bytes_sent += R.payload_bytes(record) * len(chosen)
        return build_messages(record, [online[p] for p in chosen], message_type)

    # ------------------------------------------------------------------ training
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Start the round's clock; send the global model to the clients sampled for this round."""
        self._round = RoundStats(global_arrays=arrays)
        return self._messages(
            server_round, arrays, config, grid, self.fraction_train, self.min_train_nodes,
            TRAIN_STREAM, MessageType.TRAIN,
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check the replies, sort them by partition id, record their stats, then :meth:`aggregate`."""
        replies = list(replies)
        valid, failed = split_replies(replies, "train")
        screened = screen_replies(
            server_round, valid, failed, len(self._round.sampled), self.reference_arrays, self.weighted_by_key
        )
        self._round.replies = screened.counts
        if not enough_replies(server_round, screened, self.min_replies):
            self._round.skipped = True
            self._round.train_done = time.perf_counter()
            return None, None
        updates = sorted((ClientUpdate.from_reply(m) for m in screened.usable), key=lambda u: u.partition_id)
        for update in updates:
            self.client_label_counts[update.partition_id] = update.label_counts
        self._round.bytes_received += sum(R.payload_bytes(u.content) for u in updates)
        self._round.client = client_stats(updates)
        start = self._round.train_done = time.perf_counter()  # the clients' phase ends; the server's begins
        arrays, metrics = self.aggregate(server_round, updates)
        self._round.aggregate_seconds = time.perf_counter() - start
        if arrays is not None and not all_finite(arrays):  # e.g. overflow from huge (but finite) updates
            log.warning(
                "round %d skipped: the aggregate holds NaN or Inf; the global model stays as it was", server_round
            )
            self._round.skipped = True
            return None, metrics
        return arrays, metrics

    def reference_arrays(self, reply: Message) -> ArrayRecord | None:
        """The global weights a reply must match in keys, shapes and dtypes: this round's global
        model, or with mixed architectures the reply's group in it (``None`` when unknown)."""
        try:
            pid = int(R.reply_metrics(reply)[R.PARTITION_ID])
        except (KeyError, StopIteration, TypeError, ValueError):
            pid = None
        return self._reference(pid)

    def _reference(self, partition_id: int | None) -> ArrayRecord | None:
        return group_reference(self._round.global_arrays, self.server_run, partition_id)

    def average(self, updates: list[ClientUpdate], reference: ArrayRecord | None = None) -> ArrayRecord:
        """Combine the updates' weights with ``strategy.aggregation`` after clipping each update's
        norm to ``strategy.clip_norm`` (relative to ``reference``, default this round's global model).

        The plain FedAvg mean by default; strategies that start from an average (FedFTG's per-group
        FedAvg) call this to get the same robust options.
        """
        contents = [u.content for u in updates]
        if self.clip_norm is not None:
            reference = reference if reference is not None else self._reference(updates[0].partition_id)
            if reference is not None:
                contents, clipped = clip_update_norms(contents, reference, self.clip_norm)
                self._round.clipped += clipped
        return combine(contents, self.weighted_by_key, self.aggregation, self.trim_fraction, self.num_malicious)

    def aggregate(self, server_round: int, updates: list[ClientUpdate]) -> tuple[ArrayRecord, MetricRecord]:
        """The new global model and the round's client metrics from updates sorted by partition id.

        FedAvg: the ``num-examples``-weighted mean of the clients' arrays (dtypes kept). Override
        this in strategies that aggregate differently (distillation, mixed architectures).
        """
        contents = [u.content for u in updates]
        return self.average(updates), self.train_metrics_aggr_fn(contents, self.weighted_by_key)

    # ------------------------------------------------------------------ federated evaluation (optional)
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Client-side evaluation on clients sampled by partition id (off with ``fraction_evaluate=0``)."""
        return self._messages(
            server_round, arrays, config, grid, self.fraction_evaluate, self.min_evaluate_nodes,
            EVALUATE_STREAM, MessageType.EVALUATE,
        )

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Flower's weighted mean of the client metrics, over replies sorted by partition id."""
        ordered = sorted(replies, key=lambda m: -1 if m.has_error() else int(R.reply_metrics(m)[R.PARTITION_ID]))
        self._round.bytes_received += sum(R.payload_bytes(m.content) for m in ordered if not m.has_error())
        metrics = super().aggregate_evaluate(server_round, ordered)
        if metrics is not None:
            self._round.evaluate = {k.replace("-", "_"): float(v) for k, v in metrics.items()}
        return metrics

    # ------------------------------------------------------------------ end of round
    def end_of_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Evaluate the global model centrally and record the round's row (skips round 0, the initial model)."""
        if server_round == 0:
            return None
        start = time.perf_counter()
        result = self.evaluate_fn(server_round, arrays) if self.evaluate_fn is not None else None
        end = time.perf_counter()
        row = metrics_row(self._round, dict(result or {}), end - start, end)
        if self.recorder is not None:
            self.recorder.record(server_round, row)
        check_not_diverged(server_round, dict(result or {}))
        if self.checkpointer is not None:  # after the row: the checkpoint holds every row up to this round
            self.checkpointer(server_round, arrays)
        return result
