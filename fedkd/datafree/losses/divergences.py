"""Divergences between two models' outputs: the student's losses and the adversary's."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l1_discrepancy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean absolute error between logits (DFAD's student loss and, negated, generator loss)."""
    return F.l1_loss(student_logits.float(), teacher_logits.float())


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Hinton's KD loss: ``KL(softmax(t/T) || softmax(s/T)) * T**2``, averaged over the batch."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def kl_per_sample(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``KL(softmax(t/T) || softmax(s/T))`` of each sample, shape (N,)."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(1)


def adversarial_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0, only_agreeing: bool = True
) -> torch.Tensor:
    """Adversarial term for the generator: minus the student-teacher KL (always <= 0).

    With ``only_agreeing`` (CMI/DENSE), only samples on which student and teacher predict the same
    class count: minimising it drives the generator towards samples the student gets right but not
    yet with the teacher's confidence, and leaves alone samples where they already disagree (which
    keeps the generator from drifting off the teacher's data manifold). Without it, every sample
    counts (FedFTG's model-discrepancy term).
    """
    kl = kl_per_sample(student_logits, teacher_logits, temperature)
    if only_agreeing:
        kl = kl * (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
    return -kl.mean()


def transferability_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """DFRD's transferability term for the generator: minus the teacher-student KL on the samples the
    student classifies as the label they were generated for (``-mean(1[argmax s = y] * KL(t || s))``).

    Minimising it moves samples the global model still gets right towards its decision boundary,
    where the ensemble disagrees with it most; samples it already gets wrong are left alone, so the
    generator does not push them further off the label it was asked for.
    """
    kl = kl_per_sample(student_logits, teacher_logits, temperature)
    return -(kl * (student_logits.argmax(1) == labels).float()).mean()


def js_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Jensen-Shannon divergence of ``softmax(p/T)`` and ``softmax(q/T)``, averaged over the batch.

    ``JS = (KL(P || M) + KL(Q || M)) / 2`` with ``M = (P + Q) / 2``: symmetric, in ``[0, log 2]``.
    Adaptive DeepInversion's competition term is ``1 - JS(teacher, student)`` (Yin et al., 2020),
    the paper's form. The authors' code differs: its ``KLDivLoss`` calls compute ``KL(M || P) +
    KL(M || Q)`` (the reverse direction), and it clamps ``1 - JS`` to ``[0, 1]``, which zeroes the
    gradient past 1. Computed here in log space, without clamping.
    """
    log_p = F.log_softmax(p_logits.float() / temperature, dim=1)
    log_q = F.log_softmax(q_logits.float() / temperature, dim=1)
    log_m = torch.logaddexp(log_p, log_q) - 0.6931471805599453  # log((P + Q) / 2)
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(1)
    return (0.5 * (kl_pm + kl_qm)).mean()


def soft_target_kl(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``KL(target || softmax(s/T)) * T**2`` for a given target distribution (e.g. a mixup label),
    averaged over the batch; zero when the student's tempered softmax equals the target."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_p_s, target_probs.float(), reduction="batchmean") * (temperature * temperature)


STUDENT_LOSSES = {
    "l1": lambda s, t, temperature: l1_discrepancy(s, t),
    "kl": kl_divergence,
}
"""Student losses by config name: ``fn(student_logits, teacher_logits, temperature)``."""
