"""DFAD: Data-Free Adversarial Distillation (Fang et al., 2019).

A generator maps noise to inputs; the student minimises the mean absolute error between its logits
and the teacher's on generated samples, and the generator *maximises* that error, so it keeps
producing the samples on which the student is still wrong. The paper alternates 5 student steps
with 1 generator step, and trains the student on L1 (``conf/synthesizer/dfad.yaml``'s ``student``
node: ``steps: 5, loss: l1``); the student's steps are the distiller's, :meth:`DFADSynthesizer.synthesize`
is the generator's.

Speed: every student step draws a fresh batch, so per iteration the generator runs forward
once per student step plus once for its own step, and backward once, while teacher and student are small (LeNet-5: about
0.4 MFLOP per sample). The generator therefore sets the pace: its size (``ngf``) is chosen for the
dataset, the student-step batches are generated without autograd, and the generator step
back-propagates only into the generator's parameters (not into the student's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.datafree.losses import l1_discrepancy
from fedkd.datafree.recipe import StudentNode
from fedkd.datafree.synthesizers.base import Synthesizer, build_generator
from fedkd.datafree.synthesizers.checks import check_betas
from fedkd.utils.device import autocast
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import AdamBetas, PositiveFloat, PositiveInt, Supplied


class DFADSynthesizer(Synthesizer):
    """Adversarial generator of DFAD.

    Args:
        spec, device, student: dataset spec, device and the student's recipe (:class:`~fedkd.datafree.Synthesizer`).
        generator: registry config of the generator (``{"name": "dfad_generator", "nz": .., "ngf": ..}``).
        batch_size: samples per generator step.
        lr, betas: Adam settings of the generator (paper: 1e-3).
        generator_steps: generator updates per :meth:`synthesize` call (paper: 1).
    """

    @checked("synthesizer")
    def __init__(
        self,
        spec: Supplied[DatasetSpec],
        device: Supplied[torch.device | str] = "cpu",
        generator: Mapping[str, Any] | None = None,
        batch_size: PositiveInt = 256,
        lr: PositiveFloat = 1e-3,
        betas: AdamBetas = (0.9, 0.999),
        generator_steps: PositiveInt = 1,
        *,
        student: StudentNode = None,
    ) -> None:
        super().__init__(spec, device, student=student)
        self.generator = build_generator(generator or {"name": "dfad_generator"}, spec).to(self.device)
        self.batch_size = batch_size
        self.generator_steps = generator_steps
        self._params = [p for p in self.generator.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self._params, lr=lr, betas=check_betas(betas))

    def synthesize(self, teacher: nn.Module, student: nn.Module) -> dict[str, float]:
        """Generator step(s): gradient *ascent* on the student-teacher L1 discrepancy."""
        self.generator.train()
        discrepancy = torch.zeros((), device=self.device)
        for _ in range(self.generator_steps):
            z = self.generator.noise(self.batch_size, self.device)
            with autocast(self.device):
                x = self.generator(z)
                discrepancy = l1_discrepancy(student(x), teacher(x))
            self.optimizer.zero_grad(set_to_none=True)
            # Only the generator learns here: restricting backward to its parameters skips the
            # student's weight gradients (and the teacher is frozen).
            (-discrepancy).backward(inputs=self._params)
            self.optimizer.step()
            self.samples_generated += self.batch_size
        d = discrepancy.item()
        return {"generator_loss": -d, "discrepancy": d}

    def state_dict(self) -> dict[str, Any]:
        """The base state plus the generator's Adam state."""
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, None]:
        """A fresh generated batch (the generator stays in train mode, as in DFAD)."""
        self.generator.train()
        with autocast(self.device):
            x = self.generator(self.generator.noise(n, self.device))
        self.samples_generated += n
        return x, None
