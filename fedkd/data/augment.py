"""Differentiable batch augmentations on normalised image tensors (per-sample random parameters).

Supervised training (``augment.shift``/``augment.hflip`` of ``fedkd-train`` and of a teacher trained
by ``fedkd-distill``) and CMI's synthesis share them. CMI optimises its samples under these
transformations; a teacher trained without them is not invariant to them, which slows CMI's
cross-entropy (docs/centralized.md has the measurements).
CMI's contrastive loss compares two views of each synthetic sample: a *global* view (random crop
with padding, optional horizontal flip) and a *local* view (random resized crop of 25-100% of the
area, optional flip). Both are one ``affine_grid``/``grid_sample`` call, so gradients flow back to
the generator. Padding is zero, i.e. the dataset's mean colour in normalised space.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def _sample_affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _flips(n: int, hflip: bool, device: torch.device) -> torch.Tensor:
    if not hflip:
        return torch.ones(n, device=device)
    return torch.randint(0, 2, (n,), device=device).float() * 2 - 1


def random_crop_flip(x: torch.Tensor, pad: int, hflip: bool = True) -> torch.Tensor:
    """Shift each sample by a whole number of pixels in ``[-pad, pad]`` (zero fill) and flip it
    horizontally with probability 1/2 -- ``RandomCrop(padding=pad)`` + ``RandomHorizontalFlip``."""
    n, _, h, w = x.shape
    shifts = torch.randint(-pad, pad + 1, (n, 2), device=x.device).float()
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = _flips(n, hflip, x.device)
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = shifts[:, 0] * 2 / w
    theta[:, 1, 2] = shifts[:, 1] * 2 / h
    return _sample_affine(x, theta)


def random_resized_crop(
    x: torch.Tensor,
    scale: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: bool = True,
) -> torch.Tensor:
    """Crop a random box of ``scale`` times the area and aspect ``ratio`` from each sample and
    resize it to the full size (bilinear), flipping it horizontally with probability 1/2."""
    n = x.shape[0]
    dev = x.device
    area = torch.empty(n, device=dev).uniform_(*scale)
    aspect = torch.empty(n, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1])).exp()
    sx = (area * aspect).sqrt().clamp(max=1.0)  # box width / image width
    sy = (area / aspect).sqrt().clamp(max=1.0)
    tx = (torch.rand(n, device=dev) * 2 - 1) * (1 - sx)  # box centre, box inside the image
    ty = (torch.rand(n, device=dev) * 2 - 1) * (1 - sy)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = sx * _flips(n, hflip, dev)
    theta[:, 1, 1] = sy
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    return _sample_affine(x, theta)


def random_affine(
    x: torch.Tensor, degrees: float = 15.0, scale: tuple[float, float] = (0.9, 1.1), pad: int = 0, hflip: bool = True
) -> torch.Tensor:
    """Rotate each sample by up to ``degrees`` either way, zoom it by a factor in ``scale``, shift it
    by a whole number of pixels in ``[-pad, pad]`` (zero fill) and flip it horizontally with
    probability 1/2 -- ``RandomAffine`` + ``RandomHorizontalFlip`` in one resampling."""
    n, _, h, w = x.shape
    dev = x.device
    angle = (torch.rand(n, device=dev) * 2 - 1) * math.radians(degrees)
    zoom = torch.empty(n, device=dev).uniform_(*scale)
    flip = _flips(n, hflip, dev)
    shifts = torch.randint(-pad, pad + 1, (n, 2), device=dev).float()
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = torch.cos(angle) / zoom * flip
    theta[:, 0, 1] = -torch.sin(angle) / zoom
    theta[:, 1, 0] = torch.sin(angle) / zoom * flip
    theta[:, 1, 1] = torch.cos(angle) / zoom
    theta[:, 0, 2] = shifts[:, 0] * 2 / w
    theta[:, 1, 2] = shifts[:, 1] * 2 / h
    return _sample_affine(x, theta)


def batch_augmenter(shift: int = 0, hflip: bool = False) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``x -> random_crop_flip(x, shift, hflip)`` for training batches; ``None`` when both are off.
    (``fedkd.config.check_train`` refuses a negative shift with a one-line error.)"""
    if shift == 0 and not hflip:
        return None
    return lambda x: random_crop_flip(x, shift, hflip)
