"""FedAvg vs generator-based aggregation (FedFTG) on Fashion-MNIST, and one-shot (DENSE-style).

Fashion-MNIST from Debian's package folder, 10 clients, Dirichlet label skew, small CNN with
BatchNorm, the same rounds, local epochs and seeds for both strategies. Every setting runs through
``fedkd-compare``'s machinery (one folder per strategy and seed, a report with mean ± std over
seeds and an accuracy plot with a band), plus a micro-benchmark of the ensemble teacher: one
vmapped call over stacked client parameters versus a Python loop over the models.

The default budget is sized for a 2-core CPU (about 40 minutes): a 12,000-sample training subset,
``small_cnn`` with 16/32 channels, 5 rounds of 1 local epoch, 10 server iterations per round;
one-shot: 5 local epochs and 200 server iterations (the preset's).
For the paper-scale setting on a GPU::

    python benchmarks/fedftg_fashion_mnist.py --max-train 0 --channels 32 --rounds 50 \
        --server-iterations 100 --seeds 0 1 2

Writes ``benchmarks/results/fedftg_fashion_mnist.{json,txt}`` and the per-setting reports under
``--out`` (default ``outputs/benchmarks/fedftg``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fedkd.cli.compare import run_all
from fedkd.data import get_spec
from fedkd.datafree import EnsembleTeacher
from fedkd.models import build_model
from fedkd.report.compare import find_runs, markdown_table, render, summarize

RESULTS = Path(__file__).resolve().parent / "results"


def runs_seconds(root: Path) -> float:
    """Sum of the runs' own ``total_seconds`` (their summaries): the setting's compute time, also
    when some runs were finished by an earlier invocation and only re-rendered now."""
    return sum(json.loads(p.read_text()).get("total_seconds", 0.0) for p in root.glob("runs/*/*/summary.json"))


def ensemble_speed(channels: int, members: int = 10, batch: int = 256, repeats: int = 20) -> dict[str, float]:
    """Seconds per ensemble forward (and forward+input-gradient) for the vmapped path and the loop."""
    spec = get_spec("fashion_mnist")
    torch.manual_seed(0)
    models = [build_model("small_cnn", spec, channels=channels) for _ in range(members)]
    x = torch.randn(batch, *spec.shape)
    out: dict[str, float] = {}
    for name, batched in (("vmap", True), ("loop", False)):
        teacher = EnsembleTeacher(models, batched=batched)
        with torch.no_grad():
            teacher(x)
            start = time.perf_counter()
            for _ in range(repeats):
                teacher(x)
        out[f"{name}_forward_s"] = (time.perf_counter() - start) / repeats
        xg = x.clone().requires_grad_(True)
        teacher(xg).sum().backward()
        start = time.perf_counter()
        for _ in range(repeats // 2):
            teacher(xg).sum().backward()
        out[f"{name}_forward_backward_s"] = (time.perf_counter() - start) / (repeats // 2)
    out["speedup_forward"] = out["loop_forward_s"] / out["vmap_forward_s"]
    out["speedup_forward_backward"] = out["loop_forward_backward_s"] / out["vmap_forward_backward_s"]
    return out


def setting_overrides(args: argparse.Namespace, alpha: float) -> list[str]:
    common = [
        "dataset=fashion_mnist",
        f"partition.alpha={alpha}",
        "num_clients=10",
        f"model.channels={args.channels}",
        f"local_epochs={args.local_epochs}",
        f"rounds={args.rounds}",
        "client_resources.num_cpus=1",
        "tensorboard=true",
    ]
    if args.max_train:
        common.append(f"dataset.max_train={args.max_train}")
    return common


def run_setting(args, name: str, strategies: list[str], overrides: list[str], strategy_overrides: dict) -> dict:
    from omegaconf import OmegaConf

    root = args.out / name
    cfg = OmegaConf.create(
        {"strategies": strategies, "seeds": args.seeds, "overrides": overrides,
         "strategy_overrides": strategy_overrides}
    )
    started = time.perf_counter()
    run_all(cfg, root)
    table = render(root, args.target, title=f"{name}: " + " ".join(overrides))
    rows = summarize(find_runs(root), args.target)
    return {"setting": name, "overrides": overrides, "strategy_overrides": strategy_overrides, "rows": rows,
            "table": table, "wall_s": time.perf_counter() - started, "runs_s": runs_seconds(root),
            "report": str(root / "report.md")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--max-train", type=int, default=12000, help="0: the full 60,000")
    parser.add_argument("--server-iterations", type=int, default=10)
    parser.add_argument("--one-shot-epochs", type=int, default=5)
    parser.add_argument("--one-shot-iterations", type=int, default=200)
    parser.add_argument("--skip-one-shot", action="store_true")
    parser.add_argument("--target", type=float, default=0.7)
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks/fedftg"))
    args = parser.parse_args()

    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "settings": []}
    results["ensemble_speed"] = ensemble_speed(args.channels)
    ftg = {"fedftg": [f"strategy.iterations_per_round={args.server_iterations}"]}
    for alpha in args.alphas:
        results["settings"].append(
            run_setting(args, f"dirichlet_{alpha}", ["fedavg", "fedftg"], setting_overrides(args, alpha), ftg)
        )
    if not args.skip_one_shot:
        one_shot = [o for o in setting_overrides(args, args.alphas[0])
                    if not o.startswith(("rounds=", "local_epochs="))]
        one_shot += ["experiment=one_shot", f"local_epochs={args.one_shot_epochs}"]
        results["settings"].append(
            run_setting(args, f"one_shot_dirichlet_{args.alphas[0]}", ["fedavg", "one_shot_fedftg"], one_shot,
                        {"one_shot_fedftg": [f"strategy.iterations_per_round={args.one_shot_iterations}"]})
        )

    lines = []
    for setting in results["settings"]:
        lines += [f"## {setting['setting']}  ({' '.join(setting['overrides'])}; runs {setting['runs_s']:.0f}s, "
                  f"this invocation {setting['wall_s']:.0f}s)",
                  markdown_table(setting["rows"]), ""]
    speed = results["ensemble_speed"]
    lines.append(
        f"Ensemble of 10 small_cnn (channels {args.channels}), batch 256: "
        f"forward vmap {speed['vmap_forward_s'] * 1e3:.1f} ms "
        f"vs loop {speed['loop_forward_s'] * 1e3:.1f} ms ({speed['speedup_forward']:.2f}x); forward+backward vmap "
        f"{speed['vmap_forward_backward_s'] * 1e3:.1f} ms vs loop {speed['loop_forward_backward_s'] * 1e3:.1f} ms "
        f"({speed['speedup_forward_backward']:.2f}x)"
    )
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fedftg_fashion_mnist.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "fedftg_fashion_mnist.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
