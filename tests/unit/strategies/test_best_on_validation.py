"""The server's choice of student on a labelled validation split, and the distiller's per-iteration hook."""

from __future__ import annotations

import torch

from fedkd.datafree import RealDataSource, StudentRecipe, Teacher, distill
from fedkd.models import build_model
from fedkd.strategies.best_on_validation import BestOnValidation
from fedkd.training import evaluate
from fedkd.utils.seeding import seed_everything

CPU = torch.device("cpu")


def _distil(digits, teacher, student, lr: float, keeper=None, iterations: int = 4, epochs: int = 1):
    source = RealDataSource(digits.spec, train=digits.train.x[:256], seed=0)
    optimizer = torch.optim.SGD(student.parameters(), lr=lr)
    return distill(student, Teacher(teacher), source, optimizer, iterations, recipe=StudentRecipe(steps=1),
                   epochs=epochs, student_batch_size=64, progress=False, on_iteration=keeper)


def test_on_iteration_counts_every_iteration_across_epochs(digits, digits_teacher):
    seed_everything(0)
    seen = []
    out = _distil(digits, digits_teacher, build_model("lenet5_half", digits.spec), 0.01, seen.append, iterations=3,
                  epochs=2)
    assert seen == [1, 2, 3, 4, 5, 6] and out["student_samples"] == 6 * 64


def test_the_best_student_on_validation_is_kept_and_the_start_counts(digits, digits_teacher):
    validation = digits.test.subset(torch.arange(200))
    seed_everything(0)
    student = build_model("lenet5_half", digits.spec)  # untrained: distilling can only help it
    keeper = BestOnValidation(student, validation, CPU)
    _distil(digits, digits_teacher, student, 0.1, keeper, iterations=6)
    figures = keeper.restore()
    assert figures["validation_best_iteration"] >= 1
    assert figures["validation_accuracy_best"] > figures["validation_accuracy_start"]
    assert evaluate(student, validation, CPU)["accuracy"] == figures["validation_accuracy_best"]

    # a step so large that it wrecks the teacher's copy: the model it started from is kept, bit for bit
    trained = build_model("lenet5", digits.spec)
    trained.load_state_dict(digits_teacher.state_dict())
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    keeper = BestOnValidation(trained, validation, CPU)
    _distil(digits, digits_teacher, trained, 1e4, keeper)
    figures = keeper.restore()
    assert figures["validation_best_iteration"] == 0 and figures["validation_accuracy_best"] > 0.8
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert keeper.seconds > 0
