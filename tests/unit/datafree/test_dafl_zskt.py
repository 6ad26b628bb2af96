"""DAFL and ZSKT synthesizers and the attention-transfer student term, on digits."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from fakes import SpyTeacher, hook_count
from torch import nn

from fedkd.data import get_spec
from fedkd.datafree import (
    AttentionTransfer,
    DAFLSynthesizer,
    EnsembleTeacher,
    StudentRecipe,
    Teacher,
    ZSKTSynthesizer,
    distill,
)
from fedkd.datafree import losses as L
from fedkd.datafree.student_terms import StudentBatch
from fedkd.errors import ConfigError
from fedkd.models import build_model
from fedkd.training import evaluate
from fedkd.utils.seeding import seed_everything

CPU = torch.device("cpu")
SPEC = get_spec("digits")
SMALL_GEN = {"name": "dfad_generator", "ngf": 8}


def _term_value(term: AttentionTransfer, student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One student step's value of ``term``, as the distiller computes it (attach, teacher, student)."""
    teacher = teacher if isinstance(teacher, Teacher) else Teacher(teacher)
    term.attach(student, teacher)
    try:
        with torch.no_grad():
            t = teacher(x)
        s = student(x)
        return term(StudentBatch(x, None, s, t, student, teacher, L.kl_divergence, 1.0))
    finally:
        term.detach()


# ------------------------------------------------------------------------------- losses
def test_attention_transfer_is_zero_for_maps_equal_up_to_scale_and_positive_otherwise():
    torch.manual_seed(0)
    s = torch.randn(8, 3, 6, 6)
    # Channel counts may differ: 6 teacher channels, the student's 3 twice over, scaled by 2.
    t = torch.cat([2 * s, -2 * s], 1)
    assert L.attention_map(s).norm(dim=1) == pytest.approx(torch.ones(8))
    assert L.attention_transfer([s], [s]).item() == pytest.approx(0.0, abs=1e-7)
    assert L.attention_transfer([s], [t]).item() == pytest.approx(0.0, abs=1e-7)
    assert L.attention_transfer([s, s], [3.0 * s, t]).item() == pytest.approx(0.0, abs=1e-7)
    other = torch.randn(8, 5, 6, 6)
    assert L.attention_transfer([s], [other]) > 0
    # A sum over pairs: two mismatched pairs cost twice one.
    assert L.attention_transfer([s, s], [other, other]) == pytest.approx(2 * L.attention_transfer([s], [other]).item())


def test_dafl_activation_loss_decreases_with_larger_features():
    torch.manual_seed(0)
    f = torch.randn(16, 84)
    assert L.activation_loss(f) == pytest.approx(-f.abs().mean().item())
    assert L.activation_loss(2 * f) < L.activation_loss(f) < L.activation_loss(0.5 * f) < 0
    assert L.activation_loss(torch.zeros(4, 8)) == 0


# ---------------------------------------------------------------------- attention term
def test_attention_default_layers_are_the_last_activation_at_each_size(digits_teacher):
    torch.manual_seed(0)
    student = build_model("lenet5_half", SPEC).train()
    x = torch.randn(16, *SPEC.shape)
    # LeNet-5 at 28x28 input: ReLU 28x28, pool 14x14, ReLU 10x10, pool 5x5 (conv.2, .3, .6, .7).
    named = ["conv.2", "conv.3", "conv.6", "conv.7"]
    default = _term_value(AttentionTransfer(), student, digits_teacher, x)
    explicit = _term_value(AttentionTransfer(student_layers=named, teacher_layers=named), student, digits_teacher, x)
    assert default.item() > 0 and default.item() == pytest.approx(explicit.item(), rel=1e-6)
    assert default.requires_grad  # flows into the student
    # A student equal to the teacher has the teacher's maps: nothing to transfer.
    twin = copy.deepcopy(digits_teacher).eval()
    assert _term_value(AttentionTransfer(), twin, digits_teacher, x).item() == pytest.approx(0.0, abs=1e-7)
    assert hook_count(student, digits_teacher) == 0


