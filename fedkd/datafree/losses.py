"""Loss terms of data-free distillation as small pure functions of tensors.

Every function casts its inputs to float32 first: under bf16 autocast on CUDA the logits arrive in
bf16, and softmaxes, norms and log-sums are where its 8-bit mantissa hurts.
Sign convention: each function returns the quantity its name says (a distance, a divergence, a
loss to *minimise*); the caller negates it where a player maximises it (DFAD's generator).
"""

from __future__ import annotations

from collections.abc import Sequence

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


def bn_statistics_loss(
    means: Sequence[torch.Tensor],
    variances: Sequence[torch.Tensor],
    running_means: Sequence[torch.Tensor],
    running_vars: Sequence[torch.Tensor],
    layer_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """DeepInversion's feature-statistics loss, summed over BatchNorm layers.

    For each layer, ``||mu(x) - running_mean||_2 + ||var(x) - running_var||_2`` where ``mu`` and
    ``var`` are the batch statistics of the layer's input (per channel), times the layer's weight
    (``layer_weights``; default 1 each).
    """
    total = torch.zeros((), device=means[0].device) if means else torch.zeros(())
    weights = [1.0] * len(means) if layer_weights is None else layer_weights
    for mu, var, r_mu, r_var, w in zip(means, variances, running_means, running_vars, weights, strict=True):
        layer = torch.linalg.vector_norm(mu.float() - r_mu.float()) + torch.linalg.vector_norm(var.float() - r_var.float())
        total = total + (layer if w == 1.0 else w * layer)
    return total


def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Instance discrimination (InfoNCE): query ``i`` must pick key ``i`` among all keys.

    ``queries`` (N, d) and ``keys`` (N + M, d) are L2-normalised here; keys ``N..`` are extra
    negatives (CMI's memory bank of earlier samples).
    """
    q = F.normalize(queries.float(), dim=1)
    k = F.normalize(keys.float(), dim=1)
    logits = q @ k.t() / temperature
    return F.cross_entropy(logits, torch.arange(len(q), device=q.device))


def _mean_pairwise(a: torch.Tensor, p: int) -> torch.Tensor:
    a = a.float().flatten(1)
    d = torch.cdist(a, a, p=p)
    return (d.pow(2) if p == 2 else d) / a.shape[1]


def diversity_loss(noise: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """DENSE/FedFTG mode-seeking term: ``exp(-mean_ij ||z_i - z_j||^2 * |x_i - x_j|_1)``.

    Distances are per-element means (squared L2 for the noise, L1 for the samples). Small when
    different codes give different samples; in (0, 1], minimised by the generator.
    """
    return torch.exp(-(_mean_pairwise(noise, 2) * _mean_pairwise(samples, 1)).mean())


def information_entropy(logits: torch.Tensor) -> torch.Tensor:
    """DAFL's class-balance term: the negative entropy of the batch's mean prediction.

    Minimising it spreads a batch evenly over the classes (its minimum is ``-log(num_classes)``).
    """
    p = F.softmax(logits.float(), dim=1).mean(0)
    return (p * torch.log(p.clamp_min(1e-12))).sum()


def weighted_member_cross_entropy(
    member_logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor
) -> torch.Tensor:
    """FedGen's generator loss: ``mean_i sum_k w[k, y_i] * CE(logits_k[i], y_i)``.

    ``member_logits`` (K, N, C): each of K models' logits for the same N inputs; ``class_weights``
    (K, C): model ``k``'s share of class ``c`` (columns sum to 1), so each label is judged by the
    models that saw it, in proportion to how much of it they saw.
    """
    k, n, c = member_logits.shape
    ce = F.cross_entropy(member_logits.float().reshape(k * n, c), targets.repeat(k), reduction="none").view(k, n)
    weights = class_weights.to(ce.device, ce.dtype)[:, targets]  # (K, N)
    return (weights * ce).sum(0).mean()


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (teacher) logits against the labels a synthesizer asked for."""
    return F.cross_entropy(logits.float(), targets)


def hard_sample_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, power: float) -> torch.Tensor:
    """Co-Boosting's hard-sample cross-entropy: ``mean_i (1 - p_i)^power * CE_i``, with ``p_i`` the
    (detached) probability the logits give the target. Samples the teacher already finds easy count
    less, so a generator trained on it moves towards samples near the decision boundaries;
    ``power = 0`` is the plain cross-entropy."""
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    if power == 0:
        return ce.mean()
    p = torch.exp(-ce.detach())  # the target's probability
    return ((1.0 - p).pow(power) * ce).mean()


STUDENT_LOSSES = {
    "l1": lambda s, t, temperature: l1_discrepancy(s, t),
    "kl": kl_divergence,
}
"""Student losses by config name: ``fn(student_logits, teacher_logits, temperature)``."""


# ----------------------------------------------------------------------------------- RDSKD
def argmax_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Sample authenticity (DAFL's one-hot loss, RDSKD's authenticity term): the cross-entropy of
    the logits to their own argmax. Small when the teacher is certain about every sample."""
    logits = logits.float()
    return F.cross_entropy(logits, logits.detach().argmax(1))


def mode_seeking_ratio(
    x_a: torch.Tensor, x_b: torch.Tensor, logits_a: torch.Tensor, logits_b: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """RDSKD's inter-sample diversity term over pairs ``(x_a[i], x_b[i])`` from different codes:
    ``||softmax(logits_a) - softmax(logits_b)||_F / (||x_a - x_b||_F + eps)``.

    Frobenius norms over the whole half-batches, as in the authors' code (which writes it as the
    inverse of the sample-to-output distance ratio). Minimised: pairs must differ as inputs even
    where the teacher sees them alike, which keeps a generator from collapsing onto a few samples.
    """
    d_out = torch.linalg.vector_norm(F.softmax(logits_a.float(), 1) - F.softmax(logits_b.float(), 1))
    d_in = torch.linalg.vector_norm(x_a.float() - x_b.float())
    return d_out / (d_in + eps)


def exp_increment_penalty(loss: torch.Tensor, reference: torch.Tensor | float) -> torch.Tensor:
    """RDSKD's exponential penalty on a loss increment: ``exp(loss - reference)``, the reference
    detached. It equals 1 at the reference and grows exponentially as the loss rises above it; its
    gradient is ``exp(loss - reference) * d loss``, so a term that climbed back up gets a larger
    weight -- the method's replacement for hand-tuned loss weights."""
    ref = reference.detach().float() if isinstance(reference, torch.Tensor) else float(reference)
    return torch.exp(loss.float() - ref)


