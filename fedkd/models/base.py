"""What every classifier in the registry offers.

A :class:`Classifier` is a feature extractor followed by a linear head. Exposing the split lets
contrastive heads read penultimate features and FedGen-style generators work in feature space;
exposing BatchNorm layers lets DeepInversion's statistics loss hook them.
"""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """Base for registry classifiers: ``forward(x) == head(features(x))``.

    Subclasses set ``self.head`` (an ``nn.Linear``) and implement :meth:`features`.
    """

    head: nn.Linear

    @property
    def feature_dim(self) -> int:
        """Size of the penultimate feature vector (the head's input)."""
        return self.head.in_features

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, shape (N, feature_dim)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, return_features: bool = False):
        feats = self.features(x)
        logits = self.head(feats)
        return (logits, feats) if return_features else logits


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers in definition order (empty when it has none)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flat_size(module: nn.Module, shape: tuple[int, ...]) -> int:
    """Number of features ``module`` outputs for one input of ``shape`` (computed once at build)."""
    with torch.no_grad():
        was_training = module.training
        module.eval()
        out = module(torch.zeros(1, *shape))
        module.train(was_training)
    return out.flatten(1).shape[1]
