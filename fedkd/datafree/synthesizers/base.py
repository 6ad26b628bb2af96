"""The one interface every synthesizer implements.

A synthesizer supplies the inputs a student is distilled on. The distiller
(:func:`fedkd.datafree.distiller.distill`) alternates::

    metrics = synthesizer.synthesize(teacher, student)     # update generator / fill a pool
    for _ in range(recipe.steps):
        x, y = synthesizer.sample(batch_size)              # inputs (+ optional target labels)
        ... student step on recipe.loss(student(x), teacher(x), recipe.temperature) ...

How the student learns (:class:`fedkd.datafree.StudentRecipe`: steps, loss, temperature) is the
method's ``student`` node: the synthesizer only keeps it (:attr:`Synthesizer.recipe`) for the entry
points to hand to the distiller.

Config: ``conf/synthesizer/<method>.yaml`` holds ``_target_`` (the class) and its keyword arguments,
one key per constructor argument (``student`` included); entry points call the instantiated partial
with ``spec`` and ``device``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.datafree import generators as _generators  # noqa: F401  (registers the generators)
from fedkd.datafree.recipe import StudentNode, StudentRecipe
from fedkd.datafree.student_terms import StudentTerm
from fedkd.errors import ConfigError
from fedkd.models.registry import build_model, list_models, model_config
from fedkd.utils.option_types import Supplied


def build_generator(cfg: Mapping[str, Any] | Any, spec: DatasetSpec) -> nn.Module:
    """Build a registered generator from ``{"name": ..., **kwargs}`` (plain dict or Hydra node)."""
    kwargs = model_config(cfg)
    name = kwargs.pop("name", None)
    if name not in list_models("generator"):
        raise ConfigError(
            f"generator name '{name}' is not a registered generator; "
            f"choose one of: {', '.join(list_models('generator'))}"
        )
    try:
        return build_model(name, spec, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"generator '{name}' does not take these options ({exc}); fix the generator config") from None


def state_bytes(state: Any) -> int:
    """Bytes of every tensor in a (nested) state dict: the memory a synthesizer carries between
    calls (generator and optimiser, a sample pool, a memory bank, a VAE)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, Mapping):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(state_bytes(v) for v in state)
    return 0


