"""Supervised training on digits, seeding, checkpoints and the fedkd-train entry point."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from fedkd.data import get_spec
from fedkd.errors import CheckpointError
from fedkd.models import build_model
from fedkd.models.checkpoint import model_from_checkpoint, model_meta
from fedkd.training import evaluate, train_epoch
from fedkd.utils.checkpoint import load_model, save_model
from fedkd.utils.run_logger import read_metrics
from fedkd.utils.seeding import seed_everything

CPU = torch.device("cpu")


def _train(digits, seed: int, epochs: int = 2) -> tuple[torch.nn.Module, list[dict]]:
    gen = seed_everything(seed)
    model = build_model("lenet5", digits.spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = [train_epoch(model, digits.train, opt, 64, CPU, gen) for _ in range(epochs)]
    return model, history


def test_training_beats_chance_by_a_wide_margin(digits):
    model, history = _train(digits, seed=0, epochs=3)
    assert history[-1]["loss"] < history[0]["loss"]
    assert evaluate(model, digits.test, CPU)["accuracy"] > 0.85  # chance is 0.10


def test_same_seed_same_metrics_on_cpu(digits):
    (_, a), (_, b), (_, c) = (_train(digits, s, epochs=1) for s in (5, 5, 6))
    assert a == b
    assert a != c


def test_regularizer_is_added_to_the_loss(digits):
    gen = seed_everything(0)
    model = build_model("small_cnn", digits.spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: only the reported loss changes
    base = train_epoch(model, digits.train, opt, 128, CPU, gen, max_steps=2)["loss"]
    gen = seed_everything(0)
    shifted = train_epoch(model, digits.train, opt, 128, CPU, gen,
                          regularizer=lambda m, x, y, logits: torch.tensor(1.5), max_steps=2)
    assert shifted["loss"] == pytest.approx(base + 1.5, abs=1e-5)


def test_augmented_training_sees_shifted_flipped_batches_and_still_learns(digits):
    from fedkd.data.augment import batch_augmenter

    assert batch_augmenter(0, False) is None  # off by default: the batches go in as they are
    seen: list[torch.Tensor] = []
    shift = batch_augmenter(2, hflip=False)

    def augment(x: torch.Tensor) -> torch.Tensor:
        out = shift(x)
        seen.append(torch.stack([x, out]))
        return out

    gen = seed_everything(0)
    model = build_model("lenet5", digits.spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = [train_epoch(model, digits.train, opt, 64, CPU, gen, augment=augment) for _ in range(3)]
    x, out = seen[0]
    assert out.shape == x.shape and not torch.equal(out, x)
    # A shift moves pixels: every shifted image equals its original moved by at most 2 pixels.
    for i in range(4):
        moved = [torch.roll(x[i], (dy, dx), (1, 2)) for dy in range(-2, 3) for dx in range(-2, 3)]
        inner = (slice(None), slice(2, -2), slice(2, -2))  # away from the zero-filled border
        assert min((m[inner] - out[i][inner]).abs().max().item() for m in moved) < 1e-4
    assert history[-1]["loss"] < history[0]["loss"]
    assert evaluate(model, digits.test, CPU)["accuracy"] > 0.8


def test_fedkd_train_augment_option(cli, tmp_path):
    out = tmp_path / "run"
    result = cli("fedkd-train", "epochs=1", "augment.shift=1", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["final_test_accuracy"] > 0.5
    assert "shift: 1" in (out / "resolved_config.yaml").read_text()


def test_checkpoint_round_trip_and_errors(tmp_path, digits):
    spec = digits.spec
    model = build_model("lenet5", spec)
    path = tmp_path / "m.pt"
    save_model(path, model, **model_meta({"name": "lenet5", "batch_norm": True}, spec))
    rebuilt, meta = model_from_checkpoint(path, spec)
    x = digits.test.x[:4]
    assert torch.equal(rebuilt.eval()(x), model.eval()(x)) and meta["model_config"]["name"] == "lenet5"

    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.pt", model)
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model(tmp_path / "trunc.pt", model)
    with open(tmp_path / "evil.pt", "wb") as f:  # a pickle of an arbitrary object: refused
        pickle.dump({"format": "fedkd-model-v1", "meta": {}, "state_dict": {}, "obj": object()}, f)
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "evil.pt", model)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(path, build_model("small_cnn", spec))
    with pytest.raises(CheckpointError, match="num_classes=10"):
        model_from_checkpoint(path, get_spec("cifar100"))


def test_fedkd_train_writes_run_folder(cli, tmp_path):
    out = tmp_path / "run"
    result = cli("fedkd-train", "epochs=2", "model=small_cnn", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_test_accuracy"] == rows[-1]["test_accuracy"] > 0.8
    assert (out / "resolved_config.yaml").read_text().count("small_cnn") >= 1
    assert any((out / "tb").glob("events.out.tfevents.*"))
    model, _ = model_from_checkpoint(out / "model.pt", get_spec("digits"))
    assert model.feature_dim == 128


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["dataset.name=imagenet"], "dataset.name"),
        (["epochs=0"], "epochs"),
        (["batch_size=-4"], "batch_size"),
        (["model.name=vgg99"], "vgg99"),
        (["device=cuda"] if not torch.cuda.is_available() else ["dataset.root=/nonexistent"],
         "device=" if not torch.cuda.is_available() else "does not exist"),
        (["dataset=mnist", "dataset.root=/nonexistent/fedkd"], "does not exist"),
    ],
)
def test_bad_config_is_one_line_error(cli, tmp_path, overrides, needle):
    result = cli("fedkd-train", *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("fedkd: error:")]
    assert len(lines) == 1 and needle in lines[0], result.stderr[-1500:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("overrides", [["dataset=imagenet"], ["epochs=abc"]])
def test_hydra_rejects_unknown_group_and_wrong_type(cli, tmp_path, overrides):
    result = cli("fedkd-train", *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert ("imagenet" in result.stderr) or ("epochs" in result.stderr)
