"""Bad input: every row of the table in docs/reliability.md, run through the real entry points.

Each row must end with exactly one ``fedkd: error: <problem>; <remedy>`` line on stderr, exit
code 2, no Python traceback, and leave every file written before it (an earlier run folder, the
checkpoints and data files given as input) with the same bytes and no new files beside them.

Rows run in-process (the entry point's ``main()`` with ``sys.argv`` set, exactly what the console
script calls) to keep the suite quick; :func:`test_console_scripts_give_the_same_one_line_error`
runs rows of two entry points as real subprocesses.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from fedkd.data import get_spec
from fedkd.models import build_model
from fedkd.models.checkpoint import model_meta
from fedkd.utils.checkpoint import save_model

FASHION = (
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
)


class NotAWeight:
    """A pickled object that ``torch.load(weights_only=True)`` must refuse to build."""

    def __reduce__(self):
        return (print, ("this must never run",))


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _fashion_folder(folder: Path, train_images: bytes) -> None:
    """A Fashion-MNIST idx folder whose training images file holds ``train_images`` (the others are valid)."""
    folder.mkdir(parents=True)
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    labels = np.arange(4, dtype=np.uint8)
    (folder / FASHION[0]).write_bytes(train_images)
    (folder / FASHION[1]).write_bytes(gzip.compress(_idx_bytes(labels)))
    (folder / FASHION[2]).write_bytes(gzip.compress(_idx_bytes(images)))
    (folder / FASHION[3]).write_bytes(gzip.compress(_idx_bytes(labels)))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Files written before the bad commands: an earlier run folder, checkpoints, data folders."""
    root = tmp_path_factory.mktemp("inputs")
    digits = get_spec("digits")
    torch.manual_seed(0)

    # An earlier run's folder, as fedkd-train leaves it.
    run = root / "previous_run"
    (run / ".hydra").mkdir(parents=True)
    lenet = build_model("lenet5", digits)
    save_model(run / "model.pt", lenet, **model_meta({"name": "lenet5"}, digits))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "test_accuracy": 0.9}) + "\n")
    (run / "summary.json").write_text(json.dumps({"final_test_accuracy": 0.9}) + "\n")
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run / "train.log").write_text("earlier log\n")

    ckpt = root / "checkpoints"
    ckpt.mkdir()
    good = (run / "model.pt").read_bytes()
    (ckpt / "truncated.pt").write_bytes(good[: len(good) // 2])
    (ckpt / "empty.pt").write_bytes(b"")
    (ckpt / "random.pt").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    torch.save(lenet.state_dict(), ckpt / "bare_state_dict.pt")  # weights, but no fedkd format/meta
    with open(ckpt / "pickled_object.pt", "wb") as handle:  # arbitrary code on load, if it were unpickled
        pickle.dump({"format": "fedkd-model-v1", "meta": {}, "state_dict": NotAWeight()}, handle, protocol=2)
    cifar100 = get_spec("cifar100")
    save_model(ckpt / "cifar100_classes.pt", build_model("lenet5", cifar100),
               **model_meta({"name": "lenet5"}, cifar100))
    cifar10 = get_spec("cifar10")
    save_model(ckpt / "three_channels.pt", build_model("lenet5", cifar10), **model_meta({"name": "lenet5"}, cifar10))
    # Says lenet5 in its meta but holds small_cnn's weights: another architecture.
    save_model(ckpt / "other_arch.pt", build_model("small_cnn", digits), **model_meta({"name": "lenet5"}, digits))

    data = root / "data"
    images = _idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))
    _fashion_folder(data / "truncated_gzip", gzip.compress(images)[:-20])
    _fashion_folder(data / "short_data", gzip.compress(images[:-100]))
    _fashion_folder(data / "bad_header", gzip.compress(b"\x12\x34" + images[2:]))
    _fashion_folder(data / "not_gzip", b"plain text, not an idx file\n")
    (data / "empty").mkdir()
    (root / "a_file").write_text("not a folder\n")
    (root / "empty_folder").mkdir()

    # Run folders for resume: one with a valid server state (of num_clients=3 rounds=1 seed=0,
    # the rows' own config), one whose state file is damaged.
    from flwr.app import ArrayRecord

    from fedkd.federated.config import compose_sim_config
    from fedkd.federated.resume import STATE_FILE, ServerCheckpointer
    from fedkd.strategies.fedavg import FedAvg

    class Rows:
        rows: list = []

    sim_cfg = compose_sim_config(SMALL["fedkd-sim"])
    (root / "resumable").mkdir()
    checkpointer = ServerCheckpointer(root / "resumable", sim_cfg, FedAvg(num_clients=3), Rows())
    checkpointer(1, ArrayRecord({"w": torch.zeros(2)}))
    (root / "damaged_state").mkdir()
    (root / "damaged_state" / STATE_FILE).write_bytes(good[:100])

    # A fedkd-train run folder checkpointed after epoch 1 (of the default config, seed=0).
    from hydra import compose, initialize_config_dir

    from fedkd.config import CONF_DIR, register_schemas
    from fedkd.utils.run_state import RunCheckpointer

    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        train_cfg = compose(config_name="train")
    RunCheckpointer(root / "train_resumable", train_cfg, "train").save(1, {"model": lenet.state_dict()})
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