def activation_loss(features: torch.Tensor) -> torch.Tensor:
    """DAFL's activation term: minus the mean absolute value of the teacher's penultimate features.

    The paper writes ``-1/n sum_i ||f_i||_1``; the authors' code (whose weight 0.1 we use) takes the
    mean over all elements, i.e. also divides by the feature size -- the form implemented here, so
    the weight does not depend on the width of the teacher's last hidden layer. Lower for larger
    activations (the generator is pushed towards inputs that excite the teacher's features).
    """
    return -features.float().abs().mean()


def attention_map(activations: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis' spatial attention map: the channel mean of squared activations of a
    (N, C, H, W) tensor, flattened to (N, H*W) and L2-normalised per sample (so channel counts
    may differ between student and teacher and a positive rescaling does not change it)."""
    a = activations.float().pow(2).mean(1).flatten(1)
    return F.normalize(a, dim=1)


def attention_transfer(student_activations: Sequence[torch.Tensor], teacher_activations: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention-transfer loss summed over matched layer pairs (same spatial size per pair).

    Each pair contributes ``mean((attention_map(s) - attention_map(t))**2)`` over samples and
    positions: the form of Zagoruyko & Komodakis' and ZSKT's released code, for which ZSKT's
    ``beta = 250`` was tuned (the papers write the unsquared per-sample L2 norm instead).
    """
    total = torch.zeros((), device=student_activations[0].device) if student_activations else torch.zeros(())
    for s, t in zip(student_activations, teacher_activations, strict=True):
        total = total + (attention_map(s) - attention_map(t)).pow(2).mean()
    return total


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """DeepInversion's total-variation image prior (the authors' ``loss_var_l2``).

    The sum of the L2 norms of the differences between each pixel and its right, lower and two
    diagonal neighbours, over the whole batch (not averaged, as in the authors' code, so their
    weights carry over). Zero for constant images; grows with high-frequency noise.
    """
    x = x.float()
    right = x[..., :, :-1] - x[..., :, 1:]
    down = x[..., :-1, :] - x[..., 1:, :]
    diag = x[..., 1:, :-1] - x[..., :-1, 1:]
    anti = x[..., :-1, :-1] - x[..., 1:, 1:]
    return sum(torch.linalg.vector_norm(d) for d in (right, down, diag, anti))


def l2_prior(x: torch.Tensor) -> torch.Tensor:
    """DeepInversion's L2 image prior: each sample's L2 norm (in normalised input space), averaged
    over the batch (the authors' ImageNet form; it keeps pixels near the data's mean colour)."""
    return torch.linalg.vector_norm(x.float().flatten(1), dim=1).mean()


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


def vae_reconstruction(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PRE-DFKD's reconstruction term in input space: mean absolute error (L1, as the authors'
    code; robust to the heavy-tailed pixels of standardised synthetic images)."""
    return F.l1_loss(reconstruction.float(), target.float())


def teacher_agreement(reconstruction_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """PRE-DFKD's synthetic-data term: L1 between the teacher's logits on a reconstruction and on
    the sample it reconstructs, so the VAE keeps what the teacher responds to, not only pixels."""
    return F.l1_loss(reconstruction_logits.float(), target_logits.float())


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` summed over the latent dimensions, averaged over the batch."""
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()


# ----------------------------------------------- activation regularisation, virtual interpolation
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


def decision_boundary_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
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


def soft_target_kl(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``KL(target || softmax(s/T)) * T**2`` for a given target distribution (e.g. a mixup label),
    averaged over the batch; zero when the student's tempered softmax equals the target."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_p_s, target_probs.float(), reduction="batchmean") * (temperature * temperature)
