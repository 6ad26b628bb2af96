"""How much each member of an ensemble teacher counts, per class: ``(num_models, num_classes)`` weights
whose columns sum to 1 (:class:`fedkd.datafree.EnsembleTeacher`). FedFTG weights each client by its
share of a class's samples (:func:`class_weights_from_counts`); the plain mean is
:func:`uniform_class_weights`; FedDF-style extra members (the server's averages) join with a fixed
share of every class (:func:`with_extra_members`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fedkd.errors import ConfigError


def with_extra_members(class_weights: torch.Tensor | None, num_models: int, extra: int, share: float,
                       num_classes: int) -> torch.Tensor:
    """Class weights for ``num_models`` members followed by ``extra`` more (the server's averaged
    models, FedDF-style): the extra members get ``share`` of every class, split evenly; the first
    members keep their relative weights (uniform when ``class_weights`` is None) in the rest."""
    if not 0.0 <= share <= 1.0 or extra < 1:
        raise ConfigError(
            f"the extra members' share must lie in [0, 1] with at least one extra member (got {share}, {extra})"
        )
    if class_weights is None:
        base = uniform_class_weights(num_models, num_classes)
    else:
        base = torch.as_tensor(class_weights).float()
    return torch.cat([(1.0 - share) * base, torch.full((extra, base.shape[1]), share / extra)])


def uniform_class_weights(num_models: int, num_classes: int) -> torch.Tensor:
    """Equal weights ``1/num_models`` for every model and class, shape (num_models, num_classes)."""
    return torch.full((num_models, num_classes), 1.0 / num_models)


def class_weights_from_counts(label_counts: np.ndarray | torch.Tensor | Sequence[Sequence[int]]) -> torch.Tensor:
    """Per-class model weights from label counts (num_models, num_classes): each model's share of
    the samples of each class. A class no model has seen gets uniform weights. Columns sum to 1."""
    counts = torch.as_tensor(np.asarray(label_counts), dtype=torch.float32)
    if counts.dim() != 2 or (counts < 0).any():
        raise ConfigError(
            "label counts must be a (num_models, num_classes) array of non-negative numbers "
            f"(got shape {tuple(counts.shape)})"
        )
    totals = counts.sum(0, keepdim=True)
    uniform = torch.full_like(counts, 1.0 / counts.shape[0])
    return torch.where(totals > 0, counts / totals.clamp_min(1e-12), uniform)
