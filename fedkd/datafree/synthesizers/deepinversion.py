"""DeepInversion: "Dreaming to Distill" (Yin et al., CVPR 2020).

No generator: each synthesis round (:meth:`DeepInversionSynthesizer.invert`) optimises a batch
of *pixels* directly, starting from Gaussian noise, for ``synthesis_steps`` Adam steps on

- the BatchNorm-statistics loss over the teacher's BN layers (:class:`~fedkd.datafree.bn_hooks.BNStatHooks`),
- cross-entropy of the teacher's logits to target labels (:meth:`Synthesizer.target_labels`, so
  the federated label prior decides which classes are asked for) -- or, with ``dirichlet_betas``,
  the KL from Zero-Shot KD's soft targets (:mod:`fedkd.datafree.soft_targets`): per sample a
  Dirichlet draw around its target class, shaped by the teacher's class similarity,
- the image priors: total variation (smooth images) and the L2 norm (pixels near the mean colour),
- optionally Adaptive DeepInversion's competition term ``1 - JS(teacher, student)`` (``adi > 0``):
  it pushes the batch to where student and teacher disagree.

Each step sees a randomly *jittered* batch: the whole batch is rolled by one random offset of up to
``jitter`` pixels (``torch.roll``, the authors' form: no pixel is lost, unlike a zero-filled shift)
and, with ``hflip``, mirrored with probability 1/2. After each step the pixels are clipped to the
valid range ``[0, 1]`` in pixel space, as the authors' code does. Two options follow the authors'
ImageNet code (their "setting 0"): ``lr_schedule="cosine"`` (the pixels' rate warms up over the
first 5 % of a phase's steps, then decays to 0 along a cosine) and ``coarse_fraction > 0``
(multi-resolution: that fraction of the steps sees the batch at half resolution -- the authors
optimise 2,000 of 3,000 steps so -- then a fresh optimiser refines it at full resolution; their
ResNet takes the half-size image, a fixed-size teacher here sees it 2x2-average-pooled and scaled
back up, so only coarse structure gets gradient). The lowest-loss batch of the round (of its last
phase) joins a bounded pool (:class:`~fedkd.datafree.buffers.RingBuffer`); the student learns from
random pool batches.

Defaults for 28x28 grey images (``conf/synthesizer/deepinversion.yaml``): the paper optimises CIFAR
batches for 2,000 steps at lr 0.05-0.1 (ImageNet: 0.25 at 224 px with a cosine schedule). A 28x28
grey image has about a quarter of a CIFAR image's values and far fewer steps are affordable, so
the upper CIFAR value, lr 0.1, is used (lower rates converge slower, higher ones no faster), with
``synthesis_steps=100``, where the loss levels off at that rate; the measurements are in
docs/design_notes.md#deepinversion-synthesis-steps-and-learning-rate.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from fedkd.data.specs import DatasetSpec
from fedkd.datafree.bn_hooks import BNStatHooks
from fedkd.datafree.losses import cross_entropy, js_divergence, l2_prior, soft_target_kl, total_variation
from fedkd.datafree.recipe import StudentNode
from fedkd.datafree.soft_targets import check_betas as check_dirichlet_betas
from fedkd.datafree.soft_targets import dirichlet_targets, teacher_similarity
from fedkd.datafree.synthesizers.checks import check_betas
from fedkd.datafree.synthesizers.pool import Inversion, PoolSynthesizer, Step
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import (
    AdamBetas,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    ShareBelowOne,
    Supplied,
)


def pixel_bounds(spec: DatasetSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised values of pixel 0 and pixel 1 per channel, shape (1, C, 1, 1)."""
    mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
    return (0 - mean) / std, (1 - mean) / std


