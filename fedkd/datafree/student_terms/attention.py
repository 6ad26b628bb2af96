"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017), the student-side half of ZSKT
(Micaelli & Storkey, NeurIPS 2019).

The student matches the teacher's spatial attention maps -- the channel mean of squared
activations, L2-normalised per sample (:func:`~fedkd.datafree.losses.attention_map`) -- on pairs
of layers with the same spatial size; channel counts may differ. Loss:
:func:`~fedkd.datafree.losses.attention_transfer` (the released code's mean squared difference,
summed over the pairs; ZSKT weights it by ``beta = 250``).

Which layers: ZSKT pairs the outputs of its WRNs' three block groups, i.e. the last activation
each network computes at each spatial resolution. The default here is that rule for any pair of
models: during the first student step every module's 4-D output is recorded in the order the
modules finish, the last one at each spatial size is kept (LeNet-5: the ReLU/pool outputs at
28, 14, 10 and 5 pixels; ResNets: each stage's last block), and the sizes both models have are
paired, largest first. ``student_layers``/``teacher_layers`` name the modules explicitly instead
(paired in order; their spatial sizes must match).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedkd.datafree.losses import attention_transfer
from fedkd.datafree.student_terms.base import ForwardCapture, StudentBatch, StudentTerm
from fedkd.errors import ConfigError
from fedkd.utils.option_types import NonNegativeFloat

KEY = "student_terms.attention"
Size = tuple[int, int]


class _Recorder:
    """Every submodule's 4-D output in the latest forward of ``root``, in completion order
    (a pre-hook on ``root`` starts a new record). Only used until the layers are chosen."""

    def __init__(self, root: nn.Module) -> None:
        self.outputs: list[tuple[str, torch.Tensor]] = []
        self._handles = [root.register_forward_pre_hook(lambda *_: self.clear())]
        for name, module in root.named_modules():
            if module is not root:
                self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                self.outputs.append((name, output))

        return hook

    def clear(self) -> None:
        self.outputs = []

    def last_per_size(self) -> dict[Size, str]:
        """``{spatial size: name of the module that produced it last}``, sizes in first-seen order."""
        out: dict[Size, str] = {}
        for name, value in self.outputs:
            out[tuple(value.shape[2:])] = name  # a dict keeps the first-seen position; the last name wins
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _named(model: nn.Module, names: Sequence[str], key: str, side: str) -> list[nn.Module]:
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ConfigError(
            f"{key}: no module named {unknown[0]!r} in the {side}; "
            f"use names from model.named_modules() (e.g. {', '.join(list(modules)[1:6])})"
        )
    return [modules[n] for n in names]


class AttentionTransfer(StudentTerm):
    """Attention transfer on paired layers of the student and the teacher.

    Args:
        weight: the term's weight in the student's loss (ZSKT: ``beta = 250``).
        student_layers, teacher_layers: module names (``model.named_modules()``) whose 4-D outputs
            are paired in order; ``None`` (default): the last activation at each spatial size
            that both models have (see the module docstring). The teacher's names are those of
            the wrapped model(s) (``Teacher.members``).
        key_prefix: how the options are named in error messages (ZSKT passes ``synthesizer.at_``).

    A teacher with several members (``EnsembleTeacher``) is supported: the loss is the mean over
    members of each member's loss, which for this squared loss has the gradient of matching the
    members' mean attention map. An ensemble may evaluate its members without calling them (its
    vectorised path, which also copies the first member, hooks included): its members are
    therefore hooked only inside each step's term call, which runs them once more, one by one and
    without autograd, on the step's batch. A single teacher model is hooked for the whole run.
    """

    name = "attention"
    # re-runs only an ensemble's members (same input, no autograd): no hook another term reads changes
    calls_models = False

    def __init__(
        self,
        weight: NonNegativeFloat = 250.0,
        student_layers: Sequence[str] | None = None,
        teacher_layers: Sequence[str] | None = None,
        key_prefix: str = f"{KEY}.",
    ) -> None:
        super().__init__(weight)
        self.key_prefix = key_prefix
        if (student_layers is None) != (teacher_layers is None):
            raise ConfigError(
                f"{key_prefix}student_layers and {key_prefix}teacher_layers: give both or neither "
                "(neither: the last activation at each common spatial size)"
            )
        if student_layers is not None and (
            len(list(student_layers)) != len(list(teacher_layers)) or not list(student_layers)
        ):
            raise ConfigError(
                f"{key_prefix}student_layers has {len(list(student_layers))} names, {key_prefix}teacher_layers "
                f"{len(list(teacher_layers))}; list as many (at least one) of each"
            )
        self.student_layers = None if student_layers is None else [str(n) for n in student_layers]
        self.teacher_layers = None if teacher_layers is None else [str(n) for n in teacher_layers]
        self._teacher: nn.Module | None = None
        self._student: nn.Module | None = None
        self._members: list[nn.Module] = []
        self._transient = False  # hook the teacher's members only inside __call__ (ensembles)
        self._s_hook: _Recorder | ForwardCapture | None = None
        self._t_hooks: list[_Recorder | ForwardCapture] = []
        self._t_modules: list[list[nn.Module]] | None = None  # per member, once the layers are chosen
        self._pairs: list[list[tuple[int, int]]] = []  # per member: (student index, member index)
        self._checked = False

    # ------------------------------------------------------------------ hooks
    def attach(self, student: nn.Module, teacher: nn.Module) -> None:
        """Hook the student (and a single teacher model); every module until the layers are chosen."""
        self.detach()
        self._teacher, self._student = teacher, student
        self._members = list(getattr(teacher, "members", [teacher]))
        self._transient = len(self._members) > 1
        if self.student_layers is None:
            self._s_hook = _Recorder(student)
        else:
            s_modules = _named(student, self.student_layers, f"{self.key_prefix}student_layers", "student")
            self._t_modules = [
                _named(m, self.teacher_layers, f"{self.key_prefix}teacher_layers", "teacher") for m in self._members
            ]
            self._s_hook = ForwardCapture(s_modules)
            self._pairs = [[(i, i) for i in range(len(s_modules))] for _ in self._members]
        if not self._transient:
            self._hook_members()

    def _hook_members(self) -> None:
        if self._t_modules is None:
            self._t_hooks = [_Recorder(m) for m in self._members]
        else:
            self._t_hooks = [ForwardCapture(modules) for modules in self._t_modules]

    def _unhook_members(self) -> None:
        for hook in self._t_hooks:
            hook.remove()
        self._t_hooks = []

    def detach(self) -> None:
        """Remove every hook; the layer choice is made again at the next attach."""
        if self._s_hook is not None:
            self._s_hook.remove()
        self._unhook_members()
        self._s_hook, self._t_modules, self._pairs = None, None, []
        self._teacher = self._student = None
        self._checked = False

    # ------------------------------------------------------------------ loss
    def _choose(self) -> list[list[torch.Tensor]]:
        """Pick the default layers from the recorded step and switch to hooks on them only;
        returns this step's activations (student first, then per member)."""
        s_rec = self._s_hook
        s_sizes = s_rec.last_per_size()
        s_order = list(s_sizes)
        t_modules, pairs, t_values = [], [], []
        for rec, member in zip(self._t_hooks, self._members, strict=True):
            t_sizes = rec.last_per_size()
            common = [size for size in s_order if size in t_sizes]
            if not common:
                raise ConfigError(
                    f"{self.key_prefix}student_layers/teacher_layers: no spatial (4-D) activation size is shared by "
                    f"student {[f'{h}x{w}' for h, w in s_order]} and teacher {[f'{h}x{w}' for h, w in t_sizes]}; "
                    "name layers of equal spatial size explicitly"
                )
            t_named, modules = dict(rec.outputs), dict(member.named_modules())
            t_modules.append([modules[t_sizes[size]] for size in common])
            t_values.append([t_named[t_sizes[size]] for size in common])
            pairs.append([(s_order.index(size), j) for j, size in enumerate(common)])
        s_named, s_modules = dict(s_rec.outputs), dict(self._student.named_modules())
        s_values = [s_named[s_sizes[size]] for size in s_order]
        s_rec.remove()
        self._s_hook = ForwardCapture([s_modules[s_sizes[size]] for size in s_order])
        self._unhook_members()
        self._t_modules, self._pairs, self._checked = t_modules, pairs, True
        if not self._transient:
            self._hook_members()
        return [s_values, *t_values]

    def _check(self, values: list[list[torch.Tensor | None]]) -> None:
        """Explicit layers: each pair must be 4-D with equal spatial sizes (checked once)."""
        for member, pairs in enumerate(self._pairs):
            for i, j in pairs:
                s, t = values[0][i], values[1 + member][j]
                if s is None or t is None:
                    raise ConfigError(
                        f"{self.key_prefix}student_layers/teacher_layers: layer pair {i} ({self.student_layers[i]}, "
                        f"{self.teacher_layers[j]}) did not run in the forward pass; name modules the models call"
                    )
                if s.dim() != 4 or t.dim() != 4 or s.shape[2:] != t.shape[2:]:
                    raise ConfigError(
                        f"{self.key_prefix}student_layers/teacher_layers: layer pair {i} has student output "
                        f"{tuple(s.shape[1:])} and teacher output {tuple(t.shape[1:])}; "
                        "pair 4-D outputs of equal spatial size"
                    )
        self._checked = True

    def __call__(self, batch: StudentBatch) -> torch.Tensor:
        if self._teacher is None:
            raise RuntimeError("AttentionTransfer is not attached; the distillation loop calls attach() first")
        if self._transient:
            self._hook_members()
        try:
            if self._transient:
                with torch.no_grad(), self._teacher.per_member_calls():
                    self._teacher(batch.x, batch.labels)
            if self._t_modules is None:
                values = self._choose()
            else:
                values = [self._s_hook.values, *(hook.values for hook in self._t_hooks)]
                if not self._checked:
                    self._check(values)
            losses = [
                attention_transfer([values[0][i] for i, _ in pairs], [values[1 + m][j] for _, j in pairs])
                for m, pairs in enumerate(self._pairs)
            ]
        finally:
            if self._transient:
                self._unhook_members()
        return torch.stack(losses).mean()
