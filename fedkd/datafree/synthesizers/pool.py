"""The base of the pool methods: each round inverts the teacher into one batch, whose best state joins a pool.

CMI, DeepInversion, fast meta-synthesis and NAYER differ only in *how* they invert the teacher
(pixels or a generator, which terms, what carries over between rounds). :class:`PoolSynthesizer`
is the frame they share: :meth:`~PoolSynthesizer.synthesize` wraps the teacher, holds the student in
eval mode, opens the BatchNorm-statistics hooks and calls the method's :meth:`~PoolSynthesizer.invert`;
the batch it returns -- the lowest-loss state of the round, found by :meth:`~PoolSynthesizer.descend`
-- goes into a bounded :class:`~fedkd.datafree.buffers.RingBuffer` with the labels it was made for.
The student learns from random pool batches, shifted (and flipped) like training images.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from fedkd.data.augment import random_crop_flip
from fedkd.data.specs import DatasetSpec
from fedkd.datafree.bn_hooks import BNStatHooks
from fedkd.datafree.buffers import RingBuffer
from fedkd.datafree.losses import adversarial_kl, cross_entropy
from fedkd.datafree.recipe import StudentNode
from fedkd.datafree.synthesizers.base import Synthesizer
from fedkd.datafree.teacher import as_teacher
from fedkd.errors import ConfigError
from fedkd.utils.device import autocast
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import NonNegativeInt, PositiveInt, Supplied

#: One optimisation step's loss terms by name (weighted by ``weights``) and the tensors to keep
#: should its loss be the round's lowest (the batch first).
Step = tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]


class Inversion(NamedTuple):
    """What :meth:`PoolSynthesizer.invert` found: the lowest loss, its batch, the labels the batch
    was made for, and the last step's loss terms."""

    loss: float
    x: torch.Tensor
    labels: torch.Tensor
    terms: dict[str, float]


