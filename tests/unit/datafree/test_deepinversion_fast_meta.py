"""DeepInversion and FastDFKD (fast meta-synthesis) on digits: image priors, JS divergence, the
Reptile meta-update, BN statistics with momentum, short distillation runs, exact resume, errors."""

from __future__ import annotations

import io
import math

import pytest
import torch

from fedkd.data import get_spec
from fedkd.datafree import DeepInversionSynthesizer, FastMetaSynthesizer, StudentRecipe, Teacher, distill
from fedkd.datafree import losses as L
from fedkd.datafree.bn_hooks import BNStatHooks
from fedkd.datafree.synthesizers.fast_meta import MomentumBNStatHooks
from fedkd.errors import ConfigError
from fedkd.models import build_model
from fedkd.training import evaluate
from fedkd.utils.seeding import seed_everything

CPU = torch.device("cpu")
SPEC = get_spec("digits")
TINY_GEN = {"name": "cmi_generator", "ngf": 4, "nz": 8}


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def _student() -> torch.nn.Module:
    return build_model("lenet5_half", SPEC)


# ------------------------------------------------------------------------------------ losses
def test_total_variation_is_zero_for_constant_images_and_grows_with_noise():
    torch.manual_seed(0)
    flat = torch.full((4, 1, 28, 28), 0.7)
    assert L.total_variation(flat) == 0
    values = [L.total_variation(flat + s * torch.randn_like(flat)).item() for s in (0.01, 0.1, 1.0)]
    assert 0 < values[0] < values[1] < values[2]
    # A smooth ramp has less variation than noise of the same spread.
    ramp = torch.linspace(0, 1, 28).expand(4, 1, 28, 28)
    assert L.total_variation(ramp) < L.total_variation(torch.rand(4, 1, 28, 28))
    # L2 prior: the mean per-image norm; zero only at the mean colour.
    assert L.l2_prior(torch.zeros(3, 1, 4, 4)) == 0
    assert L.l2_prior(torch.ones(3, 1, 4, 4)) == pytest.approx(4.0)


def test_js_divergence_is_symmetric_bounded_and_zero_for_equal_predictions():
    torch.manual_seed(0)
    a, b = torch.randn(16, 10), torch.randn(16, 10)
    assert L.js_divergence(a, a).abs() < 1e-6
    assert L.js_divergence(a, b) > 0
    assert L.js_divergence(a, b) == pytest.approx(L.js_divergence(b, a).item(), rel=1e-5)
    opposite = torch.eye(10)[:8] * 50, torch.eye(10)[2:10] * 50
    assert L.js_divergence(*opposite) == pytest.approx(math.log(2), rel=1e-3)  # the upper bound
    assert L.js_divergence(a, b, temperature=3.0) < L.js_divergence(a, b)  # softer, closer


# ------------------------------------------------------------------------ BN momentum hooks
def test_momentum_bn_loss_blends_batch_and_memory_statistics(digits_teacher):
    torch.manual_seed(0)
    x = torch.randn(8, *SPEC.shape)
    teacher = Teacher(digits_teacher)
    with BNStatHooks(teacher) as plain:
        teacher(x)
        plain_loss = plain.loss()
        stats = [plain._stats[i] for i in range(len(plain.layers))]
        layers = plain.layers
    with MomentumBNStatHooks(teacher, 0.9, None) as hooks:  # no memory yet: the plain loss
        teacher(x)
        assert hooks.loss() == pytest.approx(plain_loss.item())
        first = hooks.updated_memory()
    assert all(torch.equal(m, s[0]) and torch.equal(v, s[1]) for (m, v), s in zip(first, stats))
    memory = [(torch.randn_like(m), torch.rand_like(v)) for m, v in first]
    with MomentumBNStatHooks(teacher, 0.9, memory) as hooks:
        teacher(x)
        blended = L.bn_statistics_loss(
            [0.1 * s[0] + 0.9 * m for s, (m, _) in zip(stats, memory)],
            [0.1 * s[1] + 0.9 * v for s, (_, v) in zip(stats, memory)],
            [layer.running_mean for layer in layers], [layer.running_var for layer in layers],
        )
        assert hooks.loss() == pytest.approx(blended.item(), rel=1e-5)
        updated = hooks.updated_memory()
    for (m0, v0), s, (m1, v1) in zip(memory, stats, updated):
        assert torch.allclose(m1, 0.9 * m0 + 0.1 * s[0]) and torch.allclose(v1, 0.9 * v0 + 0.1 * s[1])
    # A memory of another teacher's layers (e.g. a new federated ensemble) is dropped.
    wrong = [(torch.zeros(3), torch.ones(3))]
    assert MomentumBNStatHooks(teacher, 0.9, wrong).memory is None


