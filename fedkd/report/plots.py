"""Pictures written into run folders: the partition's label counts, axis helpers for round plots.

Matplotlib is used directly (Agg backend: runs have no display); ``flwr-datasets`` has a similar
helper, but it is an optional extra and wants its own partitioner objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig

from fedkd.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

PARTITION_PLOT = "partition.png"


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def integer_x_ticks(ax: Axes) -> None:
    """Ticks on whole numbers only (rounds, client ids): two rounds get 1 and 2, not 1.0, 1.2, ..., 2.0."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def draw_label_counts(counts: np.ndarray, ax: Axes, title: str = "") -> None:
    """Stacked bars on ``ax``: one bar per client, one coloured segment per label."""
    num_clients, num_classes = counts.shape
    clients = np.arange(num_clients)
    cmap = _label_colours(num_classes)
    bottom = np.zeros(num_clients)
    for label in range(num_classes):
        ax.bar(clients, counts[:, label], bottom=bottom, width=0.8, color=cmap(label), label=str(label))
        bottom += counts[:, label]
    ax.set_xlabel("client (partition id)")
    ax.set_ylabel("training samples")
    ax.set_title(title)
    if num_clients <= 30:
        ax.set_xticks(clients)  # every client labelled
    else:
        integer_x_ticks(ax)
    ax.set_xlim(-0.6, num_clients - 0.4)
    # Explicit: a zero-count label on top of the tallest bar would pin the autoscaled top to it.
    ax.set_ylim(0, max(1, counts.sum(1).max()) * 1.05)
    if num_classes <= 20:  # a legend of more labels hides the bars
        ax.legend(title="label", fontsize="small", ncol=2 if num_classes > 10 else 1,
                  bbox_to_anchor=(1.01, 1), loc="upper left")


def _label_colours(num_classes: int):
    """A colour map that tells ``num_classes`` labels apart: tab10/tab20 up to 20, then a continuous one."""
    plt = pyplot()
    if num_classes <= 10:
        return plt.get_cmap("tab10")
    if num_classes <= 20:
        return plt.get_cmap("tab20")
    return plt.get_cmap("viridis", num_classes)


def plot_label_counts(counts: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Write the partition's label histogram (shape ``(num_clients, num_classes)``) as a PNG."""
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[0] == 0 or counts.shape[1] == 0:
        raise ConfigError(
            f"label counts must be a (clients, classes) table, got shape {counts.shape}; "
            "pass partition_label_counts(cfg)"
        )
    plt = pyplot()
    # Wider with more clients (up to a limit: 1000 clients still give a readable-size file).
    width = min(4.0 + 0.25 * counts.shape[0], 24.0)
    fig, ax = plt.subplots(figsize=(width, 4.0), dpi=100)
    try:
        draw_label_counts(counts, ax, title)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def partition_title(cfg: DictConfig) -> str:
    """``digits: 4 clients, dirichlet(alpha=0.5, min_size=10), seed 0``: what made the partition."""
    part = cfg.partition
    name = str(part.get("_target_", "partition")).rsplit(".", 1)[-1]
    args = ", ".join(f"{k}={v}" for k, v in part.items() if not str(k).startswith("_"))
    return f"{cfg.dataset.name}: {cfg.num_clients} clients, {name}({args}), seed {cfg.seed}"


def write_partition_plot(counts, cfg: DictConfig, out_dir: str | Path) -> Path:
    """``<out_dir>/partition.png``: the label counts (clients x classes) of the federated run ``cfg``."""
    return plot_label_counts(counts, Path(out_dir) / PARTITION_PLOT, partition_title(cfg))
