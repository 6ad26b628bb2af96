"""Supervised training and evaluation on in-memory tensor splits.

Used to train teachers, by federated clients for local training, and for every test-set
evaluation. ``regularizer`` lets callers add a term (FedProx's proximal term, FedGen's
generator loss) without a second copy of the loop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fedkd.data.datasets import Split, iterate_batches
from fedkd.utils.device import autocast

Augment = Callable[[torch.Tensor], torch.Tensor]
"""``augment(x)``: a randomly transformed copy of a training batch (:func:`fedkd.data.augment.batch_augmenter`)."""
Regularizer = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``regularizer(model, x, y, logits)``: a term added to the batch's cross-entropy (``logits`` = model(x))."""


def train_epoch(
    model: nn.Module,
    split: Split,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator | None = None,
    regularizer: Regularizer | None = None,
    max_steps: int | None = None,
    augment: Augment | None = None,
) -> dict[str, float]:
    """One pass over ``split`` (or ``max_steps`` batches); returns mean ``loss`` and ``accuracy``.

    ``regularizer(model, x, y, logits)`` is added to the cross-entropy of every batch;
    ``augment(x)`` transforms each batch first.
    """
    model.train()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for step, (x, y) in enumerate(iterate_batches(split, batch_size, shuffle=True, generator=generator)):
        if max_steps is not None and step >= max_steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if augment is not None:
            x = augment(x)
        with autocast(device):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if regularizer is not None:
                loss = loss + regularizer(model, x, y, logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Accumulate on the device: no host sync per batch.
        total_loss += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    seen = max(seen, 1)
    return {"loss": total_loss.item() / seen, "accuracy": correct.item() / seen}


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, device: torch.device, batch_size: int = 1024) -> dict[str, float]:
    """Mean cross-entropy ``loss`` and ``accuracy`` of ``model`` on ``split`` (eval mode)."""
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for x, y in iterate_batches(split, batch_size):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device):
            logits = model(x)
        total_loss += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    n = max(len(split), 1)
    return {"loss": total_loss.item() / n, "accuracy": correct.item() / n}


def fit(
    model: nn.Module,
    train: Split,
    test: Split,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator | None = None,
    cosine_lr: bool = True,
    log: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    start_epoch: int = 1,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    augment: Augment | None = None,
) -> dict[str, float]:
    """Train ``model`` for ``epochs`` with a progress bar; evaluate on ``test`` after each epoch.

    ``augment(x)`` transforms every training batch (random shifts and flips); evaluation sees the
    test set as it is.

    ``log(epoch, metrics)`` receives train and test figures. Returns the last epoch's metrics
    (the final model's, never the best seen on the test set).

    Resume (``fedkd-train resume=``): ``scheduler`` replaces the cosine schedule ``cosine_lr``
    would build (so the caller can checkpoint and restore it); ``start_epoch`` skips the epochs a
    checkpoint already holds; ``on_epoch(epoch, metrics)`` runs after ``log`` at the end of each
    epoch, the scheduler stepped, the place to checkpoint. With ``start_epoch > epochs`` nothing
    is trained and the result is empty.
    """
    from tqdm.auto import tqdm

    if scheduler is None and cosine_lr:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    metrics: dict[str, float] = {}
    bar = tqdm(range(start_epoch, epochs + 1), desc="train", disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        tr = train_epoch(model, train, optimizer, batch_size, device, generator, augment=augment)
        te = evaluate(model, test, device)
        if scheduler is not None:
            scheduler.step()
        metrics = {"train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
                   "test_loss": te["loss"], "test_accuracy": te["accuracy"]}
        bar.set_postfix(loss=f"{tr['loss']:.3f}", test_acc=f"{te['accuracy']:.3f}")
        if log is not None:
            log(epoch, metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return metrics