class Synthesizer(ABC):
    """Base class: produce training inputs for the student from the teacher (and the student).

    Args:
        spec, device: dataset spec and device.
        student: how the distiller trains the student with this method: a
            :class:`~fedkd.datafree.StudentRecipe`, the YAML's ``student`` node, or ``None`` (the defaults).
            Every subclass takes it, keyword-only, and passes it on.

    Attributes read by the distiller and the entry points:
        samples_generated: synthetic samples produced so far (every generator output counts).
        generator: the generator network, saved with the student (``None`` if there is none).
        recipe: the validated ``student`` argument (not part of :meth:`state_dict`: the config holds it).
    """

    generator: nn.Module | None = None

    def __init__(
        self, spec: Supplied[DatasetSpec], device: Supplied[torch.device | str] = "cpu", *, student: StudentNode = None
    ) -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.recipe: StudentRecipe = StudentRecipe.from_config(student)
        self.samples_generated = 0
        self.label_prior: torch.Tensor | None = None  # class probabilities for target labels

    @abstractmethod
    def synthesize(self, teacher: nn.Module, student: nn.Module) -> dict[str, float]:
        """Do the method's synthesis work (generator update, pool filling); return its losses."""

    @abstractmethod
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` inputs for a student step on the synthesizer's device, and their intended labels
        (``None`` when the method has none). Never tracks gradients."""

    def end_epoch(self) -> None:  # noqa: B027 -- a hook with nothing to do for most methods
        """Called by the distiller after each of its epochs (a federated server runs one per round):
        work a method does once per round, such as DFRD's moving average of its generator. Nothing
        by default."""

    def keeps_learning(self) -> bool:
        """Whether every :meth:`synthesize` call can still change what :meth:`sample` returns.

        ``False`` for a method whose generator is frozen after its first call (RDSKD's
        ``generator_steps=0``, the paper's schedule): fine for one fixed teacher, stale for the
        federated server, whose teacher changes every round (the server refuses it).
        """
        return True

    def keep_learning_override(self, key: str) -> str:
        """The override that makes a synthesizer configured at ``key`` keep learning (see
        :meth:`keeps_learning`); the error a caller raises quotes it. Methods that can stop say how."""
        return f"a {key} that keeps learning"

    def student_terms(self) -> list[StudentTerm]:
        """Student-side terms the method itself adds to every student step (ZSKT's attention
        transfer); the distiller puts the run's configured terms after them. None by default."""
        return []

    def preview(self, n: int = 64) -> torch.Tensor:
        """Samples to look at (TensorBoard grids); not counted in :attr:`samples_generated`."""
        return self.labelled_preview(n)[0]

    def labelled_preview(self, n: int = 64) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`preview` and the labels its samples were generated for (a conditional generator's),
        or ``None``: a method without labels, or one with its own :meth:`preview` (its samples as they are)."""
        if type(self).preview is not Synthesizer.preview:
            return self.preview(n), None
        count = self.samples_generated
        x, y = self.sample(n)
        self.samples_generated = count
        return x, y

    def set_label_prior(self, prior: Sequence[float] | np.ndarray | torch.Tensor | None) -> None:
        """Ask for target labels in proportion to ``prior``: per-class counts or probabilities (a
        2-D array of per-client counts is summed over clients); ``None`` means no preference.

        Methods that draw target labels (CMI, the conditional synthesizer) use it -- the federated
        server passes its clients' label counts, so classes nobody holds are never requested.
        Methods without labels (DFAD) ignore it.
        """
        if prior is None:
            self.label_prior = None
            return
        p = torch.as_tensor(np.asarray(prior), dtype=torch.float32)
        if p.dim() == 2:
            p = p.sum(0)
        if p.shape != (self.spec.num_classes,) or (p < 0).any() or p.sum() <= 0:
            raise ConfigError(
                f"label prior must hold {self.spec.num_classes} non-negative numbers with a positive sum "
                f"(got shape {tuple(p.shape)}); pass per-class label counts"
            )
        self.label_prior = (p / p.sum()).to(self.device)

    def target_labels(self, n: int, balanced: bool = True) -> torch.Tensor:
        """``n`` target labels: drawn from :attr:`label_prior` when set; otherwise every class
        equally often (``balanced``, in random order) or uniformly at random."""
        if self.label_prior is not None:
            return torch.multinomial(self.label_prior, n, replacement=True)
        c = self.spec.num_classes
        if balanced:
            return (torch.arange(n, device=self.device) % c)[torch.randperm(n, device=self.device)]
        return torch.randint(0, c, (n,), device=self.device)

    def state_dict(self) -> dict[str, Any]:
        """Everything the synthesizer carries from one :meth:`synthesize` call to the next, as
        tensors and plain values (a run's checkpoint; ``torch.load(weights_only=True)`` reads it
        back): the sample count, the label prior and the generator's weights. Subclasses with more
        state (an optimiser, a pool, a memory bank) extend it: ``{**super().state_dict(), ...}``,
        and :meth:`load_state_dict` alike -- or a resumed run differs from an uninterrupted one."""
        state: dict[str, Any] = {
            "samples_generated": int(self.samples_generated),
            "label_prior": None if self.label_prior is None else self.label_prior.detach().cpu(),
        }
        if self.generator is not None:
            state["generator"] = {k: v.detach().cpu() for k, v in self.generator.state_dict().items()}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned (tensors go to the synthesizer's device)."""
        self.samples_generated = int(state["samples_generated"])
        prior = state["label_prior"]
        self.label_prior = None if prior is None else prior.to(self.device)
        if self.generator is not None:
            self.generator.load_state_dict(state["generator"])