def test_attention_on_an_ensemble_is_the_members_mean_even_on_the_vectorised_path(digits_teacher):
    torch.manual_seed(1)
    other = build_model("lenet5", SPEC).eval()
    student = build_model("lenet5_half", SPEC).eval()  # eval: the same maps in every call
    x = torch.randn(8, *SPEC.shape)
    singles = [_term_value(AttentionTransfer(), student, m, x).item() for m in (digits_teacher, other)]
    # batched=True: the ensemble evaluates its members with vmap, never calling them (no hooks
    # fire); the term must notice and run them itself rather than use stale or missing maps.
    ensemble = EnsembleTeacher([digits_teacher, other], batched=True)
    value = _term_value(AttentionTransfer(), student, ensemble, x).item()
    assert value == pytest.approx(sum(singles) / 2, rel=1e-5)
    assert hook_count(ensemble, student) == 0


def test_attention_bad_layers_end_with_one_line_errors(digits_teacher):
    student = build_model("lenet5_half", SPEC)
    x = torch.randn(4, *SPEC.shape)
    with pytest.raises(ConfigError, match="give both or neither") as e:
        AttentionTransfer(student_layers=["conv.2"])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="no module named 'nope'"):
        _term_value(AttentionTransfer(student_layers=["nope"], teacher_layers=["conv.2"]), student, digits_teacher, x)
    with pytest.raises(ConfigError, match="equal spatial size") as e:  # 28x28 against 14x14
        _term_value(AttentionTransfer(student_layers=["conv.2"], teacher_layers=["conv.3"]), student, digits_teacher, x)
    assert "\n" not in str(e.value)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    with pytest.raises(ConfigError, match="no spatial"):
        _term_value(AttentionTransfer(), mlp, digits_teacher, x)
    with pytest.raises(ConfigError, match="weight must be >= 0"):
        AttentionTransfer(weight=-1)
    assert hook_count(student, digits_teacher, mlp) == 0


# ------------------------------------------------------------------------------- DAFL
def test_dafl_student_beats_chance_from_the_generator_steps_batches(digits, digits_teacher):
    seed_everything(0)
    student = build_model("lenet5_half", SPEC)
    teacher = SpyTeacher(digits_teacher)
    synth = DAFLSynthesizer(SPEC, "cpu", SMALL_GEN, batch_size=64)
    opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    out = distill(student, teacher, synth, opt, iterations_per_epoch=40, recipe=StudentRecipe(steps=1),
                  student_batch_size=64, progress=False)
    acc = evaluate(student, digits.test, CPU)["accuracy"]
    assert acc > 0.5, acc  # chance: 0.1 (seed 0: 0.69; seeds 1-2: 0.55, 0.66)
    assert out["one_hot"] > 0 and out["activation"] < 0
    assert out["entropy"] < -0.9 * torch.log(torch.tensor(10.0)).item()  # batches cover the classes
    # The student learns from the generator step's own batch: no other sample is generated.
    assert out["samples_generated"] == 40 * 64 and out["student_samples"] == 40 * 64
    # Generator step (with grad, the head hooked) then the student step (no grad, unhooked).
    assert teacher.calls[:2] == [(True, 1), (False, 0)]
    assert hook_count(digits_teacher, student) == 0


def test_dafl_averages_an_ensembles_features_and_needs_a_head_for_its_activation_loss(digits_teacher):
    torch.manual_seed(0)
    ensemble = EnsembleTeacher([digits_teacher, build_model("lenet5", SPEC)], batched=True)
    synth = DAFLSynthesizer(SPEC, "cpu", SMALL_GEN, batch_size=16)
    out = synth.synthesize(ensemble, None)
    assert out["activation"] < 0 and hook_count(ensemble) == 0
    headless = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    with pytest.raises(ConfigError, match="synthesizer.a") as e:
        synth.synthesize(Teacher(headless), None)
    assert "\n" not in str(e.value)
    assert "activation" not in DAFLSynthesizer(SPEC, "cpu", SMALL_GEN, batch_size=16, a=0).synthesize(
        Teacher(headless), None
    )


