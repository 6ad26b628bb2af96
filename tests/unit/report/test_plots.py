"""The partition picture (written at the start of every federated run) and the comparison plot's round ticks."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from fedkd.errors import ConfigError
from fedkd.report.plots import PARTITION_PLOT, draw_label_counts, plot_label_counts, pyplot


def _visible_ticks(ax) -> np.ndarray:
    ax.figure.canvas.draw()  # the locator places ticks when drawn
    lo, hi = ax.get_xlim()
    ticks = np.asarray(ax.get_xticks())
    return ticks[(ticks >= lo) & (ticks <= hi)]


def test_label_counts_are_stacked_bars_one_per_client():
    counts = np.array([[5, 9, 0], [0, 7, 2]])  # the tallest bar (client 0) has an empty top label
    plt = pyplot()
    fig, ax = plt.subplots()
    try:
        draw_label_counts(counts, ax)
        heights = np.array([p.get_height() for p in ax.patches]).reshape(3, 2)  # label-major, as drawn
        assert (heights.T == counts).all()
        tops = np.array([p.get_y() + p.get_height() for p in ax.patches]).reshape(3, 2)
        assert (tops[-1] == counts.sum(1)).all()  # the last label sits on top of the others
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1", "2"]
        assert set(_visible_ticks(ax)) == {0, 1}  # whole client ids
        assert ax.get_ylim()[1] > counts.sum(1).max()  # headroom above the tallest bar
    finally:
        plt.close(fig)


def test_plot_label_counts_writes_a_png_and_refuses_a_flat_table(tmp_path):
    path = plot_label_counts(np.ones((4, 10), dtype=int), tmp_path / "p.png", "four clients")
    png = Image.open(path)
    # (5 + 0.25 * 4 + a legend of one-character labels: 1.08) x 4.5 inches at 120 dpi
    assert png.format == "PNG" and png.size == (849, 540)
    with pytest.raises(ConfigError, match="clients, classes") as exc:
        plot_label_counts(np.ones(10), tmp_path / "flat.png")
    assert "\n" not in str(exc.value) and not (tmp_path / "flat.png").exists()


def test_every_federated_run_writes_its_partition_at_start(compare_dir):
    from fedkd.federated.config import compose_sim_config
    from fedkd.federated.data import partition_label_counts
    from fedkd.report.plots import partition_title

    for strategy in ("fedavg", "fedftg", "fedgen"):
        run = compare_dir / "runs" / strategy / "seed0"
        png = Image.open(run / PARTITION_PLOT)
        assert png.format == "PNG" and png.size == (849, 540), strategy  # 4 clients, 10 digits
        # Before round 1: earlier than the first round's sample grid (FedFTG) and the final model.
        assert os.path.getmtime(run / PARTITION_PLOT) <= os.path.getmtime(run / "model.pt")
    fedftg = compare_dir / "runs" / "fedftg" / "seed0"
    assert os.path.getmtime(fedftg / PARTITION_PLOT) <= os.path.getmtime(fedftg / "samples" / "server_samples_1.png")
    # What it shows: the shared run's partition (conftest.SMALL_SIM), the numbers clients report.
    cfg = compose_sim_config(["dataset=digits", "num_clients=4", "partition.alpha=0.5"])
    assert partition_label_counts(cfg).shape == (4, 10)
    assert partition_title(cfg) == "digits: 4 clients, dirichlet(alpha=0.5, min_size=10), seed 0"


def test_comparison_plot_has_whole_round_ticks(compare_dir, tmp_path):
    from fedkd.report.compare import draw_accuracy, find_runs, plot

    runs = find_runs(compare_dir)
    assert {len(r.curve()) for r in runs} == {2}  # two rounds: matplotlib alone would tick 1.0, 1.2, ..., 2.0
    plt = pyplot()
    fig, ax = plt.subplots()
    try:
        draw_accuracy(runs, ax)
        ticks = _visible_ticks(ax)
        assert set(ticks) == {1, 2} and all(float(t).is_integer() for t in ticks)
    finally:
        plt.close(fig)
    plot(runs, tmp_path / "accuracy.png")
    assert Image.open(tmp_path / "accuracy.png").size == (768, 480)  # 6.4 x 4 inches at 120 dpi
    assert (compare_dir / "accuracy.png").is_file()  # fedkd-compare's own


def test_partition_plot_of_an_image_folder_names_its_classes(tmp_path):
    from fedkd.data import load_dataset
    from fedkd.report.plots import write_partition_plot

    from ..data.own_data import digits_arrays, write_image_folder

    root = write_image_folder(tmp_path / "flowers", digits_arrays(n_train=60, n_test=20, classes=3))
    spec = load_dataset("image_folder", root=str(root)).spec
    assert spec.class_names == ("digit_0", "digit_1", "digit_2")  # the class folders, in label order
    assert load_dataset("image_folder", root=str(root)).spec.class_names == spec.class_names  # from the spec cache too
    assert load_dataset("digits").spec.class_names is None  # indices, as before
    counts = np.array([[5, 9, 0], [0, 7, 2]])
    plt = pyplot()
    fig, ax = plt.subplots()
    try:
        draw_label_counts(counts, ax, class_names=spec.class_names)
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["digit_0", "digit_1", "digit_2"]
        assert ax.get_legend().get_title().get_text() == "class"
    finally:
        plt.close(fig)
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"dataset": {"name": "image_folder"}, "num_clients": 2, "seed": 0, "partition": {
        "_target_": "fedkd.data.partitions.flwr_dirichlet", "alpha": 0.5, "partition_by": "label",
        "min_partition_size": 10, "self_balancing": True, "shuffle": True}})
    png = Image.open(write_partition_plot(counts, cfg, tmp_path, spec.class_names))
    assert png.size[1] == 540 and png.size[0] > 600  # a legend of names widens it; the long title wraps
