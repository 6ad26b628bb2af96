"""The generator strategy's teacher: the ensemble of the remembered client models.

Each client's model joins with class-level weights from its label histogram (FedFTG) or uniform
weights; the round's FedAvg averages may join as extra members holding a fixed share of every
class (FedDF's ensemble of clients and global model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord
from torch import nn

from fedkd.datafree import EnsembleTeacher, class_weights_from_counts
from fedkd.datafree.teacher import with_extra_members
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


def ensemble_teacher(
    run: ServerRun,
    updates: Sequence[ClientUpdate | RememberedUpdate],
    averages: Mapping[str, ArrayRecord] | None = None,
    *,
    class_weighting: str = "label_counts",
    global_teacher_weight: float = 0.0,
    batched: bool | str = "auto",
    weighting: str = "label",
) -> EnsembleTeacher:
    """The clients' models as one teacher, weighted per class by their label counts
    (``class_weighting="label_counts"``) or uniformly; with ``global_teacher_weight`` > 0 the
    ``averages`` (one per architecture group) join with that share of every class."""
    models = [load_model(run, run.model_configs[run.group_of(u.partition_id)], u.arrays) for u in updates]
    weights = None
    if class_weighting == "label_counts":
        weights = class_weights_from_counts(np.stack([u.label_counts for u in updates]))
    if global_teacher_weight > 0 and averages:
        extra = [load_model(run, run.model_configs[key], arrays) for key, arrays in averages.items()]
        weights = with_extra_members(weights, len(models), len(extra), global_teacher_weight, run.spec.num_classes)
        models += extra
    return EnsembleTeacher(models, weights, batched=batched, weighting=weighting).to(run.device)
