"""RDSKD: Robustness and Diversity Seeking Data-Free KD (Han et al., ICASSP 2021, arXiv 2011.03749).

A DAFL-style generator is trained from the teacher alone (no student, no adversarial term) on
three objectives, none of them weighted by hand:

- sample authenticity: the teacher's cross-entropy to its own argmax (it should be certain),
- class diversity: the negative entropy of the batch-mean teacher softmax (all classes, evenly),
- inter-sample diversity: a mode-seeking ratio over pairs of samples from different latent codes,
  ``||p_a - p_b|| / ||x_a - x_b||`` (inputs must differ even where the teacher sees them alike).

Authenticity and class diversity pull against each other without real data, so their losses
fluctuate. RDSKD does not balance them with weights; each enters as ``exp(L - L_ref)``, where
``L_ref`` is a detached copy of the term taken on a schedule. Its gradient is
``exp(L - L_ref) * dL``: a term that climbed back above its reference gets an exponentially larger
weight, one that keeps falling fades. The paper's claim is robustness -- similar accuracy across
hyperparameters and seeds -- not a better peak.

Forms implemented, from the authors' public code (``generator-train.py``), where the paper's text
leaves details open:

- the mode-seeking term pairs the first half of each batch with the second (independent codes),
  with Frobenius norms over the half-batches, and is added as it is (no exponential penalty;
  ``penalize_mode_seeking=True`` puts it under one too);
- the reference is refreshed once per ``ref_interval`` generator steps (authors: once per epoch of
  120 steps). Here it is taken at the first step of each window, *before* that step's penalty, so
  the refresh step has penalty 1 and the first step of a run is neutral (the authors start from a
  reference of 0 for their first two steps);
- the schedule is generator-first: the generator trains for 20 x 120 = 2,400 steps at batch 512
  (``generator_warmup``), then is frozen (``generator_steps=0``) while the student learns with
  KL at T=10 from fresh samples of the generator in eval mode. ``generator_steps >= 1`` keeps
  training it in the alternating loop instead (the federated server, whose teacher changes every
  round, needs that).

The first :meth:`RDSKDSynthesizer.synthesize` call runs the whole warm-up (a long first iteration).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import torch
from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.datafree.losses import (
    argmax_cross_entropy,
    exp_increment_penalty,
    information_entropy,
    mode_seeking_ratio,
)
from fedkd.datafree.recipe import StudentNode
from fedkd.datafree.synthesizers.base import Synthesizer, build_generator
from fedkd.datafree.synthesizers.checks import check_betas
from fedkd.errors import ConfigError
from fedkd.utils.device import autocast
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import AdamBetas, NonNegativeInt, PositiveFloat, PositiveInt, Range, Supplied

TERMS = ("authenticity", "class_diversity", "mode_seeking")
"""The generator's loss terms, in the order of :attr:`RDSKDSynthesizer.reference`."""


