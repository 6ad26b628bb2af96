"""Loss terms of data-free distillation as small pure functions of tensors.

Every function casts its inputs to float32 first: under bf16 autocast on CUDA the logits arrive in
bf16, and softmaxes, norms and log-sums are where its 8-bit mantissa hurts.
Sign convention: each function returns the quantity its name says (a distance, a divergence, a
loss to *minimise*); the caller negates it where a player maximises it (DFAD's generator).

- :mod:`.divergences`: between two models' outputs (the student's losses, the adversary's);
- :mod:`.synthesis`: what synthesizers minimise over their samples;
- :mod:`.student_terms`: the student-side terms beyond logit matching;
- :mod:`.replay`: pseudo replay's VAE objective.
"""

from fedkd.datafree.losses.divergences import (
    STUDENT_LOSSES,
    adversarial_kl,
    js_divergence,
    kl_divergence,
    kl_per_sample,
    l1_discrepancy,
    soft_target_kl,
    transferability_kl,
)
from fedkd.datafree.losses.replay import gaussian_kl, teacher_agreement, vae_reconstruction
from fedkd.datafree.losses.student_terms import (
    activation_boundary_loss,
    attention_map,
    attention_transfer,
    convex_mix,
    decision_boundary_loss,
)
from fedkd.datafree.losses.synthesis import (
    activation_loss,
    argmax_cross_entropy,
    bn_statistics_loss,
    cross_entropy,
    diversity_loss,
    exp_increment_penalty,
    hard_sample_cross_entropy,
    info_nce,
    information_entropy,
    l2_prior,
    mode_seeking_ratio,
    total_variation,
    weighted_member_cross_entropy,
)

__all__ = [
    "STUDENT_LOSSES", "activation_boundary_loss", "activation_loss", "adversarial_kl", "argmax_cross_entropy",
    "attention_map", "attention_transfer", "bn_statistics_loss", "convex_mix", "cross_entropy",
    "decision_boundary_loss", "diversity_loss", "exp_increment_penalty", "gaussian_kl", "hard_sample_cross_entropy",
    "info_nce", "information_entropy", "js_divergence", "kl_divergence", "kl_per_sample", "l1_discrepancy",
    "l2_prior", "mode_seeking_ratio", "soft_target_kl", "teacher_agreement", "total_variation", "transferability_kl",
    "vae_reconstruction", "weighted_member_cross_entropy",
]
