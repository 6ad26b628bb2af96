"""DFRD's generator (:class:`fedkd.datafree.DFRDSynthesizer`): its transferability term, the moving
average of the generator, the student batches drawn from both generators, and its saved state."""

from __future__ import annotations

import pytest
import torch

from fedkd.data.specs import get_spec
from fedkd.datafree import DFRDSynthesizer, EnsembleTeacher, class_weights_from_counts
from fedkd.datafree import losses as L
from fedkd.models import build_model

SPEC = get_spec("digits")
GEN = {"name": "cond_generator", "ngf": 8, "nz": 16}


def _synth(**kw) -> DFRDSynthesizer:
    torch.manual_seed(0)
    return DFRDSynthesizer(SPEC, "cpu", GEN, batch_size=16, **kw)


def _teacher():
    torch.manual_seed(1)
    models = [build_model("lenet5_half", SPEC).eval() for _ in range(2)]
    counts = torch.zeros(2, SPEC.num_classes)
    counts[0, :5], counts[1, 5:] = 30, 30
    return EnsembleTeacher(models, class_weights_from_counts(counts.numpy())), counts.sum(0)


def _params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_transferability_counts_only_samples_the_student_labels_as_requested():
    student = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    teacher = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    labels = torch.tensor([0, 0, 2])  # the student gets samples 0 and 2 right, sample 1 wrong
    kl = L.kl_per_sample(student, teacher)
    expected = -(kl[0] + kl[2]) / 3
    assert L.transferability_kl(student, teacher, labels).item() == pytest.approx(expected.item())
    assert expected < 0  # a divergence the generator is rewarded for (minimising its negative)
    wrong = torch.tensor([1, 2, 0])  # the student labels none as requested: nothing to push
    assert L.transferability_kl(student, teacher, wrong).item() == 0.0


def test_generator_learns_on_fidelity_transferability_and_diversity_only():
    synth, (teacher, prior) = _synth(), _teacher()
    synth.set_label_prior(prior)
    before = _params(synth.generator)
    out = synth.synthesize(teacher, build_model("lenet5_half", SPEC))
    assert set(out) == {"generator_loss", "loss_fidelity", "loss_transferability", "loss_diversity"}
    assert out["loss_transferability"] <= 0 and 0 < out["loss_diversity"] <= 1
    assert any(not torch.equal(a, b) for a, b in zip(before, synth.generator.parameters()))
    assert all(not p.requires_grad for p in synth.ema_generator.parameters())


def test_moving_average_copies_the_first_round_then_averages_and_differs_from_the_live_generator():
    synth, (teacher, prior) = _synth(ema_decay=0.25), _teacher()
    synth.set_label_prior(prior)
    student = build_model("lenet5_half", SPEC)
    synth.synthesize(teacher, student)
    synth.end_epoch()  # round 1: the copy
    for ema, live in zip(synth.ema_generator.parameters(), synth.generator.parameters()):
        assert torch.equal(ema, live)
    ema_before = _params(synth.ema_generator)
    for _ in range(3):
        synth.synthesize(teacher, student)
    synth.end_epoch()  # round 2: 0.25 * previous + 0.75 * live
    differs = False
    for ema, old, live in zip(synth.ema_generator.parameters(), ema_before, synth.generator.parameters()):
        torch.testing.assert_close(ema, 0.25 * old + 0.75 * live)
        differs |= not torch.equal(ema, live)
    assert differs and synth.ema_rounds == 2


@pytest.mark.parametrize("ema_weight, n_ema", [(1.0, 8), (0.5, 5), (0.0, 0)])
def test_student_batches_hold_the_moving_averages_share(ema_weight, n_ema):
    synth, (teacher, prior) = _synth(ema_weight=ema_weight), _teacher()
    synth.set_label_prior(prior)
    student = build_model("lenet5_half", SPEC)
    torch.manual_seed(5)
    x0, _ = synth.sample(16)  # no round has ended: every sample from the live generator
    torch.manual_seed(5)
    y = synth.target_labels(16, balanced=False)
    torch.testing.assert_close(x0, synth.generator(synth.generator.noise(16, "cpu"), y))
    synth.synthesize(teacher, student)
    synth.end_epoch()
    synth.synthesize(teacher, student)  # the live generator moves on; the average stays
    torch.manual_seed(6)
    x, labels = synth.sample(16)
    torch.manual_seed(6)
    y = synth.target_labels(16, balanced=False)
    live = synth.generator(synth.generator.noise(16 - n_ema, "cpu"), y[: 16 - n_ema])
    assert torch.equal(labels, y) and x.shape == (16, *SPEC.shape)
    torch.testing.assert_close(x[: 16 - n_ema], live)
    if n_ema:
        ema = synth.ema_generator(synth.ema_generator.noise(n_ema, "cpu"), y[16 - n_ema:])
        torch.testing.assert_close(x[16 - n_ema:], ema)


def test_both_generators_and_the_round_count_survive_a_safe_save(tmp_path):
    synth, (teacher, prior) = _synth(), _teacher()
    synth.set_label_prior(prior)
    student = build_model("lenet5_half", SPEC)
    for _ in range(2):
        synth.synthesize(teacher, student)
        synth.end_epoch()
    synth.synthesize(teacher, student)
    torch.save(synth.state_dict(), tmp_path / "s.pt")
    restored = _synth()
    restored.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert restored.ema_rounds == 2
    for a, b in ((restored.generator, synth.generator), (restored.ema_generator, synth.ema_generator)):
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(v, w), k
    assert any(not torch.equal(e, g) for e, g in zip(restored.ema_generator.parameters(),
                                                      restored.generator.parameters()))
    torch.manual_seed(9)
    again = restored.sample(12)[0]
    torch.manual_seed(9)
    torch.testing.assert_close(again, synth.sample(12)[0])
