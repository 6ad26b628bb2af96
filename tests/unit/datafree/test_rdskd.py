"""RDSKD on digits: its loss terms, the exponential increment penalty, the reference schedule, the
generator-first warm-up, exact resume, config validation and a short distillation run."""

from __future__ import annotations

import io
import math

import pytest
import torch

from fedkd.data import get_spec
from fedkd.datafree import RDSKDSynthesizer, StudentRecipe, Teacher, distill
from fedkd.datafree import losses as L
from fedkd.errors import ConfigError
from fedkd.models import build_model
from fedkd.training import evaluate
from fedkd.utils.seeding import seed_everything

SPEC = get_spec("digits")
SMALL_G = {"name": "dfad_generator", "ngf": 8, "nz": 32}


def _synth(**kwargs) -> RDSKDSynthesizer:
    settings = {"generator": SMALL_G, "batch_size": 16, "generator_warmup": 0, "generator_steps": 1, "ref_interval": 3}
    return RDSKDSynthesizer(SPEC, "cpu", **{**settings, **kwargs})


# --------------------------------------------------------------------------------- losses
def test_exp_increment_penalty_is_one_at_the_reference_and_grows_above_it():
    ref = torch.tensor(0.7)
    values = torch.tensor([0.2, 0.7, 1.2, 1.7], requires_grad=True)
    p = L.exp_increment_penalty(values, ref).detach()
    assert p[1].item() == pytest.approx(1.0)
    assert p[0] < 1 < p[2] < p[3]
    assert p[3].item() == pytest.approx(math.e)  # exp(1): exponential in the increment
    # The reference is a constant: the gradient is exp(L - L_ref), the term's adaptive weight.
    ref_param = torch.tensor(0.7, requires_grad=True)
    L.exp_increment_penalty(values, ref_param).sum().backward()
    torch.testing.assert_close(values.grad, torch.exp(values.detach() - 0.7))
    assert ref_param.grad is None


def test_class_diversity_is_extreme_for_a_uniform_batch_mean_and_minimal_for_one_class():
    c = SPEC.num_classes
    confident = 30.0 * torch.eye(c).repeat(4, 1)  # every class equally often, each sample certain
    one_class = 30.0 * torch.eye(c)[[3] * 4 * c]
    # information_entropy is minus the entropy of the batch-mean softmax (minimised by RDSKD).
    assert L.information_entropy(confident).item() == pytest.approx(-math.log(c), abs=1e-5)
    assert L.information_entropy(torch.zeros(8, c)).item() == pytest.approx(-math.log(c), abs=1e-6)
    assert L.information_entropy(one_class).item() == pytest.approx(0.0, abs=1e-5)
    mixed = L.information_entropy(torch.randn(64, c, generator=torch.Generator().manual_seed(0)))
    assert -math.log(c) < mixed.item() < 0.0
    # Authenticity asks the opposite of each sample: certain (near 0), not flat (log C).
    assert L.argmax_cross_entropy(confident).item() == pytest.approx(0.0, abs=1e-5)
    assert L.argmax_cross_entropy(torch.zeros(8, c)).item() == pytest.approx(math.log(c), abs=1e-6)


def test_mode_seeking_ratio_rewards_pairs_that_differ_as_inputs():
    g = torch.Generator().manual_seed(0)
    x_a = torch.randn(8, 1, 28, 28, generator=g)
    logits_a, logits_b = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    near = L.mode_seeking_ratio(x_a, x_a + 0.1, logits_a, logits_b)
    far = L.mode_seeking_ratio(x_a, x_a + 1.0, logits_a, logits_b)
    assert far.item() == pytest.approx(near.item() / 10, rel=1e-4)  # the input distance divides
    assert L.mode_seeking_ratio(x_a, x_a + 1.0, logits_a, logits_a).item() == 0.0
    assert torch.isfinite(L.mode_seeking_ratio(x_a, x_a, logits_a, logits_b))  # eps: no division by 0


# ------------------------------------------------------------------------------ schedule
def test_reference_is_refreshed_every_ref_interval_generator_steps(digits_teacher):
    torch.manual_seed(0)
    synth = _synth(ref_interval=3)
    teacher, student = Teacher(digits_teacher), build_model("lenet5_half", SPEC)
    refs, rows = [], []
    for _ in range(7):
        rows.append(synth.synthesize(teacher, student))
        refs.append(synth.reference.clone())
    assert synth.steps_done == 7
    terms = [torch.tensor([r["loss_authenticity"], r["loss_class_diversity"], r["loss_mode_seeking"]]) for r in rows]
    for step in range(7):
        window_start = step - step % 3
        # The reference holds the terms of the first step of the current window...
        torch.testing.assert_close(refs[step], terms[window_start])
        # ...so that step's two penalties are exp(0) = 1; the later steps' are not.
        neutral = 2.0 + rows[step]["loss_mode_seeking"]
        if step == window_start:
            assert rows[step]["generator_loss"] == pytest.approx(neutral, abs=1e-5)
        else:
            assert rows[step]["generator_loss"] != pytest.approx(neutral, abs=1e-5)
    assert not torch.equal(refs[2], refs[3]) and not torch.equal(refs[5], refs[6])


