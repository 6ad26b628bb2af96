"""Centralized data-free distillation on real Fashion-MNIST: LeNet-5 teacher -> LeNet-5-half student.

Rows (each a separate process, so its peak memory is its own):

1. teacher: LeNet-5 trained on the real training set (``fedkd-train``);
2. KD (real data): the student distilled on the real training set through the same loop and the
   same number of student steps as DFAD -- the data-driven reference;
3. DFAD and 4. CMI: data-free students (``fedkd-distill``).

Plus a speed comparison of one DFAD iteration (5 student steps + 1 generator step): a loop written
straightforwardly with the 32x32 CIFAR-shaped generator (128 channels, two upsamplings; the teacher
sees the centre 28x28 crop) against ours, and where the time of each goes.

    .venv/bin/python benchmarks/centralized_fashion_mnist.py                 # CPU budget (see docs/centralized.md)
    .venv/bin/python benchmarks/centralized_fashion_mnist.py --budget paper  # paper-length, for a GPU

Prints a table and writes ``benchmarks/results/centralized_fashion_mnist.{json,txt}`` (``_paper`` for
the paper budget). Timings on a shared machine are noisy: the speed comparison interleaves the two
loops; it always runs on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = REPO / "benchmarks" / "results"

# Budgets: Hydra overrides per row. "cpu" fits a 2-core CPU; "paper" is DFAD's MNIST script
# (2,000 iterations of 5 + 1 steps at batch 512, the 128-channel generator, generator lr 1e-3) and a
# CMI run with the paper's 200 synthesis steps per round.
BUDGETS: dict[str, dict[str, list[str]]] = {
    "cpu": {
        "teacher": ["epochs=10", "batch_size=128", "optim.lr=0.05"],
        # 640 iterations x 5 student steps = 3,200 student steps at batch 128.
        "dfad": [
            "epochs=10", "iterations_per_epoch=64", "student_batch_size=128", "synthesizer.batch_size=128",
            "synthesizer.generator.ngf=16", "synthesizer.lr=1e-4",
        ],
        # 100 rounds x 60 synthesis steps; 100 x 32 = 3,200 student steps at batch 128. Synthesis is
        # nearly all the cost: 60 steps per round (paper: 200) and cross-entropy weight 2 gave the
        # best 4-epoch runs (78.5-79.3% against 76.6% for 30 steps and weight 0.5, same compute).
        "cmi": [
            "epochs=10", "iterations_per_epoch=10", "student_batch_size=128", "synthesizer.batch_size=128",
            "synthesizer.synthesis_steps=60", "synthesizer.lr=1e-2", "synthesizer.oh=2.0",
            "synthesizer.student.steps=32", "synthesizer.hflip=true",
        ],
    },
    # Checks that the script runs end to end (a minute or two); its figures mean nothing.
    "smoke": {
        "teacher": ["epochs=1", "batch_size=128", "optim.lr=0.05", "dataset.max_train=2000"],
        "dfad": ["epochs=1", "iterations_per_epoch=2", "student_batch_size=64", "synthesizer.batch_size=64",
                 "synthesizer.lr=1e-4"],
        "cmi": ["epochs=1", "iterations_per_epoch=2", "student_batch_size=64", "synthesizer.batch_size=64",
                "synthesizer.synthesis_steps=2", "synthesizer.student.steps=5", "synthesizer.hflip=true"],
    },
    "paper": {
        "teacher": ["epochs=30", "batch_size=128", "optim.lr=0.05"],
        "dfad": [
            "epochs=40", "iterations_per_epoch=50", "student_batch_size=512", "synthesizer.batch_size=512",
            "synthesizer.generator.ngf=64", "synthesizer.generator.nz=100", "synthesizer.lr=1e-3",
        ],
        "cmi": [
            "epochs=40", "iterations_per_epoch=10", "student_batch_size=256", "synthesizer.batch_size=256",
            "synthesizer.synthesis_steps=200", "synthesizer.student.steps=100", "synthesizer.hflip=true",
            "synthesizer.generator.ngf=64", "synthesizer.generator.nz=256",
        ],
    },
}


def run_process(cmd: list[str], env: dict[str, str], log_path: Path, run_dir: Path) -> tuple[float, float, int]:
    """Run ``cmd`` in a fresh ``run_dir``; return (wall seconds, peak RSS MiB of that process, exit code)."""
    shutil.rmtree(run_dir, ignore_errors=True)  # a previous run's metrics.jsonl would be appended to
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, proc.returncode


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------ speed
def straightforward_iteration(generator, teacher, student, opt_g, opt_s, batch: int, nz: int, crop: int) -> None:
    """One DFAD iteration written as in the paper's code: the generator always tracks gradients
    (its output is detached afterwards), the teacher runs with autograd on, the generator loss
    back-propagates through the student's weights too, NCHW tensors."""

    def center(x: torch.Tensor) -> torch.Tensor:
        off = (x.shape[-1] - crop) // 2
        return x[..., off : off + crop, off : off + crop]

    for _ in range(5):
        opt_s.zero_grad()
        fake = center(generator(torch.randn(batch, nz))).detach()
        loss_s = F.l1_loss(student(fake), teacher(fake).detach())
        loss_s.backward()
        opt_s.step()
    opt_g.zero_grad()
    fake = center(generator(torch.randn(batch, nz)))
    loss_g = -F.l1_loss(student(fake), teacher(fake))
    loss_g.backward()
    opt_g.step()


