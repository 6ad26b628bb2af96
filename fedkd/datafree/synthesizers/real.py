"""Not data-free: batches of a real training split, for the data-driven KD reference.

With this source the distiller trains the student exactly as with a synthesizer (same loop, same
number of student steps, loss against the teacher's logits only), so its accuracy is the ceiling a
data-free method is measured against.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fedkd.data.datasets import Split
from fedkd.data.specs import DatasetSpec
from fedkd.datafree.recipe import StudentNode
from fedkd.datafree.synthesizers.base import Synthesizer


class RealDataSource(Synthesizer):
    """Serves shuffled batches of ``train`` (epoch after epoch); labels are not passed on."""

    needs_train_split = True  # entry points pass the training split as ``train``

    def __init__(
        self,
        spec: DatasetSpec,
        device: torch.device | str = "cpu",
        train: Split | None = None,
        seed: int = 0,
        *,
        student: StudentNode = None,
    ) -> None:
        super().__init__(spec, device, student=student)
        if train is None or len(train) == 0:
            raise ValueError("RealDataSource needs a non-empty training split")
        self.train = train.to(self.device)
        self._rng = torch.Generator().manual_seed(seed)
        self._order = torch.randperm(len(train), generator=self._rng)
        self._pos = 0

    def synthesize(self, teacher: nn.Module, student: nn.Module) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The base state plus the shuffling generator, the current order and position in it."""
        return {**super().state_dict(), "rng": self._rng.get_state(), "order": self._order.clone(), "pos": self._pos}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._rng.set_state(state["rng"])
        self._order, self._pos = state["order"].clone(), int(state["pos"])

    def sample(self, n: int) -> tuple[torch.Tensor, None]:
        if self._pos + n > len(self._order):  # next epoch: reshuffle
            self._order, self._pos = torch.randperm(len(self.train), generator=self._rng), 0
        idx = self._order[self._pos : self._pos + n].to(self.device)
        self._pos += n
        return self.train.x[idx], None
