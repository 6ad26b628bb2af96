"""Generator-based aggregation (FedFTG): real digits runs, ensemble weights, persistence,
mixed architectures, and the comparison report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FEDFTG_BUDGET, SMALL_SIM, bound_strategy, client_updates, run_cli
from flwr.app import ConfigRecord, Message, RecordDict

from fedkd.apps.simulation import simulate
from fedkd.clients.handlers import _start_model
from fedkd.data import load_dataset
from fedkd.datafree import StudentRecipe, class_weights_from_counts
from fedkd.federated import records as R
from fedkd.federated.config import compose_sim_config
from fedkd.federated.data import partition_label_counts
from fedkd.models.checkpoint import model_from_checkpoint
from fedkd.utils.run_logger import read_metrics

CHANCE = 0.1
SMALL, BUDGET = SMALL_SIM, FEDFTG_BUDGET


def test_fedftg_run_learns_and_logs_server_metrics(compare_dir):
    run = compare_dir / "runs" / "fedftg" / "seed0"
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    last = rows[-1]
    assert last["test_accuracy"] > 3 * CHANCE
    for key in ("teacher_mean_accuracy", "teacher_logit_weighted_accuracy",
                "teacher_label_weighted_accuracy_true_label", "teacher_intended_label_agreement",
                "student_accuracy_before", "student_accuracy_after", "distillation_gain", "server_seconds",
                "generator_loss", "student_loss", "loss_ce"):
        assert key in last and np.isfinite(last[key]), key
    # The server's seconds, split by job, add up to its total, which the round's aggregation time holds.
    for row in rows:
        parts = {k: v for k, v in row.items() if k.startswith("server_seconds_")}
        assert {"server_seconds_ensemble", "server_seconds_diagnostics", "server_seconds_synthesis"} <= set(parts)
        assert sum(parts.values()) == pytest.approx(row["server_seconds"], abs=1e-6)
        assert row["server_seconds"] <= row["aggregate_seconds"] + 1e-6
    # round 1: warm-up
    assert rows[-1]["server_seconds_distillation"] > 0 and rows[0].get("server_seconds_distillation", 0) == 0
    # The global model is the distilled student: its accuracy is what the server evaluated.
    assert last["test_accuracy"] == pytest.approx(last["student_accuracy_after"], abs=1e-6)
    model, meta = model_from_checkpoint(run / "model.pt", load_dataset("digits").spec)
    assert meta["strategy"] == "FedFTG"


def test_compare_renders_table_and_png_and_rerenders_without_running(compare_dir):
    report = json.loads((compare_dir / "report.json").read_text())
    assert [r["strategy"] for r in report] == ["fedavg", "fedftg", "fedgen"]
    assert all(r["seeds"] == 1 and 0 < r["final_accuracy_mean"] <= 1 for r in report)
    png = compare_dir / "accuracy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (compare_dir / "report.md").read_text()
    assert "| fedavg |" in table and "| fedftg |" in table and "| fedgen |" in table
    png.unlink()
    again = run_cli("fedkd-compare", f"report_only={compare_dir}", f"hydra.run.dir={compare_dir / 'rerender'}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert png.exists() and "| fedftg |" in again.stdout
    assert not (compare_dir / "rerender" / "runs").exists()  # nothing was run again


# ----------------------------------------------------------------------------- unit level
@pytest.fixture(scope="module")
def cfg():
    return compose_sim_config(SMALL + BUDGET + ["strategy=fedftg"])


@pytest.fixture(scope="module")
def trained(cfg, tmp_path_factory):
    """A bound strategy's ServerRun and one round of client replies (trained once per module)."""
    _, run = _strategy(cfg, tmp_path_factory.mktemp("run"))
    return run, client_updates(cfg, run)


def _strategy(cfg, tmp_path):
    return bound_strategy(cfg, tmp_path)


def test_class_weights_sum_to_one_per_class_and_follow_label_counts(cfg):
    counts = partition_label_counts(cfg)
    weights = class_weights_from_counts(counts).numpy()
    assert weights.shape == counts.shape
    np.testing.assert_allclose(weights.sum(0), 1.0, atol=1e-6)
    np.testing.assert_allclose(weights, counts / counts.sum(0, keepdims=True), atol=1e-6)
    # The client holding the most samples of a class gets the largest weight for it.
    assert (weights.argmax(0) == counts.argmax(0)).all()


def test_batched_ensemble_gives_the_same_logits_as_the_loop(cfg, trained, tmp_path):
    strategy, run = _strategy(cfg, tmp_path)
    updates = trained[1]
    x = run.test.x[:64]
    strategy.batched_ensemble = True
    batched = strategy.ensemble(updates)
    strategy.batched_ensemble = False
    loop = strategy.ensemble(updates)
    assert batched.batched and not loop.batched
    torch.testing.assert_close(batched(x), loop(x), rtol=1e-4, atol=1e-5)