class PoolSynthesizer(Synthesizer):
    """A synthesizer whose student samples come from a bounded pool of its best batches.

    Args:
        spec, device, student: dataset spec, device and the student's recipe (:class:`~fedkd.datafree.Synthesizer`).
        batch_size: samples inverted per round (the round's best batch joins the pool).
        synthesis_steps: optimisation steps per round.
        pool_size: samples kept in the pool (oldest dropped first).
        crop_pad: shift of pool samples in pixels (default ``image_size // 8``).
        hflip: also mirror pool samples with probability 1/2.
        augment_pool: shift (and flip) pool samples when the student draws them.
    """

    #: The method's name in the empty-pool and missing-BatchNorm errors.
    method = "pool"
    #: Loss weights by term name, set by the subclass; :meth:`descend` sums the terms with them.
    weights: dict[str, float]

    @checked("synthesizer")
    def __init__(
        self,
        spec: Supplied[DatasetSpec],
        device: Supplied[torch.device | str],
        batch_size: PositiveInt,
        synthesis_steps: PositiveInt,
        pool_size: PositiveInt,
        crop_pad: NonNegativeInt | None,
        hflip: bool,
        augment_pool: bool,
        *,
        student: StudentNode = None,
    ) -> None:
        super().__init__(spec, device, student=student)
        self.batch_size, self.synthesis_steps = int(batch_size), int(synthesis_steps)
        self.crop_pad = spec.image_size // 8 if crop_pad is None else int(crop_pad)
        self.hflip, self.augment_pool = hflip, augment_pool
        self.pool = RingBuffer(pool_size, self.device)
        self.rounds = 0

    # ------------------------------------------------------------------ the method's part
    def stat_hooks(self, teacher: nn.Module) -> BNStatHooks:
        """The BatchNorm-statistics hooks the round's :meth:`invert` reads (plain ones by default)."""
        return BNStatHooks(teacher)

    @abstractmethod
    def invert(self, teacher: nn.Module, student: nn.Module, hooks: BNStatHooks) -> Inversion:
        """One round's inversion of ``teacher`` (student in eval mode, ``hooks`` open): draw the
        round's target labels, optimise the batch, return its lowest-loss state."""

    # ------------------------------------------------------------------ the shared frame
    def synthesize(self, teacher: nn.Module, student: nn.Module) -> dict[str, float]:
        """One round: :meth:`invert` the teacher, add the best batch and its labels to the pool."""
        teacher = as_teacher(teacher)  # called with the target labels: an ensemble may weight members by them
        student_was_training = student.training
        student.eval()
        try:
            with self.stat_hooks(teacher) as hooks:
                if not hooks.layers and self.weights["bn"] > 0:
                    raise ConfigError(
                        f"{self.method}'s BN-statistics loss needs a teacher with BatchNorm layers; "
                        "use one (e.g. model.batch_norm=true) or set synthesizer.bn=0"
                    )
                found = self.invert(teacher, student, hooks)
        finally:
            student.train(student_was_training)
        self.pool.add(found.x, found.labels)  # the labels it was made for: an ensemble teacher weights by them
        self.rounds += 1
        return {"synthesis_loss": found.loss, **{f"loss_{k}": v for k, v in found.terms.items()}}

    def descend(
        self,
        steps: int,
        objective: Callable[[], Step],
        optimizers: Sequence[torch.optim.Optimizer] | Callable[[], Sequence[torch.optim.Optimizer]],
        after_step: Callable[[], None] | None = None,
        start: tuple[torch.Tensor, ...] | None = None,
    ) -> tuple[float, tuple[torch.Tensor, ...] | None, dict[str, float]]:
        """``steps`` steps on ``sum(weights[k] * term_k)`` of ``objective()``'s terms, keeping the
        lowest loss and copies of the tensors that had it (the state before that step's update).

        Only the parameters of ``optimizers`` learn -- never the student or the teacher; a callable
        is asked for them after each ``objective()`` (which may create one: CMI's lazy head).
        ``after_step`` runs after each update (a schedule, a projection); ``start`` is kept when no
        step's loss is finite. Returns the lowest loss, the kept tensors and the last step's terms.
        """
        best_loss, best, last = float("inf"), start, {}
        for it in range(steps):
            with autocast(self.device):
                terms, keep = objective()
                loss = sum(self.weights[k] * v for k, v in terms.items())
            value = loss.item()
            if value < best_loss:
                best_loss, best = value, tuple(t.detach().clone() for t in keep)
            current = list(optimizers() if callable(optimizers) else optimizers)
            for optimizer in current:
                optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=[p for opt in current for group in opt.param_groups for p in group["params"]])
            for optimizer in current:
                optimizer.step()
            if after_step is not None:
                after_step()
            if it == steps - 1:
                last = {k: v.item() for k, v in terms.items()}
            self.samples_generated += len(keep[0])
        return best_loss, best, last

    def inversion_objective(
        self,
        generate: Callable[[], torch.Tensor],
        teacher: nn.Module,
        student: nn.Module,
        hooks: BNStatHooks,
        targets: torch.Tensor,
        adversarial: bool,
    ) -> Callable[[], Step]:
        """The DeepInversion/CMI objective on a generated batch, as fast meta-synthesis and NAYER
        use it: terms ``bn`` (BN statistics), ``oh`` (CE of the teacher to ``targets``) and, when
        ``adversarial``, ``adv`` (the adversarial KL), the teacher seeing a shifted view of
        ``generate()``."""

        def step() -> Step:
            x = generate()
            view = self._view(x)
            t_logits = teacher(view, targets)
            terms = {"bn": hooks.loss(), "oh": cross_entropy(t_logits, targets)}
            if adversarial:
                terms["adv"] = adversarial_kl(student(view), t_logits)
            return terms, (x,)

        return step

    # ------------------------------------------------------------------ the pool
    def _view(self, x: torch.Tensor) -> torch.Tensor:
        """A randomly shifted (and flipped) copy of ``x``, per sample."""
        return random_crop_flip(x, self.crop_pad, self.hflip)

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
