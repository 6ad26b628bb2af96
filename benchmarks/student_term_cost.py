"""What the activation regulariser costs per student step, piece by piece, on one CPU thread.

The activation term (``student_terms=[activation]``) runs at every student step: a connector (a
1x1 convolution and BatchNorm) on each paired student pre-activation, then the boundary hinge
against the teacher's. With LeNet-5-half's three conv1 channels mapped to the teacher's six at
28x28, the first layer's connector is most of the term's cost. This script times, forward and
backward on a batch of 128 (the leaderboard's):

- the connector's 1x1 convolution as ``nn.Conv2d`` and as :class:`PointwiseConv` (a matmul);
- the hinge as two masked hinges (``torch.where``) and as one signed hinge (the library's form).

    .venv/bin/python benchmarks/student_term_cost.py

Results: ``benchmarks/results/student_term_cost.json`` and a printed table (milliseconds per call).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fedkd.datafree.losses import activation_boundary_loss
from fedkd.datafree.student_terms.activation import PointwiseConv

RESULTS = Path(__file__).resolve().parent / "results" / "student_term_cost.json"


def two_hinges(student_pre: torch.Tensor, teacher_pre: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """The hinge as the library computed it before: both sides, then a mask."""
    s = student_pre.float()
    return torch.where(teacher_pre > 0, F.relu(margin - s), F.relu(margin + s)).pow(2).mean()


def milliseconds(fn: Callable[[], None], repeats: int = 100) -> float:
    for _ in range(5):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    student_pre = torch.randn(128, 3, 28, 28, requires_grad=True)  # LeNet-5-half's conv1 on 32x32 inputs
    teacher_pre = torch.randn(128, 6, 28, 28)
    conv, pointwise = nn.Conv2d(3, 6, 1, bias=False), PointwiseConv(3, 6)
    pointwise.load_state_dict(conv.state_dict())
    bn = nn.BatchNorm2d(6)
    rows = {
        "1x1 conv as nn.Conv2d": lambda: conv(student_pre).sum().backward(),
        "1x1 conv as PointwiseConv": lambda: pointwise(student_pre).sum().backward(),
        "hinge, two masked sides": lambda: two_hinges(bn(pointwise(student_pre)), teacher_pre).backward(),
        "hinge, one signed (library)": (
            lambda: activation_boundary_loss(bn(pointwise(student_pre)), teacher_pre).backward()
        ),
        "connector + hinge, before": lambda: two_hinges(bn(conv(student_pre)), teacher_pre).backward(),
        "connector + hinge, now": lambda: activation_boundary_loss(bn(pointwise(student_pre)), teacher_pre).backward(),
    }
    results = {name: milliseconds(fn) for name, fn in rows.items()}
    print(f"{'forward + backward, batch 128, 1 thread':42s} {'ms':>7s}")
    for name, ms in results.items():
        print(f"{name:42s} {ms:7.2f}")
    RESULTS.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                                   "milliseconds": results}, indent=1))


if __name__ == "__main__":
    main()
