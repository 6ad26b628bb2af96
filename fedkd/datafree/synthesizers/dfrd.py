"""DFRD's generator (Luo et al., "DFRD: Data-Free Robustness Distillation for Heterogeneous
Federated Learning", NeurIPS 2023), as a synthesizer for the federated server.

The server trains a conditional generator ``G(z, y)`` against the ensemble of client models, with
labels drawn in proportion to the clients' label counts (*label sampling*) and each client's
logits weighted, for label ``y``, by its share of the clients' samples of ``y`` (*dynamic
weighting*, ``tau_{k,y}``; the strategy's ``class_weighting: label_counts``, ``ensemble_weighting:
label``). Each generator step minimises

    fidelity * CE(teacher(x, y), y)                          x = G(z, y) is recognised as y
    + transferability * -mean(1[argmax f(x) = y] KL(teacher || f))   f: the global model
    + diversity * exp(-mean ||z_i - z_j||^2 |x_i - x_j|_1)

(:func:`~fedkd.datafree.losses.transferability_kl`, :func:`~fedkd.datafree.losses.diversity_loss`);
no BN-statistics term. After every round (the distiller's epoch, :meth:`end_epoch`) an exponential
moving average of the generator, ``G_ema <- decay * G_ema + (1 - decay) * G``, keeps what earlier
rounds' generators produced; the first round copies ``G`` (an untrained generator's weights carry
nothing to keep). The global model then learns from both: every student batch of ``n`` holds
``n * ema_weight / (1 + ema_weight)`` samples of ``G_ema`` and the rest of ``G``, so its mean KL is
proportional to the paper's ``L_kl(G) + ema_weight * L_kl(G_ema)`` (the robust distillation that
keeps the global model from forgetting earlier rounds' knowledge).

Choices where this code differs, and why: the generator and student steps alternate within a round
(the one distillation loop every server method shares) where the paper trains the generator first;
the two generators' samples share one student batch instead of two.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import torch
from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.datafree.losses import cross_entropy, diversity_loss, transferability_kl
from fedkd.datafree.recipe import StudentNode
from fedkd.datafree.synthesizers.conditional import ConditionalSynthesizer
from fedkd.utils.device import autocast
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import AdamBetas, NonNegativeFloat, PositiveFloat, PositiveInt, Range, Supplied


class DFRDSynthesizer(ConditionalSynthesizer):
    """DFRD's conditional generator with its moving-average copy.

    Args:
        spec, device, student, generator, label_prior, batch_size, generator_steps, lr, betas: as for
            :class:`~fedkd.datafree.ConditionalSynthesizer`.
        fidelity, transferability, diversity: the generator loss's weights.
        ema_decay: the moving average's weight on its previous value, in [0, 1).
        ema_weight: the moving-average generator's loss weight in the student's distillation,
            relative to the live generator's (0: the live generator alone).
    """

    @checked("synthesizer")
    def __init__(
        self,
        spec: Supplied[DatasetSpec],
        device: Supplied[torch.device | str] = "cpu",
        generator: Mapping[str, Any] | None = None,
        label_prior: Annotated[Sequence[float], Range(0)] | torch.Tensor | None = None,
        batch_size: PositiveInt = 64,
        generator_steps: PositiveInt = 1,
        lr: PositiveFloat = 1e-3,
        betas: AdamBetas = (0.9, 0.999),
        fidelity: NonNegativeFloat = 1.0,
        transferability: NonNegativeFloat = 1.0,
        diversity: NonNegativeFloat = 1.0,
        ema_decay: Annotated[float, Range(0, 1, high_open=True)] = 0.5,
        ema_weight: NonNegativeFloat = 1.0,
        *,
        student: StudentNode = None,
    ) -> None:
        super().__init__(spec, device, generator, label_prior, batch_size, generator_steps, lr, betas,
                         student=student)
        # the conditional synthesizer's step loop weighs the terms by these names; no BN term
        self.weights = {"fidelity": fidelity, "transferability": transferability, "diversity": diversity, "bn": 0.0}
        self.ema_decay, self.ema_weight = float(ema_decay), float(ema_weight)
        self.ema_generator = copy.deepcopy(self.generator).requires_grad_(False)
        self.ema_rounds = 0  # moving-average updates so far; 0: no round has ended yet

    def generator_terms(
        self, z: torch.Tensor, y: torch.Tensor, x: torch.Tensor, t_logits: torch.Tensor, student: nn.Module
    ) -> dict[str, torch.Tensor]:
        """Fidelity, transferability against the global model (the student) and diversity."""
        return {"fidelity": cross_entropy(t_logits, y),
                "transferability": transferability_kl(student(x), t_logits, y),
                "diversity": diversity_loss(z, x)}

    @torch.no_grad()
    def end_epoch(self) -> None:
        """The round's moving-average step (the first round's copies the live generator)."""
        decay = self.ema_decay if self.ema_rounds else 0.0
        for ema, live in zip(self.ema_generator.parameters(), self.generator.parameters(), strict=True):
            ema.mul_(decay).add_(live.detach(), alpha=1.0 - decay)
        for ema, live in zip(self.ema_generator.buffers(), self.generator.buffers(), strict=True):
            ema.copy_(live)
        self.ema_rounds += 1

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples with their labels: ``n * ema_weight / (1 + ema_weight)`` of them (rounded)
        from the moving-average generator once a round has ended, the rest from the live one."""
        n_ema = round(n * self.ema_weight / (1.0 + self.ema_weight)) if self.ema_rounds else 0
        y = self.target_labels(n, balanced=False)
        parts = []
        for gen, labels in ((self.generator, y[: n - n_ema]), (self.ema_generator, y[n - n_ema:])):
            if len(labels):
                gen.train()  # batch statistics in the generator's BatchNorm, as in training
                with autocast(self.device):
                    parts.append(gen(gen.noise(len(labels), self.device), labels))
        self.samples_generated += n
        return torch.cat(parts), y

    def state_dict(self) -> dict[str, Any]:
        """The conditional generator's state plus the moving-average generator and its update count."""
        ema = {k: v.detach().cpu() for k, v in self.ema_generator.state_dict().items()}
        return {**super().state_dict(), "ema_generator": ema, "ema_rounds": self.ema_rounds}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.ema_generator.load_state_dict(state["ema_generator"])
        self.ema_rounds = int(state["ema_rounds"])
