"""Data-free distillation on digits: losses, BN hooks, augmentations, DFAD, CMI, the conditional synthesizer, the
entry point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import SpyTeacher, hook_count, random_bn_lenet

from fedkd.data import get_spec
from fedkd.data.augment import random_affine, random_crop_flip, random_resized_crop
from fedkd.datafree import (
    BNStatHooks,
    CMISynthesizer,
    ConditionalSynthesizer,
    DFADSynthesizer,
    EnsembleTeacher,
    RealDataSource,
    StudentRecipe,
    Teacher,
    class_weights_from_counts,
    distill,
)
from fedkd.datafree import losses as L
from fedkd.datafree.buffers import RingBuffer
from fedkd.errors import ConfigError
from fedkd.models import batchnorm_layers, build_model, list_models
from fedkd.training import evaluate
from fedkd.utils.seeding import seed_everything

CPU = torch.device("cpu")
SPEC = get_spec("digits")


# ------------------------------------------------------------------------------------ losses
def test_loss_functions_have_the_right_signs_and_zeros():
    torch.manual_seed(0)
    s, t = torch.randn(32, 10), torch.randn(32, 10)
    assert L.l1_discrepancy(s, t) > 0 and L.l1_discrepancy(t, t) == 0
    assert L.kl_divergence(s, t, 4.0) > 0 and L.kl_divergence(t, t, 4.0).abs() < 1e-6
    assert L.adversarial_kl(s, t) <= 0 and L.adversarial_kl(s, t, only_agreeing=False) < 0
    # No sample where student and teacher agree: the masked term is exactly zero.
    disagree = t.clone()
    disagree[torch.arange(32), t.argmax(1)] -= 100
    assert L.adversarial_kl(disagree, t) == 0
    # InfoNCE: matching keys score lower than shuffled ones.
    q = torch.randn(16, 8)
    assert L.info_nce(q, q.clone(), 0.1) < L.info_nce(q, q[torch.randperm(16)], 0.1)
    # Diversity term in (0, 1]; identical outputs for different codes give 1.
    z = torch.randn(16, 4)
    assert L.diversity_loss(z, torch.zeros(16, 1, 4, 4)) == pytest.approx(1.0)
    assert 0 < L.diversity_loss(z, torch.randn(16, 1, 4, 4)) < 1
    # Class balance: minimal (-log C) for a batch spread evenly over the classes.
    assert L.information_entropy(torch.zeros(8, 10)) == pytest.approx(-np.log(10), abs=1e-5)
    assert L.information_entropy(torch.eye(10)[[0] * 8] * 20) > -0.1
    mu, var = torch.randn(6), torch.rand(6) + 0.1
    assert L.bn_statistics_loss([mu], [var], [mu], [var]) == 0
    assert L.bn_statistics_loss([mu], [var], [mu + 1], [var]) == pytest.approx(np.sqrt(6), rel=1e-5)


# ---------------------------------------------------------------------------------- BN hooks
def test_bn_hooks_measure_statistics_and_are_removed_on_exit():
    model = random_bn_lenet(0)
    x = torch.randn(64, *SPEC.shape)
    # Running statistics equal to this batch's: the loss (nearly) vanishes.
    matched = random_bn_lenet(0)
    for bn in batchnorm_layers(matched):
        bn.momentum = 1.0
    matched.train()
    with torch.no_grad():
        matched(x)
    matched.eval()
    with BNStatHooks(matched) as hooks:
        matched(x)
        small = hooks.loss().item()
    with BNStatHooks(model, features=True) as hooks:
        assert hook_count(model) == len(batchnorm_layers(model))
        model(x)
        large = hooks.loss().item()
        feats = hooks.features()
    assert small < 0.05 * large
    assert feats.shape == (64, sum(bn.num_features for bn in batchnorm_layers(model)))
    assert hook_count(model) == 0 and not hooks.active
    with pytest.raises(RuntimeError):  # an exception inside the block still removes the hooks
        with BNStatHooks(model):
            raise RuntimeError("boom")
    assert hook_count(model) == 0


# ------------------------------------------------------------------------ pieces of synthesis
def test_ring_buffer_is_bounded_and_keeps_the_newest_rows():
    buf = RingBuffer(5)
    buf.add(torch.arange(3.0).view(3, 1))
    buf.add(torch.arange(3.0, 7.0).view(4, 1))
    assert len(buf) == 5 and buf.added == 7
    assert sorted(buf.all().flatten().tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert buf.sample(100).shape == (100, 1)
    assert buf.sample_labelled(4)[1] is None  # no labels given


def test_ring_buffer_keeps_each_rows_label_through_wrapping_and_a_checkpoint():
    buf = RingBuffer(5)
    buf.add(torch.arange(3.0).view(3, 1), torch.arange(3))
    buf.add(torch.arange(3.0, 7.0).view(4, 1), torch.arange(3, 7))
    rows, labels = buf.sample_labelled(200)
    assert torch.equal(rows.flatten().long(), labels)  # row value == its label, whichever slot it is in
    resumed = RingBuffer(5)
    resumed.load_state_dict(buf.state_dict())
    rows, labels = resumed.sample_labelled(50)
    assert torch.equal(rows.flatten().long(), labels)
    with pytest.raises(ValueError, match="every batch"):
        buf.add(torch.zeros(1, 1))  # a labelled buffer needs labels with every add
    old = RingBuffer(5)  # rows restored without labels (a checkpoint from before pools kept them)
    old.add(torch.zeros(2, 1))
    old.add(torch.ones(2, 1), torch.ones(2))
    assert len(old) == 4 and old.sample_labelled(3)[1] is None  # stays unlabelled
    with pytest.raises(ValueError, match="one label per row"):
        RingBuffer(5).add(torch.zeros(2, 1), torch.zeros(3))


def test_augmentations_keep_shape_and_pass_gradients():
    torch.manual_seed(0)
    x = torch.randn(8, *SPEC.shape, requires_grad=True)
    for out in (random_crop_flip(x, 3, hflip=True), random_resized_crop(x, (0.25, 1.0))):
        assert out.shape == x.shape
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert grad.abs().sum() > 0
    # Zero shift, no flip: the identity.
    torch.testing.assert_close(random_crop_flip(x, 0, hflip=False), x, atol=1e-4, rtol=0)  # resampling rounds at ~1e-5


def test_random_affine_keeps_shape_passes_gradients_and_is_the_identity_without_range():
    torch.manual_seed(0)
    x = torch.randn(8, *SPEC.shape, requires_grad=True)
    out = random_affine(x, degrees=15, scale=(0.9, 1.1), pad=2)
    assert out.shape == x.shape and not torch.allclose(out, x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.abs().sum() > 0
    torch.testing.assert_close(random_affine(x, degrees=0, scale=(1.0, 1.0), pad=0, hflip=False), x, atol=1e-4, rtol=0)


def test_generators_are_registered_and_follow_the_dataset_spec():
    assert {"dfad_generator", "cmi_generator", "cond_generator"} <= set(list_models("generator"))
    assert "dfad_generator" not in list_models("classifier")
    rgb = get_spec("cifar10")
    for spec in (SPEC, rgb):
        g = build_model("dfad_generator", spec, ngf=8)
        x = g(g.noise(4))
        assert x.shape == (4, *spec.shape)
        # DFAD's generator ends in a non-affine BatchNorm: each channel standardised per batch.
        torch.testing.assert_close(x.mean((0, 2, 3)), torch.zeros(spec.channels), atol=1e-4, rtol=0)
    c = build_model("cond_generator", SPEC, ngf=8)
    y = torch.tensor([0, 1, 2, 3])
    assert c(c.noise(4), y).shape == (4, *SPEC.shape)
    pixels = build_model("cmi_generator", SPEC, ngf=8, nz=16)
    x = pixels(pixels.noise(4)) * SPEC.std[0] + SPEC.mean[0]  # back to [0, 1] pixels
    assert x.min() >= 0 and x.max() <= 1


# ----------------------------------------------------------------------------------- DFAD
def test_dfad_generator_step_increases_the_discrepancy_student_step_decreases_it(digits_teacher):
    torch.manual_seed(0)
    student = build_model("lenet5_half", SPEC)
    teacher = Teacher(digits_teacher)
    synth = DFADSynthesizer(SPEC, "cpu", {"name": "dfad_generator", "ngf": 8}, batch_size=64, lr=1e-3)
    g = synth.generator

    def discrepancy(z: torch.Tensor) -> float:
        with torch.no_grad():
            x = g(z)
            return L.l1_discrepancy(student(x), teacher(x)).item()

    torch.manual_seed(1)
    z = g.noise(64)
    before = discrepancy(z)
    torch.manual_seed(1)  # synthesize() draws the same codes
    out = synth.synthesize(teacher, student)
    assert out["generator_loss"] == pytest.approx(-out["discrepancy"]) and out["discrepancy"] > 0
    # Backward went into the generator only: no gradients were computed for the student's weights.
    assert all(p.grad is None for p in student.parameters())
    after_generator = discrepancy(z)
    assert after_generator > before
    opt = torch.optim.SGD(student.parameters(), lr=0.05)
    for _ in range(3):  # the student's steps pull it back down
        with torch.no_grad():
            x = g(z)
        loss = L.l1_discrepancy(student(x), teacher(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert discrepancy(z) < after_generator


def test_dfad_student_beats_chance_and_teacher_is_unhooked_without_grad_in_student_steps(digits, digits_teacher):
    seed_everything(0)
    student = build_model("lenet5_half", SPEC)
    teacher = SpyTeacher(digits_teacher)
    synth = DFADSynthesizer(SPEC, "cpu", {"name": "dfad_generator", "ngf": 8}, batch_size=64)
    opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    out = distill(student, teacher, synth, opt, iterations_per_epoch=25, recipe=StudentRecipe(steps=5, loss="l1"),
                  student_batch_size=64, progress=False)
    acc = evaluate(student, digits.test, CPU)["accuracy"]
    assert acc > 0.5, acc  # chance: 0.1
    assert out["student_samples"] == 25 * 5 * 64 and out["samples_generated"] == 25 * 6 * 64
    # 1 generator call (with grad) then 5 student-step calls (no grad) per iteration; never hooked.
    assert [grad for grad, _ in teacher.calls[:6]] == [True] + [False] * 5
    assert all(hooks == 0 for _, hooks in teacher.calls)



def test_generator_only_warmup_moves_the_generator_not_the_student(digits_teacher):
    """distill(train_student=False): the synthesizer's steps alone (FedFTG's warm-up rounds)."""
    seed_everything(0)
    student = build_model("lenet5_half", SPEC)
    synth = DFADSynthesizer(SPEC, "cpu", {"name": "dfad_generator", "ngf": 8}, batch_size=32)
    student_before = [p.detach().clone() for p in student.parameters()]
    generator_before = [p.detach().clone() for p in synth.generator.parameters()]
    # No optimizer needed when the student does not learn; one needed when it does.
    with pytest.raises(TypeError, match="optimizer"):
        distill(student, Teacher(digits_teacher), synth, None, iterations_per_epoch=1, recipe=StudentRecipe(steps=5),
                progress=False)
    out = distill(student, Teacher(digits_teacher), synth, None, iterations_per_epoch=3, recipe=StudentRecipe(steps=5),
                  student_batch_size=32, progress=False, train_student=False)
    assert all(torch.equal(a, b) for a, b in zip(student_before, student.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(generator_before, synth.generator.parameters(), strict=True))
    assert out["student_samples"] == 0 and out["samples_generated"] == 3 * 32
    assert "student_loss" not in out and out["discrepancy"] > 0

def test_frozen_bn_statistics_stay_put_through_adversarial_synthesis(digits_teacher):
    """freeze_bn_stats (the FedFTG server's setting): neither the student's steps nor the passes of
    DFAD's generator step through the student move its BatchNorm running statistics."""
    seed_everything(0)
    student = build_model("lenet5_half", SPEC)
    bn = [m for m in student.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bn
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in bn]
    weights = [p.detach().clone() for p in student.parameters()]
    synth = DFADSynthesizer(SPEC, "cpu", {"name": "dfad_generator", "ngf": 8}, batch_size=32)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    distill(student, Teacher(digits_teacher), synth, opt, iterations_per_epoch=2, recipe=StudentRecipe(steps=2),
            student_batch_size=32, progress=False, freeze_bn_stats=True)
    for m, (mean, var) in zip(bn, before, strict=True):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
    assert any(not torch.equal(a, b) for a, b in zip(weights, student.parameters(), strict=True))  # it did learn


# ------------------------------------------------------------------------------------ CMI
def test_cmi_student_beats_chance_with_hooks_only_during_synthesis(digits, digits_teacher):
    seed_everything(0)
    student = build_model("lenet5_half", SPEC)
    teacher = SpyTeacher(digits_teacher)
    synth = CMISynthesizer(
        SPEC, "cpu", {"name": "cmi_generator", "ngf": 8, "nz": 32}, batch_size=64, synthesis_steps=8,
        pool_size=400, bank_size=256, negatives=128,
    )
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    distill(student, teacher, synth, opt, iterations_per_epoch=8, recipe=StudentRecipe(steps=10, temperature=20.0),
            student_batch_size=64, progress=False)
    acc = evaluate(student, digits.test, CPU)["accuracy"]
    assert acc > 0.4, acc  # chance: 0.1
    bn = len(batchnorm_layers(digits_teacher))
    synthesis = [c for c in teacher.calls if c[0]]
    student_steps = [c for c in teacher.calls if not c[0]]
    assert synthesis and all(h == bn for _, h in synthesis)  # BN hooks during synthesis
    assert len(student_steps) == 8 * 10 and all(h == 0 for _, h in student_steps)  # and never after
    assert hook_count(digits_teacher) == 0
    assert len(synth.pool) == 400 and synth.pool.added == 8 * 64  # bounded pool, one batch a round
    assert len(synth.bank) == 256
    _, y = synth.sample(8)
    assert y.shape == (8,) and 0 <= int(y.min()) and int(y.max()) < 10  # the labels the samples were made for


def test_cmi_needs_bn_layers_for_its_bn_loss():
    no_bn = build_model("lenet5", SPEC, batch_norm=False).eval()
    synth = CMISynthesizer(SPEC, "cpu", {"name": "cmi_generator", "ngf": 4, "nz": 8}, batch_size=8, synthesis_steps=1)
    with pytest.raises(ConfigError, match="BatchNorm"):
        synth.synthesize(Teacher(no_bn), build_model("lenet5_half", SPEC))


# ------------------------------------------------------------------ conditional / real data
def test_conditional_synthesizer_follows_the_label_prior_and_persists(digits_teacher):
    torch.manual_seed(0)
    models = [digits_teacher, random_bn_lenet(3)]
    counts = np.zeros((2, 10), dtype=int)
    counts[0, :3] = 50
    counts[1, 3] = 20
    teacher = EnsembleTeacher(models, class_weights_from_counts(counts))
    synth = ConditionalSynthesizer(SPEC, "cpu", {"name": "cond_generator", "ngf": 8}, batch_size=32, bn=0.1)
    synth.set_label_prior(counts)
    before = [p.detach().clone() for p in synth.generator.parameters()]
    student = build_model("lenet5_half", SPEC)
    for _ in range(2):
        out = synth.synthesize(teacher, student)
    assert set(out) >= {"generator_loss", "loss_ce", "loss_adv", "loss_div", "loss_bn"}
    assert any(not torch.equal(a, b) for a, b in zip(before, synth.generator.parameters()))
    assert hook_count(digits_teacher) == 0
    x, y = synth.sample(500)
    assert x.shape == (500, *SPEC.shape)
    assert set(y.tolist()) <= {0, 1, 2, 3}  # never a class nobody holds
    with pytest.raises(ConfigError):
        synth.set_label_prior([1.0, 2.0])


def test_real_data_reference_runs_through_the_same_loop(digits, digits_teacher):
    seed_everything(0)
    student = build_model("lenet5_half", SPEC)
    source = RealDataSource(SPEC, "cpu", train=digits.train)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    distill(student, digits_teacher, source, opt, iterations_per_epoch=20, recipe=StudentRecipe(steps=5),
            student_batch_size=64, progress=False)
    assert evaluate(student, digits.test, CPU)["accuracy"] > 0.8


# ----------------------------------------------------------------------- fedkd-distill entry
def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    from fedkd.config import CONF_DIR, register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="centralized", overrides=list(overrides))


