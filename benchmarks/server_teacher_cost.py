"""What FedFTG's teacher costs the server per batch as the remembered population grows, on one CPU thread.

With a client memory (``strategy.teacher_memory_rounds``) the teacher is the ensemble of every client
heard from recently: about 50 members with 50 clients at 20 % a round, about 100 with 1,000 clients
at 1 % by round 10. This script times one teacher call on a batch of 64 samples (``small_cnn``, 16
channels, 28x28, 10 classes; the federated grid's server settings) three ways:

- ``grad``: forward and backward with respect to the inputs (the generator's step trains through it);
- ``no_grad``: forward only (the student's steps label their batch with it);
- ``bn_hooks``: ``grad`` inside DeepInversion's BN-statistics hooks (FedFTG's default generator loss,
  ``bn: 1.0``): for the dense teacher every member on the whole batch (``bn_label_sparse: false``, the
  default); for the label-sparse ones each member's statistics from the samples of its labels only
  (``strategy.synthesizer.bn_label_sparse=true``).

for the dense teacher, the label-sparse one (each member only on the samples whose label it holds),
and the label-sparse one over the clients :func:`~fedkd.strategies.server_teacher.select_members`
keeps (``teacher_members_per_class`` = k). Labels are drawn in proportion to the members' label counts
(the synthesizer's label prior). Label sets: ``2-3 classes`` (each client holds 2 or 3 classes with
skewed counts) for 50, 100 and 1,000 remembered clients, and the clients of the grid's Dirichlet-0.1
partition of 12,000 balanced labels over 50 clients (``dir0.1``; about 4.6 classes a client, many
of them a handful of samples). The members' weights are random (the time does not depend on them).

A second table times the server's whole round over 50 remembered clients, the parts the teacher
decides: loading the members' weights, then FedFTG's distillation as the strategy runs it (its
synthesizer from ``conf/synthesizer/fedftg.yaml`` with the grid's batch of 64 -- 5 iterations of one
generator step with the BN-statistics loss, then 2 student steps of 64 samples; the student a fresh
``small_cnn``). It leaves out the FedAvg average, the diagnostics and the images.

A third table (``fidelity``, needs Fashion-MNIST) asks what the cap changes in the teacher: 50
clients of a Dirichlet-0.1 partition of 12,000 training images, each trained 3 epochs from one
initial ``small_cnn`` (SGD, lr 0.01, momentum 0.9, batch 32: stand-ins for the memory's models), on
3,000 test images: the capped teacher's label-weighted logits (with the true label, as generated
samples get theirs) against the uncapped teacher's -- KL divergence and agreement of the argmax --
and the accuracy of both weightings (``"label"`` with the true label; ``"logit"``, no label).

The CPU may be shared: each figure is the median over repeats, and the ratios between rows say more
than the absolute seconds.

    .venv/bin/python benchmarks/server_teacher_cost.py [--repeats 7] [--tables teacher,round,fidelity]

Results: ``benchmarks/results/server_teacher_cost.json`` (the tables run replace theirs, the others
stay) and printed tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fedkd.data import get_spec
from fedkd.data.partitions import dirichlet, label_counts
from fedkd.datafree import (
    BNStatHooks,
    EnsembleTeacher,
    StudentRecipe,
    Synthesizer,
    class_weights_from_counts,
    distill,
)
from fedkd.federated import records as R
from fedkd.models import build_model
from fedkd.strategies.server_teacher import select_members

RESULTS = Path(__file__).resolve().parent / "results" / "server_teacher_cost.json"
SPEC = get_spec("fashion_mnist")
BATCH = 64
CAPS = (1, 2, 3, 5)


def few_class_counts(num_clients: int, seed: int) -> np.ndarray:
    """Each client holds 2 or 3 random classes, with counts from 1 to 400 (skewed within a client)."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((num_clients, SPEC.num_classes), dtype=np.int64)
    for m in range(num_clients):
        held = rng.choice(SPEC.num_classes, size=int(rng.integers(2, 4)), replace=False)
        counts[m, held] = rng.integers(1, 401, size=len(held))
    return counts


