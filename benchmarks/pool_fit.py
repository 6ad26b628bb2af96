"""What the student can learn from a finished run's sample pool, with the synthesis taken out.

A pool-based synthesizer (DeepInversion, Fast, CMI) leaves its pool in the run's ``train_state.pt``.
This script fits a *fresh* LeNet-5-half to the leaderboard teacher's outputs on that fixed pool,
with the leaderboard's student budget (3,200 SGD steps of 128 shifted and flipped samples, lr 0.1,
cosine), under several student recipes, and reports:

- ``holdout``: accuracy on the last 5,000 Fashion-MNIST training images (the tuning holdout; the
  test set is not read), and
- ``pool agreement``: how often the student's argmax matches the teacher's on the pool itself (how
  well the student fits what it was trained on).

The pool ``real`` is the first ``--real-size`` Fashion-MNIST training images (not data-free: the
reference). Fitting it and a synthetic pool of the same size with the same recipe separates "the
samples lack something" from "the student learns them badly". Recipes vary the KD temperature and
whether the student's batches are shifted and flipped (``--augment on,off``). A recipe that scores
higher here is a candidate for ``benchmarks/datafree_tuning.py``, never a result by itself.

    .venv/bin/python benchmarks/pool_fit.py --jobs 2                     # the default pools x recipes
    .venv/bin/python benchmarks/pool_fit.py --pools di=outputs/.../seed0 --temperatures 4,20
    .venv/bin/python benchmarks/pool_fit.py --pools both=RUN_A+RUN_B --augment shift,rrc,shift+cutmix \
        --lrs 0.05,0.1 --steps 9600 --out pool_fit_mine.json             # merged pools, views, rates, budget
    .venv/bin/python benchmarks/pool_fit.py --pools di=RUN --weight-decays 5e-4,5e-3 --emas 0,0.999 --seeds 0,1

Results: ``benchmarks/results/pool_fit.json`` (or ``--out``; one entry per pool x recipe) and a printed table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datafree_leaderboard as board  # (the leaderboard's runner, teacher and folders)

from fedkd.data import load_dataset
from fedkd.data.augment import random_affine, random_crop_flip, random_resized_crop
from fedkd.datafree.losses import convex_mix, kl_divergence, kl_per_sample
from fedkd.models.registry import build_model
from fedkd.utils.checkpoint import load_model

RESULTS = board.RESULTS / "pool_fit.json"
DEFAULT_POOLS = {
    "deepinversion_256x50": board.OUT / "tuning" / "di_b256",
    "fast2_b512": board.OUT / "fast_b512" / "seed0",
    "real": "real",
}


def fail(message: str) -> None:
    """One line on stderr and exit status 2 (bad input)."""
    print(message, file=sys.stderr)
    sys.exit(2)


def load_pool(folder: str, real_size: int) -> torch.Tensor:
    """The filled part of the synthesizer's pool in ``folder/train_state.pt``, or ``real`` images;
    ``a+b`` concatenates the pools of several runs."""
    if "+" in folder:
        return torch.cat([load_pool(part, real_size) for part in folder.split("+")])
    if folder == "real":
        return load_dataset("fashion_mnist").train.x[:real_size]
    state = torch.load(Path(folder) / "train_state.pt", map_location="cpu", weights_only=True)
    pool = state["parts"]["synthesizer"]["pool"]
    return pool["data"][: int(pool["size"])]


@dataclass
class ViewContext:
    """What a view may use: the pool synthesizers' shift (``image_size // 8`` pixels) and, for the
    model-guided views, the (frozen) teacher and the student being fitted."""

    pad: int
    teacher: nn.Module
    student: nn.Module


def _shift(x: torch.Tensor, ctx: ViewContext) -> torch.Tensor:
    return random_crop_flip(x, ctx.pad, True)


def _mixup(x: torch.Tensor, ctx: ViewContext) -> torch.Tensor:
    """Shifted samples, each mixed with another of the batch at a uniform weight."""
    x = _shift(x, ctx)
    return convex_mix(x, x[torch.randperm(len(x))], torch.rand(len(x)))


def _cutmix(x: torch.Tensor, ctx: ViewContext) -> torch.Tensor:
    x = _shift(x, ctx)
    return _boxes(x, x[torch.randperm(len(x))])


def _erase(x: torch.Tensor, ctx: ViewContext) -> torch.Tensor:
    x = _shift(x, ctx)
    return _boxes(x, torch.zeros_like(x))


def _boxes(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Each sample with a random box (up to half its area) taken from ``source``."""
    n, _, h, w = x.shape
    side = (torch.rand(n) * 0.5).sqrt()
    bh, bw = (side * h).long().clamp(min=1), (side * w).long().clamp(min=1)
    top, left = (torch.rand(n) * (h - bh + 1)).long(), (torch.rand(n) * (w - bw + 1)).long()
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + bh).view(n, 1, 1))
              & (cols >= left.view(n, 1, 1)) & (cols < (left + bw).view(n, 1, 1)))
    return torch.where(inside.unsqueeze(1), source, x)


