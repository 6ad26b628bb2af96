"""A synthesizer that adds to another one: the base of pseudo replay and ensemble boosting.

A wrapper holds a *base* synthesizer (any method of ``conf/synthesizer/``) and changes one part of
what it does -- what is sampled (:class:`~fedkd.datafree.PseudoReplaySynthesizer`) or what happens
after each synthesis step (:class:`~fedkd.datafree.EnsembleBoosting`). Everything else is the
base's: its generator, its label prior, its sample count, its student terms, its samples.

Config: the wrapper's YAML composes the base method's YAML as ``synthesizer.base``
(``defaults: [/synthesizer@base: dfad, _self_]``) and its ``student`` node interpolates the base's
key by key, so ``synthesizer.student.steps=..`` and ``synthesizer.base.student.steps=..`` both set
the recipe. The wrapper's :attr:`recipe` is its own node's, the one the distiller follows (the base
keeps its copy, unused).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.datafree.recipe import StudentNode, StudentRecipe
from fedkd.datafree.student_terms import StudentTerm
from fedkd.datafree.synthesizers.base import Synthesizer
from fedkd.errors import ConfigError
from fedkd.utils.option_types import Supplied


class SynthesizerWrapper(Synthesizer):
    """Delegates everything to ``self.base``; subclasses override the part they change.

    Args:
        spec, device: dataset spec and device.
        base: the wrapped synthesizer, built or as ``base(spec=..., device=...) -> Synthesizer``
            (Hydra's partial of ``conf/synthesizer/<method>.yaml``).
        base_overrides: keys the wrapper does not know, passed on to an unbuilt ``base``
            (``+synthesizer.batch_size=64`` reaches the base as ``synthesizer.base.batch_size=64`` does).
        student: the wrapper's own recipe (its ``student`` node), kept as :attr:`recipe`.
    """

    def __init__(
        self,
        spec: Supplied[DatasetSpec],
        device: Supplied[torch.device | str],
        base: Synthesizer | Callable[..., Synthesizer] | None,
        base_overrides: Mapping[str, Any] | None = None,
        *,
        student: StudentNode = None,
    ) -> None:
        # Synthesizer.__init__ is not called: the sample count and the label prior are the base's.
        self.spec, self.device = spec, torch.device(device)
        self.recipe = StudentRecipe.from_config(student)
        self.base = self._build_base(base, dict(base_overrides or {}))

    def _build_base(self, base: Any, overrides: dict[str, Any]) -> Synthesizer:
        if base is None:
            raise ConfigError(
                "synthesizer.base is missing; compose a base method, e.g. defaults: [/synthesizer@base: dfad, _self_]"
            )
        if not isinstance(base, Synthesizer):
            if not callable(base):
                raise ConfigError(
                    f"synthesizer.base must be a synthesizer config with _partial_: true (got {type(base).__name__}); "
                    "fix synthesizer.base"
                )
            try:
                base = base(spec=self.spec, device=self.device, **overrides)
            except TypeError as exc:
                raise ConfigError(
                    f"synthesizer.base does not take these options ({exc}); fix synthesizer.base or the override"
                ) from None
            if not isinstance(base, Synthesizer):
                raise ConfigError(
                    f"synthesizer.base built a {type(base).__name__}, not a Synthesizer; "
                    "point synthesizer.base._target_ at one"
                )
        elif overrides:
            raise ConfigError(
                f"synthesizer.{min(overrides)} is not a setting of the wrapper and the base is already built; "
                "set it on the base"
            )
        if base.device != self.device:
            raise ConfigError(
                f"synthesizer.base is on {base.device}, the wrapper on {self.device}; build both for one device"
            )
        return base

    # ------------------------------------------------------------------ the base's
    @property
    def generator(self) -> nn.Module | None:  # type: ignore[override]
        return self.base.generator

    @property
    def label_prior(self) -> torch.Tensor | None:
        return self.base.label_prior

    @label_prior.setter
    def label_prior(self, prior: torch.Tensor | None) -> None:
        self.base.label_prior = prior

    @property
    def samples_generated(self) -> int:
        return self.base.samples_generated

    def set_label_prior(self, prior: Sequence[float] | np.ndarray | torch.Tensor | None) -> None:
        self.base.set_label_prior(prior)

    def keeps_learning(self) -> bool:
        return self.base.keeps_learning()

    def keep_learning_override(self, key: str) -> str:
        return self.base.keep_learning_override(f"{key}.base")

    def student_terms(self) -> list[StudentTerm]:
        """The base method's own student terms."""
        return self.base.student_terms()

    def synthesize(self, teacher: nn.Module, student: nn.Module) -> dict[str, float]:
        return self.base.synthesize(teacher, student)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.base.sample(n)

    def end_epoch(self) -> None:
        self.base.end_epoch()

    def preview(self, n: int = 64) -> torch.Tensor:
        return self.base.preview(n)

    def labelled_preview(self, n: int = 64) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The base's, unless the wrapper changes what a preview holds (its own :meth:`preview`)."""
        if type(self).preview is not SynthesizerWrapper.preview:
            return self.preview(n), None
        return self.base.labelled_preview(n)

    def state_dict(self) -> dict[str, Any]:
        """The base's state under ``"base"``; subclasses add theirs."""
        return {"base": self.base.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.base.load_state_dict(state["base"])
