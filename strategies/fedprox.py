"""FedProx (Li et al., 2020): FedAvg whose clients add ``(mu/2)||w - w_global||^2`` to their loss.

The server side is FedAvg's; the strategy only tells clients ``mu`` (``proximal-mu`` in the train
config), and :func:`fedkd.clients.train.proximal_term` adds the term during local training.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from fedkd.federated import records as R
from fedkd.strategies.fedavg import FedAvg
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import Forward, NonNegativeFloat


class FedProx(FedAvg):
    """FedAvg plus the proximal term; ``proximal_mu`` >= 0 (0 is FedAvg)."""

    @checked("strategy")
    def __init__(self, *, proximal_mu: NonNegativeFloat = 0.01, **kwargs: Annotated[Any, Forward()]) -> None:
        super().__init__(**kwargs)
        self.proximal_mu = float(proximal_mu)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train instructions with ``proximal-mu`` added to their config."""
        config[R.PROXIMAL_MU] = self.proximal_mu
        return super().configure_train(server_round, arrays, config, grid)