def component_times(generator, teacher, student, batch: int, nz: int, crop: int) -> dict[str, float]:
    """Seconds per call of each piece at ``batch`` (after one warm-up call)."""
    z = torch.randn(batch, nz)
    with torch.no_grad():
        x = generator(z)[..., :crop, :crop].contiguous()

    def timed(fn) -> float:
        fn()
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def gen_nograd():
        with torch.no_grad():
            generator(z)

    def teacher_nograd():
        with torch.no_grad():
            teacher(x)

    return {
        "generator_forward_no_grad": timed(gen_nograd),
        "generator_forward_backward": timed(lambda: generator(z).sum().backward()),
        "teacher_forward_no_grad": timed(teacher_nograd),
        "student_forward_backward": timed(lambda: student(x).sum().backward()),
    }


def speed_phase(args: argparse.Namespace) -> dict:
    """Straightforward vs ours, interleaved iteration by iteration, at the same batch size."""
    from fedkd.data import get_spec
    from fedkd.datafree import DFADSynthesizer, StudentRecipe, Teacher, distill
    from fedkd.datafree.generators import ImageGenerator
    from fedkd.models import build_model

    torch.manual_seed(0)
    spec = get_spec("fashion_mnist")
    b = args.speed_batch
    teacher, student = build_model("lenet5", spec).eval(), build_model("lenet5_half", spec)
    # The CIFAR-shaped generator: 2*64 = 128 channels, 8x8 -> 16x16 -> 32x32.
    cifar_gen = ImageGenerator(spec.resized(32), nz=256, ngf=64, channels_last=False)
    opt_g = torch.optim.Adam(cifar_gen.parameters(), 1e-3)
    opt_s = torch.optim.SGD(student.parameters(), 0.1, momentum=0.9)
    ours = DFADSynthesizer(spec, "cpu", {"name": "dfad_generator", "ngf": args.ngf, "nz": 100}, batch_size=b)
    s_ours = build_model("lenet5_half", spec)
    opt_ours = torch.optim.SGD(s_ours.parameters(), 0.1, momentum=0.9)
    frozen = Teacher(build_model("lenet5", spec))

    def run_straight() -> None:
        straightforward_iteration(cifar_gen, teacher, student, opt_g, opt_s, b, 256, spec.image_size)

    def run_ours() -> None:
        # one DFAD iteration (DFAD's student recipe: 5 steps, L1 loss)
        distill(s_ours, frozen, ours, opt_ours, 1, recipe=StudentRecipe(steps=5, loss="l1"), student_batch_size=b,
                progress=False)

    run_straight(), run_ours()  # warm-up
    straight, mine = [], []
    for _ in range(args.speed_iterations):
        t0 = time.perf_counter()
        run_straight()
        t1 = time.perf_counter()
        for _ in range(args.ours_repeat):
            run_ours()
        t2 = time.perf_counter()
        straight.append(t1 - t0)
        mine.append((t2 - t1) / args.ours_repeat)
    per_iteration = 6 * b  # generated samples per iteration: 5 student batches + 1 generator batch
    s_med, o_med = statistics.median(straight), statistics.median(mine)
    return {
        "batch_size": b,
        "threads": torch.get_num_threads(),
        "straightforward": {
            "generator": "CIFAR-shaped: nz=256, 128 channels, 8->16->32, centre-cropped to 28",
            "seconds_per_iteration": straight,
            "median_seconds_per_iteration": s_med,
            "samples_per_s": per_iteration / s_med,
            "components_s": component_times(cifar_gen, teacher, student, b, 256, spec.image_size),
        },
        "ours": {
            "generator": f"dfad_generator ngf={args.ngf} (32 channels at 14x14, {args.ngf} at 28x28), "
                         "nz=100, channels-last",
            "seconds_per_iteration": mine,
            "median_seconds_per_iteration": o_med,
            "samples_per_s": per_iteration / o_med,
            "components_s": component_times(ours.generator, teacher, student, b, 100, spec.image_size),
        },
        "speedup": s_med / o_med,
    }


