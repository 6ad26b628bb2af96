"""Checkpoint and resume of centralized runs (fedkd-train, fedkd-distill): a run killed with SIGKILL
after an epoch and resumed ends exactly as one never interrupted (CPU, same seed)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_entry_point, sigkill_when

from fedkd.utils.checkpoint import load_checkpoint
from fedkd.utils.run_logger import read_metrics
from fedkd.utils.run_state import STATE_FILE

BIN = Path(sys.executable).parent
# One torch thread in every run: the same float reductions in the reference, killed and resumed
# runs on any machine, and no thread oversubscription on a 2-core machine shared with pytest.
ENV = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}

# The teacher is trained in the run (saved as teacher.pt before distillation), so the resume must
# load it instead of training it again; preview images draw random numbers every epoch.
DISTILL = ["dataset=digits", "device=cpu", "seed=1", "synthesizer=dfad", "teacher.epochs=1",
           "teacher.model.name=lenet5_half", "teacher.batch_size=64", "epochs=3", "iterations_per_epoch=4",
           "student_batch_size=32",
           "synthesizer.batch_size=32", "synthesizer.generator.ngf=4", "preview_images=8", "keep_best_on_test=true"]
TRAIN = ["dataset=digits", "device=cpu", "seed=2", "model=lenet5_half", "epochs=3", "batch_size=32"]
CASES = {
    "fedkd-distill": (DISTILL, "final_student_accuracy", ("student.pt", "generator.pt", "student_best_on_test.pt")),
    "fedkd-train": (TRAIN, "final_test_accuracy", ("model.pt",)),
}
VARYING = {"wall_time_s", "synthesis_s", "student_s"}  # seconds: differ from run to run


def _run(cmd: str, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / cmd), *overrides], check=False, capture_output=True, text=True, timeout=300,
                          env=ENV, stdin=subprocess.DEVNULL)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted runs of each entry point (also the finished runs the refusals are tried on)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    out = {}
    for cmd, (overrides, _, _) in CASES.items():
        out[cmd] = root / cmd
        done = _run(cmd, *overrides, f"hydra.run.dir={out[cmd]}")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _kill_after_first_checkpoint(cmd: str, overrides: list[str], out: Path, log_path: Path) -> int:
    """Start ``cmd``, SIGKILL it as soon as its first epoch is checkpointed; the epoch it reached."""
    # train_state.pt is renamed into place: never half a file
    returncode = sigkill_when([str(BIN / cmd), *overrides, f"hydra.run.dir={out}"], log_path,
                              (out / STATE_FILE).exists, timeout=120, env=ENV, poll=0.02)
    assert returncode == -signal.SIGKILL
    return int(torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)["epoch"])


@pytest.mark.parametrize("cmd", list(CASES))
def test_run_killed_with_sigkill_and_resumed_ends_like_an_uninterrupted_one(cmd, references, tmp_path):
    overrides, final_key, model_files = CASES[cmd]
    reference, out = references[cmd], tmp_path / "run"
    killed_at = _kill_after_first_checkpoint(cmd, overrides, out, tmp_path / "killed.log")
    assert 1 <= killed_at < 3, "killed in the middle of the run"
    assert not (out / "summary.json").exists()
    teacher = (out / "teacher.pt").read_bytes() if cmd == "fedkd-distill" else None

    resumed = _run(cmd, *overrides, f"resume={out}")  # same overrides; continues in the run's folder
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resuming {out} after epoch {killed_at} of 3" in resumed.stdout + resumed.stderr

    rows, expected = read_metrics(out), read_metrics(reference)
    assert [r["step"] for r in rows] == [r["step"] for r in expected], "no row lost or duplicated"
    for row, want in zip(rows, expected, strict=True):
        assert row.keys() == want.keys()
        for key in want.keys() - VARYING:
            assert row[key] == want[key], (row["step"], key, row[key], want[key])
    summary, want = (json.loads((d / "summary.json").read_text()) for d in (out, reference))
    assert summary[final_key] == want[final_key]
    for name in model_files:
        ours, theirs = load_checkpoint(out / name)["state_dict"], load_checkpoint(reference / name)["state_dict"]
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs), name
    if teacher is not None:  # loaded from the run folder, not trained again
        assert (out / "teacher.pt").read_bytes() == teacher
        assert "no teacher.checkpoint: training" not in resumed.stdout + resumed.stderr
        assert summary["teacher_accuracy"] == want["teacher_accuracy"]
        assert summary["best_on_test_epoch"] == want["best_on_test_epoch"]
        assert summary["synthetic_samples"] == want["synthetic_samples"]
    assert (out / ".hydra-resume" / "overrides.yaml").is_file()  # the run's .hydra/ keeps the original command
    state = torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)
    assert state["epoch"] == 3 and len(state["rows"]) == len(expected)
    assert not list(out.glob(f".{STATE_FILE}.*")), "no temporary file left behind"


def _main(cmd: str, argv: list[str], monkeypatch, capfd) -> tuple[int, str]:
    """Run the entry point in-process exactly as its console script does; exit code and stderr."""
    return run_entry_point(cmd, argv, monkeypatch), capfd.readouterr().err


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("fedkd: error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("cmd", list(CASES))
def test_resume_with_another_config_is_refused_and_changes_nothing(cmd, references, monkeypatch, capfd):
    folder = references[cmd]
    before = _snapshot(folder)
    code, stderr = _main(cmd, [*CASES[cmd][0], "seed=5", f"resume={folder}"], monkeypatch, capfd)
    line = _one_error_line(stderr)
    assert code == 2
    assert "config differs from the run's in seed" in line and "resolved_config.yaml" in line
    # The other entry point's run: named, not compared key by key.
    other = "fedkd-train" if cmd == "fedkd-distill" else "fedkd-distill"
    code, stderr = _main(other, [f"resume={folder}"], monkeypatch, capfd)
    assert code == 2 and f"is a {cmd} run" in _one_error_line(stderr)
    assert _snapshot(folder) == before, "a file of the run was changed, removed or added"


@pytest.mark.parametrize("cmd", list(CASES))
def test_resume_of_a_folder_without_a_run_is_refused(cmd, tmp_path, monkeypatch, capfd):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, stderr = _main(cmd, [f"resume={empty}"], monkeypatch, capfd)
    line = _one_error_line(stderr)
    assert code == 2
    assert f"holds no run to resume (no {STATE_FILE})" in line and f"a {cmd} run" in line and "; " in line
    assert list(empty.iterdir()) == []


def test_resume_of_a_folder_saved_with_a_key_this_version_does_not_know_is_refused(tmp_path, monkeypatch, capfd):
    """A run folder whose saved config holds a key the current config lacks (here the student's
    steps as the synthesizer's own key, as an earlier layout had it) is refused in one line naming
    that key, before Hydra writes anything."""
    from hydra import compose, initialize_config_dir

    from fedkd.config import CONF_DIR, register_schemas
    from fedkd.utils.checkpoint import atomic_save
    from fedkd.utils.run_state import RunCheckpointer

    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="centralized")
    folder = tmp_path / "run"
    RunCheckpointer(folder, cfg, "centralized").save(1, {})
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    saved = json.loads(state["config"])
    saved["synthesizer"]["student_steps"] = saved["synthesizer"]["student"].pop("steps")
    atomic_save({**state, "config": json.dumps(saved, sort_keys=True)}, folder / STATE_FILE)
    before = _snapshot(folder)
    code, stderr = _main("fedkd-distill", [f"resume={folder}"], monkeypatch, capfd)
    assert code == 2
    assert _one_error_line(stderr) == (
        f"fedkd: error: run folder {folder} was saved with key 'synthesizer.student_steps', which this version "
        "does not know; start a new run"
    )
    assert _snapshot(folder) == before, "a file of the run was changed, removed or added"


def test_an_override_with_a_name_this_version_does_not_know_fails_like_any_unknown_key(tmp_path, monkeypatch, capfd):
    code, stderr = _main("fedkd-distill", ["distill=cmi", f"hydra.run.dir={tmp_path / 'out'}"], monkeypatch, capfd)
    assert code == 2
    line = _one_error_line(stderr)
    assert line.startswith("fedkd: error: distill is not a key of fedkd-distill; use one of its keys:")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread is fastest, and a second one spins when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_synthesizer_state_round_trips_through_weights_only_loading(tmp_path, one_thread):
    """Every synthesizer's state_dict() is tensors and plain values, and load_state_dict() makes a
    fresh synthesizer sample exactly what the saved one samples next."""
    from fedkd.data import get_spec, load_dataset
    from fedkd.datafree import CMISynthesizer, ConditionalSynthesizer, DFADSynthesizer, RealDataSource
    from fedkd.models import build_model

    spec = get_spec("digits")
    torch.manual_seed(0)
    teacher, student = build_model("lenet5_half", spec).eval(), build_model("lenet5_half", spec)
    small = {"generator": {"name": "dfad_generator", "ngf": 4}, "batch_size": 8}
    makers = {
        "dfad": lambda: DFADSynthesizer(spec, **small),
        "conditional": lambda: ConditionalSynthesizer(spec, generator={"name": "cond_generator", "ngf": 4},
                                                      batch_size=8, label_prior=[1.0] * 5 + [3.0] * 5),
        "cmi": lambda: CMISynthesizer(spec, generator={"name": "cmi_generator", "ngf": 4}, batch_size=8,
                                      synthesis_steps=2, bank_size=16, negatives=4, pool_size=12, head_hidden=16,
                                      head_dim=8),
        "real": lambda: RealDataSource(spec, train=load_dataset("digits", max_train=50).train, seed=3),
    }
    for name, make in makers.items():
        saved = make()
        for _ in range(2):
            saved.synthesize(teacher, student)
            saved.sample(8)
        path = tmp_path / f"{name}.pt"
        torch.save(saved.state_dict(), path)
        fresh = make()
        fresh.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        assert fresh.samples_generated == saved.samples_generated, name
        for _ in range(2):
            torch.manual_seed(7)
            a_metrics = saved.synthesize(teacher, student)
            a = saved.sample(8)[0]
            torch.manual_seed(7)
            b_metrics = fresh.synthesize(teacher, student)
            b = fresh.sample(8)[0]
            assert a_metrics == b_metrics and torch.equal(a, b), name


def test_resume_with_a_replaced_teacher_is_refused_and_changes_nothing(references, tmp_path, monkeypatch, capfd):
    """The run records its teacher's SHA-256; a teacher file changed since the checkpoint is refused."""
    import shutil

    from fedkd.utils.checkpoint import atomic_save

    folder = tmp_path / "run"
    shutil.copytree(references["fedkd-distill"], folder)
    teacher = folder / "teacher.pt"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["teacher_sha256"] == hashlib.sha256(teacher.read_bytes()).hexdigest()

    ckpt = load_checkpoint(teacher)  # same architecture, one weight changed: loads fine, is not the same teacher
    state = {k: v.clone() for k, v in ckpt["state_dict"].items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first].add_(0.01)
    atomic_save({**ckpt, "state_dict": state}, teacher)
    before = _snapshot(folder)
    code, stderr = _main("fedkd-distill", [*DISTILL, f"resume={folder}"], monkeypatch, capfd)
    line = _one_error_line(stderr)
    assert code == 2
    assert f"teacher {teacher} has changed since the run" in line and "SHA-256" in line and "; " in line
    assert _snapshot(folder) == before, "a file of the run was changed, removed or added"

    teacher.unlink()
    code, stderr = _main("fedkd-distill", [*DISTILL, f"resume={folder}"], monkeypatch, capfd)
    assert code == 2 and f"teacher {teacher} of the run at {folder} is missing" in _one_error_line(stderr)
