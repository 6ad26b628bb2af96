"""The worked example of docs/your_data_and_model.md, end to end: an ImageFolder written here, the
model class :class:`TinyNet` defined here, a two-round federated run with a Flower partitioner
(``fedkd-sim``), then ``fedkd-train`` and ``fedkd-distill`` (teacher and student) on the same
data and class; and the bad-input rows of docs/reliability.md for your own data and model."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
sys.path.insert(0, str(TESTS))  # the shared helpers; also what PYTHONPATH gives the Ray workers
from conftest import run_entry_point  # noqa: E402
from unit.data.own_data import digits_arrays, write_image_folder  # noqa: E402

MODEL = "integration.test_your_data_and_model.TinyNet"  # importable with tests/ on PYTHONPATH


class TinyNet(nn.Module):
    """The doc's example model: conv features with BatchNorm, then a linear ``head`` (so FedGen and
    the BN-statistics loss work with it too). ``num_classes``/``in_channels`` come from the data."""

    def __init__(self, num_classes: int, in_channels: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _doc_block(marker: str) -> str:
    """The doc's code block that follows ``marker``."""
    doc = (REPO / "docs" / "your_data_and_model.md").read_text()
    after = doc[doc.index(marker):]
    return after.split("```", 2)[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("data") / "digits", digits_arrays(n_train=240, n_test=60))


def test_worked_example_sim_train_distill(folder, tmp_path, monkeypatch):
    from conftest import run_cli

    from fedkd.models.checkpoint import model_from_checkpoint

    sim = [
        "dataset=image_folder", f"dataset.root={folder}", "model=custom", f"model._target_={MODEL}",
        "partition=flwr_dirichlet", "partition.alpha=1.0", "num_clients=2", "rounds=2", "client_resources.num_cpus=1",
    ]
    doc = _doc_block("<!-- fedkd-sim example -->")
    for override in sim:  # the doc shows this very command (with its own paths)
        assert override.split("=")[0] + "=" in doc, override
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    done = run_cli("fedkd-sim", *sim, f"hydra.run.dir={tmp_path / 'sim'}", timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "sim"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["replies_ok"] == 2 for r in rows)
    assert json.loads((out / "summary.json").read_text())["rounds_completed"] == 2
    assert (out / "partition.png").stat().st_size > 0  # the partition picture of the Flower split
    model, meta = model_from_checkpoint(out / "model.pt", _spec(folder))
    assert isinstance(model, TinyNet) and meta["model_config"]["_target_"] == MODEL
    assert (folder / ".fedkd_spec.json").is_file()  # the spec, cached beside the data

    # fedkd-train: a teacher of the same class, then fedkd-distill into a narrower student.
    common = ["dataset=image_folder", f"dataset.root={folder}"]
    train = [*common, "model=custom", f"model._target_={MODEL}", "epochs=1", f"hydra.run.dir={tmp_path / 'train'}"]
    assert run_entry_point("fedkd-train", train, monkeypatch) == 0
    teacher = tmp_path / "train" / "model.pt"
    args = [
        *common, f"teacher.checkpoint={teacher}", "model@student=custom", f"student._target_={MODEL}",
        "+student.width=4",
        "epochs=1", "iterations_per_epoch=2", "student_batch_size=32", "preview_images=8", "synthesizer=dfad",
        f"hydra.run.dir={tmp_path / 'distill'}",
    ]
    assert run_entry_point("fedkd-distill", args, monkeypatch) == 0
    student, _ = model_from_checkpoint(tmp_path / "distill" / "student.pt", _spec(folder))
    assert isinstance(student, TinyNet) and student.head.in_features == 16  # width 4, 2x2 pooled
    assert list((tmp_path / "distill").rglob("*.png")), "the synthetic-sample preview PNG"


def _spec(folder: Path):
    from fedkd.data import load_dataset

    return load_dataset("image_folder", root=str(folder)).spec


