"""DeepInversion's BatchNorm-statistics hooks, active only inside a ``with`` block.

A trained network's BatchNorm layers remember the mean and variance of their inputs on the real
data. Synthesised inputs that reproduce those statistics at every layer look like the real data
to the network (Yin et al., 2020, "Dreaming to Distill"). The hooks record, at each forward pass
of the teacher, each BN layer's input statistics; :meth:`BNStatHooks.loss` compares them with the
running statistics. CMI also reads per-sample pooled BN inputs as the features of its
contrastive head (:meth:`BNStatHooks.features`).

The hooks exist only inside the ``with`` block: a synthesizer opens it around its synthesis steps,
so the student's distillation steps and every evaluation run the bare teacher::

    with BNStatHooks(teacher) as hooks:
        logits = teacher(x)
        loss = hooks.loss()
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from fedkd.datafree.losses import bn_statistics_loss
from fedkd.models.base import batchnorm_layers


class BNStatHooks:
    """Forward hooks on every BatchNorm layer of ``teacher`` (all members of an ensemble).

    Args:
        teacher: a :class:`~fedkd.datafree.teacher.Teacher`/``EnsembleTeacher`` or a plain model.
        features: also keep each sample's spatially pooled BN inputs (for :meth:`features`).
        first_layer_weight: weight of each member's first BN layer in :meth:`loss` (DeepInversion's
            authors weight it 10 in their ImageNet code: it constrains the pixel statistics most directly).
        label_sparse: let a label-weighted ensemble run each member only on the samples of the labels
            it holds (:class:`~fedkd.datafree.EnsembleTeacher`'s label-sparse path): each member's
            statistics are then those of the samples it was trained on the labels of, matched against
            its running statistics (which come from its own, label-skewed data), and the loss is the
            mean over the members that ran. ``False``: every member sees the whole batch.

    Set :attr:`stat_rows` to ``n`` to compute the statistics on the first ``n`` samples of the
    batch only (CMI passes two augmented views in one call and matches the statistics of the first).
    """

    def __init__(
        self, teacher: nn.Module, features: bool = False, first_layer_weight: float = 1.0, label_sparse: bool = False
    ) -> None:
        self.teacher = teacher
        self.label_sparse = bool(label_sparse)
        layers = teacher.bn_layers() if hasattr(teacher, "bn_layers") else batchnorm_layers(teacher)
        # Only layers that track running statistics have something to match.
        self.layers = [layer for layer in layers if layer.running_mean is not None]
        firsts, owner = set(), {}
        for m, member in enumerate(getattr(teacher, "members", [teacher])):
            tracked = [layer for layer in batchnorm_layers(member) if layer.running_mean is not None]
            if tracked:
                firsts.add(id(tracked[0]))
            owner.update({id(layer): m for layer in tracked})
        self.layer_weights = [first_layer_weight if id(layer) in firsts else 1.0 for layer in self.layers]
        self.layer_members = [owner.get(id(layer), 0) for layer in self.layers]  # which member a layer is in
        self.num_members = getattr(teacher, "num_members", 1)
        self.keep_features = features
        self.stat_rows: int | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._features: dict[int, torch.Tensor] = {}
        self._calls = contextlib.ExitStack()

    @property
    def active(self) -> bool:
        return bool(self._handles)

    @property
    def feature_dim(self) -> int:
        """Length of a sample's feature vector: the summed channel counts of all BN layers."""
        return sum(layer.num_features for layer in self.layers)

    def __enter__(self) -> BNStatHooks:
        # An ensemble's vectorised path never calls member modules; hooks need the per-member path.
        if hasattr(self.teacher, "per_member_calls"):
            self._calls.enter_context(self.teacher.per_member_calls(whole_batch=not self.label_sparse))
        if self.label_sparse:  # each call starts afresh: a member it skips leaves no earlier call's statistics
            self._handles.append(self.teacher.register_forward_pre_hook(lambda *_: self._stats.clear()))
        for i, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_hook(self._make_hook(i)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._stats.clear()
        self._features.clear()
        self._calls.close()

    def _make_hook(self, index: int):
        def hook(
            module: nn.modules.batchnorm._BatchNorm, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
        ) -> None:
            # Record the statistics of this layer's input for the loss (float32: bf16 under autocast).
            x = inputs[0].float()
            dims = [0, *range(2, x.dim())]
            rows = x if self.stat_rows is None else x[: self.stat_rows]
            self._stats[index] = (rows.mean(dims), rows.var(dims, unbiased=False))
            if self.keep_features:
                self._features[index] = x.mean(dims[1:]) if x.dim() > 2 else x

        return hook

    def loss(self) -> torch.Tensor:
        """BN-statistics loss of the last forward pass: summed over layers, averaged over the members
        that ran (all of them unless ``label_sparse``)."""
        if not self._stats:
            return torch.zeros(())
        idx = sorted(self._stats)
        means = [self._stats[i][0] for i in idx]
        variances = [self._stats[i][1] for i in idx]
        running_means = [self.layers[i].running_mean for i in idx]
        running_vars = [self.layers[i].running_var for i in idx]
        weights = [self.layer_weights[i] for i in idx]
        members = len({self.layer_members[i] for i in idx}) if self.label_sparse else self.num_members
        return bn_statistics_loss(means, variances, running_means, running_vars, weights) / members

    def features(self) -> torch.Tensor:
        """Per-sample pooled inputs of all BN layers of the last forward pass, (N, feature_dim)."""
        if not self.keep_features:
            raise RuntimeError("BNStatHooks(features=True) is needed to read features")
        return torch.cat([self._features[i] for i in sorted(self._features)], dim=1)