def _run(tmp_path, name: str, *overrides: str) -> dict:
    from fedkd.cli.distill import run_distillation
    from fedkd.utils.run_context import RunContext

    # DFAD unless a test names another: the budgets and counts below are DFAD's (fedkd-distill's default is fast_meta).
    cfg = _compose("device=cpu", "tensorboard=true", "preview_images=8", "synthesizer=dfad", *overrides)
    ctx = RunContext.create(cfg, out_dir=tmp_path / name)
    with ctx.logger:
        return run_distillation(cfg, ctx)


TINY = ("epochs=2", "iterations_per_epoch=2", "student_batch_size=32", "synthesizer.batch_size=32",
        "synthesizer.generator.ngf=4")


def test_distill_entry_trains_a_teacher_then_distills_and_records_everything(tmp_path):
    from fedkd.models.checkpoint import model_from_checkpoint
    from fedkd.utils.run_logger import read_metrics

    summary = _run(tmp_path, "dfad", "teacher.epochs=1", *TINY)
    out = tmp_path / "dfad"
    for name in ("teacher.pt", "student.pt", "generator.pt", "summary.json", "metrics.jsonl", "resolved_config.yaml"):
        assert (out / name).is_file(), name
    assert list((out / "tb").iterdir())  # TensorBoard events (scalars and sample grids)
    rows = read_metrics(out)
    assert [r["step"] for r in rows if "test_accuracy" in r] == [1, 2]  # one row per epoch
    assert any("teacher/test_accuracy" in r for r in rows)
    assert 0 <= summary["final_student_accuracy"] <= 1
    assert summary["final_student_accuracy"] == rows[-1]["test_accuracy"]  # the final student's, not the best
    assert summary["student_steps"] == 2 * 2 * 5 and summary["synthetic_samples"] == 2 * 2 * 6 * 32
    assert summary["synthetic_samples_per_s"] > 0 and summary["peak_rss_mb"] > 0
    assert "best_on_test_student_accuracy" not in summary and not (out / "student_best_on_test.pt").exists()
    student, meta = model_from_checkpoint(out / "student.pt", SPEC)
    assert meta["model_config"]["name"] == "lenet5_half"
    generator, meta = model_from_checkpoint(out / "generator.pt", SPEC)
    assert meta["kind"] == "generator" and generator(generator.noise(2)).shape == (2, *SPEC.shape)