class DeepInversionSynthesizer(PoolSynthesizer):
    """DeepInversion (and Adaptive DeepInversion with ``adi > 0``) into an in-memory sample pool.

    Each round starts from fresh noise and a fresh optimiser, so the state is the base's: the
    pool and the round count.

    Args:
        spec, device, student: dataset spec, device and the student's recipe (:class:`~fedkd.datafree.Synthesizer`).
        batch_size: samples inverted per round (the round's best batch joins the pool).
        pool_size, augment_pool: the pool's capacity and its augmentation (:class:`PoolSynthesizer`).
        synthesis_steps: Adam steps per round (paper, CIFAR: 2,000; the default is where the loss
            levels off at lr 0.1, see docs/design_notes.md#deepinversion-synthesis-steps-and-learning-rate).
        lr, betas: Adam settings of the pixels (paper code: 0.05-0.1 on CIFAR; betas (0.5, 0.9)
            as in the authors' ImageNet settings 0/1).
        bn: weight of the BN-statistics loss (paper, CIFAR: 10).
        oh: weight of the cross-entropy to the target labels (paper: 1).
        tv: weight of the total-variation prior (paper code, CIFAR: 2.5e-5; 1e-3 gives smoother images).
        l2: weight of the L2 prior (paper code, CIFAR: 0).
        adi: weight of ADI's competition term ``1 - JS`` (0 = plain DeepInversion, the authors'
            default; FastDFKD's DeepInversion baseline runs it at 1).
        adi_temperature: softmax temperature of the JS divergence (authors' code: 3).
        jitter: largest roll of the batch in pixels per step (authors: 2 on 32x32 CIFAR).
        hflip: mirror the batch with probability 1/2 per step (off for digits: not mirror-symmetric).
        clip: clip pixels to the valid range after every step.
        crop_pad: shift of the pool samples in pixels (default: image_size // 8).
        first_bn_weight: weight of the teacher's first BN layer in the statistics loss (authors'
            ImageNet code: 10; 1 weighs every layer alike).
        dirichlet_betas: Zero-Shot KD's Dirichlet scales (paper: ``[1.0, 0.1]``, half the batch
            each); empty (the default) asks for one-hot target labels as DeepInversion does.
        lr_schedule: ``constant`` or ``cosine`` (5 % warm-up, then cosine to 0, per phase; the
            authors' code).
        coarse_fraction: fraction of the steps at half resolution before the full-resolution
            phase (authors' setting 0: 2/3; 0 = one full-resolution phase).
    """

    method = "DeepInversion"

    @checked("synthesizer")
    def __init__(
        self,
        spec: Supplied[DatasetSpec],
        device: Supplied[torch.device | str] = "cpu",
        batch_size: PositiveInt = 256,
        synthesis_steps: PositiveInt = 100,
        lr: PositiveFloat = 0.1,
        betas: AdamBetas = (0.5, 0.9),
        bn: NonNegativeFloat = 10.0,
        oh: NonNegativeFloat = 1.0,
        tv: NonNegativeFloat = 1e-4,
        l2: NonNegativeFloat = 0.0,
        adi: NonNegativeFloat = 0.0,
        adi_temperature: PositiveFloat = 3.0,
        jitter: NonNegativeInt = 2,
        hflip: bool = False,
        clip: bool = True,
        pool_size: PositiveInt = 20000,
        augment_pool: bool = True,
        crop_pad: NonNegativeInt | None = None,
        dirichlet_betas: Annotated[tuple[float, ...], Range(0, low_open=True)] = (),
        first_bn_weight: NonNegativeFloat = 1.0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        coarse_fraction: ShareBelowOne = 0.0,
        *,
        student: StudentNode = None,
    ) -> None:
        self.first_bn_weight = float(first_bn_weight)
        self.lr_schedule, self.coarse_fraction = lr_schedule, float(coarse_fraction)
        super().__init__(spec, device, batch_size, synthesis_steps, pool_size, crop_pad, hflip, augment_pool,
                         student=student)
        self.lr, self.betas = lr, check_betas(betas)
        self.weights = {"bn": bn, "oh": oh, "tv": tv, "l2": l2, "adi": adi}
        self.adi_temperature = adi_temperature
        self.jitter, self.clip = int(jitter), clip
        self.dirichlet_betas = check_dirichlet_betas(dirichlet_betas)
        self.generator = None  # pixels are optimised directly
        self._low, self._high = pixel_bounds(spec, self.device)

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Roll the whole batch by one random offset and maybe mirror it (the authors' jitter)."""
        if self.jitter > 0:
            dx, dy = torch.randint(-self.jitter, self.jitter + 1, (2,)).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        if self.hflip and torch.rand(()).item() < 0.5:
            x = torch.flip(x, dims=(3,))
        return x

    def _phases(self) -> list[tuple[int, bool]]:
        """``(steps, coarse)`` per phase: the half-resolution phase (if any), then full resolution."""
        coarse = int(round(self.coarse_fraction * self.synthesis_steps))
        return [(n, c) for n, c in ((coarse, True), (self.synthesis_steps - coarse, False)) if n > 0]

    def _optimizer(self, x: torch.Tensor, steps: int) -> tuple[torch.optim.Optimizer, LambdaLR | None]:
        """A fresh Adam for one phase, with the authors' warm-up + cosine rate when asked for."""
        optimizer = torch.optim.Adam([x], lr=self.lr, betas=self.betas)
        if self.lr_schedule == "constant":
            return optimizer, None
        warmup = max(1, round(0.05 * steps))

        def factor(i: int) -> float:
            if i < warmup:
                return (i + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (i - warmup) / max(1, steps - warmup)))

        return optimizer, LambdaLR(optimizer, factor)

    def stat_hooks(self, teacher: nn.Module) -> BNStatHooks:
        """BN hooks that weigh the teacher's first BN layer ``first_bn_weight`` times."""
        return BNStatHooks(teacher, first_layer_weight=self.first_bn_weight)

    def invert(self, teacher: nn.Module, student: nn.Module, hooks: BNStatHooks) -> Inversion:
        """One round: invert a fresh noise batch for ``synthesis_steps`` steps, keep its best state
        (of the last phase)."""
        x = torch.randn(self.batch_size, *self.spec.shape, device=self.device)
        if self.clip:
            x = self._clip(x)
        x.requires_grad_()
        targets = self.target_labels(self.batch_size)
        soft = None
        if self.dirichlet_betas:
            soft = dirichlet_targets(targets, teacher_similarity(teacher), self.dirichlet_betas)
        for steps, coarse in self._phases():  # the last phase's best batch is the round's
            best_loss, best_x, last = self._invert(x, targets, soft, teacher, student, hooks, steps, coarse)
        return Inversion(best_loss, best_x, targets, last)

    def _clip(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with every pixel clipped to the valid range."""
        return torch.maximum(torch.minimum(x, self._high), self._low)

    def _invert(self, x: torch.Tensor, targets: torch.Tensor, soft: torch.Tensor | None, teacher: nn.Module,
               student: nn.Module, hooks: BNStatHooks, steps: int, coarse: bool) -> tuple[float, torch.Tensor, dict]:
        """One phase of :meth:`invert`: ``steps`` updates of the pixels ``x`` (in place); its lowest loss, the pixels
        that had it, and the last step's loss terms."""
        w = self.weights
        optimizer, schedule = self._optimizer(x, steps)

        def step() -> Step:
            view = self._jitter(x)
            if coarse:
                view = F.interpolate(F.avg_pool2d(view, 2), size=view.shape[-2:], mode="bilinear")
            t_logits = teacher(view, targets)
            terms = {
                "bn": hooks.loss(),
                "oh": cross_entropy(t_logits, targets) if soft is None else soft_target_kl(t_logits, soft),
                "tv": total_variation(view),
                "l2": l2_prior(view),
            }
            if w["adi"] > 0:
                terms["adi"] = 1.0 - js_divergence(t_logits, student(view), self.adi_temperature)
            return terms, (x,)

        def after_step() -> None:
            if schedule is not None:
                schedule.step()
            if self.clip:
                with torch.no_grad():
                    x.copy_(self._clip(x))

        best_loss, best, last = self.descend(steps, step, [optimizer], after_step, start=(x.detach().clone(),))
        return best_loss, best[0], last
