"""The student-side terms beyond logit matching: attention transfer (ZSKT), activation- and
decision-boundary hinges and virtual interpolation (activation regularisation + virtual interpolation)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def attention_map(activations: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis' spatial attention map: the channel mean of squared activations of a
    (N, C, H, W) tensor, flattened to (N, H*W) and L2-normalised per sample (so channel counts
    may differ between student and teacher and a positive rescaling does not change it)."""
    a = activations.float().pow(2).mean(1).flatten(1)
    return F.normalize(a, dim=1)


def attention_transfer(
    student_activations: Sequence[torch.Tensor], teacher_activations: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Attention-transfer loss summed over matched layer pairs (same spatial size per pair).

    Each pair contributes ``mean((attention_map(s) - attention_map(t))**2)`` over samples and
    positions: the form of Zagoruyko & Komodakis' and ZSKT's released code, for which ZSKT's
    ``beta = 250`` was tuned (the papers write the unsquared per-sample L2 norm instead).
    """
    total = torch.zeros((), device=student_activations[0].device) if student_activations else torch.zeros(())
    for s, t in zip(student_activations, teacher_activations, strict=True):
        total = total + (attention_map(s) - attention_map(t)).pow(2).mean()
    return total


def activation_boundary_loss(student_pre: torch.Tensor, teacher_pre: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Heo et al.'s (AAAI 2019) activation-boundary transfer loss, averaged over elements.

    Where the teacher's neuron is active (pre-activation ``> 0``) the student's must be ``>= margin``,
    elsewhere ``<= -margin``; each violation costs its squared distance to the margin:
    ``relu(margin - s)**2`` or ``relu(margin + s)**2``. Zero exactly when the student's
    pre-activations have the teacher's signs with the margin. Only the teacher's *signs* matter.
    """
    # relu(margin - sign * s) with sign +1 where the teacher's neuron is active, -1 elsewhere: both
    # hinges in one pass (the term runs on every student step).
    sign = (teacher_pre > 0).to(torch.float32) * 2 - 1
    return F.relu(margin - student_pre.float() * sign).square().mean()


def decision_boundary_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, margin: float = 1.0
) -> torch.Tensor:
    """The activation-boundary hinge on the teacher's decision, averaged over samples.

    For the teacher's predicted class ``c``, the decision functions ``s_c - s_k`` (``k != c``) are
    the student's "pre-activations" of the teacher's decision: positive on the teacher's side of
    every boundary around ``c``. Each must reach ``min(margin, t_c - t_k)``; a violation costs
    ``relu(min(margin, t_c - t_k) - (s_c - s_k))``, averaged over the ``C - 1`` other classes.
    The margin is capped at the teacher's own gap so that a student equal to the teacher has zero
    loss: near a decision boundary (where an adversarial generator puts its samples) the student
    must be on the teacher's side by as much as the teacher is, not by more (a full margin there
    fights the logit-matching loss). The hinge is not squared, unlike the hidden-layer one: logits
    have no BatchNorm'd connector to bound their scale, and a squared hinge's gradient grows with
    the error, which made the student diverge (see docs/design_notes.md#decision-boundary-hinge).
    """
    s, t = student_logits.float(), teacher_logits.float()
    c = t.argmax(1, keepdim=True)
    gap = s.gather(1, c) - s  # (N, C): zero at c
    need = (t.gather(1, c) - t).clamp(max=margin)
    hinge = F.relu(need - gap).scatter(1, c, 0.0)
    return hinge.sum(1).mean() / max(s.shape[1] - 1, 1)


def convex_mix(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``lam * a + (1 - lam) * b`` with one ``lam`` per row (shape (N,)), broadcast over the rest."""
    w = lam.to(a.dtype).view(-1, *([1] * (a.dim() - 1)))
    return w * a + (1 - w) * b
