"""fedkd-compare on a folder of earlier runs, the tools' --help pages, the hints for keys a config
lacks, and the run folder a failed start leaves (none).

The run folders are written here, as fedkd-compare writes them (the runs' resolved configs, metrics
and summaries), so no test starts Ray; ``rerun_changed=true`` runs a stand-in for the simulation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

SMALL = ["num_clients=4", "rounds=2"]


def _write_run(folder: Path, overrides: list[str], accuracy: float = 0.6) -> None:
    """A finished run of ``fedkd-sim`` with ``overrides``: its config, two rounds, its summary."""
    from fedkd.federated.config import compose_sim_config

    cfg = compose_sim_config(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    rows = [{"step": r, "test_accuracy": accuracy + 0.1 * r, "aggregate_seconds": 0.1, "client_seconds_max": 0.2}
            for r in (1, 2)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "summary.json").write_text(json.dumps({"final_accuracy": rows[-1]["test_accuracy"]}) + "\n")


def _comparison(root: Path, alpha: float) -> None:
    for strategy in ("fedprox",):
        for seed in (0, 1):
            _write_run(root / "runs" / strategy / f"seed{seed}",
                       [f"strategy={strategy}", f"seed={seed}", f"partition.alpha={alpha}", *SMALL])


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _main(cmd: str, args: list[str], monkeypatch, capfd) -> tuple[int, str, str]:
    from fedkd.cli import compare, distill, sim, train

    entry = {"fedkd-compare": compare.main, "fedkd-sim": sim.main, "fedkd-distill": distill.main,
             "fedkd-train": train.main}[cmd]
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setattr(sys, "argv", [cmd, *args])
    code = 0
    try:
        entry()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capfd.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("fedkd: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def _compare_args(root: Path, alpha: float, *more: str, runs: tuple[str, ...] = ()) -> list[str]:
    overrides = ",".join(f"'{o}'" for o in [f"partition.alpha={alpha}", *SMALL, *runs])
    return ["strategies=[fedprox]", "seeds=[0,1]", f"overrides=[{overrides}]", f"hydra.run.dir={root}", *more]


def test_compare_refuses_runs_made_with_another_config_and_reruns_them_aside_on_request(tmp_path, monkeypatch, capfd):
    from fedkd.apps import simulation

    root = tmp_path / "cmp"
    _comparison(root, alpha=0.3)
    before = _snapshot(root)

    code, _, err = _main("fedkd-compare", _compare_args(root, 0.9), monkeypatch, capfd)
    line = _error_line(err)
    assert code == 2
    assert "runs/fedprox/seed0 (and 1 more run)" in line and "partition.alpha 0.3 -> 0.9" in line
    assert "hydra.run.dir=PATH" in line and "rerun_changed=true" in line
    assert _snapshot(root) == before, "a refused comparison wrote into the folder (.hydra/ too)"

    # The same config, a key that does not change results aside: kept, not run again, and reported.
    ran: list[Path] = []
    monkeypatch.setattr(simulation, "simulate", lambda cfg, out: ran.append(Path(out)))
    code, out, err = _main("fedkd-compare", _compare_args(root, 0.3, runs=("device=cpu",)), monkeypatch, capfd)
    assert code == 0, err[-2000:]
    assert ran == []
    report = (root / "report.md").read_text()
    for setting in ("- dataset: digits", "- model: small_cnn", "- partition: dirichlet(alpha=0.3, min_size=10)",
                    "- clients: 4", "- fraction sampled per round: 1.0", "- rounds: 2", "- local epochs: 1",
                    "- seeds: 0, 1"):
        assert setting in report, report
    assert report.index("- dataset:") < report.index("| strategy |")  # the settings head the table

    # rerun_changed=true: the old runs move to stale/ (their files unchanged) and run again.
    def rerun(cfg, out):
        ran.append(Path(out))
        _write_run(Path(out), [f"strategy={cfg.strategy._target_.rsplit('.', 1)[-1].lower()}", f"seed={cfg.seed}",
                               f"partition.alpha={cfg.partition.alpha}", *SMALL], accuracy=0.2)

    monkeypatch.setattr(simulation, "simulate", rerun)
    code, out, err = _main("fedkd-compare", _compare_args(root, 0.9, "rerun_changed=true"), monkeypatch, capfd)
    assert code == 0, err[-2000:]
    assert sorted(p.relative_to(root).as_posix() for p in ran) == ["runs/fedprox/seed0", "runs/fedprox/seed1"]
    stale = root / "stale" / "fedprox" / "seed0.1"
    assert (stale / "summary.json").read_bytes() == before["runs/fedprox/seed0/summary.json"]
    assert "alpha: 0.3" in (stale / "resolved_config.yaml").read_text()
    assert "alpha=0.9" in (root / "report.md").read_text()


def test_help_lists_the_tools_own_groups_with_descriptions(monkeypatch, capfd):
    code, out, _ = _main("fedkd-distill", ["--help"], monkeypatch, capfd)
    assert code == 0 and out.startswith("fedkd-distill: data-free distillation")
    assert "strategy" not in out and "partition" not in out and "dataset_schema" not in out
    assert "synthesizer=" in out and "model@student=" in out and "student_batch_size=256" in out

    code, out, _ = _main("fedkd-sim", ["strategy=fedprox", "--help"], monkeypatch, capfd)
    assert code == 0 and "dataset_schema" not in out
    lines = out.splitlines()
    strategy = next(line for line in lines if line.strip().startswith("strategy="))
    assert strategy.split()[0] == "strategy=fedprox" and "the federated algorithm" in strategy
    partition = next(line for line in lines if line.strip().startswith("partition="))
    assert "how the training set is split among the clients" in partition
    keys = out[out.index("keys of fedprox:"):].split("\n\n")[0]  # the chosen option's keys, wrapped
    assert "proximal_mu" in keys and "fraction_train" in keys
    assert any(line.strip().startswith("rounds=10") and "federated rounds" in line for line in lines)

    code, out, _ = _main("fedkd-compare", ["-h"], monkeypatch, capfd)
    assert code == 0 and "rerun_changed=false" in out and "overrides" in out and "Config groups" not in out

    code, out, _ = _main("fedkd-train", ["--hydra-help"], monkeypatch, capfd)  # Hydra's own page stays
    assert code == 0 and "Hydra" in out and "--hydra-help" in out


@pytest.mark.parametrize(("cmd", "args", "needles"), [
    ("fedkd-compare", ["dataset=arrays"], ["setting of the runs", "\"overrides=['dataset=arrays', ...]\""]),
    ("fedkd-compare", ["partition.alpha=0.3"], ["\"overrides=['partition.alpha=0.3', ...]\""]),
    ("fedkd-compare", ["nosuch=1"], ["not a key of fedkd-compare", "strategies", "overrides="]),
    ("fedkd-sim", ["strategy.nosuch=1"], ["strategy.nosuch is not an option of", "fraction_train"]),
    ("fedkd-sim", ["faults.nosuch=1"], ["faults.nosuch is not a key of 'faults'", "raise_fraction"]),
    ("fedkd-distill", ["strategy=fedavg"], ["fedkd-distill has no config group 'strategy'", "synthesizer"]),
])
def test_a_key_the_config_lacks_gets_the_right_hint(cmd, args, needles, tmp_path, monkeypatch, capfd):
    code, _, err = _main(cmd, [*args, f"hydra.run.dir={tmp_path / 'out'}"], monkeypatch, capfd)
    line = _error_line(err)
    assert code == 2 and "+" + args[0] not in line, line  # Hydra's +key=value, which fails again, is gone
    for needle in needles:
        assert needle in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("cmd", "args"), [
    ("fedkd-sim", ["partition.alpha=0"]),  # a config error
    ("fedkd-train", ["dataset=mnist", "dataset.root={tmp}/no_such_folder"]),  # a data error
    ("fedkd-compare", ["report_only={tmp}/empty"]),  # raised inside the task, after Hydra wrote its files
])
def test_a_failed_start_leaves_no_run_folder(cmd, args, tmp_path, monkeypatch, capfd):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "outputs" / "run"
    code, _, err = _main(cmd, [a.replace("{tmp}", str(tmp_path)) for a in args] + [f"hydra.run.dir={out}"],
                         monkeypatch, capfd)
    _error_line(err)
    assert code == 2 and not out.exists()


def test_a_failed_start_keeps_a_folder_that_existed(tmp_path, monkeypatch, capfd):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    code, _, err = _main("fedkd-compare", [f"report_only={tmp_path}", f"hydra.run.dir={out}"], monkeypatch, capfd)
    _error_line(err)
    assert code == 2 and (out / "notes.txt").read_text() == "mine\n"


@pytest.mark.parametrize(("extra", "removed"), [
    ({}, True),
    ({"tb/events.out.tfevents.1.host.0": b"x" * 88, "partition.png": b"png"}, True),  # before round 1
    ({"metrics.jsonl": b'{"step": 1}\n'}, False),  # a round was recorded
    ({"model.pt": b"weights"}, False),
    ({"tb/events.out.tfevents.1.host.0": b"x" * 4000}, False),  # scalars were logged
])
def test_discard_unused_removes_only_a_folder_without_results(extra, removed, tmp_path):
    from fedkd.cli.common import discard_unused

    folder = tmp_path / "run"
    files = {".hydra/config.yaml": b"seed: 0\n", "sim.log": b"[INFO] starting\n", "resolved_config.yaml": b"seed: 0\n",
             "metrics.jsonl": b"", **extra}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    assert discard_unused(folder, "sim.log") is removed
    assert folder.exists() is not removed


def test_the_default_comparison_gives_fedavg_fedftgs_memory_through_mifa(tmp_path):
    """fedkd-compare's default strategies: FedAvg, MIFA and FedFTG, MIFA's window that of FedFTG's teacher."""
    from hydra import compose, initialize_config_dir

    from fedkd.cli.compare import plan
    from fedkd.config import CONF_DIR, register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="compare", overrides=["seeds=[0]"])
    runs = {run.strategy: run.cfg for run in plan(cfg, tmp_path)}
    assert list(runs) == ["fedavg", "mifa", "fedftg"]
    assert runs["mifa"].strategy._target_.endswith(".MIFA")
    assert runs["mifa"].strategy.memory_rounds == runs["fedftg"].strategy.teacher_memory_rounds == 10
