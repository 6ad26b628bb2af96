"""The student-term hook of the one distillation loop: attached once, added to every step, detached."""

import pytest
import torch

from fedkd.data import load_dataset
from fedkd.datafree import DFADSynthesizer, StudentRecipe, Teacher, distill
from fedkd.datafree.student_terms import ForwardCapture, StudentTerm, check_student_terms
from fedkd.errors import ConfigError
from fedkd.models import build_model


class CountingTerm(StudentTerm):
    """Squared student logits: a term whose value and gradient are easy to predict."""

    name = "counting"

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__(weight)
        self.calls = {"attach": 0, "detach": 0, "call": 0, "step": 0}

    def attach(self, student, teacher) -> None:
        self.calls["attach"] += 1

    def detach(self) -> None:
        self.calls["detach"] += 1

    def __call__(self, batch) -> torch.Tensor:
        self.calls["call"] += 1
        return batch.student_logits.float().pow(2).mean()

    def step(self) -> None:
        self.calls["step"] += 1


def _setup():
    spec = load_dataset("digits").spec
    torch.manual_seed(0)
    teacher = Teacher(build_model("lenet5", spec))
    student = build_model("lenet5_half", spec)
    synth = DFADSynthesizer(spec, generator={"name": "dfad_generator", "ngf": 8}, batch_size=16)
    return spec, teacher, student, synth


RECIPE = StudentRecipe(steps=3, loss="l1")  # DFAD's loss, 3 student steps per iteration


def test_terms_are_attached_once_called_every_step_and_reported():
    _, teacher, student, synth = _setup()
    term = CountingTerm(weight=0.5)
    opt = torch.optim.SGD(student.parameters(), lr=0.01)
    out = distill(student, teacher, synth, opt, iterations_per_epoch=2, recipe=RECIPE, epochs=2, student_batch_size=8,
                  progress=False, terms=[term])
    assert term.calls == {"attach": 1, "detach": 1, "call": 2 * 2 * 3, "step": 2 * 2 * 3}
    assert out["term/counting"] > 0


def test_a_term_changes_what_the_student_learns():
    results = []
    for weight in (0.0, 10.0):
        _, teacher, student, synth = _setup()
        opt = torch.optim.SGD(student.parameters(), lr=0.05)
        distill(student, teacher, synth, opt, iterations_per_epoch=3, recipe=RECIPE, student_batch_size=16,
                progress=False, terms=[CountingTerm(weight)])
        x = torch.randn(64, 1, 28, 28)
        results.append(student.eval()(x).pow(2).mean().item())
    assert results[1] < results[0]  # the penalty on squared logits shrank them


def test_terms_are_detached_when_the_loop_fails():
    _, teacher, student, synth = _setup()

    class Failing(CountingTerm):
        def __call__(self, batch):
            raise RuntimeError("boom")

    term = Failing()
    with pytest.raises(RuntimeError):
        distill(student, teacher, synth, torch.optim.SGD(student.parameters(), lr=0.01), 1, recipe=RECIPE,
                progress=False, terms=[term])
    assert term.calls["detach"] == 1


def test_forward_capture_keeps_outputs_or_inputs():
    layer = torch.nn.Linear(3, 2)
    out_cap, in_cap = ForwardCapture([layer]), ForwardCapture([layer], inputs=True)
    x = torch.randn(4, 3)
    y = layer(x)
    assert torch.equal(out_cap.values[0], y) and torch.equal(in_cap.values[0], x)
    out_cap.remove()
    in_cap.remove()
    assert not layer._forward_hooks and not layer._forward_pre_hooks


def test_forward_capture_keeps_the_input_of_an_in_place_relu():
    relu = torch.nn.ReLU(inplace=True)
    capture = ForwardCapture([relu], inputs=True)
    x = torch.tensor([-1.0, 2.0])
    relu(x.clone())
    assert capture.values[0].tolist() == [-1.0, 2.0]
    capture.remove()


def test_config_entries_must_be_terms_and_weights_non_negative():
    with pytest.raises(ConfigError, match="student_terms.bad is not a student term"):
        check_student_terms({"bad": {"weight": 1.0}}, "student_terms")
    with pytest.raises(ConfigError, match="weight must be >= 0"):
        CountingTerm(weight=-1.0)
