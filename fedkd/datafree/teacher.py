"""The teacher of a distillation: something that maps a batch to logits.

:class:`Teacher` wraps one trained classifier; :class:`EnsembleTeacher` averages several (the
federated server's clients), optionally with one weight per model *and class* -- FedFTG weights
each client's logit for class ``c`` by its share of the clients' samples of class ``c``.

Both freeze what they wrap (eval mode, ``requires_grad=False``): a teacher is never trained, its
BatchNorm layers always use their running statistics, and autograd never computes gradients for
its weights -- only, where a generator needs them, for its inputs. Wrap copies if the models must
be trained later.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from fedkd.datafree.class_weights import uniform_class_weights
from fedkd.errors import ConfigError, check_choice
from fedkd.models.base import batchnorm_layers


def _freeze(model: nn.Module) -> nn.Module:
    return model.eval().requires_grad_(False)


class Teacher(nn.Module):
    """One frozen classifier: ``teacher(x) -> logits``."""

    num_members = 1

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = _freeze(model)

    @property
    def members(self) -> list[nn.Module]:
        return [self.model]

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``x``; ``labels`` (what a conditional generator was asked for) only matter
        to an ensemble that weights its members by them."""
        return self.model(x)

    def train(self, mode: bool = True) -> Teacher:
        """A teacher stays in eval mode whatever its caller asks (BN uses running statistics)."""
        return super().train(False)

    def bn_layers(self) -> list[nn.modules.batchnorm._BatchNorm]:
        """BatchNorm layers of every member, for DeepInversion's statistics loss."""
        return [layer for m in self.members for layer in batchnorm_layers(m)]

    def per_member_calls(self, whole_batch: bool = True) -> contextlib.AbstractContextManager:
        """Context in which every member module is really called (so forward hooks on them fire); a
        single model always sees the whole batch."""
        return contextlib.nullcontext()


