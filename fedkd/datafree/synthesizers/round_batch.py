"""A persistent generator trained by Adam whose student steps of one round share one batch.

DAFL and ZSKT both train one generator for the whole run and let the student learn, in each
round (one :meth:`Synthesizer.synthesize` call), from a single generated batch:

- DAFL (authors' code) updates generator and student on the *same* batch ``G(z)`` at once, so the
  student's batch is the one the generator step just used;
- ZSKT (authors' code) draws ``z`` once, takes the generator step(s), and then ``ns`` student
  steps on ``G(z)`` of the updated generator (recomputed, same ``z``).

:class:`RoundBatchSynthesizer` holds the generator, its Adam optimiser and that shared batch;
subclasses implement :meth:`synthesize` and call :meth:`_start_round`. ``reuse_batch=False``
draws a fresh batch for every student step instead (DFAD's way).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fedkd.data.specs import DatasetSpec
from fedkd.datafree.recipe import StudentNode
from fedkd.datafree.synthesizers.base import Synthesizer, build_generator
from fedkd.datafree.synthesizers.checks import check_betas
from fedkd.utils.device import autocast
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import AdamBetas, PositiveFloat, PositiveInt, Supplied


class RoundBatchSynthesizer(Synthesizer):
    """Base of DAFL and ZSKT: generator + Adam; one student batch per round.

    Args:
        spec, device, student: dataset spec, device and the student's recipe (:class:`~fedkd.datafree.Synthesizer`).
        generator: registry config of the generator (default ``dfad_generator``).
        batch_size: samples per generator step.
        lr, betas: the generator's Adam settings.
        generator_steps: generator updates per round.
        reuse_batch: the round's student steps share one batch (both papers) or draw fresh ones.
    """

    @checked("synthesizer")
    def __init__(
        self,
        spec: Supplied[DatasetSpec],
        device: Supplied[torch.device | str],
        generator: Mapping[str, Any] | None,
        batch_size: PositiveInt,
        lr: PositiveFloat,
        betas: AdamBetas,
        generator_steps: PositiveInt,
        reuse_batch: bool,
        *,
        student: StudentNode = None,
    ) -> None:
        super().__init__(spec, device, student=student)
        betas = check_betas(betas)
        self.generator = build_generator(generator or {"name": "dfad_generator"}, spec).to(self.device)
        self.batch_size, self.generator_steps, self.reuse_batch = batch_size, generator_steps, bool(reuse_batch)
        self._params = [p for p in self.generator.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self._params, lr=lr, betas=betas)
        # The round's shared student batch and the noise it comes from; both are reset by every
        # synthesize() call, so they are not carried between calls (nor checkpointed).
        self._z: torch.Tensor | None = None
        self._batch: torch.Tensor | None = None

    def _start_round(self, z: torch.Tensor, batch: torch.Tensor | None = None) -> None:
        """Set the round's noise and, when already generated, its student batch (detached)."""
        self._z = z.detach()
        self._batch = None if batch is None else batch.detach()

    @torch.no_grad()
    def _generate(self, n: int, z: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` samples from ``z`` (fresh noise when ``None``), counted in samples_generated."""
        z = self.generator.noise(n, self.device) if z is None else z
        self.generator.train()  # batch statistics in the generator's BatchNorm, as in training
        with autocast(self.device):
            x = self.generator(z)
        self.samples_generated += n
        return x

    def sample(self, n: int) -> tuple[torch.Tensor, None]:
        """The first ``n`` samples of the round's batch (generated at the first call when the
        round has none that large), or a fresh batch every call with ``reuse_batch=False``."""
        if not self.reuse_batch:
            return self._generate(n), None
        if self._batch is None or len(self._batch) < n:
            # From the round's noise when it is large enough (the papers' algorithm); otherwise
            # (student batches larger than synthesizer.batch_size) from fresh noise of size n.
            z = self._z[:n] if self._z is not None and len(self._z) >= n else None
            self._batch = self._generate(n, z)
        return self._batch[:n], None

    def preview(self, n: int = 64) -> torch.Tensor:
        """Fresh samples to look at; leaves the round's batch and the sample count alone."""
        count = self.samples_generated
        x = self._generate(n)
        self.samples_generated = count
        return x

    def state_dict(self) -> dict[str, Any]:
        """The base state plus the generator's Adam state."""
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self._z = self._batch = None