def dirichlet_counts(num_clients: int, seed: int) -> np.ndarray:
    """The label histograms of the grid's partition: 12,000 balanced labels, Dirichlet 0.1."""
    labels = np.repeat(np.arange(SPEC.num_classes), 12000 // SPEC.num_classes)
    return label_counts(labels, dirichlet(labels, num_clients, seed=seed, alpha=0.1), SPEC.num_classes)


def teacher_for(models: list[torch.nn.Module], counts: np.ndarray, cap: int | None, sparse: bool) -> EnsembleTeacher:
    """The server's label-weighted teacher (as :func:`~fedkd.strategies.server_teacher.ensemble_teacher`
    builds it) over ``models``, capped at ``cap`` members per class."""
    if cap is not None:
        kept, counts = select_members(counts, cap)
        models = [models[i] for i in kept]
    return EnsembleTeacher(models, class_weights_from_counts(counts), weighting="label", sparse=sparse)


def step(teacher: EnsembleTeacher, x: torch.Tensor, y: torch.Tensor, mode: str) -> Callable[[], None]:
    """One teacher call of ``mode`` (see the module doc) on ``x`` generated for labels ``y``."""
    def grad() -> None:
        inputs = x.clone().requires_grad_(True)
        torch.autograd.grad(torch.nn.functional.cross_entropy(teacher(inputs, y), y), inputs)

    def no_grad() -> None:
        with torch.no_grad():
            teacher(x, y)

    def bn_hooks() -> None:
        inputs = x.clone().requires_grad_(True)
        with BNStatHooks(teacher, label_sparse=teacher.sparse) as hooks:
            loss = torch.nn.functional.cross_entropy(teacher(inputs, y), y) + hooks.loss()
        torch.autograd.grad(loss, inputs)

    return {"grad": grad, "no_grad": no_grad, "bn_hooks": bn_hooks}[mode]


def seconds(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(name: str, counts: np.ndarray, repeats: int) -> list[dict]:
    """Every teacher variant over the clients of ``counts``: median seconds per call, members, forwards
    per sample. The variants take turns within each repeat, so a change in the CPU's load between
    repeats reaches all of them alike."""
    rng = np.random.default_rng(0)
    prior = counts.sum(0) / counts.sum()
    y = torch.as_tensor(rng.choice(SPEC.num_classes, size=BATCH, p=prior))
    x = torch.randn(BATCH, *SPEC.shape)
    models = [build_model("small_cnn", SPEC, channels=16).eval() for _ in range(len(counts))]
    rows, calls = [], []
    for cap, sparse in ((None, False), (None, True), *((k, True) for k in CAPS)):
        teacher = teacher_for(models, counts, cap, sparse)
        weights = teacher.class_weights[:, y]
        forwards = float((weights > 0).sum(0).float().mean()) if sparse else float(teacher.num_members)
        rows.append({"label_sets": name, "remembered": len(counts), "cap": cap, "sparse": sparse,
                     "members": teacher.num_members, "forwards_per_sample": forwards})
        calls.append({mode: step(teacher, x, y, mode) for mode in ("grad", "no_grad", "bn_hooks")})
    times: list[dict[str, list[float]]] = [{mode: [] for mode in c} for c in calls]
    for r in range(repeats + 1):  # the first round warms up
        for row, variant, spent in zip(rows, calls, times):
            if row["members"] > 100 and r != 1:  # a 1,000-member call takes tens of seconds: one, unwarmed
                continue
            for mode, fn in variant.items():
                took = seconds(fn)
                if r > 0:
                    spent[mode].append(took)
    for row, spent in zip(rows, times):
        row.update({f"{mode}_s": statistics.median(values) for mode, values in spent.items()})
        print(format_row(row), flush=True)
    return rows


def one_round(
    counts: np.ndarray, states: list, synthesizer: Synthesizer, recipe: StudentRecipe, cap: int | None, sparse: bool
) -> dict[str, float]:
    """Load the teacher's members from their weights, then one round of FedFTG's distillation."""
    start = time.perf_counter()
    kept, kept_counts = select_members(counts, cap) if cap is not None else (range(len(counts)), counts)
    models = []
    for i in kept:
        model = build_model("small_cnn", SPEC, channels=16)
        model.load_state_dict(R.state_dict(states[i]))
        models.append(model)
    teacher = EnsembleTeacher(models, class_weights_from_counts(kept_counts), weighting="label", sparse=sparse)
    loaded = time.perf_counter()
    student = build_model("small_cnn", SPEC, channels=16)
    distill(student, teacher, synthesizer, torch.optim.Adam(student.parameters(), lr=1e-4), 5,
            recipe=recipe, student_batch_size=BATCH, progress=False, freeze_bn_stats=True)
    done = time.perf_counter()
    return {"members": float(teacher.num_members), "load_s": loaded - start, "distill_s": done - loaded,
            "round_s": done - start}


def server_round(name: str, counts: np.ndarray, repeats: int) -> list[dict]:
    """Seconds of one server round's teacher-dependent parts (see the module doc) per teacher variant."""
    from hydra.utils import instantiate

    from fedkd.federated.config import compose_sim_config

    cfg = compose_sim_config(["dataset=fashion_mnist", "model.channels=16", "strategy=fedftg",
                              "strategy.synthesizer.batch_size=64"])
    synthesizer = instantiate(cfg.strategy.synthesizer)(spec=SPEC, device="cpu")
    recipe = synthesizer.recipe  # the student's steps and loss from the synthesizer's ``student`` node
    synthesizer.set_label_prior(counts.sum(0))
    states = [R.to_arrays(build_model("small_cnn", SPEC, channels=16)) for _ in range(len(counts))]
    # (cap, label-sparse teacher, label-sparse BN statistics)
    variants = [(None, False, False), (None, True, False), (None, True, True),
                *((k, True, bn) for k in (2, 3) for bn in (False, True))]
    runs: list[list[dict[str, float]]] = [[] for _ in variants]
    for _ in range(repeats):  # the variants take turns, as in :func:`measure`
        for (cap, sparse, bn_sparse), spent in zip(variants, runs):
            synthesizer.bn_label_sparse = bn_sparse
            spent.append(one_round(counts, states, synthesizer, recipe, cap, sparse))
    rows = []
    for (cap, sparse, bn_sparse), spent in zip(variants, runs):
        row = {"label_sets": name, "remembered": len(counts), "cap": cap, "sparse": sparse, "bn_sparse": bn_sparse,
               **{k: statistics.median(r[k] for r in spent) for k in spent[0]}}
        rows.append(row)
        variant = "dense" if not sparse else ("sparse" if cap is None else f"sparse, k={cap}")
        variant += ", BN sparse" if bn_sparse else ""
        print(f"{name:>12} {len(counts):>6} {variant:>24} {int(row['members']):>7} {row['load_s']:8.3f} "
              f"{row['distill_s']:8.3f} {row['round_s']:8.3f}", flush=True)
    return rows


def fidelity(seeds: tuple[int, ...] = (0, 1)) -> list[dict]:
    """The third table (see the module doc): how far each cap moves the teacher, per partition seed."""
    import torch.nn.functional as F

    from fedkd.data import load_dataset
    from fedkd.datafree.teacher_metrics import teacher_accuracies

    data = load_dataset("fashion_mnist", max_train=12000)
    train, test = data.train, data.test.subset(np.arange(3000))
    rows = []
    for seed in seeds:
        part = dirichlet(train.y.numpy(), 50, seed=seed, alpha=0.1)
        counts = label_counts(train.y.numpy(), part, SPEC.num_classes)
        torch.manual_seed(seed)
        start = build_model("small_cnn", SPEC, channels=16).state_dict()
        models = []
        for idx in part:
            model = build_model("small_cnn", SPEC, channels=16)
            model.load_state_dict(start)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            idx = torch.as_tensor(idx)
            for _ in range(3):
                for batch in idx[torch.randperm(len(idx))].split(32):
                    if len(batch) > 1:  # BatchNorm needs two samples
                        optimizer.zero_grad()
                        F.cross_entropy(model(train.x[batch]), train.y[batch]).backward()
                        optimizer.step()
            models.append(model.eval())
        with torch.no_grad():
            reference = teacher_for(models, counts, None, True)(test.x, test.y).log_softmax(1)
        for cap in (None, *CAPS):
            teacher = teacher_for(models, counts, cap, True)
            with torch.no_grad():
                capped = teacher(test.x, test.y).log_softmax(1)
            accuracy = teacher_accuracies(teacher, test, "cpu")
            row = {"seed": seed, "cap": cap, "members": teacher.num_members,
                   "kl_to_uncapped": float(F.kl_div(capped, reference, log_target=True, reduction="batchmean")),
                   "argmax_agreement": float((capped.argmax(1) == reference.argmax(1)).float().mean()),
                   "label_weighted_accuracy": accuracy["teacher_label_weighted_accuracy_true_label"],
                   "logit_weighted_accuracy": accuracy["teacher_logit_weighted_accuracy"]}
            rows.append(row)
            print(f"{seed:>4} {str(cap):>5} {row['members']:>7} {row['kl_to_uncapped']:8.4f} "
                  f"{row['argmax_agreement']:8.3f} {row['label_weighted_accuracy']:8.3f} "
                  f"{row['logit_weighted_accuracy']:8.3f}", flush=True)
    return rows


def format_row(row: dict) -> str:
    variant = "dense" if not row["sparse"] else ("sparse" if row["cap"] is None else f"sparse, k={row['cap']}")
    cells = [f"{row.get(k, float('nan')):8.3f}" for k in ("grad_s", "no_grad_s", "bn_hooks_s")]
    return (f"{row['label_sets']:>12} {row['remembered']:>6} {variant:>14} {row['members']:>7} "
            f"{row['forwards_per_sample']:>8.1f} " + " ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--round-repeats", type=int, default=3, help="repeats of the server-round table")
    parser.add_argument("--tables", default="teacher,round,fidelity", help="which tables to run (comma list)")
    args = parser.parse_args()
    tables = set(args.tables.split(","))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    summary = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    summary.update({"batch": BATCH, "threads": 1})
    if "teacher" in tables:
        print(f"{'label sets':>12} {'clients':>6} {'teacher':>14} {'members':>7} {'fwd/smp':>8} "
              f"{'grad s':>8} {'no_grad s':>8} {'bn s':>8}")
        rows = measure("2-3 classes", few_class_counts(50, 0), args.repeats)
        rows += measure("dir0.1", dirichlet_counts(50, 0), args.repeats)
        rows += measure("2-3 classes", few_class_counts(100, 1), args.repeats)
        rows += measure("2-3 classes", few_class_counts(1000, 2), args.repeats)
        summary.update({"repeats": args.repeats, "rows": rows})
    if "round" in tables:
        print(f"\n{'label sets':>12} {'clients':>6} {'teacher':>24} {'members':>7} {'load s':>8} {'distil s':>8} "
              f"{'round s':>8}")
        rounds = server_round("2-3 classes", few_class_counts(50, 0), args.round_repeats)
        rounds += server_round("dir0.1", dirichlet_counts(50, 0), args.round_repeats)
        summary.update({"round_repeats": args.round_repeats, "server_round": rounds})
    if "fidelity" in tables:
        print(f"\n{'seed':>4} {'cap':>5} {'members':>7} {'KL':>8} {'agree':>8} {'label acc':>8} {'logit acc':>8}")
        summary["fidelity"] = fidelity()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