# --- docs/reliability.md rows: your own data and model (entry point, overrides, texts in the line).
# {in} is the folder of prepared inputs below.
ROWS: dict[str, tuple[str, list[str], list[str]]] = {
    "image folder without a test split": (
        "fedkd-train", ["dataset=image_folder", "dataset.root={in}/no_test"],
        ["has no test/ split", "{in}/no_test/test/<class>/"],
    ),
    "empty class folder": (
        "fedkd-train", ["dataset=image_folder", "dataset.root={in}/empty_class"],
        ["empty_class/train/digit_9 holds no images", "add images or remove the folder"],
    ),
    "mixed image sizes without a resize": (
        "fedkd-train", ["dataset=image_folder", "dataset.root={in}/mixed"],
        ["big.png is 12x12", "dataset.image_size=<side>"],
    ),
    "labels outside the class range": (
        "fedkd-train", ["dataset=arrays", "dataset.root={in}/bad_labels.npz"],
        ["bad_labels.npz (y_test) holds label 11", "dataset.num_classes"],
    ),
    "arrays file without a split": (
        "fedkd-train", ["dataset=arrays", "dataset.root={in}/no_y_test.npz"],
        ["no_y_test.npz has no y_test", "np.savez"],
    ),
    "own model that cannot be imported": (
        "fedkd-train", ["model=custom", "model._target_=no_such_package.nets.Net"],
        ["cannot be imported", "PYTHONPATH"],
    ),
    "own model that is no nn.Module": (
        "fedkd-train", ["model=custom", "model._target_=collections.OrderedDict"],
        ["returned a OrderedDict, not a torch.nn.Module"],
    ),
    "registry options left for own model": (
        "fedkd-train", ["model._target_=torch.nn.Flatten"],
        ["takes no argument batch_norm, fc_batch_norm", "model=custom"],
    ),
    "unknown Flower partitioner": (
        "fedkd-sim", ["partition=flwr", "partition.partitioner=NoSuchPartitioner", "num_clients=3", "rounds=1"],
        ["'NoSuchPartitioner' is not a flwr-datasets partitioner", "DirichletPartitioner"],
    ),
    "own model without parameters": (
        "fedkd-train", ["model=custom", "model._target_=torch.nn.Identity"],
        ["built a Identity without parameters"],
    ),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    import shutil

    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("bad")
    arrays = digits_arrays(n_train=60, n_test=20)
    shutil.rmtree(write_image_folder(root / "no_test", arrays) / "test")
    (write_image_folder(root / "empty_class", arrays) / "train" / "digit_9").mkdir(exist_ok=True)
    for f in (root / "empty_class" / "train" / "digit_9").iterdir():
        f.unlink()
    Image.new("L", (12, 12)).save(write_image_folder(root / "mixed", arrays) / "train" / "digit_2" / "big.png")
    bad = {**arrays, "y_test": arrays["y_test"].copy()}
    bad["y_test"][0] = 11
    np.savez(root / "bad_labels.npz", **bad)
    np.savez(root / "no_y_test.npz", **{k: v for k, v in arrays.items() if k != "y_test"})
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def test_rows_are_in_the_reliability_table():
    doc = (REPO / "docs" / "reliability.md").read_text()
    assert not [name for name in ROWS if f"| {name} |" not in doc]


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_own_data_or_model_gives_one_line_error(name, inputs, tmp_path, capfd, monkeypatch):
    cmd, overrides, needles = ROWS[name]
    before = _snapshot(inputs)
    args = [o.replace("{in}", str(inputs)) for o in overrides] + [f"hydra.run.dir={tmp_path / 'out'}"]
    code = run_entry_point(cmd, args, monkeypatch)
    stdout, stderr = capfd.readouterr()
    lines = [line for line in stderr.splitlines() if line.startswith("fedkd: error: ")]
    assert code == 2 and len(lines) == 1, stderr[-2000:]
    assert "Traceback" not in stderr + stdout and "; " in lines[0]
    for needle in needles:
        assert needle.replace("{in}", str(inputs)) in lines[0], lines[0]
    assert _snapshot(inputs) == before, "the data must keep its bytes and gain no files (no spec cache for bad data)"