def test_distill_entry_with_a_checkpoint_cmi_and_keep_best_on_test(tmp_path, digits_teacher):
    from fedkd.models.checkpoint import model_meta
    from fedkd.utils.checkpoint import save_model

    ckpt = tmp_path / "teacher.pt"
    save_model(ckpt, digits_teacher, **model_meta({"name": "lenet5"}, SPEC))
    summary = _run(
        tmp_path, "cmi", f"teacher.checkpoint={ckpt}", "synthesizer=cmi", *TINY, "synthesizer.synthesis_steps=2",
        "synthesizer.student.steps=2", "keep_best_on_test=true",
    )
    assert summary["teacher_accuracy"] > 0.9 and summary["method"] == "CMISynthesizer"
    assert (tmp_path / "cmi" / "student_best_on_test.pt").is_file()
    assert summary["best_on_test_student_accuracy"] >= summary["final_student_accuracy"]
    assert not (tmp_path / "cmi" / "teacher.pt").exists()  # nothing trained


def test_holdout_evaluation_reports_on_training_images_and_names_it_so(tmp_path, digits_teacher, digits):
    from fedkd.models.checkpoint import model_meta
    from fedkd.training import evaluate
    from fedkd.utils.checkpoint import save_model
    from fedkd.utils.run_logger import read_metrics

    ckpt = tmp_path / "teacher.pt"
    save_model(ckpt, digits_teacher, **model_meta({"name": "lenet5"}, SPEC))
    summary = _run(tmp_path, "holdout", f"teacher.checkpoint={ckpt}", *TINY, "evaluate_on=holdout", "holdout_size=300")
    rows = [r for r in read_metrics(tmp_path / "holdout") if "holdout_accuracy" in r]
    assert [r["step"] for r in rows] == [1, 2] and not any("test_accuracy" in r for r in rows)
    assert "final_student_accuracy" not in summary
    assert summary["final_student_holdout_accuracy"] == rows[-1]["holdout_accuracy"]
    holdout = digits.train.subset(range(len(digits.train) - 300, len(digits.train)))
    assert summary["teacher_holdout_accuracy"] == evaluate(digits_teacher, holdout, CPU)["accuracy"]
    with pytest.raises(ConfigError, match="holdout_size"):
        _run(tmp_path, "too_big", f"teacher.checkpoint={ckpt}", *TINY, "evaluate_on=holdout",
             f"holdout_size={len(digits.train)}")


