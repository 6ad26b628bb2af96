"""What the generator strategy's server checks each round, apart from distilling.

- :func:`probe_split`: the fixed subsample of the evaluation split the diagnostics report on;
- :func:`synthetic_agreement`: on a fresh batch of generated samples, how often the teacher, the
  round's average and the distilled student agree -- figures that need no real data, so the
  safeguard may act on them (:class:`~fedkd.strategies.fedftg.FedFTG`'s ``safeguard``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedkd.data import Split
from fedkd.datafree import Synthesizer
from fedkd.datafree.teacher_metrics import intended_label_agreement


def probe_split(split: Split, size: int, seed: int) -> Split:
    """``size`` images of ``split`` drawn once with ``seed`` (the whole split when ``size`` is 0 or larger)."""
    if not size or size >= len(split):
        return split
    return split.subset(np.sort(np.random.default_rng(seed).choice(len(split), size, replace=False)))


@torch.no_grad()
def synthetic_agreement(synthesizer: Synthesizer, teacher: nn.Module, average: nn.Module, student: nn.Module | None,
                        batch_size: int) -> dict[str, float]:
    """On ``batch_size`` fresh generated samples: the share on which the round's average predicts
    the teacher's label (``average_teacher_agreement``), the same for the distilled student, and
    how often the teacher gives a sample the label it was generated for (when there is one)."""
    x, labels = synthesizer.sample(batch_size)
    target = teacher(x, labels).argmax(1)

    def agree(model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        share = float((model(x).argmax(1) == target).float().mean())
        model.train(was_training)
        return share

    figures = {"average_teacher_agreement": agree(average)}
    if student is not None:
        figures["student_teacher_agreement"] = agree(student)
    intended = intended_label_agreement(teacher, x, labels)
    if intended is not None:
        figures["teacher_intended_label_agreement"] = intended
    return figures
