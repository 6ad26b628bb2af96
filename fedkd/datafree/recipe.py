"""How the distiller trains the student: one home for the student's steps, loss and temperature.

Each method's YAML (``conf/synthesizer/<method>.yaml``) carries its recipe in a ``student`` node
next to the synthesizer's own settings::

    student:
      steps: 5          # student updates per synthesis step
      loss: l1          # distance to the teacher's logits: l1 or kl
      temperature: 1.0  # softmax temperature of the kl loss
      grad_clip: null   # largest norm of the student's gradient per update (null: no clipping)

Like every other key of the YAML, the node is a constructor argument: the synthesizer validates it
into its :attr:`~fedkd.datafree.Synthesizer.recipe`, which the entry points hand to
:func:`fedkd.datafree.distill`. A wrapper (pseudo replay, ensemble boosting) has a node of its own,
which its YAML interpolates from the base's key by key; the wrapper's recipe is the one that counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from fedkd.datafree.losses import STUDENT_LOSSES
from fedkd.errors import ConfigError


@dataclass(frozen=True)
class StudentRecipe:
    """The student's side of a distillation iteration.

    Attributes:
        steps: student updates per :meth:`~fedkd.datafree.Synthesizer.synthesize` call (>= 1).
        loss: the student's distance to the teacher's logits, a name of
            :data:`fedkd.datafree.losses.STUDENT_LOSSES` (``"l1"``, ``"kl"``).
        temperature: softmax temperature of the ``"kl"`` loss (> 0; ``"l1"`` ignores it).
        grad_clip: the largest norm of the student's whole gradient per update (``None``: no
            clipping). ``T**2``-scaled KL at ``T = 20`` gives gradients about ``T`` times those of a
            cross-entropy, so SGD at lr 0.1 sits near its stability edge and an extra student term
            can tip a run into a dead student (docs/design_notes.md#student-gradient-clipping).
        key: the config node the values came from, for error messages (not compared).
    """

    steps: int = 1
    loss: str = "kl"
    temperature: float = 1.0
    grad_clip: float | None = None
    key: str = field(default="synthesizer.student", compare=False, repr=False)

    def __post_init__(self) -> None:
        k = self.key
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(
                f"{k}.steps must be an integer >= 1 (got {self.steps!r}); set {k}.steps=<student updates per step>"
            )
        if self.loss not in STUDENT_LOSSES:
            raise ConfigError(f"{k}.loss '{self.loss}' is unknown; set {k}.loss to one of: {', '.join(STUDENT_LOSSES)}")
        temperature = self.temperature
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
            raise ConfigError(
                f"{k}.temperature must be > 0 (got {temperature!r}); set {k}.temperature=<positive number>"
            )
        clip = self.grad_clip
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, int | float) or not clip > 0):
            raise ConfigError(
                f"{k}.grad_clip must be > 0 or null (got {clip!r}); set {k}.grad_clip=<largest gradient norm>"
            )

    @classmethod
    def from_config(cls, node: StudentNode, key: str = "synthesizer.student") -> StudentRecipe:
        """The recipe of a ``student`` config node (plain dict or Hydra node; ``None``: the defaults;
        a recipe: itself). A key that is not a recipe setting is a one-line :class:`ConfigError` naming it."""
        if isinstance(node, StudentRecipe):
            return node
        if node is None:
            return cls(key=key)
        if not isinstance(node, Mapping):
            raise ConfigError(f"{key} must be a node of steps, loss and temperature (got {node!r}); fix {key}")
        names = [f.name for f in fields(cls) if f.name != "key"]
        unknown = sorted(str(k) for k in node if k not in names)
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]} is not a student setting; the student node takes {', '.join(names)}")
        return cls(**{str(k): v for k, v in node.items()}, key=key)


#: What a synthesizer's ``student`` argument may be: a recipe, its config node, or ``None`` (the defaults).
StudentNode = StudentRecipe | Mapping[str, Any] | None
