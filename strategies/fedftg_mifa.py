"""FedFTG on MIFA: the generator strategy's student starts from MIFA's aggregate, not the round's average.

The federated grid found the gain of FedFTG with a memory of client models to be the memory's: MIFA
(:class:`fedkd.strategies.mifa.MIFA`), FedAvg over every client's latest update, is as good or better
with no generator. Whether distilling without data adds anything *on top of* that memory is then the
question, and this strategy asks it: each round MIFA's step gives the global model it would return,
and FedFTG distils that model from its teacher (the same remembered clients, label-weighted) instead
of the round's FedAvg average. During FedFTG's warm-up, and when the safeguard keeps it, the round's
model is MIFA's exactly.

Two memories, each with its own window: MIFA's updates (``memory_rounds``) and the teacher's models
(``teacher_memory_rounds``); ``conf/strategy/fedftg_mifa.yaml`` sets both to 10 rounds. One client
architecture only: MIFA steps one global model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from flwr.app import ArrayRecord, MetricRecord

from fedkd.errors import ConfigError
from fedkd.federated.robust import clip_update_norms
from fedkd.strategies.client_memory import ClientMemory
from fedkd.strategies.fedavg import ClientUpdate, ServerRun
from fedkd.strategies.fedftg import FedFTG
from fedkd.strategies.mifa import AVERAGE_OVER, buffer_names, mifa_step
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import Forward, PositiveFloat, PositiveInt


class FedFTGOnMIFA(FedFTG):
    """FedFTG whose student starts from MIFA's aggregate each round (see the module doc).

    Parameters beyond :class:`~fedkd.strategies.fedftg.FedFTG`, as :class:`~fedkd.strategies.mifa.MIFA`'s:
        memory_rounds: forget a client's update this many rounds after it came (null: never).
        server_lr: MIFA's step size on the mean remembered update.
        average_over: ``"all"`` divides the sum of updates by ``num_clients`` (the paper),
            ``"remembered"`` by the number held.
    """

    @checked("strategy")
    def __init__(
        self, *, memory_rounds: PositiveInt | None = 10, server_lr: PositiveFloat = 1.0,
        average_over: Literal[AVERAGE_OVER] = "all", **fedftg: Annotated[Any, Forward()],
    ) -> None:
        super().__init__(**fedftg)
        if self.aggregation != "mean":
            raise ConfigError(f"strategy.aggregation must be mean for MIFA's step (got {self.aggregation}); "
                              "use strategy=fedftg for robust rules")
        self.updates = ClientMemory(memory_rounds, option="strategy.memory_rounds")
        self.server_lr = float(server_lr)
        self.average_over = average_over
        self._statistics: list[str] = []
        self._server_round = 0

    def bind(self, run: ServerRun) -> None:
        """FedFTG's binding; one client architecture, whose buffers MIFA takes from the round's replies."""
        if run.mixed:
            raise ConfigError("strategy=fedftg_mifa steps one global model and these clients train "
                              f"{len(run.model_configs)} architectures; use strategy=fedftg for mixed client_models")
        super().bind(run)
        self._statistics = buffer_names(run)

    def aggregate(self, server_round: int, updates: list[ClientUpdate]) -> tuple[ArrayRecord, MetricRecord]:
        """FedFTG's round, its student started from MIFA's step (:meth:`average`)."""
        self._server_round = server_round
        return super().aggregate(server_round, updates)

    def average(self, updates: list[ClientUpdate], reference: ArrayRecord | None = None) -> ArrayRecord:
        """MIFA's global model for the round: remember the replies' updates (each clipped to
        ``strategy.clip_norm`` first), then step the round's global model by their mean."""
        origin = reference if reference is not None else self._round.global_arrays
        contents = [u.content for u in updates]
        if self.clip_norm is not None:
            contents, clipped = clip_update_norms(contents, origin, self.clip_norm)
            self._round.clipped += clipped
        fresh = [next(iter(c.array_records.values())) for c in contents]
        arrays, members = mifa_step(
            self.updates, self._server_round, origin, updates, fresh, self._statistics, server_lr=self.server_lr,
            divisor=self.num_clients if self.average_over == "all" else None,
        )
        self.record_server_metrics({"memory_clients": float(len(members))})
        return arrays

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """FedFTG's state plus MIFA's memory of updates."""
        return {**super().state_dict(), "update_memory": self.updates.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (after :meth:`bind`, before the first resumed round)."""
        super().load_state_dict(state)
        self.updates.load_state_dict(state.get("update_memory", {}))