class RDSKDSynthesizer(Synthesizer):
    """RDSKD's generator: authenticity + class diversity under exponential increment penalties,
    plus a mode-seeking term; trained generator-first, optionally on in the alternating loop.

    Args:
        spec, device, student: dataset spec, device and the student's recipe (:class:`~fedkd.datafree.Synthesizer`).
        generator: registry config of the generator (default ``dfad_generator``: DAFL's net, as
            in the authors' code).
        batch_size: samples per generator step, even (paper code: 512).
        lr, betas: Adam settings of the generator (paper code: 1e-3, PyTorch's default betas).
        generator_warmup: generator-only steps run by the first :meth:`synthesize` call
            (paper code: 20 epochs x 120 = 2,400).
        generator_steps: generator steps per later call; 0 freezes it after the warm-up (paper).
        ref_interval: generator steps between refreshes of the references (paper code: 120).
        penalize_mode_seeking: put the mode-seeking term under an exponential penalty too
            (paper code: no).

    Attributes:
        reference: the detached term values the penalties are measured from, order :data:`TERMS`.
        steps_done: generator steps so far, the clock of the reference schedule.
        warmed_up: whether the warm-up has run.
    """

    @checked("synthesizer")
    def __init__(
        self,
        spec: Supplied[DatasetSpec],
        device: Supplied[torch.device | str] = "cpu",
        generator: Mapping[str, Any] | None = None,
        batch_size: Annotated[int, Range(2)] = 512,
        lr: PositiveFloat = 1e-3,
        betas: AdamBetas = (0.9, 0.999),
        generator_warmup: NonNegativeInt = 2400,
        generator_steps: NonNegativeInt = 0,
        ref_interval: PositiveInt = 120,
        penalize_mode_seeking: bool = False,
        *,
        student: StudentNode = None,
    ) -> None:
        super().__init__(spec, device, student=student)
        if not isinstance(batch_size, int) or batch_size % 2:
            raise ConfigError(
                f"synthesizer.batch_size must be an even integer >= 2 (got {batch_size}): the mode-seeking term "
                "pairs each batch's first half with its second; set synthesizer.batch_size=<even number>"
            )
        if generator_warmup == 0 and generator_steps == 0:
            raise ConfigError(
                "synthesizer.generator_warmup and synthesizer.generator_steps are both 0, "
                "so the generator never learns; "
                "set synthesizer.generator_warmup=<steps> (paper: 2400) or synthesizer.generator_steps=1"
            )
        betas = check_betas(betas)
        self.generator = build_generator(generator or {"name": "dfad_generator"}, spec).to(self.device)
        self.batch_size = batch_size
        self.generator_warmup, self.generator_steps = generator_warmup, generator_steps
        self.ref_interval = ref_interval
        self.penalize_mode_seeking = bool(penalize_mode_seeking)
        self._params = [p for p in self.generator.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self._params, lr=lr, betas=betas)
        self.reference = torch.zeros(len(TERMS), device=self.device)
        self.steps_done = 0
        self.warmed_up = False
        self.last: dict[str, float] = {}  # the latest generator step's losses (reported while frozen)

    def generator_step(self, teacher: nn.Module) -> torch.Tensor:
        """One generator update; returns ``[loss, *terms]`` before the update (detached)."""
        z = self.generator.noise(self.batch_size, self.device)
        with autocast(self.device):
            x = self.generator(z)
            logits = teacher(x)
        half = self.batch_size // 2  # z[:half] and z[half:] are independent codes: pair i with half + i
        terms = torch.stack([
            argmax_cross_entropy(logits),
            information_entropy(logits),
            mode_seeking_ratio(x[:half], x[half:], logits[:half], logits[half:]),
        ])
        if self.steps_done % self.ref_interval == 0:
            self.reference = terms.detach().clone()
        penalties = exp_increment_penalty(terms, self.reference)
        loss = penalties[0] + penalties[1] + (penalties[2] if self.penalize_mode_seeking else terms[2])
        self.optimizer.zero_grad(set_to_none=True)
        # Only the generator learns: the teacher is frozen and the student takes no part.
        loss.backward(inputs=self._params)
        self.optimizer.step()
        self.steps_done += 1
        self.samples_generated += self.batch_size
        return torch.cat([loss.detach().view(1), terms.detach()])

    def keeps_learning(self) -> bool:
        """Only with ``generator_steps >= 1``: otherwise the generator is frozen after the warm-up."""
        return self.generator_steps > 0

    def keep_learning_override(self, key: str) -> str:
        return f"{key}.generator_steps=1"

    def synthesize(self, teacher: nn.Module, student: nn.Module) -> dict[str, float]:
        """The warm-up on the first call, then ``generator_steps`` steps; the latest step's losses.

        The student is not used: RDSKD's generator learns from the teacher alone.
        """
        from tqdm.auto import tqdm

        warmup = 0 if self.warmed_up else self.generator_warmup
        self.warmed_up = True
        self.generator.train()
        values = None
        # The warm-up is thousands of steps in one call (minutes on a CPU): it gets a bar of its own.
        for _ in tqdm(range(self.generator_steps + warmup), desc="RDSKD generator warm-up", disable=warmup == 0,
                      dynamic_ncols=True, leave=False):
            values = self.generator_step(teacher)
        if values is not None:  # one host sync per call
            loss, *terms = values.tolist()
            self.last = {"generator_loss": loss, **{f"loss_{name}": v for name, v in zip(TERMS, terms, strict=True)}}
        return dict(self.last)

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, None]:
        """Fresh samples, the generator in eval mode (its BN running statistics), as the authors'
        student training draws them."""
        self.generator.eval()
        with autocast(self.device):
            x = self.generator(self.generator.noise(n, self.device))
        self.samples_generated += n
        return x, None

    def state_dict(self) -> dict[str, Any]:
        """The base state plus the generator's Adam state and the reference schedule (references,
        step clock, warm-up flag) and the latest losses."""
        return {
            **super().state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "reference": self.reference.detach().cpu(),
            "steps_done": self.steps_done,
            "warmed_up": self.warmed_up,
            "last": dict(self.last),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.reference = state["reference"].to(self.device)
        self.steps_done = int(state["steps_done"])
        self.warmed_up = bool(state["warmed_up"])
        self.last = dict(state["last"])

