"""``fedkd-train``: train one model on one dataset (a baseline, or a teacher for distillation).

    fedkd-train dataset=fashion_mnist model=lenet5 epochs=10
    fedkd-train dataset=fashion_mnist model=lenet5 epochs=10 resume=outputs/train/<run>   # after a crash

After every epoch the run's whole state goes to ``train_state.pt`` (:mod:`fedkd.utils.run_state`);
``resume=<run folder>`` continues there after the last complete epoch.
"""

from __future__ import annotations

import logging

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from fedkd.cli.common import RunContext, hydra_entry
from fedkd.config import check_train
from fedkd.data.augment import batch_augmenter
from fedkd.data.sanity import check_training_data
from fedkd.federated.data import load_data
from fedkd.models import count_parameters, model_label
from fedkd.models.checkpoint import model_meta
from fedkd.models.sanity import build_checked
from fedkd.training import fit
from fedkd.training.optimizers import optimizer_factory
from fedkd.utils.checkpoint import save_model
from fedkd.utils.run_state import RunCheckpointer, RunState, training_parts

log = logging.getLogger("fedkd.train")


def train(cfg: DictConfig, ctx: RunContext, resume: RunState | None = None) -> dict[str, float]:
    """Train the configured model; save ``model.pt`` in the run folder; return final metrics.

    Checkpoints ``train_state.pt`` after every epoch; with ``resume`` (the run's state, loaded
    before ``ctx`` was created) continues after its last complete epoch.
    """
    check_train(cfg)
    data = load_data(cfg)  # loaded once per process: the preflight's bundle (fedkd.cli.inputs)
    check_training_data(data)  # one class, NaN or constant images end here, before the first epoch
    model = build_checked(cfg.model, data, f"model {model_label(cfg.model)}").to(ctx.device)  # output width, size
    optimizer = optimizer_factory(instantiate(cfg.optim), "optim")(model.parameters())
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs) if cfg.cosine_lr else None
    checkpointer = RunCheckpointer(ctx.out_dir, cfg, "train", ctx.generator)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        checkpointer.save(epoch, {**training_parts(model, optimizer, scheduler), "metrics": dict(metrics)})

    start, final = 1, {}
    if resume is not None:
        resume.restore_training(model, optimizer, scheduler)
        start, final = resume.epoch + 1, dict(resume.parts["metrics"])
        resume.restore_rng(ctx.generator)  # last: building the model drew random numbers
        log.info("resuming %s after epoch %d of %d", ctx.out_dir, resume.epoch, cfg.epochs)
    log.info("training %s (%d parameters) on %s (%d samples)", model_label(cfg.model), count_parameters(model),
             data.spec.name, len(data.train))
    final = fit(
        model, data.train, data.test.to(ctx.device), optimizer, cfg.epochs, cfg.batch_size, ctx.device,
        generator=ctx.generator, cosine_lr=cfg.cosine_lr, log=ctx.logger.log,
        scheduler=scheduler, start_epoch=start, on_epoch=on_epoch,
        augment=batch_augmenter(cfg.augment.shift, cfg.augment.hflip),
    ) or final
    save_model(ctx.out_dir / "model.pt", model, **model_meta(cfg.model, data.spec))
    ctx.logger.summary({"final_test_accuracy": final["test_accuracy"], "final_test_loss": final["test_loss"]})
    log.info("final test accuracy %.4f; checkpoint %s", final["test_accuracy"], ctx.out_dir / "model.pt")
    return final


@hydra_entry("train")
def main(cfg: DictConfig, resume: RunState | None) -> None:
    """``fedkd-train``; ``resume``: the run to continue, read once before Hydra wrote anything."""
    if resume is not None:
        resume.rewrite_metrics()  # before the run's logger opens metrics.jsonl
    ctx = RunContext.create(cfg)
    with ctx.logger:
        train(cfg, ctx, resume)


if __name__ == "__main__":
    main()
