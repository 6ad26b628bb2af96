"""Virtual interpolation (Qu et al., ICASSP 2021, "Enhancing Data-Free Adversarial Distillation
with Activation Regularization and Virtual Interpolation").

A generator's samples cluster where its adversarial game pushes them; the space between them,
across the teacher's decision boundaries, stays unseen. Virtual samples fill it: mixup-style convex
combinations ``x_v = lam * x_i + (1 - lam) * x_j`` of pairs of the batch, labelled by the same
combination of the endpoints' teacher outputs, ``y_v = lam * y_i + (1 - lam) * y_j`` (the virtual
*labels* of the paper: no extra teacher call), on which the student also learns.

It only reads a :class:`~fedkd.datafree.student_terms.base.StudentBatch` (inputs and teacher
logits), so it applies to the batches of any synthesizer (DFAD, CMI, conditional, real data).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedkd.datafree.losses import convex_mix, soft_target_kl
from fedkd.datafree.student_terms.base import StudentBatch, StudentTerm
from fedkd.errors import ConfigError, check_choice
from fedkd.utils.device import autocast
from fedkd.utils.option_types import NonNegativeFloat, PositiveFloat

KEY = "student_terms.interpolation"
LABEL_SPACES = ("probs", "logits")


@dataclass
class VirtualBatch:
    """Virtual samples and their labels: row ``r`` mixes rows ``r`` and ``partner[r]`` of the
    batch with weight ``lam[r]`` on row ``r``."""

    x: torch.Tensor
    target: torch.Tensor  # probabilities (label_space "probs") or logits ("logits")
    lam: torch.Tensor
    partner: torch.Tensor


class VirtualInterpolation(StudentTerm):
    """The student's loss on virtual samples between pairs of the batch's samples.

    Args:
        weight: the term's weight in the student's loss.
        alpha: ``lam ~ Beta(alpha, alpha)``, one per virtual sample (mixup's rule). Default 1.0:
            ``lam`` uniform on [0, 1], virtual samples spread evenly between their endpoints
            (mixup's CIFAR setting; smaller values keep them near the endpoints).
        label_space: what is mixed and matched.
            ``"probs"`` (default, the mixup form): ``y_v = lam * softmax(t_i / T) + (1 - lam) *
            softmax(t_j / T)``, a probability vector elementwise between the endpoints'; the student
            minimises ``KL(y_v || softmax(s / T)) * T**2`` (``T``: the run's temperature).
            ``"logits"``: ``y_v`` mixes the teacher's logits and the student matches it with the
            run's own loss (L1 for DFAD), on the same scale as the main loss.

    Pairs: a random permutation of the batch; ``lam`` and the permutation come from torch's global
    RNG (which a resumed run restores), so the term has no state of its own. The student runs once
    more per step, on the virtual samples (``calls_models``).
    """

    name = "interpolation"
    calls_models = True

    def __init__(self, weight: NonNegativeFloat = 1.0, alpha: PositiveFloat = 1.0, label_space: str = "probs") -> None:
        super().__init__(weight)
        if alpha is None or not alpha > 0:
            raise ConfigError(f"{KEY}.alpha must be > 0 (got {alpha}); set alpha=<positive number> (1.0: lam uniform)")
        check_choice(f"{KEY}.label_space", label_space, LABEL_SPACES)
        self.alpha = float(alpha)
        self.label_space = label_space

    def interpolate(self, x: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> VirtualBatch:
        """Virtual samples of the batch ``x`` and their labels from its ``teacher_logits``."""
        n = x.shape[0]
        # Drawn on the CPU (a few numbers): the same stream whatever the device.
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((n,)).to(x.device)
        partner = torch.randperm(n).to(x.device)
        t = teacher_logits.detach().float()
        labels = F.softmax(t / temperature, dim=1) if self.label_space == "probs" else t
        return VirtualBatch(convex_mix(x, x[partner], lam), convex_mix(labels, labels[partner], lam), lam, partner)

    def __call__(self, batch: StudentBatch) -> torch.Tensor:
        virtual = self.interpolate(batch.x.detach(), batch.teacher_logits, batch.temperature)
        with autocast(virtual.x.device):
            s_logits = batch.student(virtual.x)
        if self.label_space == "probs":
            return soft_target_kl(s_logits, virtual.target, batch.temperature)
        return batch.loss_fn(s_logits, virtual.target)