# ------------------------------------------------------------------------ Reptile meta-update
def test_meta_update_moves_the_initialisation_meta_lr_of_the_way_to_the_inner_solution(digits_teacher):
    seed_everything(0)
    synth = FastMetaSynthesizer(SPEC, "cpu", TINY_GEN, batch_size=16, synthesis_steps=3, lr=0.05, meta_lr=0.3)
    before = [p.detach().clone() for p in synth.generator.parameters()]
    z_before = synth.z.clone()
    synth.synthesize(Teacher(digits_teacher), _student())
    inner = [p.detach() for p in synth.fast_generator.parameters()]
    after = [p.detach() for p in synth.generator.parameters()]

    def dist(a, b):
        return torch.sqrt(sum(((x - y) ** 2).sum() for x, y in zip(a, b)))

    assert dist(before, inner) > 1e-3  # the inner loop moved
    assert dist(after, inner) == pytest.approx(0.7 * dist(before, inner).item(), rel=1e-4)
    for b, i, a in zip(before, inner, after):
        assert torch.allclose(a - b, 0.3 * (i - b), atol=1e-6)
    assert (synth.z - synth.fast_z).norm() == pytest.approx(0.7 * (z_before - synth.fast_z).norm().item(), rel=1e-4)
    assert synth.bn_memory is not None and len(synth.bn_memory) == len(BNStatHooks(digits_teacher).layers)


def test_both_work_on_the_federated_servers_ensemble_teacher(digits_teacher):
    """The FedFTG server passes an ensemble of client models and their label counts."""
    from fakes import SPY_COUNTS, LabelSpyEnsemble

    counts = SPY_COUNTS
    teacher = LabelSpyEnsemble(digits_teacher)
    seed_everything(0)
    fast = FastMetaSynthesizer(SPEC, "cpu", TINY_GEN, batch_size=16, synthesis_steps=2)
    inversion = DeepInversionSynthesizer(SPEC, "cpu", batch_size=16, synthesis_steps=2)
    for synth in (fast, inversion):
        synth.set_label_prior(counts)
        for _ in range(2):
            out = synth.synthesize(teacher, _student())
        assert math.isfinite(out["synthesis_loss"]) and len(synth.pool) == 32
    assert len(fast.bn_memory) == 2 * len(BNStatHooks(digits_teacher).layers)  # every member's layers
    assert teacher.calls and all(teacher.calls)  # synthesis asks the teacher with the target labels (label weighting)
    assert _hook_count(digits_teacher) == 0


# ---------------------------------------------------------------------- short digits runs
def test_deepinversion_student_beats_chance_with_a_bounded_pool(digits, digits_teacher):
    seed_everything(0)
    synth = DeepInversionSynthesizer(SPEC, "cpu", batch_size=64, synthesis_steps=25, pool_size=200)
    student = _student()
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    out = distill(student, digits_teacher, synth, opt, iterations_per_epoch=5,
                  recipe=StudentRecipe(steps=10, temperature=20.0), student_batch_size=64, progress=False)
    acc = evaluate(student, digits.test, CPU)["accuracy"]
    assert acc > 0.5, acc  # chance: 0.1
    assert len(synth.pool) == 200 and synth.pool.added == 5 * 64  # bounded, one batch a round
    assert out["samples_generated"] == 5 * 25 * 64
    assert synth.generator is None and _hook_count(digits_teacher) == 0
    x, y = synth.sample(32)
    assert x.shape == (32, *SPEC.shape)
    low, high = (0 - SPEC.mean[0]) / SPEC.std[0], (1 - SPEC.mean[0]) / SPEC.std[0]
    # clipped
    assert y.shape == (32,) and synth.pool.all().min() >= low - 1e-5 and synth.pool.all().max() <= high + 1e-5


