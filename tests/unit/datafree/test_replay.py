"""Generative pseudo replay (PRE-DFKD): the VAE, its losses, the wrapper over DFAD and the
conditional synthesizer, resume, memory, config errors and the Hydra configs, on digits."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from fedkd.data import get_spec
from fedkd.datafree import (
    ConditionalSynthesizer,
    DeepInversionSynthesizer,
    DFADSynthesizer,
    FastMetaSynthesizer,
    PseudoReplaySynthesizer,
    RDSKDSynthesizer,
    StudentRecipe,
    Teacher,
    distill,
)
from fedkd.datafree import losses as L
from fedkd.datafree.vae import ConvVAE, memory_bytes, reparameterize
from fedkd.errors import ConfigError
from fedkd.models import build_model
from fedkd.training import evaluate
from fedkd.utils.seeding import seed_everything

CPU = torch.device("cpu")
SPEC = get_spec("digits")
SMALL_DFAD = {"name": "dfad_generator", "ngf": 8}
SMALL_VAE = {"latent_dim": 16, "nf": 16}


def _dfad(**kw) -> DFADSynthesizer:
    return DFADSynthesizer(SPEC, "cpu", SMALL_DFAD, batch_size=32, **kw)


def _replay(base=None, **kw) -> PseudoReplaySynthesizer:
    settings = {"vae": SMALL_VAE, "vae_steps": 1, "vae_batch_size": 32, **kw}
    return PseudoReplaySynthesizer(SPEC, "cpu", base if base is not None else _dfad(), **settings)


# ---------------------------------------------------------------------------------- the VAE
def test_vae_shapes_follow_the_spec_and_reconstruction_improves_on_a_fixed_batch(digits):
    for name in ("digits", "cifar10"):  # 28x28 grey and 32x32 colour
        spec = get_spec(name)
        vae = ConvVAE(spec, **SMALL_VAE)
        recon, mu, logvar = vae(torch.randn(3, *spec.shape))
        assert recon.shape == (3, *spec.shape) and mu.shape == logvar.shape == (3, 16)
        assert vae.sample(5).shape == (5, *spec.shape)
    torch.manual_seed(0)
    z = reparameterize(torch.full((20000, 2), 3.0), torch.full((20000, 2), 2 * torch.log(torch.tensor(0.5))))
    assert torch.allclose(z.mean(0), torch.tensor([3.0, 3.0]), atol=0.02)
    assert torch.allclose(z.std(0), torch.tensor([0.5, 0.5]), atol=0.02)

    x = digits.train.x[:64]
    vae = ConvVAE(SPEC, **SMALL_VAE)
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)

    def rec_loss() -> float:
        vae.eval()
        with torch.no_grad():
            return L.vae_reconstruction(vae.decode(vae.encode(x)[0]), x).item()

    before = rec_loss()
    vae.train()
    for _ in range(20):
        recon, mu, logvar = vae(x)
        loss = L.vae_reconstruction(recon, x) + 1e-5 * L.gaussian_kl(mu, logvar)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert rec_loss() < 0.6 * before, (before, rec_loss())  # measured: 0.87 -> 0.37


def test_vae_losses_are_zero_exactly_where_they_should_be():
    torch.manual_seed(0)
    mu, logvar = torch.zeros(4, 8), torch.zeros(4, 8)
    assert L.gaussian_kl(mu, logvar).item() == pytest.approx(0.0)
    assert L.gaussian_kl(mu + 1, logvar).item() == pytest.approx(8 * 0.5)  # 0.5 * mu^2 per dimension
    assert L.gaussian_kl(mu, logvar - 1).item() > 0
    a, b = torch.randn(4, 10), torch.randn(4, 10)
    assert L.teacher_agreement(a, a).item() == 0 and L.teacher_agreement(a, b).item() > 0
    assert L.vae_reconstruction(a, a + 2).item() == pytest.approx(2.0)


# ------------------------------------------------------------------------- the wrapper
def test_sample_mixes_the_configured_share_of_replayed_samples(digits_teacher):
    seed_everything(0)
    synth = _replay(replay_share=0.25)
    student = build_model("lenet5_half", SPEC)
    x, _ = synth.sample(64)  # nothing learnt yet: no replay
    assert x.shape == (64, *SPEC.shape) and synth.replayed == 0 and synth.memory is None
    row = synth.synthesize(Teacher(digits_teacher), student)
    assert {"discrepancy", "vae_loss", "vae_rec", "vae_teacher", "vae_kl"} <= set(row)
    assert synth.memory is not None and not any(p.requires_grad for p in synth.memory.parameters())

    base_before, generated_before = synth.base.samples_generated, synth.samples_generated
    torch.manual_seed(1)
    x, y = synth.sample(64)
    assert x.shape == (64, *SPEC.shape) and y is None
    assert synth.replayed == 16 and synth.base.samples_generated - base_before == 48  # 25% of 64
    assert synth.samples_generated - generated_before == 64
    # The first 48 rows are the base's, the last 16 the frozen decoder's: redraw them in order.
    torch.manual_seed(1)
    with torch.no_grad():
        new = synth.base.sample(48)[0]
        old = synth.memory.sample(16)
    assert torch.equal(x[:48], new) and torch.equal(x[48:], old)
    # The replay decoder normalises each batch itself (no running statistics to drift from).
    assert not list(synth.memory.buffers())
    count = synth.samples_generated
    assert synth.preview(20).shape == (20, *SPEC.shape) and synth.samples_generated == count


def test_refresh_schedule_and_vae_self_rehearsal(digits_teacher):
    seed_everything(0)
    synth = _replay(refresh_every=2, vae_replay_share=0.25)
    teacher, student = Teacher(digits_teacher), build_model("lenet5_half", SPEC)
    synth.synthesize(teacher, student)
    assert synth.memory is None and synth.replayed == 0  # not refreshed yet: nothing replayed to the VAE
    synth.synthesize(teacher, student)
    frozen = copy.deepcopy(synth.memory.state_dict())
    synth.synthesize(teacher, student)
    assert synth.replayed == 8  # the VAE's batch of 32 held 25% replayed samples
    assert all(torch.equal(frozen[k], v) for k, v in synth.memory.state_dict().items())  # kept between refreshes
    synth.synthesize(teacher, student)
    assert not all(torch.equal(frozen[k], v) for k, v in synth.memory.state_dict().items())  # refreshed


def test_wrapper_over_the_conditional_synthesizer_delegates_and_drops_labels_of_mixed_batches(digits_teacher):
    seed_everything(0)
    base = ConditionalSynthesizer(SPEC, "cpu", {"name": "cond_generator", "ngf": 8}, batch_size=32)
    synth = _replay(base)
    assert synth.generator is base.generator and synth.student_terms() == base.student_terms()
    synth.set_label_prior([0] * 3 + [5] + [0] * 6)  # only class 3
    assert torch.equal(base.label_prior, synth.label_prior) and base.label_prior[3] == 1
    x, y = synth.sample(16)  # no replay yet: the base's labels
    assert y is not None and (y == 3).all()
    student = build_model("lenet5_half", SPEC)
    opt = torch.optim.SGD(student.parameters(), lr=0.01)
    out = distill(student, Teacher(digits_teacher), synth, opt, iterations_per_epoch=2,
                  recipe=StudentRecipe(steps=3, temperature=4.0), student_batch_size=32, progress=False)
    assert {"loss_ce", "vae_loss", "student_loss"} <= set(out) and synth.replayed > 0
    x, y = synth.sample(32)
    assert x.shape == (32, *SPEC.shape) and y is None


def test_short_digits_run_with_replay_over_dfad_beats_chance_and_its_memory_is_below_a_pool(digits, digits_teacher):
    seed_everything(0)
    student = build_model("lenet5_half", SPEC)
    synth = _replay(DFADSynthesizer(SPEC, "cpu", SMALL_DFAD, batch_size=64), vae_batch_size=40)
    opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    out = distill(student, Teacher(digits_teacher), synth, opt, iterations_per_epoch=20,
                  recipe=StudentRecipe(steps=5, loss="l1"), student_batch_size=64, progress=False)
    acc = evaluate(student, digits.test, CPU)["accuracy"]
    assert acc > 0.5, acc  # chance: 0.1
    assert synth.replayed > 0 and out["samples_generated"] == synth.samples_generated
    # A pool holding every sample seen, as float32 tensors, against the VAE and its frozen decoder.
    pool = synth.samples_generated * torch.zeros(SPEC.shape).numel() * 4
    held = synth.memory_bytes()
    assert held == memory_bytes(synth.vae) + memory_bytes(synth.memory) > 0
    assert held < pool / 10, (held, pool)


def test_state_dict_round_trip_gives_identical_next_samples(digits_teacher):
    seed_everything(0)
    teacher, student = Teacher(digits_teacher), build_model("lenet5_half", SPEC)
    synth = _replay(vae_replay_share=0.25)
    for _ in range(2):
        synth.synthesize(teacher, student)
    buf = io.BytesIO()
    torch.save(synth.state_dict(), buf)
    buf.seek(0)
    seed_everything(1)  # a differently initialised wrapper
    resumed = _replay(vae_replay_share=0.25)
    resumed.load_state_dict(torch.load(buf, weights_only=True))  # as the run checkpoint is read
    assert resumed.calls == synth.calls and resumed.samples_generated == synth.samples_generated

    outputs = []
    for s in (synth, resumed):
        torch.manual_seed(7)
        row = s.synthesize(teacher, copy.deepcopy(student))
        outputs.append((row, s.sample(48)))
    (row_a, (xa, _)), (row_b, (xb, _)) = outputs
    assert row_a == row_b and torch.equal(xa, xb)
    assert synth.replayed == resumed.replayed and synth.replayed > 0


# ----------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"replay_share": 1.0}, "replay_share"),
        ({"vae_replay_share": -0.1}, "vae_replay_share"),
        ({"refresh_every": 0}, "refresh_every"),
        ({"vae_steps": 0}, "vae_steps"),
        ({"vae_batch_size": 0}, "vae_batch_size"),
        ({"vae_lr": 0.0}, "vae_lr"),
        ({"kl_weight": -1.0}, "kl_weight"),
        ({"teacher_weight": -1.0}, "teacher_weight"),
        ({"vae": {"latent_dim": 0}}, "vae"),
        ({"vae": {"depth": 3}}, "vae"),
        ({"base": None}, "base"),
        ({"base": "dfad"}, "base"),
        ({"base": lambda spec, device: torch.nn.Linear(2, 2)}, "base"),
        ({"batch_size": 64}, "batch_size"),  # an override for an already built base
    ],
)
def test_bad_settings_raise_a_one_line_config_error(settings, key):
    kwargs = {"base": _dfad(), **settings}
    with pytest.raises(ConfigError) as err:
        PseudoReplaySynthesizer(SPEC, "cpu", **kwargs)
    message = str(err.value)
    assert f"synthesizer.{key}" in message and "\n" not in message, message


def test_options_the_base_does_not_take_are_a_config_error():
    from functools import partial

    with pytest.raises(ConfigError, match="synthesizer.base does not take"):
        PseudoReplaySynthesizer(SPEC, "cpu", partial(DFADSynthesizer, generator=SMALL_DFAD), bn=1.0)


# ------------------------------------------------------------------------ Hydra configs
def _compose(config: str, *overrides: str):
    from hydra import compose, initialize_config_dir

    from fedkd.config import CONF_DIR, register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config, overrides=list(overrides))


@pytest.mark.parametrize(
    ("name", "base_cls"),
    [("replay_dfad", DFADSynthesizer), ("replay_conditional", ConditionalSynthesizer),
     ("replay_rdskd", RDSKDSynthesizer)],
)
def test_configs_compose_the_base_method_and_instantiate(name, base_cls):
    from hydra.utils import instantiate

    cfg = _compose("centralized", f"synthesizer={name}", "synthesizer.base.generator.ngf=8",
                   "synthesizer.vae_batch_size=16")
    synth = instantiate(cfg.synthesizer, _convert_="all")(spec=SPEC, device=CPU)
    assert isinstance(synth, PseudoReplaySynthesizer) and type(synth.base) is base_cls
    assert synth.recipe == StudentRecipe(**cfg.synthesizer.base.student)  # the wrapper's recipe is its base's
    assert synth.replay_share == pytest.approx(1 / 9, abs=1e-3) and synth.vae_steps == 4
    assert synth.base.generator.ngf == 8 and synth.vae_batch_size == 16
    # RDSKD's paper schedule (generator_steps 0) freezes the generator; the wrapper answers for its base.
    assert synth.keeps_learning() is (base_cls is not RDSKDSynthesizer) is synth.base.keeps_learning()
    if base_cls is RDSKDSynthesizer:  # the remedy names the base's key under the wrapper's
        assert synth.keep_learning_override("strategy.synthesizer") == "strategy.synthesizer.base.generator_steps=1"


@pytest.mark.parametrize(("name", "base_cls"), [("replay_deepinversion", DeepInversionSynthesizer),
                                                ("replay_fast_meta", FastMetaSynthesizer)])
def test_over_a_pool_method_the_base_keeps_one_round_and_the_vae_is_the_memory(name, base_cls):
    from hydra.utils import instantiate

    cfg = _compose("centralized", f"synthesizer={name}", "synthesizer.base.batch_size=48",
                   "synthesizer.vae_batch_size=16")
    synth = instantiate(cfg.synthesizer, _convert_="all")(spec=SPEC, device=CPU)
    assert isinstance(synth, PseudoReplaySynthesizer) and type(synth.base) is base_cls
    assert synth.base.pool.capacity == 48  # follows the base's batch size


def test_replay_composes_under_fedftg_over_its_server_synthesizer():
    from hydra.utils import instantiate

    picks = ["strategy=fedftg", "synthesizer@strategy.synthesizer=replay_conditional"]
    synth = instantiate(_compose("sim", *picks).strategy.synthesizer, _convert_="all")(spec=SPEC, device=CPU)
    assert isinstance(synth, PseudoReplaySynthesizer) and isinstance(synth.base, ConditionalSynthesizer)
    # FedFTG's server settings (conf/synthesizer/fedftg.yaml) as the base; a top-level key reaches the base too.
    cfg = _compose("sim", *picks, "synthesizer@strategy.synthesizer.base=fedftg",
                   "+strategy.synthesizer.generator_steps=2")
    synth = instantiate(cfg.strategy.synthesizer)(spec=SPEC, device=CPU)  # as FedFTG gets it
    assert synth.base.batch_size == 64 and synth.base.weights["bn"] == 1.0 and synth.recipe.steps == 2
    assert synth.base.generator_steps == 2


@pytest.mark.parametrize("key", ["synthesizer.student.steps", "synthesizer.base.student.steps"])
def test_the_wrappers_recipe_is_set_on_the_wrapper_or_on_its_base(key):
    from hydra.utils import instantiate

    cfg = _compose("centralized", "synthesizer=replay_dfad", f"{key}=3")
    synth = instantiate(cfg.synthesizer, _convert_="all")(spec=SPEC, device=CPU)
    assert synth.recipe == StudentRecipe(steps=3, loss="l1")  # the wrapper's own node counts


def test_a_resumed_distillation_equals_an_uninterrupted_one(digits_teacher):
    teacher = Teacher(digits_teacher)

    def setup(seed: int):
        seed_everything(seed)
        student = build_model("lenet5_half", SPEC)
        synth = _replay(DFADSynthesizer(SPEC, "cpu", SMALL_DFAD, batch_size=32), vae_replay_share=0.25)
        return student, synth, torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)

    def run(student, synth, opt, epochs: int, **kw):
        return distill(student, teacher, synth, opt, iterations_per_epoch=2, recipe=StudentRecipe(steps=2, loss="l1"),
                       epochs=epochs, student_batch_size=32, progress=False, **kw)

    student, synth, opt = setup(0)
    run(student, synth, opt, 2)
    first = setup(0)
    metrics = run(*first, 1)
    buf = io.BytesIO()
    torch.save({"student": first[0].state_dict(), "synth": first[1].state_dict(), "opt": first[2].state_dict(),
                "rng": torch.get_rng_state()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    resumed = setup(1)  # fresh objects, other initial weights
    resumed[0].load_state_dict(state["student"])
    resumed[1].load_state_dict(state["synth"])
    resumed[2].load_state_dict(state["opt"])
    torch.set_rng_state(state["rng"])
    run(*resumed, 2, start_epoch=2, previous=metrics)
    assert resumed[1].replayed == synth.replayed > 0
    for key, value in student.state_dict().items():
        assert torch.equal(value, resumed[0].state_dict()[key]), key
