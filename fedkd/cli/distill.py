"""``fedkd-distill``: data-free distillation of one teacher into a student (centralized mode).

    fedkd-distill dataset=fashion_mnist teacher.checkpoint=outputs/train/.../model.pt synthesizer=dfad
    fedkd-distill dataset=digits synthesizer=cmi            # no checkpoint: trains the teacher first

The student never sees the training data: it learns from the synthesizer's samples
(``conf/synthesizer/``). The test set is used only to report the student's accuracy per epoch (plots)
and at the end; the reported figure is the final student's.

After every epoch the run's whole state goes to ``train_state.pt`` (:mod:`fedkd.utils.run_state`):
student, optimiser, scheduler, synthesizer (generator, its optimiser, pool, memory bank), the
teacher's checkpoint path and SHA-256, RNG states. ``fedkd-distill <same overrides> resume=<run folder>``
continues there after the last complete epoch; a teacher the run trained is loaded from its
``teacher.pt``, and a teacher file whose bytes changed since the checkpoint is refused.
"""

from __future__ import annotations

import logging
import resource
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from fedkd.cli.common import RunContext, hydra_entry
from fedkd.config import check_centralized
from fedkd.data import DataBundle, Split
from fedkd.data.augment import batch_augmenter
from fedkd.data.evaluation import evaluation_split as data_evaluation_split
from fedkd.data.sanity import check_training_data
from fedkd.datafree import StudentRecipe, Synthesizer, Teacher, distill
from fedkd.datafree.epoch_watch import EpochWatch
from fedkd.datafree.student_terms import check_student_terms
from fedkd.datafree.synthesizers.base import state_bytes
from fedkd.datafree.synthesizers.real import needs_real_images
from fedkd.errors import ConfigError
from fedkd.federated.data import load_data
from fedkd.models import count_parameters, list_models, model_config, model_label
from fedkd.models.checkpoint import model_from_checkpoint, model_meta
from fedkd.models.sanity import build_checked
from fedkd.report.samples import by_class
from fedkd.training import evaluate, fit
from fedkd.training.optimizers import optimizer_factory
from fedkd.utils.checkpoint import save_model
from fedkd.utils.run_state import RunCheckpointer, RunState, training_parts

log = logging.getLogger("fedkd.distill")


def build_student(cfg: DictConfig, data: DataBundle) -> nn.Module:
    """The configured student; a one-line error when its name is not a registered classifier
    (your own class, ``student._target_=...``, is checked when it is built)."""
    name = model_label(cfg.student)
    if "_target_" not in model_config(cfg.student) and name not in list_models("classifier"):
        raise ConfigError(
            f"student.name '{name}' is not a registered classifier; "
            f"choose one of: {', '.join(list_models('classifier'))}"
        )
    try:
        return build_checked(cfg.student, data, f"student {name}")  # output width, input size
    except TypeError as exc:
        raise ConfigError(f"student '{name}' does not take these options ({exc}); fix the student config") from None


def build_synthesizer(cfg: DictConfig, data: DataBundle, device: torch.device) -> tuple[Synthesizer, StudentRecipe]:
    """Instantiate ``conf/synthesizer/<method>.yaml`` for this dataset and device; its ``student``
    node is the synthesizer's :attr:`~Synthesizer.recipe`, the run's :class:`StudentRecipe`."""
    factory = instantiate(cfg.synthesizer, _convert_="all")
    kwargs: dict[str, Any] = {"spec": data.spec, "device": device}
    if needs_real_images(factory):
        kwargs["train"] = data.train  # the data-driven reference (not data-free); its labels are dropped there
    try:
        synth = factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"the synthesizer config has an option its synthesizer does not take ({exc}); fix conf/synthesizer"
        ) from None
    return synth, synth.recipe


TEACHER_FILE = "teacher.pt"


def evaluation_split(cfg: DictConfig, data: DataBundle) -> tuple[str, Split]:
    """``(name, split)`` the run reports on (:func:`fedkd.data.evaluation.evaluation_split`); the
    student never trains on real data, so a holdout costs no training image (the teacher saw them)."""
    return data_evaluation_split(data, cfg.evaluate_on, int(cfg.holdout_size))