NO_CUDA = not torch.cuda.is_available()

# (entry point, overrides with {in}=inputs folder, text the error line must contain). The output
# folder is a fresh one unless a row sets hydra.run.dir itself.
ROWS: dict[str, tuple[str, list[str], list[str]]] = {
    # --- names and values
    "unknown dataset name": ("fedkd-train", ["dataset.name=imagenet"], ["unknown dataset 'imagenet'", "choose one of"]),
    "unknown dataset config": ("fedkd-train", ["dataset=imagenet"], ["dataset/imagenet", "digits"]),
    "unknown model name": ("fedkd-train", ["model.name=vgg99"], ["vgg99", "lenet5"]),
    "value of the wrong type": ("fedkd-train", ["epochs=abc"], ["epochs=abc", "Integer"]),
    "unknown key": ("fedkd-train", ["nosuchkey=1"], ["nosuchkey"]),
    "epochs = 0": ("fedkd-train", ["epochs=0"], ["epochs must be >= 1"]),
    "negative augmentation shift": ("fedkd-train", ["augment.shift=-1"], ["augment.shift must be >= 0"]),
    "negative batch size": ("fedkd-train", ["batch_size=-4"], ["batch_size must be >= 1"]),
    "CUDA asked for, none present": ("fedkd-train", ["device=cuda"], ["device="]),
    "unknown strategy": ("fedkd-sim", ["strategy=nosuch"], ["strategy/nosuch", "fedavg"]),
    "Dirichlet alpha = 0": ("fedkd-sim", ["partition.alpha=0"], ["partition.alpha must be > 0"]),
    "Dirichlet alpha < 0": ("fedkd-sim", ["partition.alpha=-0.5"], ["partition.alpha must be > 0"]),
    "more clients than samples": ("fedkd-sim", ["num_clients=5000"], ["num_clients=5000", "lower num_clients"]),
    "zero clients": ("fedkd-sim", ["num_clients=0"], ["num_clients must be >= 1"]),
    "zero rounds": ("fedkd-sim", ["rounds=0"], ["rounds must be >= 1"]),
    "negative learning rate": ("fedkd-train", ["optim.lr=-1"], ["optim.lr must be > 0 (got -1)"]),
    "fault fraction above 1": (
        "fedkd-sim", ["faults.raise_fraction=1.5"], ["faults.raise_fraction must be >= 0 and <= 1"]
    ),
    "unknown client model": ("fedkd-sim", ["client_models=[{name:vgg99}]"], ["vgg99"]),
    "unknown strategy in a comparison": ("fedkd-compare", ["strategies=[nosuch]", "seeds=[0]"], ["strategy/nosuch"]),
    "empty comparison": ("fedkd-compare", ["strategies=[]"], ["strategies and seeds"]),
    "report of a folder with no runs": ("fedkd-compare", ["report_only={in}/empty_folder"], ["no finished runs"]),
    # --- data files
    "missing data folder": ("fedkd-train", ["dataset=mnist", "dataset.root={in}/no_such_folder"], ["does not exist"]),
    "data folder without the files": (
        "fedkd-train", ["dataset=fashion_mnist", "dataset.root={in}/data/empty"], ["not found"]
    ),
    "truncated idx.gz file": (
        "fedkd-train", ["dataset=fashion_mnist", "dataset.root={in}/data/truncated_gzip"], ["corrupted or truncated"]
    ),
    "idx file shorter than its header says": (
        "fedkd-train", ["dataset=fashion_mnist", "dataset.root={in}/data/short_data"], ["header says"]
    ),
    "idx file with a corrupted header": (
        "fedkd-train", ["dataset=fashion_mnist", "dataset.root={in}/data/bad_header"],
        ["no valid unsigned-byte idx header"]
    ),
    "idx.gz that is not gzip": (
        "fedkd-train", ["dataset=fashion_mnist", "dataset.root={in}/data/not_gzip"], ["corrupted or truncated"]
    ),
    "data folder in a simulation": (
        "fedkd-sim", ["dataset=mnist", "dataset.root={in}/no_such_folder"], ["does not exist"]
    ),
    # --- checkpoints
    "missing checkpoint": ("fedkd-distill", ["teacher.checkpoint={in}/checkpoints/missing.pt"], ["does not exist"]),
    "truncated checkpoint": (
        "fedkd-distill", ["teacher.checkpoint={in}/checkpoints/truncated.pt"], ["cannot be read", "truncated"]
    ),
    "empty checkpoint": ("fedkd-distill", ["teacher.checkpoint={in}/checkpoints/empty.pt"], ["cannot be read"]),
    "random bytes as checkpoint": (
        "fedkd-distill", ["teacher.checkpoint={in}/checkpoints/random.pt"], ["cannot be read"]
    ),
    "foreign checkpoint (bare state_dict)": (
        "fedkd-distill", ["teacher.checkpoint={in}/checkpoints/bare_state_dict.pt"], ["not a fedkd model checkpoint"]
    ),
    "pickled object in a checkpoint": (
        "fedkd-distill", ["teacher.checkpoint={in}/checkpoints/pickled_object.pt"], ["refused", "GLOBAL print"]
    ),
    "checkpoint with another class count": (
        "fedkd-distill", ["teacher.checkpoint={in}/checkpoints/cifar100_classes.pt"],
        ["num_classes=100", "num_classes=10"]
    ),
    "checkpoint with another input shape": (
        "fedkd-distill", ["teacher.checkpoint={in}/checkpoints/three_channels.pt"], ["channels=3"]
    ),
    "checkpoint of another architecture": (
        "fedkd-distill", ["teacher.checkpoint={in}/checkpoints/other_arch.pt"], ["does not fit the model"]
    ),
    # --- output folders
    "output folder under a file": ("fedkd-train", ["hydra.run.dir={in}/a_file/run"], ["is a file", "hydra.run.dir"]),
    "output folder holds a finished run": (
        "fedkd-train", ["hydra.run.dir={in}/previous_run"], ["already holds a run", "hydra.run.dir"]
    ),
    "simulation into a finished run": ("fedkd-sim", ["hydra.run.dir={in}/previous_run"], ["already holds a run"]),
    "distillation into a finished run": ("fedkd-distill", ["hydra.run.dir={in}/previous_run"], ["already holds a run"]),
    # --- resume
    "resume of a folder that holds no run": (
        "fedkd-sim", ["resume={in}/empty_folder"], ["holds no run to resume", "server_state.pt"]
    ),
    "resume of a missing folder": ("fedkd-sim", ["resume={in}/no_such_folder"], ["is not a folder"]),
    "resume with a damaged server state": ("fedkd-sim", ["resume={in}/damaged_state"], ["cannot be read", "truncated"]),
    "resume with another config": ("fedkd-sim", ["resume={in}/resumable", "seed=5"], ["config differs", "seed"]),
    "resume into another output folder": (
        "fedkd-sim", ["resume={in}/resumable", "hydra.run.dir={in}/elsewhere"], ["leave hydra.run.dir out"]
    ),
    "resume of a training folder that holds no run": (
        "fedkd-train", ["resume={in}/empty_folder"], ["holds no run to resume", "train_state.pt"]
    ),
    "resume of a training with another config": (
        "fedkd-train", ["resume={in}/train_resumable", "seed=5"], ["config differs", "seed"]
    ),
    "resume of a training run with fedkd-distill": (
        "fedkd-distill", ["resume={in}/train_resumable"], ["is a fedkd-train run"]
    ),
}

