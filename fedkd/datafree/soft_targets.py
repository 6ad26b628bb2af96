"""Soft target distributions for inversion: Zero-Shot KD's Dirichlet "data impressions".

Nayak et al., "Zero-Shot Knowledge Distillation in Deep Networks" (ICML 2019) do not ask the
teacher for one-hot classes. They model the teacher's output space as a Dirichlet per class whose
concentration follows the teacher's *class similarity*: the cosine between the final layer's
weight vectors, min-max normalised per row to [0, 1] (the class itself gets 1). A target for class
``k`` is a draw ``y ~ Dir(beta * C[k])``; a small ``beta`` gives peaked, a large one spread targets,
and the paper mixes two scales (beta 1.0 and 0.1, half the impressions each). Samples inverted
towards such targets sit between similar classes -- where a student learns the teacher's
boundaries (on Fashion-MNIST: shirt, T-shirt, pullover and coat).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedkd.errors import ConfigError

MIN_CONCENTRATION = 1e-3
"""Floor of every concentration: a Dirichlet needs positive ones, and the least similar class of
each row is 0 after the min-max normalisation (the paper leaves this open)."""


def head_weight(model: nn.Module) -> torch.Tensor:
    """The final linear layer's weight, shape (num_classes, features), of a registry classifier."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise ConfigError(
            f"Dirichlet targets need the teacher's final linear layer as `.head` ({type(model).__name__} has none); "
            "use a registry model or set synthesizer.dirichlet_betas=[]"
        )
    return head.weight.detach().float()


def class_similarity(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """ZSKD's class-similarity matrix (C, C): cosine of the head's class vectors, min-max normalised
    per row to [0, 1]; averaged over the given heads (every member of an ensemble teacher)."""
    sims = []
    for w in weights:
        unit = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        cos = unit @ unit.T
        low, high = cos.min(dim=1, keepdim=True).values, cos.max(dim=1, keepdim=True).values
        sims.append((cos - low) / (high - low).clamp_min(1e-12))
    return torch.stack(sims).mean(0)


def teacher_similarity(teacher: nn.Module) -> torch.Tensor:
    """:func:`class_similarity` of a teacher (a :class:`~fedkd.datafree.teacher.Teacher` or a bare model)."""
    members = getattr(teacher, "members", None) or [teacher]
    return class_similarity([head_weight(m) for m in members])


def dirichlet_targets(labels: torch.Tensor, similarity: torch.Tensor, betas: Sequence[float]) -> torch.Tensor:
    """One target distribution per label, shape (N, C): ``Dir(beta_i * similarity[label_i])`` with
    ``beta_i = betas[i % len(betas)]`` (the paper's scales split the batch evenly)."""
    scale = torch.as_tensor([betas[i % len(betas)] for i in range(len(labels))], dtype=torch.float32)
    concentration = scale.to(similarity.device).unsqueeze(1) * similarity[labels]
    return torch.distributions.Dirichlet(concentration.clamp_min(MIN_CONCENTRATION)).sample()


def check_betas(betas: Sequence[float]) -> list[float]:
    """Dirichlet scales: each > 0 (an empty list switches soft targets off)."""
    values = [float(b) for b in betas]
    if any(b <= 0 for b in values):
        raise ConfigError(
            f"synthesizer.dirichlet_betas must hold positive numbers (got {values}); "
            "ZSKD uses [1.0,0.1], [] switches soft targets off"
        )
    return values
