"""Fast meta-synthesis: "Up to 100x Faster Data-free Knowledge Distillation" (Fang et al., AAAI 2022).

CMI and DeepInversion synthesise every batch from scratch (hundreds to thousands of steps). FastDFKD
keeps a *meta-initialisation* of the synthesizer -- a generator and a set of latent codes -- that
holds the features all batches share, so each round needs only a few steps:

1. copy the meta-initialisation (generator ``theta``, latent codes ``z``) into a fast copy;
2. take ``synthesis_steps`` (paper: 2, 5 or 10 on CIFAR) Adam steps on the fast copy with the
   DeepInversion/CMI objective: BN statistics *with momentum*, cross-entropy to target labels and
   the adversarial term (minus the student-teacher KL where they agree), on a shifted view;
3. Reptile meta-update: ``theta += meta_lr * (theta_fast - theta)`` (and the same for ``z``);
4. the round's lowest-loss batch joins a bounded pool the student draws from.

BN statistics with momentum (the authors' ``DeepInversionHook(bn_mmt)``): with only a few steps
per round a single batch cannot match the teacher's running statistics, so the loss compares the
running statistics with a *blend* ``(1 - m) * stats(batch) + m * memory`` of the current batch's
statistics and a moving average of earlier rounds' statistics. After each round the memory is
updated with the last step's batch statistics: ``memory = m * memory + (1 - m) * stats`` (on the
first round it starts as those statistics and the loss is the plain one). Together, the pool's
recent batches match the teacher's statistics even if no single batch does.

Choices where the paper and code leave room:

- Meta-update: the plain first-order Reptile interpolation above (the paper's Reptile). The
  authors' scripts run ``--is_maml 1`` instead (first-order MAML gradients through an Adam meta
  optimiser); the interpolation needs no optimiser state and makes ``meta_lr`` a fraction of the
  inner displacement.
- Latent codes: meta-learned like the generator (the authors' ImageNet synthesizer; their CIFAR
  one draws fresh codes each round: ``meta_latent=false``). Target labels are drawn afresh each
  round, so the codes learn class-independent starting points.
- The authors' ``reset_l0`` (re-initialising the generator's first layer at round 140) is left out.
- ``warmup``: rounds without the adversarial term (the authors' 20 warm-up epochs also hold the
  student back; here the distiller trains it from the first round, so the default is 0).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Annotated, Any

import torch
from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.datafree.bn_hooks import BNStatHooks
from fedkd.datafree.losses import bn_statistics_loss
from fedkd.datafree.recipe import StudentNode
from fedkd.datafree.synthesizers.base import build_generator
from fedkd.datafree.synthesizers.checks import check_betas
from fedkd.datafree.synthesizers.pool import Inversion, PoolSynthesizer
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

Stats = list[tuple[torch.Tensor, torch.Tensor]]


class MomentumBNStatHooks(BNStatHooks):
    """BN-statistics hooks whose loss blends the batch statistics with a memory of earlier ones.

    ``loss() = sum_l ||r_mu - ((1 - m) mu + m mu_mem)|| + ||r_var - ((1 - m) var + m var_mem)||``
    (averaged over ensemble members like the plain loss); ``memory=None`` gives the plain loss.
    """

    def __init__(self, teacher: nn.Module, momentum: float, memory: Stats | None) -> None:
        super().__init__(teacher)
        self.momentum = momentum
        self.memory = memory if self.fits(memory) else None  # another teacher: start afresh

    def fits(self, memory: Stats | None) -> bool:
        """Whether ``memory`` has one (mean, var) pair of the right size per BN layer."""
        return memory is not None and len(memory) == len(self.layers) and all(
            m.shape == (layer.num_features,) for (m, _), layer in zip(memory, self.layers, strict=True)
        )

    def loss(self) -> torch.Tensor:
        if self.memory is None or not self._stats:
            return super().loss()
        m, idx = self.momentum, sorted(self._stats)
        means = [(1 - m) * self._stats[i][0] + m * self.memory[i][0] for i in idx]
        variances = [(1 - m) * self._stats[i][1] + m * self.memory[i][1] for i in idx]
        running_means = [self.layers[i].running_mean for i in idx]
        running_vars = [self.layers[i].running_var for i in idx]
        return bn_statistics_loss(means, variances, running_means, running_vars) / self.num_members

    def updated_memory(self) -> Stats | None:
        """The memory after this round: the moving average with the last forward pass's statistics."""
        if len(self._stats) != len(self.layers):
            return self.memory
        last = [(self._stats[i][0].detach(), self._stats[i][1].detach()) for i in range(len(self.layers))]
        if self.memory is None:
            return last
        m = self.momentum
        return [
            (m * mm + (1 - m) * mu, m * mv + (1 - m) * var)
            for (mm, mv), (mu, var) in zip(self.memory, last, strict=True)
        ]


