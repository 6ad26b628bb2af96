"""Data and models that train without an error but give meaningless numbers, refused before the first
round or epoch by all three entry points: one ``fedkd: error:`` line, exit 2, no run folder
(the checks run before Hydra writes it: :mod:`fedkd.cli.inputs`); and a client's exception under the
simulation engine as one line naming its type, Ray's traceback in the run's log file only.

The rows of the first kind are rows of docs/reliability.md's bad-input table. Data is written here:
scikit-learn's digits (8x8) as an image folder or ``.npz``, with one class, NaN or constant images.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
sys.path.insert(0, str(TESTS))  # the shared helpers; also what PYTHONPATH gives the Ray workers
from conftest import run_entry_point  # noqa: E402
from unit.data.own_data import digits_arrays, write_image_folder  # noqa: E402

HERE = "integration.test_reliability_sanity"


class SmallNet(nn.Module):
    """Takes any image size (adaptive pooling); ``num_classes`` may be set from the config."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FailsToTrain(SmallNet):
    """Classifies in eval mode (so the model check passes) and raises in training: a client bug."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise ValueError("this model refuses to train")
        return super().forward(x)


# (entry point, overrides with {in}=inputs folder, texts the error line must contain)
ROWS: dict[str, tuple[str, list[str], list[str]]] = {
    "image folder with one class": (
        "fedkd-train", ["dataset=image_folder", "dataset.root={in}/one_class"],
        ["holds one class only (label 0", "add images of at least one other class"],
    ),
    "image folder with one class in a simulation": (
        "fedkd-sim", ["dataset=image_folder", "dataset.root={in}/one_class", "model=custom",
                      f"model._target_={HERE}.SmallNet", "num_clients=2", "rounds=1", "partition=iid"],
        ["holds one class only"],
    ),
    "arrays with NaN images": (
        "fedkd-train", ["dataset=arrays", "dataset.root={in}/nan.npz"], ["NaN or infinite", "np.nan_to_num"],
    ),
    "arrays of one constant image": (
        "fedkd-distill", ["dataset=arrays", "dataset.root={in}/constant.npz", "model@student=custom",
                          f"student._target_={HERE}.SmallNet"],
        ["all 120 training images are one constant image"],
    ),
    "model with more outputs than classes": (
        "fedkd-train", ["model=custom", f"model._target_={HERE}.SmallNet", "+model.num_classes=12"],
        ["gives 12 outputs but digits has 10 classes", "outputs 10..11 match no label", "set it to 10"],
    ),
    "model with fewer outputs than classes": (
        "fedkd-sim", ["model=custom", f"model._target_={HERE}.SmallNet", "+model.num_classes=8", "num_clients=2",
                      "rounds=1"],
        ["gives 8 outputs but digits has 10 classes", "labels 8..9 have no output"],
    ),
    "images smaller than the model takes": (
        "fedkd-distill", ["dataset=arrays", "dataset.root={in}/digits8.npz"],
        ["student lenet5_half cannot take one 1x8x8 image", "dataset.image_size=28"],
    ),
    "images smaller than the model takes in training": (
        "fedkd-train", ["dataset=arrays", "dataset.root={in}/digits8.npz"],
        ["model lenet5 cannot take one 1x8x8 image", "dataset.image_size=28"],
    ),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sanity")
    arrays = digits_arrays(n_train=120, n_test=40)
    one = {k: v[arrays[f"y_{k[2:]}"] == 0] if k.startswith("x_") else v[v == 0] for k, v in arrays.items()}
    write_image_folder(root / "one_class", one)
    np.savez(root / "digits8.npz", **arrays)
    nan = {**arrays, "x_train": arrays["x_train"].astype(np.float32) / 255}
    nan["x_train"][:] = np.nan
    np.savez(root / "nan.npz", **nan)
    np.savez(root / "constant.npz", **{**arrays, "x_train": np.full_like(arrays["x_train"], 7)})
    return root


def test_rows_are_in_the_reliability_table():
    doc = (REPO / "docs" / "reliability.md").read_text()
    assert not [name for name in ROWS if f"| {name} |" not in doc]


@pytest.mark.parametrize("name", list(ROWS))
def test_meaningless_data_or_model_gives_one_line_and_no_run_folder(name, inputs, tmp_path, capfd, monkeypatch):
    cmd, overrides, needles = ROWS[name]
    run = tmp_path / "run"
    args = [o.replace("{in}", str(inputs)) for o in overrides] + [f"hydra.run.dir={run}"]
    code = run_entry_point(cmd, args, monkeypatch)
    stdout, stderr = capfd.readouterr()
    lines = [line for line in stderr.splitlines() if line.startswith("fedkd: error: ")]
    assert code == 2 and len(lines) == 1, stderr[-2000:]
    assert "Traceback" not in stderr + stdout and "; " in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not run.exists(), "the run folder was written before the data and model were checked"


def test_the_job_checks_too(inputs, tmp_path):
    """Called as a library (no preflight), the task itself refuses before training."""
    from hydra import compose, initialize_config_dir

    from fedkd.cli.train import train
    from fedkd.config import CONF_DIR, register_schemas
    from fedkd.errors import ConfigError
    from fedkd.utils.run_context import RunContext

    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["device=cpu", "tensorboard=false", "dataset=arrays",
                                                      f"dataset.root={inputs / 'digits8.npz'}"])
    ctx = RunContext.create(cfg, out_dir=tmp_path / "run")
    with ctx.logger, pytest.raises(ConfigError, match="model lenet5 cannot take one 1x8x8 image"):
        train(cfg, ctx)
    assert not (tmp_path / "run" / "model.pt").exists()


def test_distill_says_the_time_left_and_warns_at_chance(tmp_path, monkeypatch, capfd):
    """A real run forced to chance: an untrained teacher, two epochs of one DFAD iteration."""
    from fedkd.data import get_spec
    from fedkd.models import build_model
    from fedkd.models.checkpoint import model_meta
    from fedkd.utils.checkpoint import save_model

    torch.manual_seed(0)
    digits = get_spec("digits")
    save_model(tmp_path / "teacher.pt", build_model("lenet5", digits), **model_meta({"name": "lenet5"}, digits))
    run = tmp_path / "run"
    code = run_entry_point("fedkd-distill", [
        f"teacher.checkpoint={tmp_path / 'teacher.pt'}", "synthesizer=dfad", "epochs=3", "iterations_per_epoch=1",
        "student_batch_size=32", "synthesizer.batch_size=32", "synthesizer.generator.ngf=4", "preview_images=0",
        "tensorboard=false", "device=cpu", f"hydra.run.dir={run}",
    ], monkeypatch)
    capfd.readouterr()
    assert code == 0
    log = (run / "distill.log").read_text()
    assert re.search(r"about \d+ (s|min \d+ s) left \(2 epochs x [\d.]+ s\)", log), log
    assert re.search(r"about \d+ (s|min \d+ s) left \(1 epoch x [\d.]+ s\)", log), log
    warnings = [line for line in log.splitlines() if "stayed at chance" in line]
    assert len(warnings) == 1 and "[WARNING]" in warnings[0], log
    assert "the teacher itself is at chance" in warnings[0] and "teacher.epochs" in warnings[0]


ANSI = re.compile(r"\x1b\[")


@pytest.mark.slow  # a Ray simulation: about a minute on two busy cores
def test_client_exception_is_one_line_with_its_type_and_no_colour_codes(tmp_path, monkeypatch):
    from conftest import run_cli

    run = tmp_path / "run"
    # The Ray workers import FailsToTrain from here.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    done = run_cli("fedkd-sim", "model=custom", f"model._target_={HERE}.FailsToTrain", "num_clients=2", "rounds=1",
                   "client_resources.num_cpus=1", f"hydra.run.dir={run}", timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.startswith("fedkd: error: ")]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    first = "fedkd: error: round 1: every client failed; the first: ValueError: this model refuses to train"
    assert lines[0].startswith(first), lines[0]
    assert f"full traceback in {run / 'sim.log'}" in lines[0] and "debug=true" in lines[0]
    assert not ANSI.search(done.stderr + done.stdout), "terminal colour codes reached the console"
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    log = (run / "sim.log").read_text()
    assert "Traceback" in log and "this model refuses to train" in log and not ANSI.search(log)
