"""Activation regularisation (Qu et al., ICASSP 2021, "Enhancing Data-Free Adversarial
Distillation with Activation Regularization and Virtual Interpolation").

The student learns where the teacher's neurons switch on and off (activation boundaries) and
where its decision changes (decision boundaries), not only the teacher's logit values: generated
samples close to those boundaries then teach the student the most.

Forms implemented (the paper builds on Heo et al., AAAI 2019, "Knowledge Transfer via
Distillation of Activation Boundaries Formed by Hidden Neurons"):

- hidden layers: Heo's piecewise-differentiable activation-transfer loss
  (:func:`~fedkd.datafree.losses.activation_boundary_loss`) between the teacher's pre-activation
  and a *connector* of the student's (1x1 conv + BatchNorm for feature maps, linear + BatchNorm for
  vectors: Heo's connector, from the student's width to the teacher's), per element, averaged over
  the paired layers (Heo's own code weights deeper layers by powers of 2 and rescales the sum by
  ``3 / 1000 / batch``; a plain mean keeps the term near 1 at the start for any architecture, so one
  ``weight`` sets its scale).
- logits: the same hinge on the decision functions ``s_c - s_k`` of the teacher's predicted class
  ``c`` (:func:`~fedkd.datafree.losses.decision_boundary_loss`). The sign of a raw logit means
  nothing under a softmax (logits are shift-invariant), so the logit analogue of "the teacher's
  neuron is on" is "the teacher's decision is ``c`` rather than ``k``"; the student must take it
  with the margin, capped at the teacher's own gap (a student equal to the teacher scores 0), in a
  plain (not squared) hinge, since logits have no BatchNorm'd connector to bound their scale.
  Weighted by ``logit_weight`` (0 turns it off). This is the AB form carried over to the decision
  functions; it has not been checked against the paper's exact logit form.

The connectors are trained with their own Adam optimiser on the same loss (Heo trains them jointly
with the student); they and its state are in :meth:`ActivationRegularizer.state_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fedkd.datafree.losses import activation_boundary_loss, decision_boundary_loss
from fedkd.datafree.student_terms.base import ForwardCapture, StudentBatch, StudentTerm
from fedkd.errors import ConfigError
from fedkd.utils.option_types import NonNegativeFloat, PositiveFloat

KEY = "student_terms.activation"


class PreActivationCapture(ForwardCapture):
    """A :class:`ForwardCapture` of each module's *input*, copied before the module runs.

    ``ForwardCapture(inputs=True)`` reads the input after the forward: an in-place ReLU (the
    registry's LeNet-5) has already overwritten it with its output by then. A pre-hook clones it
    first. ``detach``: keep no autograd graph (the teacher's side).
    """

    def __init__(self, modules: Sequence[nn.Module], detach: bool = False) -> None:
        self.values = [None] * len(modules)
        self._handles = [m.register_forward_pre_hook(self._pre_hook(i, detach)) for i, m in enumerate(modules)]

    def _pre_hook(self, index: int, detach: bool):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach() if detach else args[0]
            self.values[index] = x.clone()

        return hook


def _layers(model: nn.Module, names: Sequence[str] | None, side: str) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the modules whose inputs are the pre-activations: the named ones, or
    every ``nn.ReLU`` in definition order."""
    modules = dict(model.named_modules())
    if names is None:
        return [(n, m) for n, m in modules.items() if isinstance(m, nn.ReLU)]
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ConfigError(
            f"{KEY}.{side}_layers: no module named {unknown[0]!r} in the {side}; "
            f"use names from model.named_modules() (e.g. {', '.join(n for n in list(modules)[1:6])})"
        )
    return [(n, modules[n]) for n in names]


class PointwiseConv(nn.Conv2d):
    """A bias-free 1x1 convolution computed as a channel matmul (``einsum``).

    The same parameters and state-dict keys as ``nn.Conv2d(c_in, c_out, 1, bias=False)``, and the
    same function; on the CPU the convolution kernels are several times slower than a matmul for
    the few channels a connector has (docs/design_notes.md#activation-regulariser-cost), and the
    connector runs at every student step.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("oc,nchw->nohw", self.weight.flatten(1), x)


def _connector(student_width: int, teacher_width: int, ndim: int) -> nn.Module:
    """Heo's connector: a 1x1 conv (feature maps) or linear map (vectors), then BatchNorm."""
    if ndim == 4:
        return nn.Sequential(PointwiseConv(student_width, teacher_width), nn.BatchNorm2d(teacher_width))
    return nn.Sequential(nn.Linear(student_width, teacher_width, bias=False), nn.BatchNorm1d(teacher_width))


class ActivationRegularizer(StudentTerm):
    """Activation-boundary transfer on paired hidden layers plus the decision-boundary logit term.

    Args:
        weight: the term's weight in the student's loss.
        margin: the hinge's margin (Heo et al.: 1.0), for hidden layers and logits alike.
        logit_weight: weight of the logit (decision-boundary) term inside this term; 0 turns it off.
        teacher_layers, student_layers: names (``model.named_modules()``) of the modules whose
            *inputs* are the pre-activations to match, paired in order. ``None`` (default): every
            ``nn.ReLU`` module, in definition order (teacher and student must have as many).
            The teacher's names are those of the wrapped model (``Teacher.members[0]``).
        connector_lr: Adam learning rate of the connectors.

    A teacher with several members (an ``EnsembleTeacher``, FedFTG's server) is supported when the
    members share one architecture (a server's clients, each started from the same global model, so
    their units correspond as federated averaging assumes): the hidden-layer loss is the mean over
    members of each member's loss through the same connectors -- the rule the attention term uses.
    The members are hooked only inside each step's term call, which runs them once more, one by one
    and without autograd (an ensemble's vectorised path does not call its members).
    """

    name = "activation"
    calls_models = False

    def __init__(
        self,
        weight: NonNegativeFloat = 1.0,
        margin: NonNegativeFloat = 1.0,
        logit_weight: NonNegativeFloat = 1.0,
        teacher_layers: Sequence[str] | None = None,
        student_layers: Sequence[str] | None = None,
        connector_lr: PositiveFloat = 1e-3,
    ) -> None:
        super().__init__(weight)
        for key, value in (("margin", margin), ("logit_weight", logit_weight)):
            if value is None or not value >= 0:
                raise ConfigError(f"{KEY}.{key} must be >= 0 (got {value}); set {key}=<non-negative number>")
        if connector_lr is None or not connector_lr > 0:
            raise ConfigError(
                f"{KEY}.connector_lr must be > 0 (got {connector_lr}); set connector_lr=<positive number>"
            )
        if (teacher_layers is None) != (student_layers is None):
            raise ConfigError(
                f"{KEY}: give both teacher_layers and student_layers, or neither (ReLU inputs, paired in order)"
            )
        if teacher_layers is not None and len(list(teacher_layers)) != len(list(student_layers)):
            raise ConfigError(
                f"{KEY}: teacher_layers has {len(list(teacher_layers))} names, "
                f"student_layers {len(list(student_layers))}; "
                "list as many student layers as teacher layers"
            )
        self.margin = float(margin)
        self.logit_weight = float(logit_weight)
        self.teacher_layers = None if teacher_layers is None else [str(n) for n in teacher_layers]
        self.student_layers = None if student_layers is None else [str(n) for n in student_layers]
        self.connector_lr = float(connector_lr)
        self.connectors: nn.ModuleList | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._specs: list[tuple[int, int, int]] = []  # (student width, teacher width, ndim) per layer
        self._teacher: nn.Module | None = None
        self._member_modules: list[list[nn.Module]] = []  # per teacher member, its hooked layers
        self._teacher_cap: PreActivationCapture | None = None  # a single teacher model's, for the whole run
        self._student_cap: PreActivationCapture | None = None

    def attach(self, student: nn.Module, teacher: nn.Module) -> None:
        """Hook the paired layers' inputs (the student's with autograd; a single teacher model's as
        detached copies for the whole run, an ensemble's members only inside each term call)."""
        members = list(getattr(teacher, "members", [teacher]))
        t_layers = [_layers(m, self.teacher_layers, "teacher") for m in members]
        s_layers = _layers(student, self.student_layers, "student")
        shapes = {tuple((n, type(m).__name__) for n, m in layers) for layers in t_layers}
        if len(shapes) > 1:
            raise ConfigError(
                f"{KEY} needs ensemble members of one architecture (got {len(shapes)} different layer lists); "
                "drop the activation term for mixed-architecture ensembles"
            )
        if not t_layers[0] or len(t_layers[0]) != len(s_layers):
            raise ConfigError(
                f"{KEY}: cannot pair {len(t_layers[0])} teacher layers with {len(s_layers)} student layers; "
                f"name them with {KEY}.teacher_layers=[...] and {KEY}.student_layers=[...] (equal length)"
            )
        self.detach()
        self._teacher = teacher
        self._member_modules = [[m for _, m in layers] for layers in t_layers]
        if len(members) == 1:
            self._teacher_cap = PreActivationCapture(self._member_modules[0], detach=True)
        self._student_cap = PreActivationCapture([m for _, m in s_layers])
        device = next(student.parameters()).device
        if self.connectors is not None and next(self.connectors.parameters()).device != device:
            self.connectors.to(device)
            # Parameters moved in place; loading the state again moves Adam's moments after them.
            self.optimizer.load_state_dict(self.optimizer.state_dict())

    def _member_pre_activations(self, batch: StudentBatch) -> list[list[torch.Tensor | None]]:
        """Per teacher member, the hooked layers' inputs on this step's batch."""
        if self._teacher_cap is not None:  # one model, hooked for the whole run
            return [self._teacher_cap.values]
        caps = [PreActivationCapture(modules, detach=True) for modules in self._member_modules]
        try:
            with torch.no_grad(), self._teacher.per_member_calls():
                self._teacher(batch.x, batch.labels)
        finally:
            for cap in caps:
                cap.remove()
        return [cap.values for cap in caps]

    def detach(self) -> None:
        """Remove the hooks (the connectors stay, for the next attach: FedFTG's next round)."""
        for cap in (self._teacher_cap, self._student_cap):
            if cap is not None:
                cap.remove()
        self._teacher_cap = self._student_cap = None

    def _build(self, specs: list[tuple[int, int, int]], device: torch.device) -> None:
        # Connector init must not draw from the global RNG: a resumed run builds them at another
        # point of the random stream than the uninterrupted one.
        with torch.random.fork_rng(devices=[]):
            connectors = nn.ModuleList(_connector(s, t, d) for s, t, d in specs)
        self._specs = list(specs)
        self.connectors = connectors.to(device)
        self.optimizer = torch.optim.Adam(self.connectors.parameters(), lr=self.connector_lr)

    def __call__(self, batch: StudentBatch) -> torch.Tensor:
        if self._student_cap is None:
            raise RuntimeError("ActivationRegularizer is not attached; the distillation loop calls attach() first")
        student_pre = self._student_cap.values
        members_pre = self._member_pre_activations(batch)
        if any(v is None for v in (*student_pre, *(v for pre in members_pre for v in pre))):
            raise RuntimeError("ActivationRegularizer: a hooked layer did not run in this step's forward passes")
        if self.connectors is None:
            specs = []
            for i, (t, s) in enumerate(zip(members_pre[0], student_pre, strict=True)):
                if t.dim() != s.dim() or t.dim() not in (2, 4) or t.shape[2:] != s.shape[2:]:
                    raise ConfigError(
                        f"{KEY}: layer pair {i} has teacher shape {tuple(t.shape[1:])} and student shape "
                        f"{tuple(s.shape[1:])}; pair layers of equal spatial size with teacher_layers/student_layers"
                    )
                specs.append((s.shape[1], t.shape[1], t.dim()))
            self._build(specs, student_pre[0].device)
        projected = [conn(s) for conn, s in zip(self.connectors, student_pre, strict=True)]
        losses = [activation_boundary_loss(p, t, self.margin)
                  for pre in members_pre for p, t in zip(projected, pre, strict=True)]
        loss = torch.stack(losses).mean()
        if self.logit_weight > 0:
            loss = loss + self.logit_weight * decision_boundary_loss(
                batch.student_logits, batch.teacher_logits, self.margin
            )
        return loss

    def step(self) -> None:
        """One Adam step of the connectors on the gradients the student's backward left them."""
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        """The connectors (weights, BatchNorm statistics), their Adam state and their shapes;
        empty before the first step built them."""
        if self.connectors is None:
            return {}
        return {"specs": [list(s) for s in self._specs], "connectors": self.connectors.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild the connectors from their recorded shapes and load their and Adam's state (on
        the CPU; :meth:`attach` moves them to the student's device)."""
        if not state:
            return
        self._build([tuple(int(v) for v in s) for s in state["specs"]], torch.device("cpu"))
        self.connectors.load_state_dict(state["connectors"])
        self.optimizer.load_state_dict(state["optimizer"])