class FastMetaSynthesizer(PoolSynthesizer):
    """FastDFKD: a meta-learned generator and latent codes, a few inner steps per round, a pool.

    Args:
        spec, device, student: dataset spec, device and the student's recipe (:class:`~fedkd.datafree.Synthesizer`).
        generator: registry config of the generator (default ``cmi_generator``: the authors'
            generator is CMI's).
        batch_size: samples synthesised per round (the round's best batch joins the pool).
        pool_size, augment_pool: the pool's capacity and its augmentation (:class:`PoolSynthesizer`).
        synthesis_steps: inner steps per round (paper: 2, 5 or 10 on CIFAR; the authors' README runs 2).
        lr, lr_z: inner Adam learning rates of the generator and the latent codes (authors, for
            2/5/10 steps: 5e-3/3e-3/2e-3 and 0.015/0.01/0.01).
        betas: inner Adam betas (authors: (0.5, 0.999)).
        meta_lr: Reptile step, the fraction of the inner displacement the meta-initialisation
            moves by, in (0, 1] (1: no meta-learning, the generator just carries on from the last
            round; smaller steps learnt slower, see docs/design_notes.md#fast-meta-synthesis-reptile-step).
        meta_latent: meta-learn the latent codes (else fresh codes every round).
        bn, oh, adv: weights of the BN-statistics, cross-entropy and adversarial terms (authors,
            CIFAR: 10, 0.4-0.5, 1.0-1.33; defaults: their README's 10, 0.4, 1.1).
        bn_momentum: momentum ``m`` of the BN statistics (authors: 0.9; 0 = plain BN loss).
        warmup: rounds without the adversarial term.
        crop_pad: shift of the view the teacher sees, and of pool samples (default image_size // 8).
        hflip: random horizontal flips in the view and in pool samples.
    """

    method = "FastDFKD"

    @checked("synthesizer")
    def __init__(
        self,
        spec: Supplied[DatasetSpec],
        device: Supplied[torch.device | str] = "cpu",
        generator: Mapping[str, Any] | None = None,
        batch_size: PositiveInt = 256,
        synthesis_steps: PositiveInt = 2,
        lr: PositiveFloat = 5e-3,
        lr_z: PositiveFloat = 0.015,
        betas: AdamBetas = (0.5, 0.999),
        meta_lr: Annotated[float, Range(0, 1, low_open=True)] = 0.5,
        meta_latent: bool = True,
        bn: NonNegativeFloat = 10.0,
        oh: NonNegativeFloat = 0.4,
        adv: NonNegativeFloat = 1.1,
        bn_momentum: ShareBelowOne = 0.9,
        warmup: NonNegativeInt = 0,
        crop_pad: NonNegativeInt | None = None,
        hflip: bool = False,
        pool_size: PositiveInt = 20000,
        augment_pool: bool = True,
        *,
        student: StudentNode = None,
    ) -> None:
        super().__init__(spec, device, batch_size, synthesis_steps, pool_size, crop_pad, hflip, augment_pool,
                         student=student)
        self.generator = build_generator(generator or {"name": "cmi_generator"}, spec).to(self.device).train()
        # The fast copy the inner loop trains; it holds the last round's inner solution.
        self.fast_generator = copy.deepcopy(self.generator)
        self.lr, self.lr_z, self.betas = lr, lr_z, check_betas(betas)
        self.meta_lr, self.meta_latent = meta_lr, meta_latent
        self.weights = {"bn": bn, "oh": oh, "adv": adv}
        self.bn_momentum, self.warmup = bn_momentum, int(warmup)
        self.z = self.generator.noise(self.batch_size, self.device)  # meta latent codes
        self.fast_z = self.z.clone()
        self.bn_memory: Stats | None = None

    def stat_hooks(self, teacher: nn.Module) -> BNStatHooks:
        """BN hooks whose loss blends in the memory of earlier rounds' statistics (``bn_momentum > 0``)."""
        return MomentumBNStatHooks(teacher, self.bn_momentum, self.bn_memory if self.bn_momentum > 0 else None)

    def invert(self, teacher: nn.Module, student: nn.Module, hooks: BNStatHooks) -> Inversion:
        """One round: steps 1-3 of the module docstring (the frame pools the batch, step 4)."""
        b, w = self.batch_size, self.weights
        # 1. copy the meta-initialisation into the fast copy
        self.fast_generator.load_state_dict(self.generator.state_dict())
        self.fast_generator.train()
        z = (self.z if self.meta_latent else self.generator.noise(b, self.device)).clone().requires_grad_()
        params = [p for p in self.fast_generator.parameters() if p.requires_grad]
        groups = [{"params": params}, {"params": [z], "lr": self.lr_z}]
        optimizer = torch.optim.Adam(groups, lr=self.lr, betas=self.betas)  # the fast copy and the codes learn
        # 2. a few steps on the fast copy: BN statistics (with momentum), cross-entropy, adversarial
        targets = self.target_labels(b)
        use_adv = w["adv"] > 0 and self.rounds >= self.warmup
        step = self.inversion_objective(lambda: self.fast_generator(z), teacher, student, hooks, targets, use_adv)
        loss, best, last = self.descend(self.synthesis_steps, step, [optimizer])
        if self.bn_momentum > 0:
            self.bn_memory = hooks.updated_memory()
        # 3. Reptile
        self.fast_z = z.detach()
        self.meta_update()
        return Inversion(loss, best[0], targets, last)

    @torch.no_grad()
    def meta_update(self) -> None:
        """Reptile: move the meta-initialisation ``meta_lr`` of the way to the inner solution."""
        for meta, fast in zip(self.generator.parameters(), self.fast_generator.parameters(), strict=True):
            meta.add_(fast - meta, alpha=self.meta_lr)
        if self.meta_latent:
            self.z.add_(self.fast_z - self.z, alpha=self.meta_lr)

    def state_dict(self) -> dict[str, Any]:
        """The base state (the generator is the meta-initialisation; the pool and the round count)
        plus the meta latent codes and the BN-statistics memory. The inner Adam starts afresh each
        round and the Reptile step has no optimiser state, so nothing else carries over."""
        memory = None if self.bn_memory is None else [[m.detach().cpu(), v.detach().cpu()] for m, v in self.bn_memory]
        return {**super().state_dict(), "z": self.z.detach().cpu(), "bn_memory": memory}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.z = state["z"].to(self.device)
        memory = state["bn_memory"]
        self.bn_memory = None if memory is None else [(m.to(self.device), v.to(self.device)) for m, v in memory]
