"""Zero-Shot KD's Dirichlet targets: class similarity, the draws, and DeepInversion inverting towards them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedkd.data import get_spec
from fedkd.datafree import DeepInversionSynthesizer, EnsembleTeacher, Teacher
from fedkd.datafree.soft_targets import class_similarity, dirichlet_targets, teacher_similarity
from fedkd.errors import ConfigError
from fedkd.models import build_model
from fedkd.utils.seeding import seed_everything

SPEC = get_spec("digits")


def test_similarity_is_the_row_normalised_cosine_of_the_class_vectors():
    # Classes 0 and 1 point the same way, class 2 the opposite way.
    w = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]])
    sim = class_similarity([w])
    assert torch.allclose(sim, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    # An ensemble averages its members' matrices.
    other = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # cosines 1, 0, -1 from class 0
    both = class_similarity([w, other])
    assert both[0].tolist() == pytest.approx([1.0, 0.75, 0.0])


def test_draws_are_distributions_that_put_the_mass_on_similar_classes():
    torch.manual_seed(0)
    sim = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.zeros(4000, dtype=torch.long)
    y = dirichlet_targets(labels, sim, [1.0, 0.1])
    assert y.shape == (4000, 3) and torch.allclose(y.sum(1), torch.ones(4000))
    mean = y.mean(0)
    assert mean[0] == pytest.approx(0.5, abs=0.03) and mean[1] == pytest.approx(0.5, abs=0.03) and mean[2] < 0.01
    # The small scale gives peaked targets, the large one spread targets.
    peak_small, peak_large = y[1::2].max(1).values.mean(), y[0::2].max(1).values.mean()
    assert peak_small > 0.9 > peak_large


def test_deepinversion_inverts_towards_the_soft_targets(digits_teacher):
    teacher = Teacher(digits_teacher)
    kl = []
    for steps in (1, 40):  # the KL of the noise batch, and after 40 steps towards the same draws
        seed_everything(0)
        synth = DeepInversionSynthesizer(SPEC, "cpu", batch_size=32, synthesis_steps=steps, dirichlet_betas=[1.0, 0.1],
                                         pool_size=64)
        kl.append(synth.synthesize(teacher, build_model("lenet5_half", SPEC))["loss_oh"])
    assert 0 <= kl[1] < 0.7 * kl[0], kl  # the batch moved towards its targets
    hard = DeepInversionSynthesizer(SPEC, "cpu", batch_size=32, synthesis_steps=40, pool_size=64)
    seed_everything(0)
    hard.synthesize(teacher, build_model("lenet5_half", SPEC))
    with torch.no_grad():
        soft_conf = digits_teacher(synth.pool.all()).softmax(1).max(1).values.mean()
        hard_conf = digits_teacher(hard.pool.all()).softmax(1).max(1).values.mean()
    assert soft_conf < hard_conf  # soft targets keep samples off the one-hot corners


def test_similarity_of_an_ensemble_and_of_a_model_without_a_head():
    members = [build_model("lenet5", SPEC) for _ in range(2)]
    sim = teacher_similarity(EnsembleTeacher(members))
    assert sim.shape == (10, 10) and torch.allclose(sim.diagonal(), torch.ones(10))
    with pytest.raises(ConfigError, match="dirichlet_betas=\\[\\]") as err:
        teacher_similarity(Teacher(nn.Sequential(nn.Flatten(), nn.Linear(64, 10))))
    assert "\n" not in str(err.value)


def test_bad_scales_are_a_one_line_config_error():
    with pytest.raises(ConfigError, match="synthesizer.dirichlet_betas"):
        DeepInversionSynthesizer(SPEC, "cpu", dirichlet_betas=[1.0, 0.0])
