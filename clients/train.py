"""Local training of one client: epochs of :func:`fedkd.training.train_epoch`, FedProx optional."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedkd.data import Split
from fedkd.training import train_epoch
from fedkd.training.supervised import Regularizer


def proximal_term(model: nn.Module, mu: float) -> Regularizer:
    """FedProx's ``(mu/2) * ||w - w_global||^2``, with ``w_global`` the weights ``model`` has now.

    Call it right after loading the global model, before the first local step.
    """
    anchor = [p.detach().clone() for p in model.parameters()]

    def term(current: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        squares = [(p - a).pow(2).sum() for p, a in zip(current.parameters(), anchor, strict=True)]
        return 0.5 * mu * torch.stack(squares).sum()

    return term


def local_train(
    model: nn.Module,
    split: Split,
    make_optimizer: Callable[..., torch.optim.Optimizer],
    lr: float,
    epochs: int,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
    proximal_mu: float = 0.0,
) -> dict[str, float]:
    """Train ``model`` on ``split`` for ``epochs``; returns the last epoch's ``loss`` and ``accuracy``.

    ``make_optimizer(params, lr=...)`` is the configured optimizer (a fresh one each round, as
    in FedAvg: no optimizer state crosses rounds). ``proximal_mu > 0`` adds FedProx's term.
    """
    model.to(device).train()
    optimizer = make_optimizer(model.parameters(), lr=lr)
    regularizer = proximal_term(model, proximal_mu) if proximal_mu > 0 else None
    metrics: dict[str, float] = {"loss": float("nan"), "accuracy": float("nan")}
    for _ in range(epochs):
        metrics = train_epoch(model, split, optimizer, batch_size, device, generator=generator, regularizer=regularizer)
    return metrics
