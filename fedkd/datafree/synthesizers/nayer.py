"""NAYER: "Noisy Layer Data Generation for Efficient and Effective Data-free Knowledge
Distillation" (Tran et al., CVPR 2024).

Where DFAD/CMI/Fast feed a generator random *inputs*, NAYER moves the randomness into a *layer*:
the generator (:class:`~fedkd.datafree.generators.NoisyLayerGenerator`) maps each target label's
fixed embedding through a linear "noisy layer" that is re-drawn before every synthesis round, then
through a persistent upsampling body. Each round (:meth:`NoisyLayerSynthesizer.invert`):

1. re-draw the noisy layers; every ``generator_life`` rounds re-initialise the whole generator;
2. take ``synthesis_steps`` Adam steps (a fresh optimiser, as in the authors' code) on all the
   generator's parameters against DeepInversion/CMI's objective: the BN-statistics loss,
   cross-entropy to the target labels and, after ``warmup`` rounds, the adversarial term (minus
   the student-teacher KL where they agree), on a shifted (and flipped) view;
3. the round's lowest-loss batch joins a bounded pool the student draws from.

Because the label embedding carries the class and the body persists, a few steps per round give a
batch of the asked-for classes; the re-drawn layer gives a new batch every round.

Choices where the paper and code leave room: the label embeddings are fixed random vectors (no
text encoder offline; see the generator); one batch per :meth:`synthesize` call (the authors'
``g_loops`` batches per epoch are the distiller's iterations here, and their warm-up epochs with
more batches and no student are ``warmup`` rounds without the adversarial term, the student
training from the first round as in the other pool methods); target labels are ``arange(n) %
num_classes`` so that every noisy layer serves each class once (with a label prior -- the federated
server's -- they are drawn from it, and a chunk may repeat a class).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.datafree.bn_hooks import BNStatHooks
from fedkd.datafree.generators import NoisyLayerGenerator, reset_parameters
from fedkd.datafree.recipe import StudentNode
from fedkd.datafree.synthesizers.base import build_generator
from fedkd.datafree.synthesizers.checks import check_betas
from fedkd.datafree.synthesizers.pool import Inversion, PoolSynthesizer
from fedkd.errors import ConfigError
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import AdamBetas, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Supplied


class NoisyLayerSynthesizer(PoolSynthesizer):
    """NAYER: a persistent label-embedding generator whose noisy layer is re-drawn every round.

    Args:
        spec, device, student: dataset spec, device and the student's recipe (:class:`~fedkd.datafree.Synthesizer`).
        generator: registry config of the generator (default ``nayer_generator``; its
            ``batch_size`` is set to this synthesizer's).
        batch_size: samples synthesised per round (the round's best batch joins the pool).
        pool_size, augment_pool: the pool's capacity and its augmentation (:class:`PoolSynthesizer`).
        synthesis_steps: Adam steps per round (authors, CIFAR: 40 with 400 samples).
        lr, betas: the per-round Adam of the generator (authors: 4e-3, (0.5, 0.999)).
        bn, oh, adv: weights of the BN-statistics, cross-entropy and adversarial terms (authors,
            CIFAR: 10, 0.5, 1.33).
        warmup: rounds without the adversarial term (authors: 20 warm-up epochs).
        generator_life: re-initialise the whole generator every this many rounds (authors'
            ``g_life``: 10; 0: never).
        crop_pad: shift of the teacher's view and of pool samples (default image_size // 8).
        hflip: random horizontal flips in the view and in pool samples.
    """

    method = "NAYER"

    @checked("synthesizer")
    def __init__(
        self,
        spec: Supplied[DatasetSpec],
        device: Supplied[torch.device | str] = "cpu",
        generator: Mapping[str, Any] | None = None,
        batch_size: PositiveInt = 256,
        synthesis_steps: PositiveInt = 5,
        lr: PositiveFloat = 4e-3,
        betas: AdamBetas = (0.5, 0.999),
        bn: NonNegativeFloat = 10.0,
        oh: NonNegativeFloat = 0.5,
        adv: NonNegativeFloat = 1.33,
        warmup: NonNegativeInt = 0,
        generator_life: NonNegativeInt = 10,
        crop_pad: NonNegativeInt | None = None,
        hflip: bool = False,
        pool_size: PositiveInt = 20000,
        augment_pool: bool = True,
        *,
        student: StudentNode = None,
    ) -> None:
        super().__init__(spec, device, batch_size, synthesis_steps, pool_size, crop_pad, hflip, augment_pool,
                         student=student)
        config = {**dict(generator or {"name": "nayer_generator"}), "batch_size": int(batch_size)}
        if config.get("name") != "nayer_generator":
            raise ConfigError(
                f"NAYER needs the noisy-layer generator, not '{config.get('name')}'; "
                "set synthesizer.generator.name=nayer_generator"
            )
        self.generator: NoisyLayerGenerator = build_generator(config, spec).to(self.device).train()
        self.lr, self.betas = lr, check_betas(betas)
        self.weights = {"bn": bn, "oh": oh, "adv": adv}
        self.warmup, self.generator_life = int(warmup), int(generator_life)

    def round_labels(self) -> torch.Tensor:
        """The round's target labels: each chunk of ``num_classes`` samples holds every class once,
        or labels drawn from the label prior when one is set."""
        if self.label_prior is not None:
            return self.target_labels(self.batch_size)
        return torch.arange(self.batch_size, device=self.device) % self.spec.num_classes

    def invert(self, teacher: nn.Module, student: nn.Module, hooks: BNStatHooks) -> Inversion:
        """One round: re-draw the noisy layer, a few generator steps, the best batch."""
        if self.generator_life and self.rounds % self.generator_life == 0 and self.rounds > 0:
            reset_parameters(self.generator)  # the label embedding is a buffer: it stays
        self.generator.reset_noise()
        self.generator.train()
        params = [p for p in self.generator.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.lr, betas=self.betas)
        targets = self.round_labels()
        use_adv = self.weights["adv"] > 0 and self.rounds >= self.warmup
        step = self.inversion_objective(lambda: self.generator(targets), teacher, student, hooks, targets, use_adv)
        loss, best, last = self.descend(self.synthesis_steps, step, [optimizer])
        return Inversion(loss, best[0], targets, last)