def test_generator_persists_and_learns_across_rounds(cfg, trained, tmp_path):
    strategy, run = _strategy(cfg, tmp_path)
    # The student's recipe is the synthesizer's student node (conf/synthesizer/fedftg.yaml: 2 steps).
    assert strategy.synthesizer.recipe == StudentRecipe(steps=2, loss="kl", temperature=1.0)
    assert not hasattr(strategy.synthesizer, "student_steps")
    generator = strategy.synthesizer.generator
    snapshots = [{k: v.clone() for k, v in generator.state_dict().items()}]
    for server_round in (1, 2):
        strategy._round.server.clear()
        arrays, _ = strategy.aggregate(server_round, trained[1])
        assert strategy.synthesizer.generator is generator  # the same network, not a new one
        snapshots.append({k: v.clone() for k, v in generator.state_dict().items()})
        assert all(torch.isfinite(torch.as_tensor(a.numpy())).all() for a in arrays.values())
    changed = lambda a, b: any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())  # noqa: E731
    assert changed(snapshots[0], snapshots[1]) and changed(snapshots[1], snapshots[2])

    # Resume: the generator, its optimiser and the students survive a safe save/load round trip.
    path = tmp_path / "state.pt"
    torch.save(strategy.state_dict(), path)
    restored, _ = _strategy(cfg, tmp_path / "again")
    restored.load_state_dict(torch.load(path, weights_only=True))
    for key, value in restored.synthesizer.generator.state_dict().items():
        assert torch.equal(value, snapshots[-1][key])
    assert set(restored.students) == set(strategy.students)


def test_mixed_architectures_each_client_gets_its_own_architecture(tmp_path):
    mixed = ["client_models=[{name:small_cnn,channels:8},{name:lenet5_half}]", "strategy=fedftg"]
    cfg = compose_sim_config(SMALL + BUDGET + mixed + ["rounds=1", "local_epochs=3"])
    summary = simulate(cfg, tmp_path)
    assert summary["rounds_completed"] == 1
    spec = load_dataset("digits").spec
    groups = sorted(p.name for p in tmp_path.glob("model-*.pt"))
    assert len(groups) == 2 and groups[0].startswith("model-lenet5_half") and groups[1].startswith("model-small_cnn")
    row = read_metrics(tmp_path)[-1]
    for name in groups:
        model, meta = model_from_checkpoint(tmp_path / name, spec)
        key = name[len("model-"):-len(".pt")]
        assert row[f"{key}/test_accuracy"] > 2 * CHANCE
        assert meta["model_config"]["name"] in key
    # What the server broadcasts: every client takes back a model of its own architecture.
    final = R.pack_groups(
        {
            name[len("model-"):-len(".pt")]: R.to_arrays(model_from_checkpoint(tmp_path / name, spec)[0])
            for name in groups
        }
    )
    for pid in range(cfg.num_clients):
        msg = Message(RecordDict({R.ARRAYS: final, R.CONFIG: ConfigRecord()}), dst_node_id=1, message_type="train")
        model, from_server = _start_model(cfg, pid, msg, _Context())
        expected = ("SmallCNN", 128) if pid % 2 == 0 else ("LeNet5", 42)  # client_models alternate
        assert from_server and (type(model).__name__, model.feature_dim) == expected


class _Context:
    """The part of Flower's Context the client's model loader reads."""

    def __init__(self) -> None:
        from flwr.app import RecordDict as _RD

        self.state = _RD()


def test_fedavg_refuses_mixed_architectures_with_one_line_error(tmp_path):
    done = run_cli(
        "fedkd-sim", *SMALL, "strategy=fedavg", "client_models=[{name:small_cnn},{name:lenet5_half}]",
        f"hydra.run.dir={tmp_path}",
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("fedkd: error:")]
    assert len(errors) == 1 and "mixed architectures" in errors[0], done.stderr[-1500:]


# ----------------------------------------------------------------------------- the options that decide whether it pays
# A pool synthesizer (its samples carry their target labels, so the label-weighted teacher applies) and
# the student's gradient clipping ride along as options too.
POOL = ("synthesizer@strategy.synthesizer=fast_meta,strategy.synthesizer.batch_size=32,"
        "strategy.synthesizer.student.grad_clip=2.0")
COBOOST = "synthesizer@strategy.synthesizer=coboost,strategy.synthesizer.batch_size=32"
NAYER = ("synthesizer@strategy.synthesizer=nayer,strategy.synthesizer.batch_size=30,"
         "strategy.synthesizer.synthesis_steps=2")


@pytest.mark.parametrize("option", ["strategy.global_teacher_weight=0.5", "strategy.ensemble_weighting=confidence",
                                    "strategy.safeguard=0.0", "strategy.safeguard=1.0", POOL, COBOOST, NAYER])
