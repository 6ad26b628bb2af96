"""NAYER on digits: the noisy-layer generator, a short distillation run, the federated ensemble
teacher with a label prior, exact resume, errors."""

from __future__ import annotations

import io
import math

import pytest
import torch
from fakes import SPY_COUNTS, LabelSpyEnsemble

from fedkd.data import get_spec
from fedkd.datafree import (
    NoisyLayerGenerator,
    NoisyLayerSynthesizer,
    StudentRecipe,
    Teacher,
    distill,
)
from fedkd.errors import ConfigError
from fedkd.models import build_model
from fedkd.training import evaluate
from fedkd.utils.seeding import seed_everything

CPU = torch.device("cpu")
SPEC = get_spec("digits")
TINY_GEN = {"name": "nayer_generator", "ngf": 4, "nz": 8, "embed_dim": 6}


def _student() -> torch.nn.Module:
    return build_model("lenet5_half", SPEC)


# ------------------------------------------------------------------------------- the generator
def test_reset_noise_redraws_only_the_noisy_layer_and_chunks_give_different_samples_of_a_class():
    seed_everything(0)
    gen = NoisyLayerGenerator(SPEC, batch_size=30, embed_dim=6, nz=8, ngf=4).eval()
    y = torch.arange(30) % 10  # three chunks, each class once per chunk
    body = {k: v.clone() for k, v in gen.state_dict().items() if not k.startswith("noise_")}
    weight = gen.noise_weight.detach().clone()
    with torch.no_grad():
        x = gen(y)
        assert x.shape == (30, *SPEC.shape)
        assert not torch.allclose(x[0], x[10])  # class 0 from two noisy layers: two samples
        # one chunk: one sample per class
        assert torch.equal(gen(torch.tensor([3, 3]))[0], gen(torch.tensor([3, 3]))[1])
        gen.reset_noise()
        assert not torch.equal(gen.noise_weight, weight) and torch.count_nonzero(gen.noise_bias) == 0
        assert all(torch.equal(v, gen.state_dict()[k]) for k, v in body.items())  # the body and the embedding stay
        assert not torch.allclose(gen(y), x)  # a new layer: new samples
    with pytest.raises(ConfigError, match="30 samples, not 31"):
        gen(torch.arange(31) % 10)


# ---------------------------------------------------------------------- short digits run
def test_nayer_student_beats_chance_with_a_bounded_pool(digits, digits_teacher):
    seed_everything(0)
    synth = NoisyLayerSynthesizer(SPEC, "cpu", {"name": "nayer_generator", "ngf": 8, "nz": 32}, batch_size=64,
                                  synthesis_steps=5, pool_size=500)
    student = _student()
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    out = distill(student, digits_teacher, synth, opt, iterations_per_epoch=8,
                  recipe=StudentRecipe(steps=10, temperature=20.0), student_batch_size=64, progress=False)
    acc = evaluate(student, digits.test, CPU)["accuracy"]
    assert acc > 0.5, acc  # chance: 0.1
    assert len(synth.pool) == 500 and synth.pool.added == 8 * 64
    assert out["samples_generated"] == 8 * 5 * 64 and "loss_adv" in out
    x, y = synth.sample(20)
    assert x.shape == (20, *SPEC.shape) and y is not None
    assert torch.equal(synth.round_labels(), torch.arange(64) % 10)  # every chunk of ten holds each class once
    assert torch.equal(torch.bincount(synth.pool.state_dict()["labels"][:500], minlength=10).sign(),
                       torch.ones(10, dtype=torch.long))


def test_nayer_asks_the_ensemble_teacher_with_the_label_priors_classes(digits_teacher):
    counts = SPY_COUNTS
    teacher = LabelSpyEnsemble(digits_teacher)
    seed_everything(0)
    synth = NoisyLayerSynthesizer(SPEC, "cpu", TINY_GEN, batch_size=16, synthesis_steps=2, pool_size=64)
    synth.set_label_prior(counts)
    for _ in range(2):
        out = synth.synthesize(teacher, _student())
    assert math.isfinite(out["synthesis_loss"]) and len(synth.pool) == 32
    assert (synth.pool.state_dict()["labels"][:32] < 3).all()  # only the classes the clients hold
    assert teacher.calls and all(teacher.calls)


# ------------------------------------------------------------------------------ exact resume
def _roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # what a run's checkpoint reads back


def test_a_resumed_nayer_continues_exactly_like_an_uninterrupted_one(digits_teacher):
    teacher = Teacher(digits_teacher)
    seed_everything(0)
    student = _student()

    def make() -> NoisyLayerSynthesizer:  # a life of 2 rounds: the resumed round re-initialises the generator
        return NoisyLayerSynthesizer(SPEC, "cpu", TINY_GEN, batch_size=16, synthesis_steps=2, pool_size=40,
                                     generator_life=2)

    original = make()
    for _ in range(3):
        original.synthesize(teacher, student)
    state = _roundtrip(original.state_dict())
    seed_everything(1)
    resumed = make()
    assert not torch.equal(resumed.generator.label_embedding, original.generator.label_embedding)
    resumed.load_state_dict(state)
    results = []
    for synth in (original, resumed):
        torch.manual_seed(7)
        out = synth.synthesize(teacher, student)
        results.append((out, synth.sample(8)[0], synth.state_dict()))
    (out_a, x_a, state_a), (out_b, x_b, state_b) = results
    assert out_a == out_b and torch.equal(x_a, x_b)
    assert state_a["rounds"] == state_b["rounds"] == 4
    assert all(torch.equal(state_a["generator"][k], state_b["generator"][k]) for k in state_a["generator"])


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(("kwargs", "key"), [
    ({"synthesis_steps": 0}, "synthesis_steps"),
    ({"lr": 0}, "lr"),
    ({"adv": -1.0}, "adv"),
    ({"generator_life": -1}, "generator_life"),
    ({"betas": [0.5, 1.0]}, "betas"),
    ({"generator": {"name": "cmi_generator"}}, "generator.name"),
])
def test_bad_settings_are_one_line_config_errors_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        NoisyLayerSynthesizer(SPEC, "cpu", **{"generator": TINY_GEN, **kwargs})
    assert f"synthesizer.{key}" in str(err.value) and "\n" not in str(err.value)


def test_a_teacher_without_batchnorm_and_an_empty_pool_are_clear_errors():
    synth = NoisyLayerSynthesizer(SPEC, "cpu", TINY_GEN, batch_size=8, synthesis_steps=1)
    with pytest.raises(RuntimeError, match="synthesize"):
        synth.sample(4)
    with pytest.raises(ConfigError, match="synthesizer.bn=0") as err:
        synth.synthesize(Teacher(build_model("lenet5", SPEC, batch_norm=False)), _student())
    assert "\n" not in str(err.value)
