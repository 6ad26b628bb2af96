"""One architecture group's global model in a FedFTG round: the student distilled from the ensemble.

:meth:`fedkd.strategies.fedftg.FedFTG.aggregate` calls :func:`distil_group` once per group. The
student starts where ``strategy.student_init`` says (the group's average by default) and learns from
the teacher on the synthesizer's samples (:func:`fedkd.datafree.distill`), except in warm-up rounds,
in which only the generator learns and the average stays. Then it may give way, in this order, to its
best state on the server's validation split (``keep_best_on_validation``) and to the average
(``safeguard``). Each step's figures go into the round's ``server`` metrics under the group's
``prefix``, its seconds into ``laps``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
from flwr.app import ArrayRecord

from fedkd.datafree import EnsembleTeacher, Synthesizer, distill
from fedkd.datafree.student_terms import StudentTerm
from fedkd.federated import records as R
from fedkd.federated.server_run import ServerRun
from fedkd.strategies.best_on_validation import BestOnValidation
from fedkd.strategies.server_checks import synthetic_agreement
from fedkd.strategies.server_teacher import load_model
from fedkd.training import evaluate
from fedkd.utils.timing import Laps


class DistillingServer(Protocol):
    """What :func:`distil_group` reads of the strategy (:class:`~fedkd.strategies.fedftg.FedFTG`'s options)."""

    server_run: ServerRun
    synthesizer: Synthesizer
    make_optimizer: Callable[..., torch.optim.Optimizer]
    iterations_per_round: int
    student_batch_size: int
    student_init: str
    students: Mapping[str, ArrayRecord]  # group key -> last round's student
    student_terms: Mapping[str, StudentTerm]
    freeze_bn_stats: bool
    warmup_rounds: int
    keep_best_on_validation: bool
    safeguard: float | None


def distil_group(
    strategy: DistillingServer, server_round: int, key: str, average: ArrayRecord, teacher: EnsembleTeacher,
    probe: Any, laps: Laps, server: dict[str, float], prefix: str,
) -> ArrayRecord:
    """Group ``key``'s global model for the round (``strategy`` is bound): its
    student distilled from ``teacher``, its best state on the validation split, or ``average`` (in
    warm-up rounds, or when the safeguard keeps it); the figures into ``server``."""
    run = strategy.server_run
    model_cfg = run.model_configs[key]
    start = {
        "average": average,
        "previous": strategy.students.get(key, average),
        "scratch": run.initial_group_arrays(key),
    }[strategy.student_init]
    student = load_model(run, model_cfg, start)
    if probe is not None:
        with laps("diagnostics"):
            before = evaluate(student, probe, run.device)["accuracy"]
    warmup = server_round <= strategy.warmup_rounds  # the generator learns, the student waits
    keeper = None
    if strategy.keep_best_on_validation and not warmup:
        with laps("validation"):
            keeper = BestOnValidation(student, run.validation, run.device)
    with laps("synthesis" if warmup else "distillation"):
        optimizer = None if warmup else strategy.make_optimizer(student.parameters())
        result = distill(
            student, teacher, strategy.synthesizer, optimizer, strategy.iterations_per_round,
            recipe=strategy.synthesizer.recipe, student_batch_size=strategy.student_batch_size, progress=False,
            desc=f"server r{server_round}", freeze_bn_stats=strategy.freeze_bn_stats,
            terms=list(strategy.student_terms.values()), train_student=not warmup, on_iteration=keeper,
        )
    if not warmup:
        laps.move("distillation", "synthesis", result["synthesis_s"])
    if keeper is not None:  # the best student on the validation split, the starting model included
        laps.move("distillation", "validation", keeper.seconds)
        server.update({f"{prefix}{k}": v for k, v in keeper.restore().items()})
    skip = ("wall_time_s", "synthesis_s", "student_s", *(("student_samples",) if warmup else ()))
    server.update({f"{prefix}{k}": float(v) for k, v in result.items() if k not in skip})
    if warmup:  # the round's global model is the average (reloaded: the generator's passes moved BN statistics)
        result_arrays, student = average, load_model(run, model_cfg, average)
    else:
        result_arrays = R.to_arrays(student.cpu())
        student.to(run.device)
        if strategy.safeguard is not None or probe is not None:
            average_model = load_model(run, model_cfg, average)
            with laps("safeguard" if strategy.safeguard is not None else "diagnostics"):
                check = synthetic_agreement(
                    strategy.synthesizer, teacher, average_model, student, strategy.student_batch_size
                )
            server.update({f"{prefix}{k}": v for k, v in check.items()})
            kept = strategy.safeguard is not None and check["average_teacher_agreement"] >= strategy.safeguard
            if kept:  # the average already predicts what the teacher does: nothing to learn, keep it
                result_arrays, student = average, average_model
            server[f"{prefix}safeguard_kept_average"] = float(kept)
    if probe is not None:
        with laps("diagnostics"):  # the round's global model: the student, or the average it started from
            after = evaluate(student, probe, run.device)["accuracy"]
        server.update({f"{prefix}student_accuracy_before": before, f"{prefix}student_accuracy_after": after,
                       f"{prefix}distillation_gain": after - before})
    return result_arrays
