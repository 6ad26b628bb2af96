"""Label skew of our Dirichlet partition next to Flower's ``DirichletPartitioner`` at the same alpha.

    python -m fedkd.data.skew_table [--dataset digits] [--clients 10] [--seeds 5] [--alphas 0.1 0.5 1 10]

Prints a Markdown table of :func:`fedkd.data.partitions.label_skew` statistics, each the mean
over ``--seeds`` seeds (docs/your_data_and_model.md quotes its output). Needs ``fedkd[hf]``.
"""

from __future__ import annotations

import argparse

import numpy as np

from fedkd.data.partitions import dirichlet, label_skew

COLUMNS = ("classes_per_client", "classes_for_90pct", "max_class_share", "tv_to_global", "size_cv")


def skew_rows(labels: np.ndarray, num_clients: int, alphas: list[float], seeds: int, min_size: int = 10) -> list[dict]:
    """One row per (alpha, partitioner): the mean statistics over seeds ``0..seeds-1``."""
    from fedkd.data.flwr_partitions import flower

    num_classes = int(labels.max()) + 1
    makers = {
        "fedkd dirichlet": lambda a, s: dirichlet(labels, num_clients, seed=s, min_size=min_size, alpha=a),
        "flwr DirichletPartitioner": lambda a, s: flower(
            labels, num_clients, seed=s, partitioner="DirichletPartitioner", alpha=a, min_partition_size=min_size
        ),
    }
    rows = []
    for alpha in alphas:
        for name, make in makers.items():
            stats = [label_skew(labels, make(alpha, seed), num_classes) for seed in range(seeds)]
            rows.append({"alpha": alpha, "partitioner": name,
                         **{c: float(np.mean([s[c] for s in stats])) for c in COLUMNS}})
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| alpha | partitioner | " + " | ".join(COLUMNS) + " |"
    rule = "|---|---|" + "---|" * len(COLUMNS)
    body = [f"| {r['alpha']:g} | {r['partitioner']} | " + " | ".join(f"{r[c]:.2f}" for c in COLUMNS) + " |"
            for r in rows]
    return "\n".join([head, rule, *body])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", help="a built-in dataset name (its training labels)")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.5, 1.0, 10.0])
    args = parser.parse_args(argv)
    from fedkd.data import load_dataset

    labels = load_dataset(args.dataset).train.y.numpy()
    print(f"{args.dataset}: {len(labels)} training samples, {args.clients} clients, mean of {args.seeds} seeds\n")
    print(markdown(skew_rows(labels, args.clients, args.alphas, args.seeds)))


if __name__ == "__main__":
    main()
