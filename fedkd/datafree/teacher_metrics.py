"""How good an ensemble teacher is, measured as the student uses it.

The federated server's teacher is an :class:`~fedkd.datafree.EnsembleTeacher`. Its accuracy on
real images depends on how its members are combined, and the combination the student learns from
(``"label"``: the members weighted by their share of the label a sample was *generated for*)
needs that label. These functions name each figure after what it computes:

- ``teacher_mean_accuracy``: the plain mean of the members' logits;
- ``teacher_logit_weighted_accuracy``: each class's logit from the members holding that class
  (the ``"logit"`` weighting; what an ensemble with class weights gives without labels);
- ``teacher_label_weighted_accuracy_true_label``: the ``"label"`` weighting given each image's
  true label as its intended label -- the teacher the student sees on generated samples, had the
  generator produced real images of the labels it was asked for (the label leaks into the
  weights, so this is an upper bound on that teacher's accuracy, not a classifier);
- ``teacher_confidence_weighted_accuracy_true_label``: the same for the ``"confidence"`` weighting;
- ``teacher_intended_label_agreement``: on generated samples, how often the teacher's prediction is
  the label the generator was asked for;
- ``teacher_boosted_accuracy``: after Co-Boosting re-weighted the members
  (:class:`~fedkd.datafree.EnsembleBoosting`), the teacher's own combination with those weights,
  without labels -- the re-weighted teacher as it would classify real images.

They report; nothing is chosen on them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedkd.data import Split, iterate_batches
from fedkd.datafree.teacher import EnsembleTeacher


def teacher_accuracies(teacher: EnsembleTeacher, split: Split, device: torch.device | str,
                       batch_size: int = 1024) -> dict[str, float]:
    """Accuracy of every combination of ``teacher``'s members on ``split``, from one pass."""
    names = {"teacher_mean_accuracy": lambda logits, y: logits.mean(0)}
    weightings = {"teacher_confidence_weighted_accuracy_true_label": "confidence"}
    if teacher.class_weights is not None:
        weightings = {"teacher_logit_weighted_accuracy": "logit", "teacher_label_weighted_accuracy_true_label": "label",
                      **weightings}
    for name, weighting in weightings.items():
        names[name] = lambda logits, y, weighting=weighting: teacher.combine(logits, y, weighting)
    return _accuracies(teacher, split, device, batch_size, names)


def boosted_accuracy(
    teacher: EnsembleTeacher, split: Split, device: torch.device | str, batch_size: int = 1024
) -> float:
    """``teacher_boosted_accuracy``: the teacher with its member weights, its own weighting, no labels."""
    figures = _accuracies(teacher, split, device, batch_size, {"boosted": lambda logits, y: teacher.combine(logits)})
    return figures["boosted"]


@torch.no_grad()
def _accuracies(teacher: EnsembleTeacher, split: Split, device: torch.device | str, batch_size: int,
                combinations: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]) -> dict[str, float]:
    """Accuracy on ``split`` of each ``combination(member_logits, labels) -> logits``, from one pass of the members."""
    correct = dict.fromkeys(combinations, 0)
    for x, y in iterate_batches(split, batch_size):
        x, y = x.to(device), y.to(device)
        logits = teacher.member_logits(x).float()
        for name, combine in combinations.items():
            correct[name] += int((combine(logits, y).argmax(1) == y).sum())
    n = max(len(split), 1)
    return {name: count / n for name, count in correct.items()}


@torch.no_grad()
def intended_label_agreement(teacher: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor | None) -> float | None:
    """Share of generated samples ``x`` the teacher assigns the label they were generated for
    (``None`` when the synthesizer gives no labels)."""
    if labels is None or len(labels) == 0:
        return None
    return float((teacher(x, labels).argmax(1) == labels).float().mean())
