"""ZSKT: Zero-shot Knowledge Transfer via Adversarial Belief Matching (Micaelli & Storkey,
NeurIPS 2019).

An adversarial game on generated samples, as in DFAD but with divergences:

- the generator *maximises* the forward KL ``KL(softmax(t) || softmax(s))`` between teacher and
  student on its samples (:func:`~fedkd.datafree.losses.adversarial_kl` over all samples);
- the student minimises the same KL plus attention transfer on matching layers
  (:class:`~fedkd.datafree.student_terms.AttentionTransfer`, ``beta = 250``), which this
  synthesizer hands the distiller through :meth:`student_terms`.

Per round (authors' code): draw ``z``, take ``ng = 1`` generator step on ``G(z)``, then
``ns = 10`` student steps all on ``G(z)`` of the updated generator (the same ``z``). Other paper
settings: batch 128, ``z`` of size 100, generator Adam lr 1e-3 with its gradient norm clipped at 5,
student Adam lr 2e-3 (the run's ``optim`` config) with its gradient norm clipped at 5 too (the
recipe's ``grad_clip`` in ``conf/synthesizer/zskt.yaml``), KL temperature 1, cosine schedules.

Weight of the attention term: the authors' code takes ``F.kl_div``'s old default reduction, the
mean over samples *and classes*, so its KL is ``1/num_classes`` of the true (batch-mean) KL used
here; their AT-to-KL balance is therefore ``num_classes`` times stronger than ``at_weight = 250``
gives here (set ``at_weight = 250 * num_classes`` to reproduce it). We keep the paper's 250.
The generator is ``dfad_generator`` (DAFL/DFAD's net: ZSKT's has the same layers, without the tanh
before its non-affine output BatchNorm).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.datafree.losses import adversarial_kl
from fedkd.datafree.recipe import StudentNode
from fedkd.datafree.student_terms import StudentTerm
from fedkd.datafree.student_terms.attention import AttentionTransfer
from fedkd.datafree.synthesizers.round_batch import RoundBatchSynthesizer
from fedkd.utils.device import autocast
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import AdamBetas, NonNegativeFloat, PositiveFloat, PositiveInt, Supplied


class ZSKTSynthesizer(RoundBatchSynthesizer):
    """ZSKT's adversarial generator; its attention-transfer term is added to the student's loss.

    Args:
        spec, device, student: dataset spec, device and the student's recipe (:class:`~fedkd.datafree.Synthesizer`).
        generator: registry config of the generator (default ``dfad_generator``, ``nz`` 100).
        batch_size: samples per generator step (paper: 128).
        lr, betas: the generator's Adam settings (paper: 1e-3, default betas).
        generator_steps: generator updates per round (paper: ``ng = 1``).
        clip_grad_norm: max gradient norm of a generator step (paper: 5); ``None``/0: no clipping.
        at_weight: weight of attention transfer in the student's loss (paper: ``beta = 250``);
            0 drops the term (the paper's "no AT" ablation).
        at_student_layers, at_teacher_layers: module names to pair for attention transfer;
            ``None``: the last activation at each common spatial size (see ``AttentionTransfer``).
        reuse_batch: the round's student steps share one batch (paper) or draw fresh ones.
        kl_temperature: softmax temperature of the generator's KL (paper: 1). The YAML ties it to
            the student's (``kl_temperature: ${.student.temperature}``): both sides of the game
            measure the same divergence. The student's recipe (paper: ``ns = 10`` steps per round,
            KL at temperature 1) is the ``student`` node of ``conf/synthesizer/zskt.yaml``.
    """

    @checked("synthesizer")
    def __init__(
        self,
        spec: Supplied[DatasetSpec],
        device: Supplied[torch.device | str] = "cpu",
        generator: Mapping[str, Any] | None = None,
        batch_size: PositiveInt = 128,
        lr: PositiveFloat = 1e-3,
        betas: AdamBetas = (0.9, 0.999),
        generator_steps: PositiveInt = 1,
        clip_grad_norm: NonNegativeFloat | None = 5.0,
        at_weight: NonNegativeFloat = 250.0,
        at_student_layers: Sequence[str] | None = None,
        at_teacher_layers: Sequence[str] | None = None,
        reuse_batch: bool = True,
        kl_temperature: PositiveFloat = 1.0,
        *,
        student: StudentNode = None,
    ) -> None:
        super().__init__(
            spec, device, generator, batch_size, lr, betas, generator_steps, reuse_batch, student=student
        )
        self.kl_temperature = float(kl_temperature)
        self.clip_grad_norm = clip_grad_norm or None
        self.attention = None
        if at_weight > 0:
            self.attention = AttentionTransfer(
                at_weight, at_student_layers, at_teacher_layers, key_prefix="synthesizer.at_"
            )

    def student_terms(self) -> list[StudentTerm]:
        """Attention transfer (unless ``at_weight`` is 0), added to every student step."""
        return [] if self.attention is None else [self.attention]

    def synthesize(self, teacher: nn.Module, student: nn.Module) -> dict[str, float]:
        """Generator step(s): gradient *ascent* on the student-teacher forward KL."""
        self.generator.train()
        z = self.generator.noise(self.batch_size, self.device)
        kl = torch.zeros((), device=self.device)
        for _ in range(self.generator_steps):
            with autocast(self.device):
                x = self.generator(z)
                loss = adversarial_kl(student(x), teacher(x), self.kl_temperature, only_agreeing=False)
            self.optimizer.zero_grad(set_to_none=True)
            # Only the generator learns here: backward into its parameters alone skips the
            # student's weight gradients (and the teacher is frozen).
            loss.backward(inputs=self._params)
            if self.clip_grad_norm:
                nn.utils.clip_grad_norm_(self._params, self.clip_grad_norm)
            self.optimizer.step()
            self.samples_generated += self.batch_size
            kl = -loss.detach()
        self._start_round(z)  # the student steps use G(z) of the updated generator
        d = kl.item()
        return {"generator_loss": -d, "kl": d}

    def state_dict(self) -> dict[str, Any]:
        """The generator, its Adam state and the attention term's state."""
        return {**super().state_dict(), "attention": {} if self.attention is None else self.attention.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if self.attention is not None:
            self.attention.load_state_dict(state.get("attention", {}))