# ------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (1: robust on shared cores)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work-dir", default=str(REPO / "outputs" / "benchmarks" / "centralized_fashion_mnist"))
    parser.add_argument("--teacher", default=None, help="reuse this teacher checkpoint instead of training one")
    parser.add_argument("--speed-batch", type=int, default=512)
    parser.add_argument("--speed-iterations", type=int, default=2, help="timed straightforward iterations")
    parser.add_argument("--ours-repeat", type=int, default=3, help="our iterations timed per straightforward one")
    parser.add_argument("--ngf", type=int, default=16, help="our generator width in the speed comparison")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--phase", choices=["speed"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.phase == "speed":  # child process: print the JSON
        print("SPEED_JSON " + json.dumps(speed_phase(args)))
        return

    if args.budget == "smoke":
        args.speed_batch, args.speed_iterations, args.ours_repeat = 32, 1, 1
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "FLWR_TELEMETRY_ENABLED": "0"}
    budget = BUDGETS[args.budget]
    common = ["dataset=fashion_mnist", f"device={args.device}", f"threads={args.threads}", "preview_images=32"]
    rows: dict[str, dict] = {}
    started = time.perf_counter()

    # 1. teacher
    teacher_ckpt = Path(args.teacher) if args.teacher else work / "teacher" / "model.pt"
    if args.teacher is None:
        print("[1/5] training the LeNet-5 teacher ...", flush=True)
        cmd = [str(BIN / "fedkd-train"), "dataset=fashion_mnist", "model=lenet5", f"device={args.device}",
               *budget["teacher"], f"hydra.run.dir={work / 'teacher'}"]
        wall, rss, rc = run_process(cmd, env, work / "teacher.log", work / "teacher")
        if rc:
            sys.exit(f"teacher training failed; see {work / 'teacher.log'}")
        summary = read_json(work / "teacher" / "summary.json")
        epochs = int(_value(budget["teacher"], "epochs"))
        n_train = int(_value(budget["teacher"], "dataset.max_train", "60000"))
        rows["teacher"] = {"accuracy": summary["final_test_accuracy"], "process_wall_s": wall, "peak_rss_mb": rss,
                           "samples_per_s": n_train * epochs / wall, "samples": "real training samples (whole process)"}

    # 2-4. students
    # The reference takes exactly DFAD's student steps: same epochs, iterations, 5 steps each, batch.
    same = [f"{k}={_value(budget['dfad'], k)}" for k in ("epochs", "iterations_per_epoch", "batch_size")]
    plan = {
        "kd_real": ["synthesizer=real_kd", *same, "synthesizer.student.steps=5"],
        "dfad": ["synthesizer=dfad", *budget["dfad"]],
        "cmi": ["synthesizer=cmi", *budget["cmi"]],
    }
    for i, (name, overrides) in enumerate(plan.items(), start=2):
        print(f"[{i}/5] {name} ...", flush=True)
        out = work / name
        cmd = [str(BIN / "fedkd-distill"), *common, f"teacher.checkpoint={teacher_ckpt}", *overrides,
               f"hydra.run.dir={out}"]
        wall, rss, rc = run_process(cmd, env, work / f"{name}.log", out)
        if rc:
            sys.exit(f"{name} failed; see {work / f'{name}.log'}")
        summary = read_json(out / "summary.json")
        rows[name] = {
            "accuracy": summary["final_student_accuracy"], "process_wall_s": wall,
            "distill_wall_s": summary["wall_time_s"],
            "peak_rss_mb": rss, "student_steps": summary["student_steps"], "overrides": overrides,
            "samples_per_s": (summary["student_samples_per_s"] if name == "kd_real"
                              else summary["synthetic_samples_per_s"]),
            "samples": "real samples through the student" if name == "kd_real" else "synthetic samples generated",
            "teacher_accuracy": summary["teacher_accuracy"],
        }
        if "teacher" not in rows:
            rows["teacher"] = {"accuracy": summary["teacher_accuracy"], "checkpoint": str(teacher_ckpt)}

    # 5. speed
    speed = None
    if not args.skip_speed:
        print("[5/5] DFAD iteration speed: straightforward vs ours ...", flush=True)
        cmd = [sys.executable, __file__, "--phase", "speed", f"--threads={args.threads}",
               f"--speed-batch={args.speed_batch}", f"--speed-iterations={args.speed_iterations}",
               f"--ours-repeat={args.ours_repeat}", f"--ngf={args.ngf}"]
        out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=True)
        speed = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("SPEED_JSON "))[11:])

    reference = rows["kd_real"]["accuracy"]
    for name in ("dfad", "cmi"):
        rows[name]["fraction_of_kd_real"] = rows[name]["accuracy"] / reference
    result = {
        "budget": args.budget,
        "device": "cuda" if (args.device == "auto" and torch.cuda.is_available()) or args.device == "cuda" else "cpu",
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "total_wall_s": time.perf_counter() - started,
        "rows": rows,
        "speed": speed,
    }
    text = render(result)
    print(text)
    results = work if args.budget == "smoke" else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.budget == "cpu" else f"_{args.budget}"
    (results / f"centralized_fashion_mnist{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    (results / f"centralized_fashion_mnist{suffix}.txt").write_text(text + "\n")
    print(f"written: {results / f'centralized_fashion_mnist{suffix}.json'}")


def _value(overrides: list[str], key: str, default: str | None = None) -> str:
    found = [o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")]
    if not found and default is None:
        raise KeyError(key)
    return found[-1] if found else default


def render(result: dict) -> str:
    rows = result["rows"]
    lines = [
        f"Centralized data-free KD on Fashion-MNIST, LeNet-5 -> LeNet-5-half ({result['budget']} budget, "
        f"{result['device']}, {result['threads']} thread(s) per process, {result['cpu_count']} cores; "
        f"total {result['total_wall_s'] / 60:.1f} min)",
        "",
        f"{'row':<16}{'test acc':>10}{'/ KD ref':>10}{'steps':>8}{'wall s':>9}{'loop s':>9}"
        f"{'samples/s':>11}{'peak MiB':>10}",
    ]
    for name, label in (("teacher", "teacher"), ("kd_real", "KD (real data)"), ("dfad", "DFAD"), ("cmi", "CMI")):
        r = rows.get(name, {})
        frac = f"{r['fraction_of_kd_real']:.3f}" if "fraction_of_kd_real" in r else ""
        lines.append(
            f"{label:<16}{r.get('accuracy', float('nan')):>10.4f}{frac:>10}{r.get('student_steps', ''):>8}"
            f"{_fmt(r.get('process_wall_s')):>9}{_fmt(r.get('distill_wall_s')):>9}{_fmt(r.get('samples_per_s')):>11}"
            f"{_fmt(r.get('peak_rss_mb')):>10}"
        )
    lines += [
        "",
        "wall s: the whole process (start-up, data, evaluation); loop s: inside the distillation loop.",
        "samples/s: teacher and KD: real samples; DFAD and CMI: synthetic samples generated (every generator output).",
        "peak MiB: peak resident memory of that row's process.",
    ]
    speed = result.get("speed")
    if speed:
        s, o = speed["straightforward"], speed["ours"]
        lines += [
            "",
            f"DFAD iteration (5 student steps + 1 generator step) at batch {speed['batch_size']}, "
            f"{speed['threads']} thread(s), interleaved:",
            f"  straightforward ({s['generator']}): {s['median_seconds_per_iteration']:.2f} s/it, "
            f"{s['samples_per_s']:.0f} samples/s",
            f"  ours ({o['generator']}): {o['median_seconds_per_iteration']:.2f} s/it, "
            f"{o['samples_per_s']:.0f} samples/s",
            f"  speed-up: {speed['speedup']:.1f}x",
            "  where the time goes (s per call at that batch):",
            f"  {'':<28}{'straightforward':>16}{'ours':>10}",
        ]
        for key in s["components_s"]:
            lines.append(f"  {key:<28}{s['components_s'][key]:>16.3f}{o['components_s'][key]:>10.3f}")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "" if value is None else f"{value:.0f}"


if __name__ == "__main__":
    main()