def test_generator_first_warm_up_then_frozen_or_alternating(digits_teacher):
    torch.manual_seed(0)
    teacher, student = Teacher(digits_teacher), build_model("lenet5_half", SPEC)
    frozen = _synth(generator_warmup=5, generator_steps=0)
    first = frozen.synthesize(teacher, student)
    assert frozen.steps_done == 5 and frozen.samples_generated == 5 * 16
    weights = {k: v.clone() for k, v in frozen.generator.state_dict().items()}
    again = frozen.synthesize(teacher, student)
    assert again == first and frozen.steps_done == 5  # frozen: no step, the latest losses reported
    assert all(torch.equal(v, frozen.generator.state_dict()[k]) for k, v in weights.items())
    alternating = _synth(generator_warmup=5, generator_steps=2)
    alternating.synthesize(teacher, student)
    assert alternating.steps_done == 7
    alternating.synthesize(teacher, student)
    assert alternating.steps_done == 9
    # The federated server asks whether later calls still learn (its teacher changes every round).
    assert not frozen.keeps_learning() and alternating.keeps_learning()
    assert frozen.keep_learning_override("strategy.synthesizer") == "strategy.synthesizer.generator_steps=1"


def test_state_dict_round_trip_gives_identical_next_synthesis(digits_teacher):
    teacher, student = Teacher(digits_teacher), build_model("lenet5_half", SPEC)
    torch.manual_seed(0)
    a = _synth(generator_warmup=4, generator_steps=2, ref_interval=3)
    a.synthesize(teacher, student)
    a.synthesize(teacher, student)  # 8 steps: mid-window, Adam moments and reference non-trivial
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    torch.manual_seed(1)  # a different initial generator
    b, fresh = (_synth(generator_warmup=4, generator_steps=2, ref_interval=3) for _ in range(2))
    b.load_state_dict(state)
    results = []
    for synth in (a, b, fresh):
        torch.manual_seed(7)
        row = synth.synthesize(teacher, student)
        torch.manual_seed(8)
        results.append((row, synth.sample(4)[0], synth.reference.clone(), synth.steps_done, synth.samples_generated))
    (row_a, x_a, ref_a, steps_a, n_a), (row_b, x_b, ref_b, steps_b, n_b), (row_f, *_rest) = results
    assert row_a == row_b and steps_a == steps_b == 10 and n_a == n_b
    assert torch.equal(x_a, x_b) and torch.equal(ref_a, ref_b)
    assert row_f != row_a  # without the state the next step differs (the test can fail)


# ------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"batch_size": 7}, "synthesizer.batch_size"),
        ({"batch_size": 0}, "synthesizer.batch_size"),
        ({"lr": 0.0}, "synthesizer.lr"),
        ({"generator_warmup": -1}, "synthesizer.generator_warmup"),
        ({"generator_steps": -2}, "synthesizer.generator_steps"),
        ({"generator_warmup": 0, "generator_steps": 0}, "synthesizer.generator_warmup"),
        ({"ref_interval": 0}, "synthesizer.ref_interval"),
        ({"betas": (0.9, 1.0)}, "synthesizer.betas"),
    ],
)
def test_bad_settings_raise_one_line_config_errors(kwargs, key):
    with pytest.raises(ConfigError) as err:
        _synth(**kwargs)
    message = str(err.value)
    assert key in message and "set synthesizer." in message and "\n" not in message


# -------------------------------------------------------------------------- distillation
def test_rdskd_student_beats_chance_on_digits(digits, digits_teacher):
    seed_everything(0)
    student = build_model("lenet5_half", SPEC)
    synth = RDSKDSynthesizer(
        SPEC, "cpu", {"name": "dfad_generator", "ngf": 8}, batch_size=64, generator_warmup=40,
        generator_steps=0, ref_interval=20,
    )
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    out = distill(student, Teacher(digits_teacher), synth, opt, iterations_per_epoch=20,
                  recipe=StudentRecipe(steps=5, temperature=4.0), student_batch_size=64, progress=False)
    acc = evaluate(student, digits.test, torch.device("cpu"))["accuracy"]
    assert acc > 0.5, acc  # chance: 0.1
    # Generator first: 40 warm-up steps, then frozen; every student step drew a fresh batch.
    assert synth.steps_done == 40
    assert out["samples_generated"] == 40 * 64 + 20 * 5 * 64
    # The warmed-up generator covers the classes (entropy of the batch-mean prediction near log 10).
    assert -out["loss_class_diversity"] > 0.8 * math.log(SPEC.num_classes)
