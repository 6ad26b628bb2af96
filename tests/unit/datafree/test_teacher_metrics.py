"""The ensemble's weightings and the teacher figures, hand-computed on a tiny ensemble."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedkd.data import Split
from fedkd.datafree import EnsembleTeacher, class_weights_from_counts
from fedkd.datafree.class_weights import with_extra_members
from fedkd.datafree.teacher_metrics import boosted_accuracy, intended_label_agreement, teacher_accuracies
from fedkd.errors import ConfigError


class Fixed(nn.Module):
    """Returns a fixed logit row per sample index (inputs are the indices)."""

    def __init__(self, logits: list[list[float]]) -> None:
        super().__init__()
        self.register_buffer("table", torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0].long()]


def _ensemble(weighting: str = "label") -> EnsembleTeacher:
    # Two classes, two samples (true labels 0, 1). Member A holds only class 0, B only class 1.
    a = Fixed([[2.0, 0.0], [1.0, 0.0]])  # A says 0 on both
    b = Fixed([[0.0, 1.0], [0.0, 3.0]])  # B says 1 on both
    weights = class_weights_from_counts([[10, 0], [0, 10]])
    return EnsembleTeacher([a, b], weights, batched=False, weighting=weighting)


def _split() -> Split:
    return Split(torch.tensor([[0.0], [1.0]]), torch.tensor([0, 1]))


def test_teacher_accuracies_compute_each_weighting_by_hand():
    figures = teacher_accuracies(_ensemble(), _split(), "cpu", batch_size=1)
    # Plain mean: sample 0 -> (1, 0.5) -> 0 (right); sample 1 -> (0.5, 1.5) -> 1 (right).
    assert figures["teacher_mean_accuracy"] == 1.0
    # Logit weighting: class 0's logit from A, class 1's from B: sample 0 -> (2, 1) right, sample 1 -> (1, 3) right.
    assert figures["teacher_logit_weighted_accuracy"] == 1.0
    # Label weighting with the true label: sample 0 is A's answer (0), sample 1 is B's (1): both right.
    assert figures["teacher_label_weighted_accuracy_true_label"] == 1.0


def test_label_weighting_follows_the_given_label_not_the_truth():
    teacher = _ensemble()
    x = torch.tensor([[0.0], [1.0]])
    # Asked for label 1 on sample 0, the teacher is member B alone: it says 1.
    assert teacher(x, torch.tensor([1, 1])).argmax(1).tolist() == [1, 1]
    assert intended_label_agreement(teacher, x, torch.tensor([1, 1])) == 1.0
    assert intended_label_agreement(teacher, x, torch.tensor([0, 0])) == 1.0  # A says 0 everywhere
    assert intended_label_agreement(teacher, x, None) is None


def test_confidence_weighting_prefers_the_confident_member():
    a = Fixed([[5.0, 0.0]])   # confident: class 0
    b = Fixed([[0.0, 0.1]])   # nearly unsure: class 1
    teacher = EnsembleTeacher([a, b], None, batched=False, weighting="confidence")
    x = torch.zeros(1, 1)
    logits = torch.stack([a(x), b(x)])
    pa, pb = torch.softmax(logits[0], -1).max(), torch.softmax(logits[1], -1).max()
    expected = (pa * logits[0] + pb * logits[1]) / (pa + pb)
    torch.testing.assert_close(teacher(x), expected)
    assert teacher(x).argmax(1).item() == 0


def test_extra_members_take_their_share_of_every_class():
    weights = with_extra_members(class_weights_from_counts([[3, 0], [1, 4]]), 2, 1, 0.5, 2)
    torch.testing.assert_close(weights.sum(0), torch.ones(2))
    torch.testing.assert_close(weights[2], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(weights[:2], 0.5 * class_weights_from_counts([[3, 0], [1, 4]]))
    with pytest.raises(ConfigError, match="share"):
        with_extra_members(None, 2, 1, 1.5, 2)


def test_boosted_accuracy_is_the_reweighted_teacher_without_labels():
    # Uniform class weights: with A weighted 0.9 and B 0.1, sample 1's logits are 0.9*(1, 0) + 0.1*(0, 3)
    # = (0.9, 0.3): class 0, wrong; sample 0 stays right. Without boosting the plain mean is right on both.
    teacher = EnsembleTeacher([Fixed([[2.0, 0.0], [1.0, 0.0]]), Fixed([[0.0, 1.0], [0.0, 3.0]])], batched=False)
    assert boosted_accuracy(teacher, _split(), "cpu") == 1.0
    teacher.set_member_weights([0.9, 0.1])
    assert boosted_accuracy(teacher, _split(), "cpu", batch_size=1) == 0.5
    teacher.set_member_weights([0.1, 0.9])  # (0.2, 0.9) on sample 0: class 1, wrong; sample 1 right
    assert boosted_accuracy(teacher, _split(), "cpu") == 0.5
