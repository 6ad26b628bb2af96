"""Aggregation over a memory of every client's latest reply: MIFA, and FedAvg over the same memory.

With partial participation FedAvg averages only the round's sampled clients, so each round's step
follows a different subset of the data. Both strategies here keep each client's latest reply in a
:class:`~fedkd.strategies.client_memory.ClientMemory` (the one FedFTG's teacher uses) and aggregate
over all of it, the clients absent from the round with their stale entry:

- :class:`MIFA` keeps each client's *update* (its weights minus the global model it trained from)
  and moves the current global model by their average (the paper's form);
- :class:`FedAvgMemory` keeps each client's *model* and the global model becomes their average.

With stale entries the two differ: MIFA applies an old update to the current global model, while
FedAvgMemory takes the old model itself, which pulls the global model back to where that client
started. The memory travels with the run's checkpoint (``state_dict``), so a resumed run continues
exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedkd.errors import ConfigError
from fedkd.federated import records as R
from fedkd.federated.robust import clip_update_norms, combine
from fedkd.models import build_from_config
from fedkd.strategies.client_memory import ClientMemory, RememberedUpdate
from fedkd.strategies.fedavg import ClientUpdate, FedAvg, ServerRun
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import Forward, PositiveFloat, PositiveInt

AVERAGE_OVER = ("all", "remembered")


def difference(arrays: ArrayRecord, base: ArrayRecord) -> ArrayRecord:
    """``arrays - base`` entry by entry, in ``base``'s key order and each entry's own dtype."""
    return ArrayRecord({key: Array(np.asarray(arrays[key].numpy() - ref.numpy())) for key, ref in base.items()})


def moved(base: ArrayRecord, steps: Sequence[ArrayRecord], scale: float) -> ArrayRecord:
    """``base + scale * sum(steps)``, summed in float64 in the order given; dtypes as ``base``'s
    (integer buffers such as BatchNorm's ``num_batches_tracked`` rounded to the nearest integer)."""
    out = ArrayRecord()
    for key, ref in base.items():
        start = ref.numpy()
        total = np.zeros(start.shape, dtype=np.float64)
        for step in steps:
            total += step[key].numpy()
        value = start.astype(np.float64) + scale * total
        if not np.issubdtype(start.dtype, np.floating):
            value = np.rint(value)
        out[key] = Array(np.array(value, dtype=start.dtype, order="C"))  # 0-d buffers stay 0-d
    return out


def buffer_names(run: ServerRun) -> list[str]:
    """The buffers (running statistics, counters) of the run's one client architecture: the state
    MIFA's step leaves to the round's replies."""
    model = build_from_config(next(iter(run.model_configs.values())), run.spec)
    return [name for name, _ in model.named_buffers()]


class _Remembering(FedAvg):
    """FedAvg whose :meth:`aggregate` works on a memory of each client's latest reply.

    ``memory_rounds``: an entry is forgotten this many rounds after it came (null: never). The
    same window as FedFTG's ``teacher_memory_rounds``, named for what it is here: the memory
    of the aggregate, not of a teacher.
    """

    @checked("strategy")
    def __init__(self, *, memory_rounds: PositiveInt | None = None, **fedavg: Annotated[Any, Forward()]) -> None:
        super().__init__(**fedavg)
        self.memory = ClientMemory(memory_rounds, option="strategy.memory_rounds")
        self.sent: ArrayRecord | None = None  # the global model this round's clients start from
        self._statistics: list[str] | None = None  # buffer names of the model (statistics_keys)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train instructions; keeps the global model they carry (the updates' origin)."""
        self.sent = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def fresh_arrays(self, updates: list[ClientUpdate]) -> list[ArrayRecord]:
        """The round's replies' weights, each update's norm clipped to ``strategy.clip_norm`` first."""
        contents = [u.content for u in updates]
        if self.clip_norm is not None:
            contents, clipped = clip_update_norms(contents, self._origin(), self.clip_norm)
            self._round.clipped += clipped
        return [next(iter(c.array_records.values())) for c in contents]

    def record_memory(self, server_round: int, members: list[RememberedUpdate]) -> None:
        """How many clients the aggregate held and how old their entries were, in rounds."""
        self.record_server_metrics({
            "memory_clients": float(len(members)),
            "memory_age_mean": float(np.mean([server_round - m.server_round for m in members])),
        })

    def statistics_keys(self) -> list[str]:
        """The model's buffers (running statistics, counters): state the optimiser does not step."""
        if self._statistics is None:
            if self.server_run is None:
                return []
            self._statistics = buffer_names(self.server_run)
        return self._statistics

    def _origin(self) -> ArrayRecord:
        if self.sent is None:
            raise RuntimeError(f"{type(self).__name__}.configure_train must run before aggregate (the round loop does)")
        return self.sent

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """FedAvg's state plus the memory (every remembered entry, its round and label counts)."""
        return {**super().state_dict(), "client_memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (before the first resumed round)."""
        super().load_state_dict(state)
        self.memory.load_state_dict(state.get("client_memory", {}))


class MIFA(_Remembering):
    """MIFA: Memory-augmented Impatient Federated Averaging (Gu, Huang, Zhang and Huang, NeurIPS 2021,
    "Fast Federated Learning in the Presence of Arbitrary Device Unavailability", arXiv:2106.04159, Algorithm 1).

    The server keeps an update array ``G_i`` per client, zero until the client's first reply. A
    client that replies in round ``t`` sets ``G_i = w_i - w_t`` (the model it returned minus the
    global model it trained from); the others keep their last ``G_i``. The global step is

        ``w_{t+1} = w_t + server_lr * (1/N) * sum_i G_i``

    with ``N = num_clients``: uniform weights over all clients, those never heard from counting as
    zero (the paper's ``1/N`` over its zero-initialised array). The paper writes the update as
    ``G_i = (w_t - w_i) / eta_t`` and steps ``w_t - eta_t * mean(G)``; the clients' learning rate
    ``eta`` is the same in every round here (``optim.lr``), so the two ``eta`` cancel and
    ``server_lr=1`` is the paper's step. Replies are weighted uniformly, as the paper's objective
    is the uniform mean of the clients' losses (FedAvg weights by examples).

    Parameters beyond :class:`~fedkd.strategies.fedavg.FedAvg`:
        server_lr: ``eta_g`` above (> 0).
        memory_rounds: forget an update this many rounds after it came; null (the paper): never.
        average_over: ``"all"`` divides by ``num_clients`` (the paper); ``"remembered"`` by the
            number of updates held, so round 1 is FedAvg's uniform mean of the sampled clients and a
            window does not shrink the step.

    The model's buffers (BatchNorm's running mean and variance) are not stepped: they are the mean
    of the round's replies, as in FedAvg, because a stale change re-applied every round drives a
    running variance below zero.

    ``strategy.clip_norm`` clips each update before it is remembered; ``strategy.aggregation`` must
    be ``mean`` (the robust rules combine one round's replies, not a memory of updates). A round
    with fewer than ``min_replies`` usable replies keeps the global model, as FedAvg does (the
    paper would still step with the memory).
    """

    @checked("strategy")
    def __init__(
        self, *, server_lr: PositiveFloat = 1.0, average_over: Literal[AVERAGE_OVER] = "all",
        **kwargs: Annotated[Any, Forward()],
    ) -> None:
        super().__init__(**kwargs)
        if self.aggregation != "mean":
            raise ConfigError(
                f"strategy.aggregation must be mean for MIFA (got {self.aggregation}); MIFA averages its memory of "
                "updates, use strategy=fedavg_memory for robust rules over a memory"
            )
        self.server_lr = float(server_lr)
        self.average_over = average_over

    def aggregate(self, server_round: int, updates: list[ClientUpdate]) -> tuple[ArrayRecord, MetricRecord]:
        """Remember the round's updates, then move the global model by the mean remembered update."""
        arrays, members = mifa_step(
            self.memory, server_round, self._origin(), updates, self.fresh_arrays(updates), self.statistics_keys(),
            server_lr=self.server_lr, divisor=self.num_clients if self.average_over == "all" else None,
        )
        self.record_memory(server_round, members)
        return arrays, self.train_metrics_aggr_fn([u.content for u in updates], self.weighted_by_key)


def mifa_step(
    memory: ClientMemory, server_round: int, origin: ArrayRecord, updates: Sequence[ClientUpdate],
    fresh: Sequence[ArrayRecord], statistics: Sequence[str], *, server_lr: float, divisor: int | None,
) -> tuple[ArrayRecord, list[RememberedUpdate]]:
    """One MIFA round (:class:`MIFA`): remember each reply's update ``fresh - origin`` in ``memory``, then
    move ``origin`` by ``server_lr`` times the remembered updates' sum over ``divisor`` (``None``: the
    number remembered). The ``statistics`` buffers become the mean of the round's replies instead.
    Returns the new global model and the remembered entries."""
    members = memory.remember(server_round, updates, [difference(arrays, origin) for arrays in fresh])
    ordered = sorted(members, key=lambda m: m.partition_id)  # one summation order, whatever replied first
    arrays = moved(origin, [m.arrays for m in ordered], server_lr / (divisor or len(members)))
    # Running statistics (BatchNorm's mean and variance) are estimates, not steps of the objective:
    # re-applying a stale change to them every round drifts a variance below zero (the test loss
    # turns NaN within a few rounds at 20 % participation). They come from the round's replies.
    if statistics:
        mean = moved(origin, [difference(a, origin) for a in fresh], 1.0 / len(fresh))
        for key in statistics:
            arrays[key] = mean[key]
    return arrays, members


class FedAvgMemory(_Remembering):
    """FedAvg over the memory in the plain form: the global model is the average of the remembered
    clients' latest *models* (each the model the client returned, however old), weighted by their
    examples as FedAvg weights (a remembered client's example count is its label histogram's sum),
    with FedAvg's ``strategy.aggregation`` rule (``mean``, ``median``, ...).

    The counterpart of :class:`MIFA` over the same memory (``memory_rounds``, null: never forget):
    with every client in every round both are FedAvg (MIFA with equal client sizes); with partial
    participation a stale model here pulls the global model back to that client's old weights,
    where MIFA adds its old update to the current global model. ``strategy.clip_norm`` clips each
    reply's update (against the round's global model) before it is remembered.
    """

    def aggregate(self, server_round: int, updates: list[ClientUpdate]) -> tuple[ArrayRecord, MetricRecord]:
        """Remember the round's models, then combine every remembered model."""
        members = self.memory.remember(server_round, updates, self.fresh_arrays(updates))
        records = [
            RecordDict({R.ARRAYS: m.arrays, R.METRICS: MetricRecord({self.weighted_by_key: int(m.label_counts.sum())})})
            for m in sorted(members, key=lambda m: m.partition_id)
        ]
        arrays = combine(records, self.weighted_by_key, self.aggregation, self.trim_fraction, self.num_malicious)
        self.record_memory(server_round, members)
        return arrays, self.train_metrics_aggr_fn([u.content for u in updates], self.weighted_by_key)
