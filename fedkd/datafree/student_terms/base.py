"""Student-side terms: extra losses added to every student step of the one distillation loop.

A data-free method changes either *what* the student sees (a :class:`Synthesizer`) or *how* it
learns from a batch. The second kind lives here, so it combines with any synthesizer:

- activation regularisation (Qu et al., ICASSP 2021) reads hidden pre-activations of teacher and
  student through forward hooks it registers in :meth:`StudentTerm.attach`;
- virtual interpolation (same paper) builds convex combinations of the batch and asks the student
  to match the matching combination of the teacher's outputs;
- attention transfer (ZSKT) compares the spatial attention maps of matching blocks.

The loop (:func:`fedkd.datafree.distiller.distill`) calls, per run, ``attach(student, teacher)``
once and ``detach()`` at the end; per student step, after the teacher has labelled the batch and
the student has predicted it, ``term(batch)`` for every term (in list order, terms that read hooks
before those that call the models again, see :attr:`StudentTerm.calls_models`), adds
``term.weight * loss`` to the student's loss, and after the optimiser step calls
:meth:`StudentTerm.step` (a term with parameters of its own, e.g. a connector, updates them there).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedkd.errors import ConfigError
from fedkd.utils.option_types import NonNegativeFloat


@dataclass
class StudentBatch:
    """What a student step has computed when the terms run.

    Attributes:
        x: the inputs (on the synthesizer's device).
        labels: the labels ``x`` was generated for, or ``None``.
        student_logits: the student's logits of ``x`` (with autograd).
        teacher_logits: the teacher's logits of ``x`` (no autograd).
        student, teacher: the two models (the teacher frozen; it accepts ``(x, labels)``).
        loss_fn: the run's student loss, ``loss_fn(student_logits, teacher_logits) -> scalar``.
        temperature: the softmax temperature of the run's student loss.
    """

    x: torch.Tensor
    labels: torch.Tensor | None
    student_logits: torch.Tensor
    teacher_logits: torch.Tensor
    student: nn.Module
    teacher: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    temperature: float


class StudentTerm(ABC):
    """One extra loss on every student step.

    Attributes:
        name: the metric name of the term's mean loss (``term/<name>`` in the metrics).
        weight: the term's weight in the student's loss.
        calls_models: ``True`` when the term runs teacher or student again (which re-fires forward
            hooks); such terms run after those that only read hooks.
    """

    name: str = "term"
    calls_models: bool = False

    def __init__(self, weight: NonNegativeFloat = 1.0) -> None:
        if weight is None or not weight >= 0:
            raise ConfigError(
                f"the {self.name} term's weight must be >= 0 (got {weight}); set weight=<non-negative number>"
            )
        self.weight = float(weight)

    def attach(self, student: nn.Module, teacher: nn.Module) -> None:  # noqa: B027  (optional hook, a no-op by default)
        """Called once before the loop's first step (register hooks, build connectors)."""

    def detach(self) -> None:  # noqa: B027  (optional hook, a no-op by default)
        """Called once after the loop (remove hooks)."""

    @abstractmethod
    def __call__(self, batch: StudentBatch) -> torch.Tensor:
        """The term's (unweighted) loss on this batch, a scalar with autograd into the student."""

    def step(self) -> None:  # noqa: B027  (optional hook, a no-op by default)
        """Called after every student optimiser step (update the term's own parameters)."""

    def state_dict(self) -> dict[str, Any]:
        """The term's state across steps (for an exact resume); none by default."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: B027  (optional hook, a no-op by default)
        """Put back what :meth:`state_dict` returned."""


def check_student_terms(terms: Mapping[str, Any] | None, key: str) -> dict[str, StudentTerm]:
    """The instantiated ``student_terms`` config node as ``{name: term}``; a one-line error names
    an entry that is not a :class:`StudentTerm` (e.g. a config without ``_target_``)."""
    out: dict[str, StudentTerm] = {}
    for name, term in dict(terms or {}).items():
        if not isinstance(term, StudentTerm):
            raise ConfigError(
                f"{key}.{name} is not a student term (got {type(term).__name__}); "
                "pick one of conf/student_terms/ or give a _target_ that builds a fedkd StudentTerm"
            )
        out[str(name)] = term
    return out


def ordered_terms(terms: Sequence[StudentTerm]) -> list[StudentTerm]:
    """``terms`` with those that call the models again last (stable otherwise)."""
    return sorted(terms, key=lambda t: t.calls_models)


class ForwardCapture:
    """Keeps the latest output of each of ``modules`` (forward hooks) while attached.

    ``inputs=True`` keeps each module's first input instead (e.g. the pre-activation entering a
    ReLU), copied before the module runs: an in-place ReLU would otherwise overwrite it. The
    captured tensors keep their autograd graph, so a term can back-propagate into the student
    through them.
    """

    def __init__(self, modules: Sequence[nn.Module], inputs: bool = False) -> None:
        self.values: list[torch.Tensor | None] = [None] * len(modules)
        if inputs:
            self._handles = [m.register_forward_pre_hook(self._pre_hook(i)) for i, m in enumerate(modules)]
        else:
            self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)]

    def _hook(self, index: int):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self.values[index] = output

        return hook

    def _pre_hook(self, index: int):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            self.values[index] = args[0].clone()

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