def test_each_option_distils_a_model_that_beats_chance_and_reports_what_it_did(option, fedftg_replies, tmp_path):
    from fedkd.models import build_from_config
    from fedkd.training import evaluate

    cfg = compose_sim_config(SMALL + BUDGET + ["strategy=fedftg", *option.split(",")])
    strategy, run = bound_strategy(cfg, tmp_path)
    strategy.aggregate(1, fedftg_replies)  # warm-up: the generator learns, the average is the global model
    strategy._round.server.clear()
    arrays, _ = strategy.aggregate(2, fedftg_replies)
    server = dict(strategy._round.server)
    model = build_from_config(run.client_model_configs[0], run.spec)
    model.load_state_dict(R.state_dict(arrays))
    accuracy = evaluate(model, run.test, run.device)["accuracy"]
    assert accuracy > 3 * CHANCE
    assert 0 <= server["average_teacher_agreement"] <= 1 and 0 <= server["student_teacher_agreement"] <= 1
    average = strategy.average(fedftg_replies)
    kept = all(torch.equal(torch.as_tensor(arrays[k].numpy()), torch.as_tensor(average[k].numpy())) for k in average)
    if option.endswith("safeguard=0.0"):  # any agreement reaches 0: the average is kept, and the figures say so
        assert server["safeguard_kept_average"] == 1.0 and kept and server["distillation_gain"] == 0.0
        assert server["server_seconds_safeguard"] > 0
    else:
        assert server["safeguard_kept_average"] == (1.0 if server["average_teacher_agreement"] >= 1.0 else 0.0)
        assert not kept or server["safeguard_kept_average"] == 1.0
    assert accuracy == pytest.approx(server["student_accuracy_after"], abs=1e-6)  # digits' test split < the probe size
    assert server["student_grad_norm"] > 0
    if option == POOL:  # the pool hands the teacher and the student each sample's target label
        assert strategy.synthesizer.sample(4)[1].shape == (4,)
    if option == COBOOST:  # the ensemble's members were re-weighted away from the plain mean
        assert 0 <= server["member_weight_min"] < server["member_weight_max"] <= 1 and server["boost_loss"] > 0
        assert 0 <= server["teacher_boosted_accuracy"] <= 1
    else:
        assert "teacher_boosted_accuracy" not in server


def test_teacher_memory_holds_clients_from_earlier_rounds_and_the_student_still_learns(fedftg_replies, tmp_path):
    """Partial participation: half the clients reply in each round; with a two-round memory the
    teacher of round 2 holds all four, and the label prior counts all of them."""
    from fedkd.models import build_from_config
    from fedkd.training import evaluate

    cfg = compose_sim_config(SMALL + BUDGET + ["strategy=fedftg", "strategy.teacher_memory_rounds=2"])
    strategy, run = bound_strategy(cfg, tmp_path)
    strategy.aggregate(1, fedftg_replies[:2])
    assert strategy._round.server["teacher_members"] == 2
    strategy._round.server.clear()
    arrays, _ = strategy.aggregate(2, fedftg_replies[2:])
    assert strategy._round.server["teacher_members"] == 4
    prior = strategy.synthesizer.label_prior.cpu().numpy()
    counts = np.stack([u.label_counts for u in fedftg_replies]).sum(0)
    np.testing.assert_allclose(prior, counts / counts.sum(), rtol=1e-5)
    model = build_from_config(run.client_model_configs[0], run.spec)
    model.load_state_dict(R.state_dict(arrays))
    assert evaluate(model, run.test, run.device)["accuracy"] > 3 * CHANCE
    assert set(strategy.state_dict()["client_memory"]) == {"0", "1", "2", "3"}


@pytest.mark.parametrize("bad, match", [("strategy.global_teacher_weight=1.5", "global_teacher_weight"),
                                        ("strategy.safeguard=2", "safeguard"),
                                        ("strategy.ensemble_weighting=votes", "ensemble_weighting"),
                                        ("strategy.diagnostics_every=-1", "diagnostics_every"),
                                        ("strategy.teacher_memory_rounds=0", "teacher_memory_rounds"),
                                        # RDSKD's paper schedule freezes its generator: stale for a changing teacher
                                        ("synthesizer@strategy.synthesizer=rdskd", "generator_steps=1")])
def test_bad_fedftg_options_end_in_one_line(bad, match, tmp_path):
    from fedkd.cli.common import _user_error

    cfg = compose_sim_config(SMALL + BUDGET + ["strategy=fedftg", bad])
    with pytest.raises(Exception) as raised:  # noqa: PT011 -- Hydra's instantiate wraps it; the CLI unwraps it
        strategy, _ = bound_strategy(cfg, tmp_path)
        # the weighting is checked when the teacher is built
        strategy.ensemble(client_updates(cfg, strategy.server_run)[:2])
    error = _user_error(raised.value)
    assert error is not None and match in str(error) and "\n" not in str(error)
