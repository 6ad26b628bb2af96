"""The base of the pool methods: each round's best batch joins a bounded pool the student draws from.

CMI, DeepInversion, fast meta-synthesis and NAYER synthesise one batch per round and keep the lowest-loss
state of it in a :class:`~fedkd.datafree.buffers.RingBuffer` with the labels it was made for; the
student learns from random pool batches, shifted (and flipped) like training images.
:class:`PoolSynthesizer` holds the pool, the round count, that augmentation and their state, and
the few-step optimisation fast meta-synthesis and NAYER share (:meth:`PoolSynthesizer.descend`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from fedkd.data.augment import random_crop_flip
from fedkd.data.specs import DatasetSpec
from fedkd.datafree.bn_hooks import BNStatHooks
from fedkd.datafree.buffers import RingBuffer
from fedkd.datafree.losses import adversarial_kl, cross_entropy
from fedkd.datafree.synthesizers.base import Synthesizer
from fedkd.utils.device import autocast


class PoolSynthesizer(Synthesizer):
    """A synthesizer whose student samples come from a bounded pool of its best batches.

    Args:
        spec, device: dataset spec and device.
        pool_size: samples kept in the pool (oldest dropped first).
        crop_pad: shift of pool samples in pixels (default ``image_size // 8``).
        hflip: also mirror pool samples with probability 1/2.
        augment_pool: shift (and flip) pool samples when the student draws them.
    """

    #: The method's name in the empty-pool error.
    method = "pool"
    #: Loss weights by term name, set by the subclass (:meth:`descend` reads bn, oh and adv).
    weights: dict[str, float]

    def __init__(
        self,
        spec: DatasetSpec,
        device: torch.device | str,
        pool_size: int,
        crop_pad: int | None,
        hflip: bool,
        augment_pool: bool,
    ) -> None:
        super().__init__(spec, device)
        self.crop_pad = spec.image_size // 8 if crop_pad is None else int(crop_pad)
        self.hflip, self.augment_pool = hflip, augment_pool
        self.pool = RingBuffer(pool_size, self.device)
        self.rounds = 0

    def _view(self, x: torch.Tensor) -> torch.Tensor:
        """A randomly shifted (and flipped) copy of ``x``, per sample."""
        return random_crop_flip(x, self.crop_pad, self.hflip)

    def descend(
        self,
        steps: int,
        generate: Callable[[], torch.Tensor],
        params: list[torch.Tensor],
        optimizer: torch.optim.Optimizer,
        teacher: nn.Module,
        student: nn.Module,
        hooks: BNStatHooks,
        targets: torch.Tensor,
        adversarial: bool,
    ) -> tuple[float, torch.Tensor, dict[str, float]]:
        """``steps`` optimiser steps on ``bn * BN statistics + oh * CE(teacher, targets)`` (plus
        ``adv *`` the adversarial KL when ``adversarial``), the teacher seeing a shifted view of
        ``generate()``; only ``params`` learn. Returns the lowest loss, the batch it belongs to (the
        state before that step's update) and the last step's terms."""
        best_loss, best_x, last = float("inf"), None, {}
        for it in range(steps):
            with autocast(self.device):
                x = generate()
                view = self._view(x)
                t_logits = teacher(view, targets)
                terms = {"bn": hooks.loss(), "oh": cross_entropy(t_logits, targets)}
                if adversarial:
                    terms["adv"] = adversarial_kl(student(view), t_logits)
                loss = sum(self.weights[k] * v for k, v in terms.items())
            value = loss.item()
            if value < best_loss:
                best_loss, best_x = value, x.detach().clone()
            optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=params)  # the synthesizer's parameters learn, not the student
            optimizer.step()
            if it == steps - 1:
                last = {k: v.item() for k, v in terms.items()}
            self.samples_generated += len(targets)
        return best_loss, best_x, last

    def state_dict(self) -> dict[str, Any]:
        """The base state plus the pool and the round count."""
        return {**super().state_dict(), "pool": self.pool.state_dict(), "rounds": self.rounds}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.pool.load_state_dict(state["pool"])
        self.rounds = int(state["rounds"])

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A random batch of pooled samples, shifted (and flipped) like training images, and the
        labels they were synthesised for."""
        if len(self.pool) == 0:
            raise RuntimeError(f"the {self.method} pool is empty: call synthesize() first")
        x, y = self.pool.sample_labelled(n)
        return (self._view(x) if self.augment_pool else x), y