class EnsembleTeacher(Teacher):
    """Several frozen classifiers as one teacher.

    ``class_weights`` is (num_models, num_classes) with columns summing to 1 (``None``: the plain
    mean), used as ``weighting`` says:

    - ``"logit"``: ``logits[n, c] = sum_m class_weights[m, c] * logits_m[n, c]`` -- each class's
      logit from the members that hold that class;
    - ``"label"`` (FedFTG's class-level ensemble): for a sample generated for label ``y_n``,
      ``logits[n] = sum_m class_weights[m, y_n] * logits_m[n]`` -- the whole prediction of the
      members that hold ``y_n``, so logits of members with different scales are never mixed within
      one sample. Needs the labels (``teacher(x, labels)``); without them (real test data) it
      falls back to ``"logit"``;
    - ``"confidence"``: per sample, each member's label weight (as ``"label"``; uniform without
      labels) times its confidence on that sample (largest softmax probability), normalised over
      members: a client that has seen the label but is unsure of this sample counts less (in the
      spirit of the confidence-aware ensembles of FedDF's follow-ups and Co-Boosting).

    ``member_weights`` (Co-Boosting's ensemble weights, :meth:`set_member_weights`): one
    non-negative scalar per member that scales its weight for every class before the columns are
    normalised again, ``w'[m, c] = a_m w[m, c] / sum_k a_k w[k, c]`` (with no class weights:
    ``a_m / sum_k a_k``); ``None`` (the default) leaves the weights as they are.

    ``batched``: ``"auto"`` (default) evaluates members that share one architecture in a single
    vectorised call (parameters stacked, ``torch.func.functional_call`` under ``torch.func.vmap``)
    on CUDA, and one call per member on the CPU, where the loop measured faster (see
    docs/design_notes.md#ensemble-teacher-on-the-cpu); ``True`` demands the batched path on any device,
    ``False`` forces the loop.
    The stacked parameters are a snapshot: call :meth:`refresh` after changing a member's weights.

    ``sparse`` (default ``True``): with ``"label"`` weighting and labels, a member whose weight for
    a sample's label is 0 adds nothing to that sample's logits, so each member runs only on the rows
    whose label it holds (gathered, run, scattered back; the inputs keep their gradient). The
    result equals the dense one up to the order of a float sum -- members are frozen and in eval
    mode, so a sample's logits do not depend on the rest of the batch -- and a sample then costs as
    many member forwards as clients hold its label, not the whole ensemble (with Dirichlet-0.1
    clients about half of them; with a per-class cap, at most the cap). The dense path runs instead
    wherever the rows cannot be split: no labels, ``"logit"``/``"confidence"`` weighting, no class
    weights (the plain mean), inside :meth:`per_member_calls` unless it says otherwise (hooks that
    expect every member to see the whole batch: BN statistics, feature matching) and on the batched
    path. ``False`` always runs dense. :meth:`member_logits` is always dense.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        class_weights: torch.Tensor | np.ndarray | None = None,
        batched: bool | str = "auto",
        weighting: str = "logit",
        sparse: bool = True,
    ) -> None:
        nn.Module.__init__(self)
        self.sparse = bool(sparse)
        check_choice("ensemble weighting", weighting, WEIGHTINGS)
        self.weighting = weighting
        if len(models) == 0:
            raise ConfigError("an ensemble teacher needs at least one model; pass a non-empty list of models")
        self.ensemble = nn.ModuleList(_freeze(m) for m in models)
        self.num_members = len(models)
        if class_weights is not None:
            w = torch.as_tensor(np.asarray(class_weights), dtype=torch.float32)
            if w.dim() != 2 or w.shape[0] != len(models):
                raise ConfigError(
                    f"class_weights must have shape (num_models={len(models)}, num_classes) (got {tuple(w.shape)}); "
                    "build them with class_weights_from_counts(label_counts)"
                )
            if not torch.allclose(w.sum(0), torch.ones(w.shape[1]), atol=1e-4):
                raise ConfigError("class_weights columns must each sum to 1; build them with class_weights_from_counts")
            self.register_buffer("class_weights", w)
        else:
            self.class_weights = None
        same = _same_architecture(list(self.ensemble))
        self._cuda_only = batched == "auto"
        if batched == "auto":
            self.batched = same and len(models) > 1
        elif batched is True and not same:
            raise ConfigError("batched=True needs members of one architecture; use batched='auto' or False")
        else:
            self.batched = bool(batched)
        self.register_buffer("member_weights", None)  # a buffer: it follows the teacher's .to(device)
        self.member_weight_updates = 0  # set_member_weights calls so far (a boosting schedule decays with them)
        self._loop_only = 0  # per_member_calls contexts open
        self._whole_batch = 0  # of them, those that need every member on every sample
        self._stacked: tuple[dict, dict, torch.device] | None = None
        self._template: nn.Module | None = None

    @property
    def members(self) -> list[nn.Module]:
        return list(self.ensemble)

    def set_member_weights(self, weights: torch.Tensor | Sequence[float]) -> None:
        """Scale each member's weight by ``weights[m]`` (non-negative, not all zero); see the class doc."""
        w = torch.as_tensor(weights, dtype=torch.float32).detach()
        if w.shape != (self.num_members,) or (w < 0).any() or w.sum() <= 0:
            raise ConfigError(
                f"member weights must be {self.num_members} non-negative numbers, not all zero "
                f"(got shape {tuple(w.shape)})"
            )
        tensors = [*self.ensemble.parameters(), *self.ensemble.buffers()]
        self.member_weights = w.to(tensors[0].device if tensors else "cpu")
        self.member_weight_updates += 1

    def refresh(self) -> None:
        """Re-stack member parameters for the batched path (after their weights changed)."""
        self._stacked = None

    @contextlib.contextmanager
    def per_member_calls(self, whole_batch: bool = True) -> Iterator[None]:
        """Use the per-member loop inside this context: hooks on member modules (BN statistics) only
        fire when the members themselves are called, which the vectorised path does not do. With
        ``whole_batch`` every member sees every sample (the label-sparse path is off); without, the
        label-sparse path stays on and a member's hooks see only the rows of the labels it holds."""
        self._loop_only += 1
        self._whole_batch += int(whole_batch)
        try:
            yield
        finally:
            self._loop_only -= 1
            self._whole_batch -= int(whole_batch)

    def _batched_path(self, x: torch.Tensor) -> bool:
        return self.batched and not self._loop_only and (x.is_cuda or not self._cuda_only)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits, shape (num_models, N, num_classes)."""
        if self._batched_path(x):
            return self._batched_logits(x)
        return torch.stack([m(x) for m in self.ensemble])

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The ensemble's logits (label-sparse where that is exact, see the class doc)."""
        if (self.sparse and labels is not None and self.weighting == "label" and self.class_weights is not None
                and not self._whole_batch and not self._batched_path(x)):
            weights = self._weight_matrix(self.member_weights, torch.float32, self.class_weights.shape[1])
            return label_sparse_logits(list(self.ensemble), x, labels, weights)
        return self.combine(self.member_logits(x), labels)

    def combine(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor | None = None,
        weighting: str | None = None,
        member_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The ensemble's logits from its members' (``(M, N, C)``, :meth:`member_logits`), by
        ``weighting`` (default: the teacher's own); metrics use it to compare weightings on one
        pass. ``member_weights`` (default: the teacher's) may carry a gradient: Co-Boosting
        differentiates the ensemble's loss with respect to them."""
        weighting = weighting or self.weighting
        member_weights = self.member_weights if member_weights is None else member_weights
        weights = self._class_weights(member_weights, logits)
        if weighting == "confidence":
            return (logits * self._confidence_weights(logits, labels, weights, member_weights).unsqueeze(-1)).sum(0)
        if weights is None:
            return logits.mean(0)
        if weighting == "label" and labels is not None:
            return (logits * weights[:, labels].unsqueeze(-1)).sum(0)  # (M, N, 1): one weight per member and sample
        return (logits * weights.unsqueeze(1)).sum(0)

    def _class_weights(self, member_weights: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor | None:
        """(M, C) weights with columns summing to 1, the member weights folded in; ``None`` for the plain mean."""
        return self._weight_matrix(member_weights, logits.dtype, logits.shape[-1])

    def _weight_matrix(
        self, member_weights: torch.Tensor | None, dtype: torch.dtype, num_classes: int
    ) -> torch.Tensor | None:
        if member_weights is None:
            return None if self.class_weights is None else self.class_weights.to(dtype)
        base = self.class_weights
        if base is None:
            base = uniform_class_weights(self.num_members, num_classes).to(member_weights.device)
        scaled = member_weights.float().unsqueeze(1) * base
        totals = scaled.sum(0, keepdim=True)
        # A class whose every holder was weighted down to 0 keeps its unscaled weights.
        return torch.where(totals > 0, scaled / totals.clamp_min(1e-12), base).to(dtype)

    def _confidence_weights(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor | None,
        weights: torch.Tensor | None,
        member_weights: torch.Tensor | None,
    ) -> torch.Tensor:
        """(M, N) weights: each member's label weight (its share of the sample's intended label;
        without labels, its normalised member weight, or uniform) times its confidence on the sample
        (its largest softmax probability), normalised over members. The confidences are detached:
        they say whom to trust, the gradient a generator gets flows through the logits only."""
        members, n = logits.shape[:2]
        if weights is not None and labels is not None:
            base = weights[:, labels].float()
        elif member_weights is not None:
            base = (member_weights.float() / member_weights.float().sum()).unsqueeze(1).expand(members, n)
        else:
            base = torch.full((members, n), 1.0 / members, device=logits.device)
        confidence = logits.detach().float().softmax(-1).amax(-1)
        weighted = base * confidence
        return (weighted / weighted.sum(0, keepdim=True).clamp_min(1e-12)).to(logits.dtype)

    def _batched_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self._stacked is None or self._stacked[2] != x.device:
            params, buffers = stack_module_state(list(self.ensemble))
            params = {k: v.detach().to(x.device) for k, v in params.items()}
            buffers = {k: v.to(x.device) for k, v in buffers.items()}
            self._stacked = (params, buffers, x.device)
            # A parameter-free copy of one member serves as the template for functional_call.
            self._template = copy.deepcopy(self.ensemble[0]).to("meta").eval()
            for module in self._template.modules():  # deepcopy copies hooks; the template must run none
                module._forward_hooks.clear()
                module._forward_pre_hooks.clear()
        params, buffers, _ = self._stacked
        template = self._template

        def one(p: dict, b: dict, inp: torch.Tensor) -> torch.Tensor:
            return functional_call(template, (p, b), (inp,))

        return torch.vmap(one, in_dims=(0, 0, None))(params, buffers, x)


WEIGHTINGS = ("logit", "label", "confidence")


def label_sparse_logits(
    members: Sequence[nn.Module], x: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``sum_m weights[m, labels[n]] * members[m](x)[n]`` for every row ``n``, running each member
    only on the rows it has a non-zero weight for (all of ``x`` when that is every row). Exact for
    members whose rows do not interact (eval mode); differentiable with respect to ``x``."""
    per_row = weights.to(x.device)[:, labels]  # (M, N): each member's weight for each sample
    held = per_row != 0
    sizes = held.sum(1).tolist()  # one host sync for the whole batch
    rows, parts = [], []
    for m, (member, size) in enumerate(zip(members, sizes, strict=True)):
        if size == 0:
            continue
        index = torch.arange(len(x), device=x.device) if size == len(x) else held[m].nonzero().squeeze(1)
        logits = member(x if size == len(x) else x.index_select(0, index))
        rows.append(index)
        parts.append(logits * per_row[m, index].to(logits.dtype).unsqueeze(1))
    if not parts:
        raise ValueError("label_sparse_logits: no member holds any of the labels (every weight is 0)")
    out = parts[0].new_zeros((len(x), parts[0].shape[1]))
    return out.index_add(0, torch.cat(rows), torch.cat(parts))


def _same_architecture(models: list[nn.Module]) -> bool:
    first = models[0]
    shapes = {k: v.shape for k, v in first.state_dict().items()}
    return all(
        type(m) is type(first) and {k: v.shape for k, v in m.state_dict().items()} == shapes for m in models[1:]
    )


def as_teacher(teacher: nn.Module) -> Teacher:
    """Wrap a plain model as a :class:`Teacher`; pass a Teacher (or ensemble) through."""
    return teacher if isinstance(teacher, Teacher) else Teacher(teacher)
