"""A conditional generator driven by a label prior (FedFTG / DENSE family).

One conditional generator (noise + label -> sample) persists across :meth:`synthesize` calls --
across federated rounds when the server calls the distiller once per round. Labels are drawn in
proportion to a prior (the clients' label counts, so classes nobody holds are never asked for).
Each generator step minimises

    ce * CE(teacher(x), y) + adv * adversarial KL + div * diversity + bn * BN statistics

where the cross-entropy may weight each sample by ``(1 - p_y)^hard_sample_power`` (Co-Boosting's
hard-sample mining, :func:`~fedkd.datafree.losses.hard_sample_cross_entropy`; 0: plain CE),
the adversarial term is minus the student-teacher KL (only on samples where they agree,
unless ``adv_all_samples``), the diversity term keeps different codes from collapsing onto one
sample, and the BN term (DeepInversion) is used only when ``bn > 0``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import torch
from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.datafree.bn_hooks import BNStatHooks
from fedkd.datafree.losses import adversarial_kl, diversity_loss, hard_sample_cross_entropy
from fedkd.datafree.recipe import StudentNode
from fedkd.datafree.synthesizers.base import Synthesizer, build_generator
from fedkd.datafree.synthesizers.checks import check_betas
from fedkd.datafree.teacher import as_teacher
from fedkd.errors import ConfigError
from fedkd.utils.device import autocast
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import AdamBetas, NonNegativeFloat, PositiveFloat, PositiveInt, Range, Supplied


class ConditionalSynthesizer(Synthesizer):
    """Label-prior-driven conditional generator, trained adversarially against the student.

    Args:
        spec, device, student: dataset spec, device and the student's recipe (:class:`~fedkd.datafree.Synthesizer`).
        generator: registry config of a conditional generator (default ``cond_generator``).
        label_prior: per-class counts or probabilities (``None``: uniform); see
            :meth:`Synthesizer.set_label_prior`, which the federated server calls every round.
        batch_size, generator_steps, lr, betas: generator optimisation per :meth:`synthesize`.
        ce, adv, div, bn: loss weights; ``adv_all_samples`` drops the agreement mask.
        hard_sample_power: weight each sample's cross-entropy by ``(1 - p_y)`` to this power (>= 0).
        bn_label_sparse: with a label-weighted ensemble, each member's BN statistics come from the
            samples of the labels it holds only (:class:`~fedkd.datafree.BNStatHooks`'s
            ``label_sparse``): the BN term then costs as many member passes per sample as the
            ensemble's cross-entropy, instead of every member on every sample.
    """

    @checked("synthesizer")
    def __init__(
        self,
        spec: Supplied[DatasetSpec],
        device: Supplied[torch.device | str] = "cpu",
        generator: Mapping[str, Any] | None = None,
        label_prior: Annotated[Sequence[float], Range(0)] | torch.Tensor | None = None,
        batch_size: PositiveInt = 256,
        generator_steps: PositiveInt = 1,
        lr: PositiveFloat = 1e-3,
        betas: AdamBetas = (0.9, 0.999),
        ce: NonNegativeFloat = 1.0,
        adv: NonNegativeFloat = 1.0,
        div: NonNegativeFloat = 1.0,
        bn: NonNegativeFloat = 0.0,
        adv_all_samples: bool = False,
        hard_sample_power: NonNegativeFloat = 0.0,
        bn_label_sparse: bool = False,
        *,
        student: StudentNode = None,
    ) -> None:
        super().__init__(spec, device, student=student)
        self.generator = build_generator(generator or {"name": "cond_generator"}, spec).to(self.device)
        if not getattr(self.generator, "conditional", False):
            raise ConfigError(
                "ConditionalSynthesizer needs a conditional generator; set synthesizer.generator.name=cond_generator"
            )
        self.batch_size, self.generator_steps = batch_size, generator_steps
        self.weights = {"ce": ce, "adv": adv, "div": div, "bn": bn}
        self.adv_all_samples = adv_all_samples
        self.hard_sample_power = float(hard_sample_power)
        self.bn_label_sparse = bool(bn_label_sparse)
        self._params = [p for p in self.generator.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self._params, lr=lr, betas=check_betas(betas))
        self.set_label_prior(label_prior)  # None: uniform random labels

    def synthesize(self, teacher: nn.Module, student: nn.Module) -> dict[str, float]:
        """Generator step(s) on the combined loss; the generator persists across calls."""
        teacher = as_teacher(teacher)  # called with the labels: an ensemble may weight members by them
        w = self.weights
        self.generator.train()
        student_was_training = student.training
        student.eval()  # do not move the student's BN statistics with the generator's batches
        terms: dict[str, torch.Tensor] = {}
        hooks = BNStatHooks(teacher, label_sparse=self.bn_label_sparse) if w["bn"] > 0 else contextlib.nullcontext()
        with hooks:
            for _ in range(self.generator_steps):
                z = self.generator.noise(self.batch_size, self.device)
                y = self.target_labels(self.batch_size, balanced=False)
                with autocast(self.device):
                    x = self.generator(z, y)
                    t_logits = teacher(x, y)
                    terms = self.generator_terms(z, y, x, t_logits, student)
                    if w["bn"] > 0:
                        terms["bn"] = hooks.loss()
                    loss = sum(w[k] * v for k, v in terms.items())
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward(inputs=self._params)
                self.optimizer.step()
                self.samples_generated += self.batch_size
        student.train(student_was_training)
        return {"generator_loss": loss.item(), **{f"loss_{k}": v.item() for k, v in terms.items()}}

    def generator_terms(
        self, z: torch.Tensor, y: torch.Tensor, x: torch.Tensor, t_logits: torch.Tensor, student: nn.Module
    ) -> dict[str, torch.Tensor]:
        """The generator loss's terms on one batch (keys of :attr:`weights`; the BN term is added by
        :meth:`synthesize`): cross-entropy, and the adversarial and diversity terms when weighted."""
        terms = {"ce": hard_sample_cross_entropy(t_logits, y, self.hard_sample_power)}
        if self.weights["adv"] > 0:
            terms["adv"] = adversarial_kl(student(x), t_logits, only_agreeing=not self.adv_all_samples)
        if self.weights["div"] > 0:
            terms["div"] = diversity_loss(z, x)
        return terms

    def state_dict(self) -> dict[str, Any]:
        """The base state plus the generator's Adam state."""
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Generated inputs with the labels they were generated for (drawn from the prior)."""
        self.generator.train()
        y = self.target_labels(n, balanced=False)
        with autocast(self.device):
            x = self.generator(self.generator.noise(n, self.device), y)
        self.samples_generated += n
        return x, y
