"""DAFL: Data-Free Learning of student networks (Chen et al., ICCV 2019).

The teacher acts as a fixed discriminator: a generator learns to produce inputs the teacher
classifies as it would real data, through three terms on the teacher's outputs ``y`` and
penultimate features ``f`` of a generated batch:

- one-hot loss ``CE(y, argmax y)``: confident predictions (:func:`~fedkd.datafree.losses.cross_entropy`);
- activation loss ``-mean|f|``: strong feature activations (:func:`~fedkd.datafree.losses.activation_loss`;
  the authors' code's per-element mean, see there);
- information-entropy loss: minus the entropy of the batch's mean prediction, so every batch
  covers the classes evenly (:func:`~fedkd.datafree.losses.information_entropy`).

Paper weights on MNIST: one-hot 1, activation 0.1, entropy 5. The authors' code computes the
entropy with ``log10``; ours uses the natural log, so the paper's ``ie = 5`` is ln 10 = 2.30x stronger
here than in their code (their strength, in natural-log units, is ``ie = 5 / ln 10 = 2.17``). We keep
the paper's number.

The student learns by KD on the generated batches: the paper's ``H_cross(y_S, y_T)``, in the
code ``KL(softmax(t) || softmax(s))`` at temperature 1 (``student: {loss: kl, temperature: 1}`` in
``conf/synthesizer/dafl.yaml``).
The generator is *not* adversarial with respect to the student (its loss ignores the student).
Schedule (authors' code): per iteration one generator step and one student step on the same
batch (``student.steps: 1``; the student's batch is the generator step's own, as here).

Other MNIST settings of the authors' code, for reference: batch 512, generator Adam lr 0.2, latent
size 100, student Adam lr 2e-3, 200 epochs x 120 iterations (the student's optimiser is the run's
``optim`` config, not the synthesizer's).

Teacher features: a forward hook on the input of each teacher model's final linear ``head``
(fedkd :class:`~fedkd.models.base.Classifier` models), registered only during :meth:`synthesize`.
For an ``EnsembleTeacher`` the activation loss is the mean over its members (called one by one so
the hooks fire); one-hot and entropy terms use the ensemble's logits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.datafree.losses import activation_loss, cross_entropy, information_entropy
from fedkd.datafree.recipe import StudentNode
from fedkd.datafree.student_terms.base import ForwardCapture
from fedkd.datafree.synthesizers.round_batch import RoundBatchSynthesizer
from fedkd.datafree.teacher import as_teacher
from fedkd.errors import ConfigError
from fedkd.utils.device import autocast
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import AdamBetas, NonNegativeFloat, PositiveFloat, PositiveInt, Supplied


class DAFLSynthesizer(RoundBatchSynthesizer):
    """DAFL's generator, trained with the teacher as a fixed discriminator.

    Args:
        spec, device, student: dataset spec, device and the student's recipe (:class:`~fedkd.datafree.Synthesizer`).
        generator: registry config of the generator (default ``dfad_generator``: DAFL's own
            architecture, tanh then a non-affine BatchNorm).
        batch_size: samples per generator step (paper, MNIST: 512).
        lr, betas: the generator's Adam settings (paper, MNIST: lr 0.2, default betas).
        generator_steps: generator updates per round (paper: 1).
        oh, a, ie: weights of the one-hot, activation and information-entropy terms (paper: 1,
            0.1, 5); each >= 0, 0 drops the term (``a=0`` also lifts the need for a ``head``).
        reuse_batch: the student learns from the generator step's batch (paper) or fresh ones.
    """

    @checked("synthesizer")
    def __init__(
        self,
        spec: Supplied[DatasetSpec],
        device: Supplied[torch.device | str] = "cpu",
        generator: Mapping[str, Any] | None = None,
        batch_size: PositiveInt = 512,
        lr: PositiveFloat = 0.2,
        betas: AdamBetas = (0.9, 0.999),
        generator_steps: PositiveInt = 1,
        oh: NonNegativeFloat = 1.0,
        a: NonNegativeFloat = 0.1,
        ie: NonNegativeFloat = 5.0,
        reuse_batch: bool = True,
        *,
        student: StudentNode = None,
    ) -> None:
        super().__init__(
            spec, device, generator, batch_size, lr, betas, generator_steps, reuse_batch, student=student
        )
        if oh + a + ie <= 0:
            raise ConfigError(
                "synthesizer.oh, synthesizer.a and synthesizer.ie are all 0: the generator has no loss; "
                "set e.g. synthesizer.oh=1"
            )
        self.weights = {"oh": float(oh), "a": float(a), "ie": float(ie)}

    def _heads(self, teacher: nn.Module) -> list[nn.Linear]:
        heads = []
        for member in teacher.members:
            head = getattr(member, "head", None)
            if not isinstance(head, nn.Linear):
                raise ConfigError(
                    f"synthesizer.a > 0 needs teacher models with a final nn.Linear 'head' (fedkd classifiers; got "
                    f"{type(member).__name__}); use a registry model as teacher or set synthesizer.a=0"
                )
            heads.append(head)
        return heads

    def synthesize(self, teacher: nn.Module, student: nn.Module) -> dict[str, float]:
        """Generator step(s) on ``oh * one_hot + a * activation + ie * entropy`` (the student is
        not involved); the last step's batch becomes the round's student batch."""
        teacher = as_teacher(teacher)
        w = self.weights
        self.generator.train()
        # The hooks on the heads' inputs live only during synthesis: student steps stay unhooked.
        capture = ForwardCapture(self._heads(teacher), inputs=True) if w["a"] > 0 else None
        terms = {}
        try:
            for _ in range(self.generator_steps):
                z = self.generator.noise(self.batch_size, self.device)
                # An ensemble's vectorised path does not call its members: the hooks need them called.
                members = teacher.per_member_calls() if capture is not None else contextlib.nullcontext()
                with autocast(self.device), members:
                    x = self.generator(z)
                    logits = teacher(x)
                    terms = {
                        "one_hot": cross_entropy(logits, logits.detach().argmax(1)),
                        "entropy": information_entropy(logits),
                    }
                    if capture is not None:
                        terms["activation"] = torch.stack([activation_loss(f) for f in capture.values]).mean()
                    loss = w["oh"] * terms["one_hot"] + w["ie"] * terms["entropy"]
                    if capture is not None:
                        loss = loss + w["a"] * terms["activation"]
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward(inputs=self._params)  # the teacher is frozen: only the generator learns
                self.optimizer.step()
                self.samples_generated += self.batch_size
        finally:
            if capture is not None:
                capture.remove()
        self._start_round(z, x)  # the student learns from this very batch (DAFL's joint update)
        return {"generator_loss": float(loss.item()), **{k: float(v.item()) for k, v in terms.items()}}