def test_fast_meta_student_beats_chance_with_a_bounded_pool(digits, digits_teacher):
    seed_everything(0)
    synth = FastMetaSynthesizer(
        SPEC, "cpu", {"name": "cmi_generator", "ngf": 8, "nz": 32}, batch_size=64, pool_size=500,
    )
    student = _student()
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    out = distill(student, digits_teacher, synth, opt, iterations_per_epoch=8,
                  recipe=StudentRecipe(steps=10, temperature=20.0), student_batch_size=64, progress=False)
    acc = evaluate(student, digits.test, CPU)["accuracy"]
    assert acc > 0.5, acc  # chance: 0.1
    assert len(synth.pool) == 500 and synth.pool.added == 8 * 64
    assert out["samples_generated"] == 8 * 2 * 64 and "loss_adv" in out
    assert synth.sample(8)[1].shape == (8,)  # with the labels the samples were made for
    assert _hook_count(digits_teacher) == 0


def test_deepinversion_follows_the_label_prior_and_adi_leaves_the_student_alone(digits_teacher):
    seed_everything(0)
    synth = DeepInversionSynthesizer(SPEC, "cpu", batch_size=32, synthesis_steps=30, adi=1.0, pool_size=64)
    synth.set_label_prior([5, 5, 5, 0, 0, 0, 0, 0, 0, 0])
    student = _student()
    out = synth.synthesize(Teacher(digits_teacher), student)
    assert 0 < out["loss_adi"] <= 1
    assert all(p.grad is None for p in student.parameters()) and student.training
    with torch.no_grad():
        predicted = digits_teacher(synth.pool.all()).argmax(1)
    assert (predicted < 3).float().mean() > 0.9  # the teacher sees the classes that were asked for
    _, y = synth.sample(64)
    # the pool hands out the labels it was asked for (an ensemble weights by them)
    assert y is not None and (y < 3).all()


def test_the_coarse_phase_moves_pixels_only_in_2x2_blocks_and_the_cosine_rate_ends_at_zero(digits_teacher):
    seed_everything(0)
    synth = DeepInversionSynthesizer(SPEC, "cpu", batch_size=8, synthesis_steps=20, jitter=0, clip=False,
                                     lr_schedule="cosine", coarse_fraction=0.5)
    assert synth._phases() == [(10, True), (10, False)]
    x = torch.randn(8, *SPEC.shape, requires_grad=True)
    before = x.detach().clone()
    targets = synth.target_labels(8)
    with BNStatHooks(Teacher(digits_teacher)) as hooks:
        synth._invert(x, targets, None, Teacher(digits_teacher), _student(), hooks, steps=10, coarse=True)
        step = (x.detach() - before).unfold(2, 2, 2).unfold(3, 2, 2)  # (8, 1, 4, 4, 2, 2): the 2x2 blocks
        assert step.abs().max() > 1e-2  # the pixels moved ...
        assert torch.allclose(step, step[..., :1, :1].expand_as(step), atol=1e-5)  # ... a whole block alike
        before = x.detach().clone()
        synth._invert(x, targets, None, Teacher(digits_teacher), _student(), hooks, steps=10, coarse=False)
        step = (x.detach() - before).unfold(2, 2, 2).unfold(3, 2, 2)
        assert not torch.allclose(step, step[..., :1, :1].expand_as(step), atol=1e-3)  # full resolution: finer
    optimizer, schedule = synth._optimizer(torch.zeros(1, requires_grad=True), steps=40)
    rates = []
    for _ in range(40):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(synth.lr / 2) and max(rates) == pytest.approx(synth.lr)  # 2 warm-up steps
    assert rates[-1] < 0.01 * synth.lr and rates == rates[:2] + sorted(rates[2:], reverse=True)


# ------------------------------------------------------------------------------ exact resume
def _roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # what a run's checkpoint reads back