def load_or_train_teacher(
    cfg: DictConfig, data: DataBundle, ctx: RunContext, trained: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher from ``teacher.checkpoint``, or trained with the supervised loop when null.

    ``trained``: the run being resumed trained its teacher already; it is loaded from the run
    folder's ``teacher.pt`` instead of being trained again.
    """
    spec, device = data.spec, ctx.device
    split_name, split = evaluation_split(cfg, data)
    test = split.to(device)
    if trained:
        source = str(ctx.out_dir / TEACHER_FILE)
        model, _ = model_from_checkpoint(source, spec, expect={"image_size": spec.image_size})
        model.to(device)
    elif cfg.teacher.checkpoint:
        path = Path(cfg.teacher.checkpoint).expanduser()
        model, meta = model_from_checkpoint(path, spec, expect={"image_size": spec.image_size})
        if meta.get("dataset") not in (None, spec.name):
            log.warning("teacher checkpoint was trained on %s, distilling on %s", meta["dataset"], spec.name)
        model.to(device)
        source = str(path)
    else:
        model = build_checked(cfg.teacher.model, data, f"teacher.model {model_label(cfg.teacher.model)}").to(device)
        optimizer = optimizer_factory(instantiate(cfg.teacher.optim), "teacher.optim")(model.parameters())
        log.info("no teacher.checkpoint: training %s for %d epochs", model_label(cfg.teacher.model), cfg.teacher.epochs)
        fit(
            model, data.train, test, optimizer, cfg.teacher.epochs, cfg.teacher.batch_size, device,
            generator=ctx.generator, log=lambda epoch, m: ctx.logger.log(epoch, m, prefix="teacher/"),
            augment=batch_augmenter(cfg.teacher.augment.shift, cfg.teacher.augment.hflip),
        )
        source = str(ctx.out_dir / TEACHER_FILE)
        save_model(source, model, **model_meta(cfg.teacher.model, spec))
    accuracy = evaluate(model, test, device, cfg.eval_batch_size)["accuracy"]
    log.info("teacher %s: %s accuracy %.4f", source, split_name, accuracy)
    key = "teacher_accuracy" if split_name == "test" else f"teacher_{split_name}_accuracy"
    return model, {key: accuracy, "teacher_checkpoint": source}


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process (and peak CUDA memory when on a GPU), in MiB."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def run_distillation(cfg: DictConfig, ctx: RunContext, resume: RunState | None = None) -> dict[str, Any]:
    """The whole centralized run; writes student.pt, generator.pt, metrics.jsonl, summary.json.

    Checkpoints ``train_state.pt`` after every epoch; with ``resume`` (the run's state, loaded
    before ``ctx`` was created) continues after its last complete epoch.
    """
    check_centralized(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    data = load_data(cfg)  # loaded once per process: the preflight's bundle (fedkd.cli.inputs)
    spec, device = data.spec, ctx.device
    # Build what the config describes before any long work, so config mistakes fail at once.
    check_training_data(data)  # one class, NaN or constant images end here, before the first epoch
    student = build_student(cfg, data).to(device)
    synthesizer, recipe = build_synthesizer(cfg, data, device)
    terms = check_student_terms(instantiate(cfg.student_terms, _convert_="all"), "student_terms")
    trained_teacher = not cfg.teacher.checkpoint  # the run trains its teacher (saved as teacher.pt)
    teacher_model, teacher_info = load_or_train_teacher(cfg, data, ctx, trained=resume is not None and trained_teacher)
    teacher = Teacher(teacher_model)
    optimizer = optimizer_factory(instantiate(cfg.optim), "optim")(student.parameters())
    total = cfg.epochs * cfg.iterations_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total) if cfg.cosine_lr else None
    split_name, split = evaluation_split(cfg, data)
    test = split.to(device)
    acc_key, loss_key = f"{split_name}_accuracy", f"{split_name}_loss"
    log.info(
        "distilling into %s (%d parameters) with %s: %d epochs x %d iterations",
        model_label(cfg.student), count_parameters(student), type(synthesizer).__name__, cfg.epochs,
        cfg.iterations_per_epoch,
    )
    best = {"accuracy": -1.0, "epoch": 0}
    # The teacher is identified by its bytes, not only its path: a resume refuses a replaced one.
    checkpointer = RunCheckpointer(ctx.out_dir, cfg, "centralized", ctx.generator,
                                   inputs={"teacher": teacher_info["teacher_checkpoint"]})
    teacher_info["teacher_sha256"] = checkpointer.inputs["teacher"]["sha256"]

    def on_epoch(epoch: int, metrics: dict[str, float]) -> dict[str, float]:
        result = evaluate(student, test, device, cfg.eval_batch_size)
        row = {**metrics, acc_key: result["accuracy"], loss_key: result["loss"], "lr": optimizer.param_groups[0]["lr"]}
        ctx.logger.log(epoch, row)
        if cfg.preview_images > 0:
            samples, names = by_class(*synthesizer.labelled_preview(cfg.preview_images), spec)  # rows by class
            ctx.logger.images("synthetic", samples, epoch, spec.mean, spec.std, labels=names)
        if cfg.keep_best_on_test and result["accuracy"] > best["accuracy"]:
            best.update(accuracy=result["accuracy"], epoch=epoch)
            save_model(ctx.out_dir / "student_best_on_test.pt", student, **model_meta(cfg.student, spec), epoch=epoch)
        log.info("epoch %d: student %s accuracy %.4f", epoch, split_name, result["accuracy"])
        watch.after_epoch(epoch, result["accuracy"])  # the time left; a student stuck at chance
        extra = {acc_key: result["accuracy"], loss_key: result["loss"]}
        # Last, after everything that draws random numbers (the preview): the RNG states saved
        # are those the next epoch starts from.
        checkpointer.save(epoch, {
            **training_parts(student, optimizer, scheduler),
            "synthesizer": synthesizer.state_dict(),
            "student_terms": {name: term.state_dict() for name, term in terms.items()},
            "best": dict(best),
            "metrics": {**metrics, **extra},  # what distill() returns after this epoch
        })
        return extra

    start, previous = 1, None
    if resume is not None:
        parts = resume.parts
        resume.restore_training(student, optimizer, scheduler)
        synthesizer.load_state_dict(parts["synthesizer"])
        for name, term in terms.items():
            term.load_state_dict(parts.get("student_terms", {}).get(name, {}))
        best.update(parts["best"])
        start, previous = resume.epoch + 1, dict(parts["metrics"])
        resume.restore_rng(ctx.generator)  # last: building models drew random numbers
        log.info("resuming %s after epoch %d of %d", ctx.out_dir, resume.epoch, cfg.epochs)
    teacher_key = "teacher_accuracy" if split_name == "test" else f"teacher_{split_name}_accuracy"
    watch = EpochWatch(cfg.epochs, start, spec.num_classes, type(synthesizer).__name__, cfg.iterations_per_epoch,
                       teacher_accuracy=teacher_info.get(teacher_key), split=split_name, log=log)
    final = distill(
        student, teacher, synthesizer, optimizer, cfg.iterations_per_epoch,
        recipe=recipe, epochs=cfg.epochs, student_batch_size=cfg.student_batch_size, scheduler=scheduler,
        on_epoch=on_epoch,
        start_epoch=start, previous=previous, terms=list(terms.values()),
    )
    save_model(ctx.out_dir / "student.pt", student, **model_meta(cfg.student, spec))
    if synthesizer.generator is not None:
        node = cfg.synthesizer  # a wrapper (pseudo replay) keeps its base's generator under synthesizer.base
        while "generator" not in node and "base" in node:
            node = node.base
        generator_cfg = model_config(node.generator) if "generator" in node else {}
        save_model(ctx.out_dir / "generator.pt", synthesizer.generator, **model_meta(generator_cfg, spec),
                   kind="generator")
    wall = final["wall_time_s"]
    infix = "" if split_name == "test" else f"{split_name}_"
    summary: dict[str, Any] = {
        f"final_student_{infix}accuracy": final[acc_key],
        f"final_student_{infix}loss": final[loss_key],
        **teacher_info,
        "method": type(synthesizer).__name__,
        "iterations": total,
        "student_steps": int(final["student_samples"] // cfg.student_batch_size),
        "wall_time_s": wall,
        "synthetic_samples": int(final["samples_generated"]),
        "synthetic_samples_per_s": final["samples_generated"] / wall if wall > 0 else 0.0,
        "student_samples_per_s": final["student_samples"] / wall if wall > 0 else 0.0,
        "synthesizer_state_mb": state_bytes(synthesizer.state_dict()) / 2**20,
        "device": str(device),
        "threads": torch.get_num_threads(),
        **peak_memory_mb(device),
    }
    if cfg.keep_best_on_test:
        summary["best_on_test_student_accuracy"] = best["accuracy"]
        summary["best_on_test_epoch"] = best["epoch"]
    ctx.logger.summary(summary)
    log.info("final student %s accuracy %.4f; run folder %s", split_name, final[acc_key], ctx.out_dir)
    return summary


@hydra_entry("centralized")
def main(cfg: DictConfig, resume: RunState | None) -> None:
    """``fedkd-distill``; ``resume``: the run to continue, read once before Hydra wrote anything."""
    if resume is not None:
        resume.rewrite_metrics()  # before the run's logger opens metrics.jsonl
    ctx = RunContext.create(cfg)
    with ctx.logger:
        run_distillation(cfg, ctx, resume)


if __name__ == "__main__":
    main()