# ------------------------------------------------------------------------------- ZSKT
def test_zskt_student_beats_chance_with_attention_transfer_and_leaves_nohook_count(digits, digits_teacher):
    seed_everything(0)
    student = build_model("lenet5_half", SPEC)
    teacher = Teacher(digits_teacher)
    synth = ZSKTSynthesizer(SPEC, "cpu", SMALL_GEN, batch_size=64)
    assert [type(t) for t in synth.student_terms()] == [AttentionTransfer]
    opt = torch.optim.Adam(student.parameters(), lr=2e-3)  # the paper's student optimiser
    out = distill(student, teacher, synth, opt, iterations_per_epoch=20, recipe=StudentRecipe(steps=10),  # ns = 10
                  student_batch_size=64, progress=False)
    acc = evaluate(student, digits.test, CPU)["accuracy"]
    assert acc > 0.5, acc  # chance: 0.1
    assert out["kl"] > 0 and out["generator_loss"] == pytest.approx(-out["kl"]) and out["term/attention"] > 0
    # One generator batch and one student batch per round: the 10 student steps share it.
    assert out["samples_generated"] == 20 * 2 * 64 and out["student_samples"] == 20 * 10 * 64
    assert hook_count(teacher, student) == 0


ONE_STEP = StudentRecipe(steps=1)  # DAFL's (paper)


def _resume_matches(make_synth, digits_teacher, iterations: int, recipe: StudentRecipe = ONE_STEP) -> None:
    """Two calls of the loop in one go equal the first call, a save/load into fresh objects, and
    the second call (the RNG state carried over as the checkpoint does)."""
    teacher = Teacher(digits_teacher)

    def parts():
        torch.manual_seed(0)
        student = build_model("lenet5_half", SPEC)
        return student, make_synth(), torch.optim.Adam(student.parameters(), lr=2e-3)

    def run(student, synth, opt):
        distill(student, teacher, synth, opt, iterations_per_epoch=iterations, recipe=recipe, student_batch_size=32,
                progress=False)

    student, synth, opt = parts()
    run(student, synth, opt)
    buffer = io.BytesIO()
    torch.save({"synth": synth.state_dict(), "student": student.state_dict(), "opt": opt.state_dict()}, buffer)
    rng = torch.get_rng_state()
    run(student, synth, opt)

    resumed_student, resumed, resumed_opt = parts()
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed.load_state_dict(state["synth"])
    resumed_student.load_state_dict(state["student"])
    resumed_opt.load_state_dict(state["opt"])
    torch.set_rng_state(rng)
    run(resumed_student, resumed, resumed_opt)
    for a, b in zip(student.state_dict().values(), resumed_student.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(synth.generator.state_dict().values(), resumed.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert resumed.samples_generated == synth.samples_generated


def test_dafl_state_round_trip_resumes_exactly(digits_teacher):
    _resume_matches(lambda: DAFLSynthesizer(SPEC, "cpu", SMALL_GEN, batch_size=32), digits_teacher, iterations=2)


def test_zskt_state_round_trip_resumes_exactly(digits_teacher):
    def make() -> ZSKTSynthesizer:
        return ZSKTSynthesizer(SPEC, "cpu", SMALL_GEN, batch_size=32)

    assert "attention" in make().state_dict()
    _resume_matches(make, digits_teacher, iterations=2, recipe=StudentRecipe(steps=2))


@pytest.mark.parametrize(
    ("cls", "kwargs", "key"),
    [
        (DAFLSynthesizer, {"batch_size": 0}, "synthesizer.batch_size"),
        (DAFLSynthesizer, {"lr": -1.0}, "synthesizer.lr"),
        (DAFLSynthesizer, {"a": -0.1}, "synthesizer.a"),
        (DAFLSynthesizer, {"oh": 0, "a": 0, "ie": 0}, "synthesizer.oh"),
        (DAFLSynthesizer, {"betas": [0.9, 1.5]}, "synthesizer.betas"),
        (ZSKTSynthesizer, {"kl_temperature": 0}, "synthesizer.kl_temperature"),
        (ZSKTSynthesizer, {"at_weight": -1.0}, "synthesizer.at_weight"),
        (ZSKTSynthesizer, {"clip_grad_norm": -5.0}, "synthesizer.clip_grad_norm"),
        (ZSKTSynthesizer, {"at_student_layers": ["conv.2"]}, "synthesizer.at_student_layers"),
    ],
)
def test_bad_settings_end_with_one_line_errors_naming_the_key(cls, kwargs, key):
    with pytest.raises(ConfigError, match=key) as e:
        cls(SPEC, "cpu", SMALL_GEN, **kwargs)
    assert "\n" not in str(e.value)
