"""Sample grids of generated images, ordered and labelled by the class each image was generated for."""

from __future__ import annotations

import torch

from fedkd.data.specs import DatasetSpec


def by_class(images: torch.Tensor, labels: torch.Tensor | None,
             spec: DatasetSpec) -> tuple[torch.Tensor, list[str] | None]:
    """``images`` sorted by their ``labels`` (a conditional generator's classes: one class after
    another along the grid's rows) and each one's class name (:meth:`DatasetSpec.class_name`: the
    index when the dataset names none); unchanged, with no names, without one integer label per image."""
    if labels is None or labels.dim() != 1 or labels.numel() != images.shape[0] or labels.is_floating_point():
        return images, None
    labels = labels.detach().cpu()
    order = torch.argsort(labels, stable=True)
    return images[order.to(images.device)], [spec.class_name(int(k)) for k in labels[order]]
