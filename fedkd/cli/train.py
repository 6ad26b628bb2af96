"""``fedkd-train``: train one model on one dataset (a baseline, or a teacher for distillation).

    fedkd-train dataset=fashion_mnist model=lenet5 epochs=10
"""

from __future__ import annotations

import logging

from hydra.utils import instantiate
from omegaconf import DictConfig

from fedkd.cli.common import RunContext, hydra_entry
from fedkd.config import check_train
from fedkd.models import build_from_config, count_parameters
from fedkd.training import fit
from fedkd.utils.checkpoint import model_meta, save_model

log = logging.getLogger("fedkd.train")


def train(cfg: DictConfig, ctx: RunContext) -> dict[str, float]:
    """Train the configured model; save ``model.pt`` in the run folder; return final metrics."""
    check_train(cfg)
    data = instantiate(cfg.dataset)
    model = build_from_config(cfg.model, data.spec).to(ctx.device)
    optimizer = instantiate(cfg.optim)(model.parameters())
    log.info("training %s (%d parameters) on %s (%d samples)", cfg.model.name, count_parameters(model), data.spec.name, len(data.train))
    final = fit(
        model, data.train, data.test.to(ctx.device), optimizer, cfg.epochs, cfg.batch_size, ctx.device,
        generator=ctx.generator, cosine_lr=cfg.cosine_lr, log=ctx.logger.log,
    )
    save_model(ctx.out_dir / "model.pt", model, **model_meta(cfg.model, data.spec))
    ctx.logger.summary({"final_test_accuracy": final["test_accuracy"], "final_test_loss": final["test_loss"]})
    log.info("final test accuracy %.4f; checkpoint %s", final["test_accuracy"], ctx.out_dir / "model.pt")
    return final


@hydra_entry("train")
def main(cfg: DictConfig) -> None:
    ctx = RunContext.create(cfg)
    with ctx.logger:
        train(cfg, ctx)


if __name__ == "__main__":
    main()