# Rows that need a bit more than the default tiny config to stay quick and specific.
SMALL = {
    "fedkd-sim": ["num_clients=3", "rounds=1"],
    "fedkd-distill": ["epochs=1", "iterations_per_epoch=1", "preview_images=0"],
}


def _entry(cmd: str):
    from fedkd.cli import compare, distill, sim, train

    entries = {"fedkd-train": train.main, "fedkd-sim": sim.main, "fedkd-distill": distill.main,
               "fedkd-compare": compare.main}
    return entries[cmd]


def _argv(name: str, inputs: Path, out: Path) -> tuple[str, list[str]]:
    cmd, overrides, _ = ROWS[name]
    args = SMALL.get(cmd, []) + [o.replace("{in}", str(inputs)) for o in overrides]
    if not any(a.startswith(("hydra.run.dir=", "resume=")) for a in args):  # resume: the run's own folder
        args.append(f"hydra.run.dir={out}")
    return cmd, args


def _check_one_line_error(name: str, code: int | None, stdout: str, stderr: str) -> str:
    needles = ROWS[name][2]
    lines = [line for line in stderr.splitlines() if line.startswith("fedkd: error: ")]
    assert code == 2, f"exit code {code}; stderr: {stderr[-2000:]}"
    assert len(lines) == 1, stderr[-2000:]
    line = lines[0]
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr[-2000:]
    assert "; " in line, f"no remedy after the problem: {line}"
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def test_table_has_at_least_twenty_rows_and_docs_list_them():
    assert len(ROWS) >= 20
    doc = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text()
    missing = [name for name in ROWS if f"| {name} |" not in doc]
    assert not missing, f"rows not in docs/reliability.md: {missing}"


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input_gives_one_line_error_and_keeps_files(name, inputs, tmp_path, capfd, monkeypatch):
    if name == "CUDA asked for, none present" and not NO_CUDA:
        pytest.skip("CUDA is present")
    cmd, args = _argv(name, inputs, tmp_path / "out")
    before = _snapshot(inputs)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setattr(sys, "argv", [cmd, *args])
    code: int | None = 0
    try:
        _entry(cmd)()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    stdout, stderr = capfd.readouterr()
    _check_one_line_error(name, code, stdout, stderr)
    assert _snapshot(inputs) == before, "a file written before the command was changed, removed or added beside"


@pytest.mark.parametrize(
    "name", ["Dirichlet alpha = 0", "truncated checkpoint"]
)
def test_console_scripts_give_the_same_one_line_error(name, inputs, tmp_path):
    cmd, args = _argv(name, inputs, tmp_path / "out")
    before = _snapshot(inputs)
    done = run_cli(cmd, *args, timeout=120)
    _check_one_line_error(name, done.returncode, done.stdout, done.stderr)
    assert _snapshot(inputs) == before


def test_debug_flag_shows_the_traceback(inputs, tmp_path):
    done = run_cli("fedkd-train", "epochs=0", "debug=true", f"hydra.run.dir={tmp_path / 'out'}", timeout=120)
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "ConfigError" in done.stderr