def _walk(
    x: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor], length: float, steps: int
) -> torch.Tensor:
    """The first half of the batch moved ``steps`` times by ``length`` (L2, in normalised pixels; a
    Fashion-MNIST image has norm ~27) along the normalised gradient of ``objective`` (summed over
    the samples); the second half unchanged, so the student still sees the pool's own samples."""
    moved = x[: len(x) // 2]
    for _ in range(steps):
        moved = moved.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(objective(moved).sum(), moved)
        moved = moved + length * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return torch.cat([moved.detach(), x[len(x) // 2 :]])


def _boundary(length: float) -> Callable[[torch.Tensor, ViewContext], torch.Tensor]:
    """Boundary-supporting samples (Heo et al., AAAI 2019, for KD from few samples): three steps that
    close the teacher's margin between its top two classes, so half the batch lies near the
    teacher's decision boundaries -- where the student errs on real garments."""

    def view(x: torch.Tensor, ctx: ViewContext) -> torch.Tensor:
        def negative_margin(batch: torch.Tensor) -> torch.Tensor:
            top2 = ctx.teacher(batch).topk(2, dim=1).values
            return top2[:, 1] - top2[:, 0]

        return _walk(_shift(x, ctx), negative_margin, length, steps=3)

    return view


def _adversarial(x: torch.Tensor, ctx: ViewContext) -> torch.Tensor:
    """One step up the student-teacher KL (DFAD's adversary applied to pool samples), length 3."""
    was_training = ctx.student.training
    ctx.student.eval()  # the step must not move the student's BN running statistics
    x = _walk(_shift(x, ctx), lambda b: kl_per_sample(ctx.student(b), ctx.teacher(b)), 3.0, steps=1)
    ctx.student.train(was_training)
    return x


#: The student's batch views ``(x, ctx) -> x``. ``shift`` is the pool synthesizers' own (shifts of
#: ``pad`` pixels and flips); the teacher labels whatever the student sees, so every view is a new
#: sample with an exact soft label.
VIEWS: dict[str, Callable[[torch.Tensor, ViewContext], torch.Tensor]] = {
    "none": lambda x, ctx: x,
    "shift": _shift,
    "rrc": lambda x, ctx: random_resized_crop(x, scale=(0.5, 1.0)),  # 50-100 % of the area + flip
    "affine": lambda x, ctx: random_affine(x, degrees=15, scale=(0.9, 1.1), pad=ctx.pad),
    "shift+mixup": _mixup,
    "shift+cutmix": _cutmix,  # a box pasted from another sample
    "shift+erase": _erase,  # a box blanked
    "shift+boundary3": _boundary(3.0),
    "shift+boundary6": _boundary(6.0),
    "shift+adversarial": _adversarial,
}
ON_OFF = {"on": "shift", "off": "none"}  # the recipe names pool_fit.json's rows use


def fit(pool: str, temperature: float, augment: str, steps: int, seed: int, real_size: int,
        lr: float = 0.1, weight_decay: float = 5e-4, ema: float = 0.0) -> dict:
    """One fresh student fitted on ``pool`` under the view ``augment`` (a :data:`VIEWS` name, or on/off).

    ``ema > 0`` evaluates an exponential moving average of the student's weights (decay ``ema`` per
    step, BN buffers copied) instead of the last weights."""
    view = VIEWS[ON_OFF.get(augment, augment)]
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    data = load_dataset("fashion_mnist")
    teacher = build_model("lenet5", data.spec)
    load_model(board.TEACHER / "model.pt", teacher)
    teacher.eval().requires_grad_(False)
    x_pool = load_pool(pool, real_size)
    holdout = data.train.subset(range(len(data.train) - 5000, len(data.train)))
    student = build_model("lenet5_half", data.spec)
    optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    context = ViewContext(data.spec.image_size // 8, teacher, student)
    average = torch.optim.swa_utils.AveragedModel(
        student, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema), use_buffers=True) if ema > 0 else None
    start = time.perf_counter()
    for _ in range(steps):
        x = view(x_pool[torch.randint(len(x_pool), (128,))], context)
        with torch.no_grad():
            t_logits = teacher(x)
        student.train()
        loss = kl_divergence(student(x), t_logits, temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if average is not None:
            average.update_parameters(student)
    if average is not None:
        student = average.module
    student.eval()
    with torch.no_grad():
        acc = (student(holdout.x).argmax(1) == holdout.y).float().mean().item()
        agree = (student(x_pool).argmax(1) == teacher(x_pool).argmax(1)).float().mean().item()
    recorded = {"on": True, "off": False}.get(augment, augment)  # on/off rows as pool_fit.json records them
    return {"pool": pool, "pool_size": len(x_pool), "temperature": temperature, "augment": recorded,
            "steps": steps, "seed": seed, "lr": lr, "weight_decay": weight_decay, "ema": ema,
            "holdout_accuracy": acc, "pool_agreement": agree, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", default=",".join(f"{k}={v}" for k, v in DEFAULT_POOLS.items()),
                        help="name=run_folder,... (folders of finished pool-based runs)")
    parser.add_argument("--temperatures", default="1,4,20")
    parser.add_argument("--augment", default="on,off",
                        help="on, off, or views: " + ", ".join(VIEWS))
    parser.add_argument("--real-size", type=int, default=25600,
                        help="images in the 'real' pool (DeepInversion's pool size)")
    parser.add_argument("--steps", type=int, default=3200)
    parser.add_argument("--lrs", default="0.1", help="student SGD learning rates (cosine to 0), comma-separated")
    parser.add_argument("--weight-decays", default="5e-4", help="student SGD weight decays, comma-separated")
    parser.add_argument("--emas", default="0",
                        help="decays of an average of the student's weights (0: the last weights)")
    parser.add_argument("--seeds", default="0", help="fit seeds, comma-separated (each recipe once per seed)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default=RESULTS.name, help="result file name under benchmarks/results/")
    args = parser.parse_args()
    pools = dict(item.split("=", 1) for item in args.pools.split(","))
    missing = [f"{k} ({part})" for k, v in pools.items() for part in v.split("+")
               if part != "real" and not (Path(part) / "train_state.pt").is_file()]
    if missing:
        fail(f"fedkd: error: no finished run with a pool at {', '.join(missing)}; run the leaderboard or "
                 "tuning script first, or pass --pools name=FOLDER")
    unknown = [a for a in args.augment.split(",") if a not in VIEWS and a not in ON_OFF]
    if unknown:
        fail(f"fedkd: error: unknown --augment {', '.join(unknown)}; choose from {', '.join([*ON_OFF, *VIEWS])}")
    def numbers(flag: str, text: str, kind: type = float) -> list:
        try:
            return [kind(v) for v in text.split(",")]
        except ValueError:
            fail(f"fedkd: error: --{flag} takes comma-separated {kind.__name__}s (got {text!r}), e.g. --{flag} 0,1")

    emas = numbers("emas", args.emas)
    if any(not 0 <= e < 1 for e in emas):
        fail(f"fedkd: error: --emas must lie in [0, 1) (got {args.emas}); 0 evaluates the last weights")
    jobs = [(name, t, a, lr, wd, ema, seed) for name in pools for t in numbers("temperatures", args.temperatures)
            for a in args.augment.split(",") for lr in numbers("lrs", args.lrs)
            for wd in numbers("weight-decays", args.weight_decays) for ema in emas
            for seed in numbers("seeds", args.seeds, int)]
    # Processes, not threads: each fit seeds torch's global RNG, which threads would share.
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as executor:
        fits = [executor.submit(fit, str(pools[name]), t, a, args.steps, seed, args.real_size, lr, wd, ema)
                for name, t, a, lr, wd, ema, seed in jobs]
        rows = [{"name": job[0], **f.result()} for job, f in zip(jobs, fits, strict=True)]
    print(f"{'pool':24s} {'size':>6s} {'T':>4s} {'augment':>12s} {'lr':>6s} {'wd':>7s} {'ema':>6s} {'seed':>4s} "
          f"{'holdout':>8s} {'pool agreement':>15s} {'s':>5s}")
    for (_, _, view, *_), r in zip(jobs, rows, strict=True):
        print(f"{r['name']:24s} {r['pool_size']:6d} {r['temperature']:4g} {view:>12s} {r['lr']:6g} "
              f"{r['weight_decay']:7g} {r['ema']:6g} {r['seed']:4d} "
              f"{100 * r['holdout_accuracy']:7.2f}% {100 * r['pool_agreement']:14.2f}% {r['seconds']:5.0f}")
    RESULTS.parent.joinpath(args.out).write_text(
        json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
