"""The generator strategy's teacher: the ensemble of the remembered client models.

Each client's model joins with class-level weights from its label histogram (FedFTG) or uniform
weights; the round's FedAvg averages may join as extra members holding a fixed share of every
class (FedDF's ensemble of clients and global model). With a client memory the ensemble grows with
the population; :func:`select_members` caps it by what each client adds to the classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord
from torch import nn

from fedkd.datafree import EnsembleTeacher, class_weights_from_counts
from fedkd.datafree.class_weights import with_extra_members
from fedkd.federated import records as R
from fedkd.models import build_from_config
from fedkd.strategies.client_memory import RememberedUpdate
from fedkd.strategies.fedavg import ServerRun
from fedkd.strategies.updates import ClientUpdate

CLASS_WEIGHTINGS = ("label_counts", "uniform")


def load_model(run: ServerRun, model_cfg: dict[str, Any], arrays: ArrayRecord) -> nn.Module:
    """A model of ``model_cfg`` holding ``arrays``, on the run's device."""
    model = build_from_config(model_cfg, run.spec)
    model.load_state_dict(R.state_dict(arrays))
    return model.to(run.device)


def select_members(label_counts: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """For each class the ``per_class`` members with the most samples of it (ties: the earlier
    member, i.e. the round's replies before older ones); those that are chosen for no class are
    left out. Returns the kept members' indices (ascending) and their label counts with every
    class they were not chosen for set to 0 -- so the label weights built from them renormalise
    each class over its chosen members, and a member holds only the classes it was chosen for.

    Members with no sample of a class are never chosen for it: a class with fewer holders keeps
    all of them, a class nobody holds keeps nobody (and with no counts at all every member stays)."""
    counts = np.asarray(label_counts)
    if counts.ndim != 2 or per_class < 1:
        raise ValueError(
            f"select_members needs (members, classes) counts and per_class >= 1 (got {counts.shape}, {per_class})"
        )
    chosen = np.zeros(counts.shape, dtype=bool)
    for c in range(counts.shape[1]):
        order = np.argsort(-counts[:, c], kind="stable")[:per_class]
        chosen[order[counts[order, c] > 0], c] = True
    kept = np.flatnonzero(chosen.any(1))
    if len(kept) == 0:  # no histogram to choose by: the teacher stays whole
        return np.arange(len(counts)), counts
    return kept, np.where(chosen, counts, 0)[kept]


def ensemble_teacher(
    run: ServerRun,
    updates: Sequence[ClientUpdate | RememberedUpdate],
    averages: Mapping[str, ArrayRecord] | None = None,
    *,
    class_weighting: str = "label_counts",
    global_teacher_weight: float = 0.0,
    batched: bool | str = "auto",
    weighting: str = "label",
    members_per_class: int | None = None,
) -> EnsembleTeacher:
    """The clients' models as one teacher, weighted per class by their label counts
    (``class_weighting="label_counts"``) or uniformly; with ``global_teacher_weight`` > 0 the
    ``averages`` (one per architecture group) join with that share of every class.

    ``members_per_class`` (``None``: every update): only the clients :func:`select_members` keeps
    join, each weighted only for the classes it was chosen for (uniform weighting: the kept
    clients alike); the others' models are never loaded."""
    counts = np.stack([u.label_counts for u in updates])
    if members_per_class is not None:
        kept, counts = select_members(counts, members_per_class)
        updates = [updates[i] for i in kept]
    models = [load_model(run, run.model_configs[run.group_of(u.partition_id)], u.arrays) for u in updates]
    weights = None
    if class_weighting == "label_counts":
        weights = class_weights_from_counts(counts)
    if global_teacher_weight > 0 and averages:
        extra = [load_model(run, run.model_configs[key], arrays) for key, arrays in averages.items()]
        weights = with_extra_members(weights, len(models), len(extra), global_teacher_weight, run.spec.num_classes)
        models += extra
    return EnsembleTeacher(models, weights, batched=batched, weighting=weighting).to(run.device)
