"""The student's recipe (steps, loss, temperature): one home, the synthesizer's ``student`` argument."""

from __future__ import annotations

import functools

import pytest
import torch

from fedkd.data import get_spec
from fedkd.datafree import DFADSynthesizer, PseudoReplaySynthesizer, StudentRecipe, Teacher, distill
from fedkd.errors import ConfigError
from fedkd.models import build_model

SPEC = get_spec("digits")


@pytest.mark.parametrize(("values", "key"), [
    ({"steps": 0}, "synthesizer.student.steps"),
    ({"steps": 2.5}, "synthesizer.student.steps"),
    ({"loss": "mse"}, "synthesizer.student.loss"),
    ({"temperature": 0.0}, "synthesizer.student.temperature"),
    ({"stepz": 3}, "synthesizer.student.stepz"),
    ({"grad_clip": 0}, "synthesizer.student.grad_clip"),
    ({"grad_clip": -1.0}, "synthesizer.student.grad_clip"),
])
def test_bad_recipes_are_one_line_config_errors_naming_the_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        StudentRecipe.from_config(values)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="strategy.synthesizer.student"):
        StudentRecipe.from_config(values, "strategy.synthesizer.student")


def test_defaults_and_equality_ignore_the_config_key():
    assert StudentRecipe.from_config(None) == StudentRecipe() == StudentRecipe(1, "kl", 1.0, key="elsewhere")
    assert StudentRecipe.from_config({"steps": 5, "loss": "l1"}) == StudentRecipe(steps=5, loss="l1")


def test_the_student_node_is_a_constructor_argument_kept_as_the_recipe():
    base = functools.partial(DFADSynthesizer, batch_size=8, student={"steps": 9, "loss": "l1"})
    wrapper = functools.partial(PseudoReplaySynthesizer, base=base,
                                student={"steps": 3, "loss": "l1", "temperature": 1.0})
    synth = wrapper(spec=SPEC, device="cpu")
    assert synth.recipe == StudentRecipe(steps=3, loss="l1")  # the wrapper's node counts
    assert isinstance(synth.base, DFADSynthesizer) and synth.base.recipe == StudentRecipe(steps=9, loss="l1")
    assert DFADSynthesizer(SPEC).recipe == StudentRecipe()  # no node: the defaults
    recipe = StudentRecipe(steps=2, loss="l1")
    assert DFADSynthesizer(SPEC, student=recipe).recipe is recipe
    assert "recipe" not in DFADSynthesizer(SPEC, student=recipe).state_dict()  # the config holds it
    with pytest.raises(ConfigError, match="synthesizer.student.loss"):
        DFADSynthesizer(SPEC, student={"loss": "mse"})


def test_distill_runs_the_recipes_steps_and_needs_one():
    torch.manual_seed(0)
    student, teacher = build_model("lenet5_half", SPEC), Teacher(build_model("lenet5_half", SPEC))
    synth = DFADSynthesizer(SPEC, generator={"name": "dfad_generator", "ngf": 4}, batch_size=8)
    opt = torch.optim.SGD(student.parameters(), lr=0.01)
    out = distill(student, teacher, synth, opt, 2, recipe=StudentRecipe(steps=3, loss="l1"), student_batch_size=4,
                  progress=False)
    assert out["student_samples"] == 2 * 3 * 4
    with pytest.raises(TypeError):
        distill(student, teacher, synth, opt, 1, progress=False)  # no recipe
    with pytest.raises(TypeError, match="StudentRecipe"):
        distill(student, teacher, synth, opt, 1, recipe={"steps": 1}, progress=False)


def _one_update(grad_clip: float | None) -> tuple[float, float]:
    """(norm of the student's parameter change, reported gradient norm) after one plain SGD step at lr 1."""
    torch.manual_seed(0)
    student, teacher = build_model("lenet5_half", SPEC), Teacher(build_model("lenet5_half", SPEC))
    synth = DFADSynthesizer(SPEC, generator={"name": "dfad_generator", "ngf": 4}, batch_size=8)
    before = torch.cat([p.detach().flatten().clone() for p in student.parameters()])
    opt = torch.optim.SGD(student.parameters(), lr=1.0)
    out = distill(student, teacher, synth, opt, 1, recipe=StudentRecipe(steps=1, loss="l1", grad_clip=grad_clip),
                  student_batch_size=8, progress=False)
    after = torch.cat([p.detach().flatten() for p in student.parameters()])
    return (after - before).norm().item(), out["student_grad_norm"]


def test_grad_clip_bounds_the_students_update_and_the_norm_before_it_is_reported():
    moved, norm = _one_update(None)
    assert moved == pytest.approx(norm, rel=1e-4) and norm > 0.01  # lr 1: the step is the gradient
    moved_clipped, norm_clipped = _one_update(0.01)
    assert norm_clipped == pytest.approx(norm, rel=1e-5)  # measured before clipping
    assert moved_clipped == pytest.approx(0.01, rel=1e-3)
