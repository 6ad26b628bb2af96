"""Where a finished data-free run's student goes wrong (reporting only; nothing is chosen here).

For one ``fedkd-distill`` run folder of the leaderboard (its ``student.pt`` and, for the pool
methods, the pool in ``train_state.pt``), against the leaderboard teacher:

- per class: the teacher's and the student's test accuracy, and how often the student agrees with
  the teacher on the pool samples the teacher assigns to that class;
- the student's test accuracy with its BatchNorm statistics as distilled, and re-estimated on 10,000
  real training images (does a mismatch of the synthetic statistics explain the gap?).

    .venv/bin/python benchmarks/student_diagnosis.py outputs/benchmarks/leaderboard/best_combination/seed0

Writes ``benchmarks/results/student_diagnosis_<row>_<seed folder>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datafree_leaderboard as board  # (the leaderboard's runner, teacher and folders)


def fail(message: str) -> None:
    """One line on stderr and exit status 2 (bad input)."""
    print(message, file=sys.stderr)
    sys.exit(2)


@torch.no_grad()
def predictions(model: nn.Module, x: torch.Tensor, batch: int = 2000) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


@torch.no_grad()
def recalibrated(student: nn.Module, x: torch.Tensor, batch: int = 500) -> nn.Module:
    """A copy of ``student`` whose BN running statistics are the plain average over ``x``."""
    model = copy.deepcopy(student)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    model.train()
    for i in range(0, len(x), batch):
        model(x[i:i + batch])
    return model


def main() -> None:
    from fedkd.data import load_dataset
    from fedkd.models.registry import build_model
    from fedkd.utils.checkpoint import load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished leaderboard run folder (student.pt)")
    args = parser.parse_args()
    if not (args.run / "student.pt").is_file():
        fail(f"fedkd: error: {args.run} has no student.pt; give the folder of a finished fedkd-distill run")
    torch.set_num_threads(1)
    data = load_dataset("fashion_mnist")
    teacher = build_model("lenet5", data.spec)
    load_model(board.TEACHER / "model.pt", teacher)
    student = build_model("lenet5_half", data.spec)
    load_model(args.run / "student.pt", student)
    x, y = data.test.x, data.test.y
    t_pred, s_pred = predictions(teacher, x), predictions(student, x)
    pool_t = pool_s = None
    state = args.run / "train_state.pt"
    if state.is_file():
        pool = torch.load(state, map_location="cpu", weights_only=True)["parts"]["synthesizer"].get("pool")
        if pool is not None:
            samples = pool["data"][: int(pool["size"])]
            pool_t, pool_s = predictions(teacher, samples), predictions(student, samples)
    classes = []
    print(f"{'class':>5s} {'teacher %':>9s} {'student %':>9s} {'pool agreement %':>16s}")
    for c in range(data.spec.num_classes):
        mask = y == c
        row = {"class": c, "teacher_test_accuracy": (t_pred[mask] == c).float().mean().item(),
               "student_test_accuracy": (s_pred[mask] == c).float().mean().item()}
        if pool_t is not None:
            in_class = pool_t == c
            row["pool_agreement"] = (pool_s[in_class] == c).float().mean().item() if in_class.any() else None
        classes.append(row)
        agree = row.get("pool_agreement")
        print(f"{c:5d} {100 * row['teacher_test_accuracy']:9.1f} {100 * row['student_test_accuracy']:9.1f} "
              f"{'-' if agree is None else f'{100 * agree:.1f}':>16s}")
    as_distilled = (s_pred == y).float().mean().item()
    recal = (predictions(recalibrated(student, data.train.x[:10000]), x) == y).float().mean().item()
    print(f"student test accuracy {100 * as_distilled:.2f} %; with BN statistics from 10,000 real training "
          f"images {100 * recal:.2f} %")
    out = board.RESULTS / f"student_diagnosis_{args.run.parent.name}_{args.run.name}.json"
    out.write_text(json.dumps({"run": str(args.run), "classes": classes, "student_test_accuracy": as_distilled,
                               "student_test_accuracy_real_bn_statistics": recal}, indent=1))


if __name__ == "__main__":
    main()
