"""Pictures written into run folders: the partition's label counts, axis helpers for round plots.

Matplotlib is used directly (Agg backend: runs have no display); ``flwr-datasets`` has a similar
helper, but it is an optional extra and wants its own partitioner objects.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig

from fedkd.errors import ConfigError
from fedkd.report.settings import partition_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes

PARTITION_PLOT = "partition.png"
PLOT_DPI = 120
TITLE_POINTS = 11
LEGEND_CHARS = 24  # a longer class name is cut in the legend


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


def draw_label_counts(counts: np.ndarray, ax: Axes, title: str = "",
                      class_names: Sequence[str] | None = None) -> None:
    """Stacked bars on ``ax``: one bar per client, one coloured segment per label; the legend names
    the labels by ``class_names`` (``None``: their indices). A long title wraps to the figure's width."""
    num_clients, num_classes = counts.shape
    clients = np.arange(num_clients)
    cmap = _label_colours(num_classes)
    bottom = np.zeros(num_clients)
    for label in range(num_classes):
        name = _class_label(label, class_names)
        ax.bar(clients, counts[:, label], bottom=bottom, width=0.8, color=cmap(label), label=name)
        bottom += counts[:, label]
    ax.set_xlabel("client (partition id)")
    ax.set_ylabel("training samples")
    width_chars = int(ax.figure.get_figwidth() * 72 / (0.6 * TITLE_POINTS))  # about the characters that fit
    ax.set_title("\n".join(textwrap.wrap(title, max(width_chars, 20))), fontsize=TITLE_POINTS)
    if num_clients <= 30:
        ax.set_xticks(clients)  # every client labelled
    else:
        integer_x_ticks(ax)
    ax.set_xlim(-0.6, num_clients - 0.4)
    # Explicit: a zero-count label on top of the tallest bar would pin the autoscaled top to it.
    ax.set_ylim(0, max(1, counts.sum(1).max()) * 1.05)
    if num_classes <= 20:  # a legend of more labels hides the bars
        ax.legend(title="class" if class_names is not None else "label", fontsize="small",
                  ncol=2 if num_classes > 10 else 1, bbox_to_anchor=(1.01, 1), loc="upper left")


def _class_label(label: int, class_names: Sequence[str] | None) -> str:
    """A legend entry: the class's name (shortened), or its index."""
    if class_names is None or label >= len(class_names):
        return str(label)
    name = str(class_names[label])
    return name if len(name) <= LEGEND_CHARS else name[: LEGEND_CHARS - 1] + "…"


def _label_colours(num_classes: int):
    """A colour map that tells ``num_classes`` labels apart: tab10/tab20 up to 20, then a continuous one."""
    plt = pyplot()
    if num_classes <= 10:
        return plt.get_cmap("tab10")
    if num_classes <= 20:
        return plt.get_cmap("tab20")
    return plt.get_cmap("viridis", num_classes)


def plot_label_counts(counts: np.ndarray, path: str | Path, title: str = "",
                      class_names: Sequence[str] | None = None) -> Path:
    """Write the partition's label histogram (shape ``(num_clients, num_classes)``) as a PNG; the
    legend names the labels by ``class_names`` (``None``: their indices)."""
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[0] == 0 or counts.shape[1] == 0:
        raise ConfigError(
            f"label counts must be a (clients, classes) table, got shape {counts.shape}; "
            "pass partition_label_counts(cfg)"
        )
    plt = pyplot()
    # Wider with more clients (up to a limit: 1000 clients still give a readable-size file), and
    # room on the right for the legend, as wide as its longest entry.
    width = min(5.0 + 0.25 * counts.shape[0], 24.0)
    if counts.shape[1] <= 20:
        longest = max(len(_class_label(k, class_names)) for k in range(counts.shape[1]))
        width += (1.0 + 0.08 * longest) * (2 if counts.shape[1] > 10 else 1)
    fig, ax = plt.subplots(figsize=(width, 4.5), dpi=PLOT_DPI, layout="constrained")  # the legend fits in
    try:
        draw_label_counts(counts, ax, title, class_names)
        path = Path(path)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def partition_title(cfg: DictConfig) -> str:
    """``digits: 4 clients, dirichlet(alpha=0.5, min_size=10), seed 0``: what made the partition."""
    return f"{cfg.dataset.name}: {cfg.num_clients} clients, {partition_label(cfg)}, seed {cfg.seed}"


def write_partition_plot(counts, cfg: DictConfig, out_dir: str | Path,
                         class_names: Sequence[str] | None = None) -> Path:
    """``<out_dir>/partition.png``: the label counts (clients x classes) of the federated run ``cfg``;
    ``class_names`` (the data spec's) name the labels in the legend."""
    return plot_label_counts(counts, Path(out_dir) / PARTITION_PLOT, partition_title(cfg), class_names)
