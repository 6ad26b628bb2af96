"""What synthesizers minimise over their samples: the teacher's verdict on them, their feature
statistics, their diversity and image priors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


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
        layer = (torch.linalg.vector_norm(mu.float() - r_mu.float())
                 + torch.linalg.vector_norm(var.float() - r_var.float()))
        total = total + (layer if w == 1.0 else w * layer)
    return total


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


def argmax_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Sample authenticity (DAFL's one-hot loss, RDSKD's authenticity term): the cross-entropy of
    the logits to their own argmax. Small when the teacher is certain about every sample."""
    logits = logits.float()
    return F.cross_entropy(logits, logits.detach().argmax(1))


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


def information_entropy(logits: torch.Tensor) -> torch.Tensor:
    """DAFL's class-balance term: the negative entropy of the batch's mean prediction.

    Minimising it spreads a batch evenly over the classes (its minimum is ``-log(num_classes)``).
    """
    p = F.softmax(logits.float(), dim=1).mean(0)
    return (p * torch.log(p.clamp_min(1e-12))).sum()


def activation_loss(features: torch.Tensor) -> torch.Tensor:
    """DAFL's activation term: minus the mean absolute value of the teacher's penultimate features.

    The paper writes ``-1/n sum_i ||f_i||_1``; the authors' code (whose weight 0.1 we use) takes the
    mean over all elements, i.e. also divides by the feature size -- the form implemented here, so
    the weight does not depend on the width of the teacher's last hidden layer. Lower for larger
    activations (the generator is pushed towards inputs that excite the teacher's features).
    """
    return -features.float().abs().mean()


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
