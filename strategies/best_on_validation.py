"""The student a distilling server keeps: the best on its labelled validation split (FedDF's early stopping).

FedDF (Lin et al., NeurIPS 2020) distils for up to 10^4 steps and stops once the student's accuracy
on a labelled validation split stops improving; its authors' code evaluates every
``eval_batches_freq`` steps and can hand back the best model seen (``return_best_model_on_val``).
At a federated grid's budget (ten steps a round) the server evaluates the student after every
distillation iteration and keeps the best, the model it started from included: when distilling
only hurts, the round's global model stays the average it began with. Ties keep the earlier model.

The validation images (``validation_size``) are labelled training images no client holds, never
the test set; a run that uses them reads labels and is not data-free.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from fedkd.data import Split
from fedkd.training import evaluate


class BestOnValidation:
    """Tracks ``student``'s best state on ``split``; an ``on_iteration`` callback of
    :func:`fedkd.datafree.distill`. Evaluates the starting model when built."""

    def __init__(self, student: nn.Module, split: Split, device: torch.device) -> None:
        self.student, self.split, self.device = student, split, device
        self.seconds = 0.0  # spent evaluating, for the server's split of its time
        self.start_accuracy = self.best_accuracy = self._accuracy()
        self.best_iteration = 0
        self.best_state = self._state()

    def __call__(self, iteration: int) -> None:
        accuracy = self._accuracy()
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_iteration, self.best_state = accuracy, iteration, self._state()

    def restore(self) -> dict[str, float]:
        """Load the best state into the student; return the figures for the round's row."""
        self.student.load_state_dict(self.best_state)
        return {"validation_accuracy_start": self.start_accuracy, "validation_accuracy_best": self.best_accuracy,
                "validation_best_iteration": float(self.best_iteration)}

    def _accuracy(self) -> float:
        tick = time.perf_counter()
        accuracy = evaluate(self.student, self.split, self.device)["accuracy"]
        self.seconds += time.perf_counter() - tick
        return accuracy

    def _state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.student.state_dict().items()}
