"""Co-Boosting's ensemble re-weighting (Dai et al., "Enhancing One-Shot Federated Learning Through
Data and Ensemble Co-Boosting", ICLR 2024) over any labelled synthesizer.

Co-Boosting improves the synthetic data and the ensemble in turn. The data half is hard-sample
mining in the generator's cross-entropy (the conditional synthesizer's ``hard_sample_power``,
:func:`~fedkd.datafree.losses.hard_sample_cross_entropy`). The ensemble half is this wrapper: after
every synthesis step of its base, it re-weights the ensemble's members so that the weighted
ensemble classifies the current synthetic samples as the labels they were made for. The hard
samples decide which clients the teacher trusts; the re-weighted teacher decides what is hard next.

Per :meth:`EnsembleBoosting.synthesize` call, after the base's own step, ``steps`` times:

1. ``batch_size`` samples and their target labels from the base;
2. the gradient ``g`` of ``CE(sum_m a_m logits_m / sum_m a_m, y)`` with respect to the member
   weights ``a`` (:meth:`~fedkd.datafree.EnsembleTeacher.combine`);
3. a signed step ``a <- clip(a - step_size * step_decay**t * sign(g), 0, 1)``, ``t`` the number of
   earlier calls on this teacher.

The weights start at ``1/M`` for ``M`` members (the plain mean), as in the authors' code
(github.com/rong-dai/Co-Boosting), whose defaults are kept: step size 0.01, decay 0.99 per
synthesis epoch, weights clipped to [0, 1]. The weights live on the teacher
(:meth:`~fedkd.datafree.EnsembleTeacher.set_member_weights`), so a federated server that builds a
new ensemble every round starts every round from the plain mean; with class weights (FedFTG's
label counts) the member weights scale them. Choices where this code differs, and why:

- The authors step once per batch of their whole sample pool every epoch; here ``steps`` batches
  come from the base's :meth:`sample` (fresh generator samples, or pool samples for the pool
  methods), so the cost per call is fixed.
- Their student also learns on adversarially perturbed inputs (ODS); that is a student-side
  term and is not built here.

A single teacher (one member) is left as it is: there is nothing to weight. The wrapper's state is
its base's (:class:`~fedkd.datafree.synthesizers.wrapper.SynthesizerWrapper`): the weights belong to
the teacher, which its caller rebuilds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.datafree.recipe import StudentNode
from fedkd.datafree.synthesizers.base import Synthesizer
from fedkd.datafree.synthesizers.wrapper import SynthesizerWrapper
from fedkd.datafree.teacher import EnsembleTeacher
from fedkd.errors import ConfigError
from fedkd.utils.device import autocast
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import Forward, PositiveFloat, PositiveInt, Range, Supplied


class EnsembleBoosting(SynthesizerWrapper):
    """A base synthesizer whose every step is followed by Co-Boosting's ensemble re-weighting.

    Args:
        spec, device, student: dataset spec, device and the wrapper's own student recipe (its YAML
            interpolates the base's ``student`` node).
        base: the wrapped synthesizer; it must give target labels (conditional, DeepInversion,
            CMI, Fast), built or as a Hydra partial.
        step_size: the signed step on the member weights (authors: 0.01).
        step_decay: the step's factor per call on the same teacher (authors: 0.99), in (0, 1].
        steps: weight updates per call, each on one batch.
        batch_size: samples per weight update.
        **base_overrides: other keys go to ``base`` (only with an unbuilt ``base``).
    """

    @checked("synthesizer")
    def __init__(
        self,
        spec: Supplied[DatasetSpec],
        device: Supplied[torch.device | str] = "cpu",
        base: Synthesizer | Callable[..., Synthesizer] | None = None,
        step_size: PositiveFloat = 0.01,
        step_decay: Annotated[float, Range(0, 1, low_open=True)] = 0.99,
        steps: PositiveInt = 1,
        batch_size: PositiveInt = 128,
        *,
        student: StudentNode = None,
        **base_overrides: Annotated[Any, Forward(node="base")],
    ) -> None:
        super().__init__(spec, device, base, base_overrides, student=student)
        self.step_size, self.step_decay = float(step_size), float(step_decay)
        self.steps, self.batch_size = int(steps), int(batch_size)

    def synthesize(self, teacher: nn.Module, student: nn.Module) -> dict[str, float]:
        """The base's step, then ``steps`` signed updates of the teacher's member weights.
        Adds ``boost_loss`` (the weighted ensemble's CE before the last update) and the smallest
        and largest normalised member weight, ``member_weight_min``/``member_weight_max``."""
        row = dict(self.base.synthesize(teacher, student))
        if isinstance(teacher, EnsembleTeacher) and teacher.num_members > 1:
            row.update(self.boost(teacher))
        return row

    def boost(self, teacher: EnsembleTeacher) -> dict[str, float]:
        """``steps`` signed-gradient updates of ``teacher``'s member weights on the base's samples."""
        if teacher.member_weights is None:
            teacher.set_member_weights(torch.full((teacher.num_members,), 1.0 / teacher.num_members))
        calls = (teacher.member_weight_updates - 1) // self.steps  # earlier boost calls on this teacher
        step = self.step_size * self.step_decay**calls
        loss = torch.zeros(())
        for _ in range(self.steps):
            with torch.no_grad():
                x, y = self.base.sample(self.batch_size)
                if y is None:
                    raise ConfigError(
                        "Co-Boosting re-weights the ensemble on labelled samples, and synthesizer.base gives none; "
                        "use a labelled base (conditional/fedftg, deepinversion, cmi, fast_meta)"
                    )
                with autocast(self.device):
                    logits = teacher.member_logits(x)
            weights = teacher.member_weights.clone().requires_grad_(True)
            loss = F.cross_entropy(teacher.combine(logits.float(), y, member_weights=weights), y)
            (grad,) = torch.autograd.grad(loss, weights)
            teacher.set_member_weights((weights.detach() - step * grad.sign()).clamp(0.0, 1.0))
        share = teacher.member_weights / teacher.member_weights.sum()
        return {"boost_loss": loss.item(), "member_weight_min": share.min().item(),
                "member_weight_max": share.max().item()}
