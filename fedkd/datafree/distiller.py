"""The one distillation loop, for every synthesizer, centralized and federated.

Each iteration runs the synthesizer's step (:meth:`Synthesizer.synthesize`), then the recipe's
``steps`` student updates on :meth:`Synthesizer.sample` batches, each minimising the student's
distance to the teacher's logits (the recipe's L1 or temperature-scaled KL) plus the weighted
student-side terms (:mod:`fedkd.datafree.student_terms`: the synthesizer's own, then the run's). The centralized entry
point calls :func:`distill` once for many epochs with a per-epoch evaluation callback; the
federated server calls it every round with a small budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from fedkd.datafree.losses import STUDENT_LOSSES
from fedkd.datafree.recipe import StudentRecipe
from fedkd.datafree.student_terms import StudentBatch, StudentTerm, ordered_terms
from fedkd.datafree.synthesizers.base import Synthesizer
from fedkd.datafree.teacher import as_teacher
from fedkd.errors import ConfigError
from fedkd.utils.device import autocast

EpochCallback = Callable[[int, dict[str, float]], "dict[str, float] | None"]


def set_student_mode(student: nn.Module, freeze_bn_stats: bool) -> None:
    """Training mode for the student; its BatchNorm layers in eval mode when ``freeze_bn_stats``."""
    student.train()
    if freeze_bn_stats:
        for module in student.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def distill(
    student: nn.Module,
    teacher: nn.Module,
    synthesizer: Synthesizer,
    optimizer: torch.optim.Optimizer | None,
    iterations_per_epoch: int,
    *,
    recipe: StudentRecipe,
    epochs: int = 1,
    student_batch_size: int = 256,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    on_epoch: EpochCallback | None = None,
    progress: bool = True,
    desc: str = "distill",
    freeze_bn_stats: bool = False,
    start_epoch: int = 1,
    previous: dict[str, float] | None = None,
    terms: Sequence[StudentTerm] = (),
    train_student: bool = True,
    on_iteration: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Distill ``teacher`` into ``student`` on ``synthesizer``'s samples; return the final metrics.

    Args:
        student: the model that learns (on the synthesizer's device).
        teacher: a model, :class:`~fedkd.datafree.teacher.Teacher` or ``EnsembleTeacher``.
        synthesizer: produces the inputs (and trains its generator).
        optimizer: the student's optimizer (``None`` only with ``train_student=False``).
        iterations_per_epoch: one synthesize call and ``recipe.steps`` updates each.
        recipe: how the student learns: updates per iteration, loss, temperature (the method's
            ``student`` node: the synthesizer's :attr:`~fedkd.datafree.Synthesizer.recipe`).
        epochs: epochs; ``on_epoch`` runs after each.
        student_batch_size: samples per student step.
        scheduler: stepped once per iteration (e.g. cosine over ``epochs * iterations_per_epoch``).
        on_epoch: ``on_epoch(epoch, metrics) -> extra metrics`` (evaluation, logging, saving).
        freeze_bn_stats: keep the student's BatchNorm running statistics as they are (BN layers in
            eval mode). For fine-tuning a model trained on real data (the federated server's
            FedAvg average): synthetic batches would otherwise overwrite the real-data statistics.
        start_epoch: the first epoch to run (resume: the one after the last checkpointed epoch;
            student, optimizer, scheduler, synthesizer and RNG states restored by the caller).
        previous: on resume, what this function returned after epoch ``start_epoch - 1`` (the
            checkpoint keeps it): its ``wall_time_s`` and ``samples_generated`` carry on, and it is
            returned as it is when no epoch is left to run.
        terms: student-side terms added to every student step, after the synthesizer's own
            (:meth:`Synthesizer.student_terms`); their mean losses are reported as ``term/<name>``.
        train_student: ``False`` runs only the synthesizer's steps (a fresh generator's warm-up
            against a student that does not move yet); the student's figures are then left out.
        on_iteration: ``on_iteration(n)`` after the ``n``-th iteration (counted over all epochs), its
            time outside the loop's figures: a check of the student between its updates (the
            federated server's choice on a validation split, FedDF's early stopping).

    Returns:
        The last epoch's mean losses (``student_loss`` and the synthesizer's), the mean norm of
        the student's gradient before clipping (``student_grad_norm``; ``recipe.grad_clip`` clips),
        ``samples_generated``, ``student_samples``, ``wall_time_s`` (time in the loop, callbacks
        excluded), the last epoch's split of its loop time into ``synthesis_s`` (in :meth:`Synthesizer.synthesize`) and
        ``student_s`` (the student steps, sampling included; on CUDA both are host-side times),
        and whatever the last ``on_epoch`` returned: the final student's figures, never the best seen.
    """
    from tqdm.auto import tqdm

    if not isinstance(recipe, StudentRecipe):
        raise TypeError(f"distill() takes recipe=StudentRecipe(...), not {type(recipe).__name__}")
    if iterations_per_epoch < 1 or epochs < 1 or student_batch_size < 1:
        raise ConfigError(
            f"iterations_per_epoch, epochs and student_batch_size must be >= 1 "
            f"(got {iterations_per_epoch}, {epochs}, {student_batch_size})"
        )
    if optimizer is None and train_student:
        raise TypeError("distill() needs the student's optimizer unless train_student=False")
    loss_fn = STUDENT_LOSSES[recipe.loss]
    temp, steps = recipe.temperature, recipe.steps if train_student else 0
    clip = float("inf") if recipe.grad_clip is None else float(recipe.grad_clip)
    teacher = as_teacher(teacher)
    device = synthesizer.device
    all_terms = ordered_terms([*synthesizer.student_terms(), *terms])
    # busy: seconds spent distilling (no callbacks); generated0: the synthesizer's count at epoch 1.
    metrics: dict[str, float] = dict(previous or {})
    busy = float(metrics.get("wall_time_s", 0.0))
    generated0 = synthesizer.samples_generated - int(metrics.get("samples_generated", 0))
    for term in all_terms:
        term.attach(student, teacher)
    try:
        for epoch in range(start_epoch, epochs + 1):
            sums: dict[str, float] = {}
            synthesis_s = 0.0  # seconds in synthesize() this epoch; the rest of the loop is the student's
            callback_s = 0.0  # seconds in on_iteration this epoch: not the loop's
            start = time.perf_counter()
            bar = tqdm(range(iterations_per_epoch), desc=f"{desc} {epoch}/{epochs}", disable=not progress,
                       dynamic_ncols=True, leave=False)
            for index in bar:
                # Before synthesis too: an adversarial generator's step runs the student (DFAD, ZSKT),
                # and with frozen statistics those passes must not move them either.
                set_student_mode(student, freeze_bn_stats)
                tick = time.perf_counter()
                row = synthesizer.synthesize(teacher, student)
                synthesis_s += time.perf_counter() - tick
                set_student_mode(student, freeze_bn_stats)  # a synthesizer may have switched it to eval
                total = torch.zeros((), device=device)
                grad_norms = torch.zeros((), device=device)
                term_totals = torch.zeros(len(all_terms), device=device)
                for _ in range(steps):
                    x, y = synthesizer.sample(student_batch_size)
                    with autocast(device):
                        with torch.no_grad():  # the teacher only labels the batch here
                            t_logits = teacher(x, y)  # y: the labels x was generated for (None if unknown)
                        s_logits = student(x)
                        step_loss = loss_fn(s_logits, t_logits, temp)
                        if all_terms:
                            batch = StudentBatch(x, y, s_logits, t_logits, student, teacher,
                                                 lambda s, t: loss_fn(s, t, temp), temp)
                            values = torch.stack([term(batch).float() for term in all_terms])
                            weights = torch.tensor([term.weight for term in all_terms], device=values.device)
                            step_loss = step_loss + (weights * values).sum()
                            term_totals += values.detach()
                    optimizer.zero_grad(set_to_none=True)
                    step_loss.backward()
                    # The norm before clipping (an infinite bound only measures it): a diagnostic.
                    grad_norms += torch.nn.utils.clip_grad_norm_(student.parameters(), clip).detach()
                    optimizer.step()
                    for term in all_terms:
                        term.step()
                    total += step_loss.detach()
                if scheduler is not None:
                    scheduler.step()
                if steps:
                    row["student_loss"] = total.item() / steps  # one sync per iteration
                    row["student_grad_norm"] = grad_norms.item() / steps
                    for term, value in zip(all_terms, term_totals.tolist(), strict=True):
                        row[f"term/{term.name}"] = value / steps
                for key, value in row.items():
                    sums[key] = sums.get(key, 0.0) + value
                bar.set_postfix({k: f"{v:.3g}" for k, v in row.items()})
                if on_iteration is not None:
                    tick = time.perf_counter()
                    on_iteration((epoch - 1) * iterations_per_epoch + index + 1)
                    callback_s += time.perf_counter() - tick
            tick = time.perf_counter()
            synthesizer.end_epoch()  # before on_epoch: a checkpoint saved there holds its effect
            synthesis_s += time.perf_counter() - tick
            epoch_s = time.perf_counter() - start - callback_s
            busy += epoch_s
            metrics = {k: v / iterations_per_epoch for k, v in sums.items()}
            metrics["synthesis_s"] = synthesis_s
            metrics["student_s"] = epoch_s - synthesis_s
            metrics["samples_generated"] = float(synthesizer.samples_generated - generated0)
            metrics["student_samples"] = float(epoch * iterations_per_epoch * steps * student_batch_size)
            metrics["wall_time_s"] = busy
            if on_epoch is not None:
                metrics.update(on_epoch(epoch, dict(metrics)) or {})
    finally:
        for term in all_terms:
            term.detach()
    return metrics