@pytest.mark.parametrize("make", [
    lambda: DeepInversionSynthesizer(SPEC, "cpu", batch_size=16, synthesis_steps=3, pool_size=40),
    lambda: FastMetaSynthesizer(SPEC, "cpu", TINY_GEN, batch_size=16, synthesis_steps=2, pool_size=40),
], ids=["deepinversion", "fast_meta"])
def test_a_resumed_synthesizer_continues_exactly_like_an_uninterrupted_one(make, digits_teacher):
    teacher = Teacher(digits_teacher)
    seed_everything(0)
    student = _student()
    original = make()
    original.set_label_prior([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    for _ in range(3):  # past the pool's capacity: the ring has wrapped
        original.synthesize(teacher, student)
    state = _roundtrip(original.state_dict())
    seed_everything(1)
    resumed = make()
    resumed.load_state_dict(state)
    if isinstance(original, FastMetaSynthesizer):
        assert original.bn_memory is not None
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                   for a, b in zip(original.bn_memory, resumed.bn_memory))
    results = []
    for synth in (original, resumed):
        torch.manual_seed(7)
        out = synth.synthesize(teacher, student)
        results.append((out, synth.pool.state_dict(), synth.sample(8)[0], synth.state_dict()))
    (out_a, pool_a, x_a, state_a), (out_b, pool_b, x_b, state_b) = results
    assert out_a == out_b and torch.equal(x_a, x_b)
    assert torch.equal(pool_a["data"], pool_b["data"]) and pool_a["next"] == pool_b["next"] == 24
    assert state_a["rounds"] == state_b["rounds"] == 4 and state_a["samples_generated"] == state_b["samples_generated"]
    if "generator" in state_a:
        assert all(torch.equal(state_a["generator"][k], state_b["generator"][k]) for k in state_a["generator"])
        assert torch.equal(state_a["z"], state_b["z"])


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("make", [
    lambda: DeepInversionSynthesizer(SPEC, "cpu", batch_size=8, synthesis_steps=1),
    lambda: FastMetaSynthesizer(SPEC, "cpu", TINY_GEN, batch_size=8, synthesis_steps=1),
], ids=["deepinversion", "fast_meta"])
def test_a_teacher_without_batchnorm_is_a_one_line_config_error(make):
    no_bn = Teacher(build_model("lenet5", SPEC, batch_norm=False))
    with pytest.raises(ConfigError, match="BatchNorm") as err:
        make().synthesize(no_bn, _student())
    assert "\n" not in str(err.value) and "synthesizer.bn=0" in str(err.value)


@pytest.mark.parametrize(("cls", "kwargs", "key"), [
    (DeepInversionSynthesizer, {"synthesis_steps": 0}, "synthesis_steps"),
    (DeepInversionSynthesizer, {"lr": -0.1}, "lr"),
    (DeepInversionSynthesizer, {"tv": -1.0}, "tv"),
    (DeepInversionSynthesizer, {"jitter": -2}, "jitter"),
    (DeepInversionSynthesizer, {"pool_size": 0}, "pool_size"),
    (DeepInversionSynthesizer, {"betas": [0.5, 1.5]}, "betas"),
    (DeepInversionSynthesizer, {"lr_schedule": "linear"}, "lr_schedule"),
    (DeepInversionSynthesizer, {"coarse_fraction": 1.0}, "coarse_fraction"),
    (FastMetaSynthesizer, {"meta_lr": 1.5}, "meta_lr"),
    (FastMetaSynthesizer, {"meta_lr": 0.0}, "meta_lr"),
    (FastMetaSynthesizer, {"bn_momentum": 1.0}, "bn_momentum"),
    (FastMetaSynthesizer, {"lr_z": 0}, "lr_z"),
    (FastMetaSynthesizer, {"adv": -1}, "adv"),
    (FastMetaSynthesizer, {"warmup": -1}, "warmup"),
    (FastMetaSynthesizer, {"batch_size": 0}, "batch_size"),
])
def test_bad_settings_are_one_line_config_errors_naming_the_key(cls, kwargs, key):
    extra = {"generator": TINY_GEN} if cls is FastMetaSynthesizer else {}
    with pytest.raises(ConfigError) as err:
        cls(SPEC, "cpu", **extra, **kwargs)
    message = str(err.value)
    assert f"synthesizer.{key}" in message and "\n" not in message


def test_pools_must_be_filled_before_sampling():
    for synth in (DeepInversionSynthesizer(SPEC, "cpu", batch_size=8),
                  FastMetaSynthesizer(SPEC, "cpu", TINY_GEN, batch_size=8)):
        with pytest.raises(RuntimeError, match="synthesize"):
            synth.sample(4)