def test_distill_entry_bad_inputs_end_with_one_line_errors(tmp_path, digits_teacher):
    from fedkd.data.specs import DatasetSpec
    from fedkd.errors import CheckpointError, FedkdError
    from fedkd.models.checkpoint import model_meta
    from fedkd.utils.checkpoint import save_model

    with pytest.raises(CheckpointError, match="does not exist") as missing:
        _run(tmp_path, "a", f"teacher.checkpoint={tmp_path / 'nope.pt'}", *TINY)
    three = DatasetSpec("digits3", 1, 28, 3, (0.5,), (0.5,))
    ckpt = tmp_path / "three.pt"
    save_model(ckpt, build_model("lenet5", three), **model_meta({"name": "lenet5"}, three))
    with pytest.raises(CheckpointError, match="num_classes=3") as mismatch:
        _run(tmp_path, "b", f"teacher.checkpoint={ckpt}", *TINY)
    with pytest.raises(ConfigError, match="student.name 'resnet99'") as unknown:
        _run(tmp_path, "c", "student.name=resnet99", *TINY)
    with pytest.raises(ConfigError, match="dfad_generator") as generator_as_student:
        _run(tmp_path, "d", "student.name=dfad_generator", *TINY)
    with pytest.raises(ConfigError, match="generator name") as bad_generator:
        _run(tmp_path, "e", "synthesizer.generator.name=lenet5", *TINY)
    with pytest.raises(ConfigError, match="synthesizer.student.loss 'mse'") as bad_loss:
        _run(tmp_path, "f", "synthesizer.student.loss=mse", *TINY)
    for exc in (missing, mismatch, unknown, generator_as_student, bad_generator, bad_loss):
        assert isinstance(exc.value, FedkdError) and "\n" not in str(exc.value)


def test_fedkd_distill_command_prints_one_line_and_exits_2(cli, tmp_path):
    result = cli("fedkd-distill", f"teacher.checkpoint={tmp_path / 'missing.pt'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[-1]] and lines[0].startswith("fedkd: error: checkpoint") and "does not exist" in lines[0]
