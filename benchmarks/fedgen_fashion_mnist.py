"""FedAvg, FedGen and FedFTG side by side on Fashion-MNIST (one report).

The setting of the FedFTG benchmark (``benchmarks/fedftg_fashion_mnist.py``): Fashion-MNIST from
Debian's package folder, 10 clients, Dirichlet alpha 0.1, ``small_cnn`` with BatchNorm (16/32
channels), a 12,000-sample training subset, the same rounds, local epochs and seeds for every
strategy, run through ``fedkd-compare``'s machinery (``<out>/<setting>/runs/<strategy>/seed<k>``,
``report.md``, ``accuracy.png``). Sized for a 2-core CPU (about half an hour).

FedGen's paper setting on MNIST (20 clients, Dirichlet 0.1, 200 rounds; its 50% training subset
is close to ``--max-train 30000``). MNIST is read from ``$FEDKD_DATA`` (default
``~/.cache/fedkd/data``); ``--override dataset.download=true`` lets torchvision fetch it::

    python benchmarks/fedgen_fashion_mnist.py --dataset mnist --clients 20 --alphas 0.1 \
        --rounds 200 --local-epochs 1 --max-train 30000 --model lenet5 --override dataset.download=true

Writes ``benchmarks/results/fedgen_fashion_mnist.{json,txt}`` (``--tag`` changes the name).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from omegaconf import OmegaConf

from fedkd.cli.compare import run_all
from fedkd.report.compare import find_runs, markdown_table, render, summarize

RESULTS = Path(__file__).resolve().parent / "results"


def runs_seconds(root: Path) -> float:
    """Sum of the runs' own ``total_seconds`` (their summaries): the setting's compute time, also
    when some runs were finished by an earlier invocation and only re-rendered now."""
    return sum(json.loads(p.read_text()).get("total_seconds", 0.0) for p in root.glob("runs/*/*/summary.json"))
STRATEGIES = ["fedavg", "fedgen", "fedftg"]


def setting_overrides(args: argparse.Namespace, alpha: float) -> list[str]:
    """The sim overrides every strategy of one setting shares."""
    overrides = [
        f"dataset={args.dataset}",
        f"partition.alpha={alpha}",
        f"num_clients={args.clients}",
        f"model={args.model}",
        f"local_epochs={args.local_epochs}",
        f"rounds={args.rounds}",
        "client_resources.num_cpus=1",
        "tensorboard=true",
    ]
    if args.model == "small_cnn":
        overrides.append(f"model.channels={args.channels}")
    if args.max_train:
        overrides.append(f"dataset.max_train={args.max_train}")
    return overrides + list(args.override)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.1])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--max-train", type=int, default=12000, help="0: the whole training set")
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES)
    parser.add_argument("--fedftg-iterations", type=int, default=10, help="FedFTG's server iterations per round")
    parser.add_argument("--fedgen", nargs="*", default=[],
                        help="extra FedGen overrides, e.g. strategy.regularizer_weight=10")
    parser.add_argument("--override", nargs="*", default=[], help="more fedkd-sim overrides for every strategy")
    parser.add_argument("--target", type=float, default=0.7)
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks/fedgen"))
    parser.add_argument("--tag", default="fedgen_fashion_mnist")
    args = parser.parse_args()

    strategy_overrides = {"fedftg": [f"strategy.iterations_per_round={args.fedftg_iterations}"],
                          "fedgen": list(args.fedgen)}
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "settings": []}
    lines = []
    for alpha in args.alphas:
        name = f"dirichlet_{alpha}"
        overrides = setting_overrides(args, alpha)
        root = args.out / name
        cfg = OmegaConf.create(
            {"strategies": args.strategies, "seeds": args.seeds, "overrides": overrides,
             "strategy_overrides": strategy_overrides}
        )
        started = time.perf_counter()
        run_all(cfg, root)
        wall = time.perf_counter() - started
        table = render(root, args.target, title=f"{name}: " + " ".join(overrides))
        rows = summarize(find_runs(root), args.target)
        results["settings"].append({"setting": name, "overrides": overrides, "strategy_overrides": strategy_overrides,
                                    "rows": rows, "table": table, "wall_s": wall, "runs_s": runs_seconds(root),
                                    "report": str(root / "report.md")})
        lines += [f"## {name}  ({' '.join(overrides)}; FedFTG {strategy_overrides['fedftg']}; "
                  f"FedGen {strategy_overrides['fedgen'] or 'defaults'}; runs {runs_seconds(root):.0f}s, "
                  "this invocation "
                  f"{wall:.0f}s)", markdown_table(rows), ""]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{args.tag}.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
