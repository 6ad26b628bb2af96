"""The server's memory of each client's latest reply: what outlives one round's sample.

With partial participation (50 clients, 20 % a round) FedFTG's teacher holds only the round's
sampled clients: ten small experts, together a weaker classifier than the global model, and a
different ten every round. :class:`ClientMemory` keeps each client's latest reply (its weights
and label histogram) for ``rounds`` rounds, so the teacher is the ensemble of every client heard
from recently -- an older reply is replaced when that client trains again. With full participation
it holds exactly the round's replies, whatever ``rounds`` is.

MIFA (:mod:`fedkd.strategies.mifa`) keeps the same memory of another payload: each client's
latest update (its weights minus the global model it trained from), and keeps it for good
(``rounds=None``), as the paper does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord

from fedkd.errors import ConfigError
from fedkd.federated import records as R
from fedkd.strategies.updates import ClientUpdate


@dataclass
class RememberedUpdate:
    """What the server keeps of a reply (the names :class:`ClientUpdate` uses), and when it came."""

    partition_id: int
    arrays: ArrayRecord  # the client's weights, or what the strategy keeps instead (MIFA: its update)
    label_counts: np.ndarray
    server_round: int


class ClientMemory:
    """Each client's latest reply from the last ``rounds`` rounds (1: only the current round's;
    ``None``: every client ever heard from). ``option`` names the setting in error messages."""

    def __init__(self, rounds: int | None = 1, option: str = "strategy.teacher_memory_rounds") -> None:
        if rounds is not None and rounds < 1:
            raise ConfigError(f"{option} must be >= 1 or null (got {rounds}); 1 keeps the round's clients, null all")
        self.rounds = rounds
        self.entries: dict[int, RememberedUpdate] = {}

    def remember(
        self, server_round: int, updates: list[ClientUpdate], arrays: Sequence[ArrayRecord] | None = None
    ) -> list[RememberedUpdate]:
        """Store the round's replies, forget those older than the window; the remembered replies,
        the round's first (in reply order), then older ones by partition id.

        ``arrays``: what to keep of each reply, in the replies' order (default: their weights)."""
        kept = [u.arrays for u in updates] if arrays is None else list(arrays)
        for u, a in zip(updates, kept, strict=True):
            self.entries[u.partition_id] = RememberedUpdate(u.partition_id, a, u.label_counts, server_round)
        if self.rounds is not None:
            oldest = server_round - self.rounds + 1
            self.entries = {pid: e for pid, e in self.entries.items() if e.server_round >= oldest}
        current = [self.entries[u.partition_id] for u in updates]
        fresh = {u.partition_id for u in updates}
        return current + [self.entries[pid] for pid in sorted(self.entries) if pid not in fresh]

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only (``torch.load(weights_only=True)`` reads them back)."""
        return {
            str(pid): {"round": e.server_round, "label_counts": torch.as_tensor(e.label_counts),
                       "arrays": R.state_dict(e.arrays)}
            for pid, e in self.entries.items()
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.entries = {
            int(pid): RememberedUpdate(int(pid), ArrayRecord(e["arrays"]), e["label_counts"].numpy().astype(np.int64),
                                       int(e["round"]))
            for pid, e in state.items()
        }
