"""CMI: Contrastive Model Inversion (Fang et al., IJCAI 2021).

Each synthesis round (:meth:`CMISynthesizer.invert`) inverts the teacher into one batch:
a freshly initialised generator and its latent codes are optimised jointly for ``synthesis_steps``
steps on

- the BatchNorm-statistics loss over the teacher's BN layers (DeepInversion),
- cross-entropy of the teacher's logits to sampled target labels,
- an adversarial term: minus the student-teacher KL on samples where they agree,
- the contrastive instance-discrimination loss: a projection head maps each sample's pooled
  BN-layer inputs to an embedding; InfoNCE asks the embedding of a *local* view (random resized
  crop) of sample ``i`` to pick the *global* view (random shifted crop) of sample ``i`` among the
  global views of the batch and the stored features of earlier rounds' samples (a memory bank).
  Telling instances apart pushes each new batch away from everything synthesised before.

The lowest-loss batch of the round goes into a bounded in-memory pool (and its features into the
memory bank); the student learns from random pool batches with temperature-scaled KL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import torch
from torch import nn

from fedkd.data.augment import random_resized_crop
from fedkd.data.specs import DatasetSpec
from fedkd.datafree.bn_hooks import BNStatHooks
from fedkd.datafree.buffers import RingBuffer
from fedkd.datafree.generators import reset_parameters
from fedkd.datafree.losses import adversarial_kl, cross_entropy, info_nce
from fedkd.datafree.recipe import StudentNode
from fedkd.datafree.synthesizers.base import build_generator
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
    Supplied,
)


class ProjectionHead(nn.Module):
    """Two-layer MLP on pooled BN inputs (CMI's contrastive head); its input size is set lazily."""

    def __init__(self, hidden: int, out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LazyLinear(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CMISynthesizer(PoolSynthesizer):
    """Contrastive model inversion into an in-memory sample pool.

    Args:
        spec, device, student: dataset spec, device and the student's recipe (:class:`~fedkd.datafree.Synthesizer`).
        generator: registry config of the generator (default ``cmi_generator``).
        batch_size: samples synthesised per round (one batch per round goes to the pool).
        pool_size, augment_pool: the pool's capacity and its augmentation (:class:`PoolSynthesizer`).
        synthesis_steps: optimisation steps per round (paper: 200 on CIFAR).
        lr, betas: Adam settings of generator, latent codes and head (paper: 1e-3, (0.5, 0.999)).
        bn, oh, adv, cr: weights of the BN-statistics, cross-entropy, adversarial and contrastive
            terms.
        cr_temperature: InfoNCE temperature.
        head_dim, head_hidden: projection head sizes.
        bank_size: features kept in the memory bank; negatives: how many are drawn per step.
        reset_generator: re-initialise the generator at each round (paper); ``False`` keeps
            training one generator across rounds.
        crop_pad: shift of the global view in pixels (default: image_size // 8).
        local_scale: area range of the local view's crop.
        hflip: random horizontal flips in both views and in the pool batches.
    """

    method = "CMI"

    @checked("synthesizer")
    def __init__(
        self,
        spec: Supplied[DatasetSpec],
        device: Supplied[torch.device | str] = "cpu",
        generator: Mapping[str, Any] | None = None,
        batch_size: PositiveInt = 256,
        synthesis_steps: PositiveInt = 200,
        lr: PositiveFloat = 1e-3,
        betas: AdamBetas = (0.5, 0.999),
        bn: NonNegativeFloat = 1.0,
        oh: NonNegativeFloat = 0.5,
        adv: NonNegativeFloat = 0.5,
        cr: NonNegativeFloat = 0.8,
        cr_temperature: PositiveFloat = 0.1,
        head_dim: PositiveInt = 128,
        head_hidden: PositiveInt = 256,
        bank_size: PositiveInt = 4096,
        negatives: NonNegativeInt = 1024,
        pool_size: PositiveInt = 20000,
        reset_generator: bool = True,
        crop_pad: NonNegativeInt | None = None,
        local_scale: Annotated[tuple[float, float], Range(0, 1, low_open=True)] = (0.25, 1.0),
        hflip: bool = False,
        augment_pool: bool = True,
        *,
        student: StudentNode = None,
    ) -> None:
        super().__init__(spec, device, batch_size, synthesis_steps, pool_size, crop_pad, hflip, augment_pool,
                         student=student)
        self.generator = build_generator(generator or {"name": "cmi_generator"}, spec).to(self.device)
        self.lr, self.betas = lr, check_betas(betas)
        self.weights = {"bn": bn, "oh": oh, "adv": adv, "cr": cr}
        self.cr_temperature = cr_temperature
        self.negatives = negatives
        self.reset_generator = reset_generator
        self.local_scale = tuple(local_scale)
        self.head = ProjectionHead(head_hidden, head_dim).to(self.device)
        self._head_optimizer: torch.optim.Optimizer | None = None
        self.bank = RingBuffer(bank_size, self.device)

    def stat_hooks(self, teacher: nn.Module) -> BNStatHooks:
        """BN hooks that also keep the pooled BN inputs (the head's features) when ``cr > 0``, and
        match the statistics of the global view only (the first ``batch_size`` rows)."""
        hooks = BNStatHooks(teacher, features=self.weights["cr"] > 0)
        hooks.stat_rows = self.batch_size
        return hooks

    def invert(self, teacher: nn.Module, student: nn.Module, hooks: BNStatHooks) -> Inversion:
        """One round: optimise a fresh generator and latent codes jointly; the best batch's features
        join the memory bank."""
        b, w = self.batch_size, self.weights
        if self.reset_generator:
            reset_parameters(self.generator)
        self.generator.train()
        z = self.generator.noise(b, self.device).requires_grad_()
        # Every class equally often in each batch, or in proportion to the label prior when set.
        targets = self.target_labels(b)
        params = [p for p in self.generator.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam([{"params": params}, {"params": [z]}], lr=self.lr, betas=self.betas)

        def step() -> Step:
            x = self.generator(z)
            g_view = self._view(x)
            if w["cr"] > 0:  # one teacher pass over both views (eval-mode BN treats samples independently)
                views = torch.cat([g_view, random_resized_crop(x, self.local_scale, hflip=self.hflip)])
            else:
                views = g_view
            t_logits = teacher(views, targets.repeat(views.shape[0] // b))[:b]
            terms = {"bn": hooks.loss(), "oh": cross_entropy(t_logits, targets)}
            if w["adv"] > 0:
                terms["adv"] = adversarial_kl(student(g_view), t_logits)
            if w["cr"] <= 0:
                return terms, (x,)
            feats = hooks.features()
            terms["cr"] = self._contrastive(feats[:b], feats[b:])
            return terms, (x, feats[:b].float())

        def optimizers() -> list[torch.optim.Optimizer]:  # the head's exists after its first call
            return [optimizer] if self._head_optimizer is None else [optimizer, self._head_optimizer]

        loss, best, last = self.descend(self.synthesis_steps, step, optimizers)
        if w["cr"] > 0:
            self.bank.add(best[1])
        return Inversion(loss, best[0], targets, last)

    def _contrastive(self, global_feat: torch.Tensor, local_feat: torch.Tensor) -> torch.Tensor:
        """InfoNCE: local view ``i`` must find global view ``i`` among the batch and the bank."""
        keys = global_feat.float()
        if len(self.bank) and self.negatives > 0:
            keys = torch.cat([keys, self.bank.sample(min(self.negatives, len(self.bank)))])
        projected = self.head(torch.cat([keys, local_feat.float()]))
        if self._head_optimizer is None:  # the head's input size is known after its first call
            self._head_optimizer = torch.optim.Adam(self.head.parameters(), lr=self.lr, betas=self.betas)
        n_keys = keys.shape[0]
        return info_nce(projected[n_keys:], projected[:n_keys], self.cr_temperature)

    def state_dict(self) -> dict[str, Any]:
        """The base state (the generator -- ``reset_generator=false`` trains it on --, the sample pool
        and the round count) plus the projection head and its optimiser and the memory bank."""
        used = self._head_optimizer is not None  # the head's lazy first layer has no weights before its first call
        return {
            **super().state_dict(),
            "head": {k: v.detach().cpu() for k, v in self.head.state_dict().items()} if used else None,
            "head_optimizer": self._head_optimizer.state_dict() if used else None,
            "bank": self.bank.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._head_optimizer = None
        if state["head"] is not None:
            self.head.load_state_dict(state["head"])  # materialises the lazy first layer
            self._head_optimizer = torch.optim.Adam(self.head.parameters(), lr=self.lr, betas=self.betas)
            self._head_optimizer.load_state_dict(state["head_optimizer"])
        self.bank.load_state_dict(state["bank"])
