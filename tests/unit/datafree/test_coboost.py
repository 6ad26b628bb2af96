"""Co-Boosting: the hard-sample cross-entropy, the ensemble's member weights, the signed re-weighting
of the wrapper, its errors, its state and its config (a FedFTG digits round is in
tests/integration/test_fedftg.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedkd.data import get_spec
from fedkd.datafree import (
    ConditionalSynthesizer,
    DFADSynthesizer,
    EnsembleBoosting,
    EnsembleTeacher,
    Synthesizer,
    class_weights_from_counts,
)
from fedkd.datafree.losses import hard_sample_cross_entropy
from fedkd.errors import ConfigError

SPEC = get_spec("digits")
CPU = torch.device("cpu")


# ------------------------------------------------------------------------ the data half: hard samples
def test_hard_sample_cross_entropy_is_plain_ce_at_power_0_and_weights_easy_samples_down():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    y = torch.tensor([0, 1])
    ce = F.cross_entropy(logits, y, reduction="none")
    assert hard_sample_cross_entropy(logits, y, 0.0) == pytest.approx(ce.mean().item())
    p = logits.softmax(1)[torch.arange(2), y]
    expected = ((1 - p) ** 2 * ce).mean()  # by hand, power 2
    assert hard_sample_cross_entropy(logits, y, 2.0) == pytest.approx(expected.item(), rel=1e-6)
    # the easy sample (p ~ 0.96) counts far less than the hard one (p ~ 0.45)
    assert (1 - p[0]) ** 2 * ce[0] < 0.01 * (1 - p[1]) ** 2 * ce[1]
    # the weights are constants: the gradient is the weighted CE's, not a gradient through (1 - p)
    logits.requires_grad_(True)
    hard_sample_cross_entropy(logits, y, 1.0).backward()
    ce_grad = torch.autograd.grad(F.cross_entropy(logits, y, reduction="none")[1] * (1 - p[1]) / 2, logits)[0]
    assert torch.allclose(logits.grad[1], ce_grad[1], atol=1e-6)


def test_conditional_synthesizer_refuses_a_negative_hard_sample_power():
    with pytest.raises(ConfigError, match="hard_sample_power") as raised:
        ConditionalSynthesizer(SPEC, "cpu", {"name": "cond_generator", "ngf": 8}, hard_sample_power=-1)
    assert "\n" not in str(raised.value)


# ------------------------------------------------------------------------ the ensemble half: member weights
class Fixed(nn.Module):
    """A 'model' whose logits are a fixed linear map of a 1-feature input's one-hot class."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0].long()]


def _ensemble(class_weights=None, weighting="logit") -> EnsembleTeacher:
    good = Fixed(3.0 * torch.eye(3))  # right on every class
    bad = Fixed(3.0 * torch.eye(3)[[1, 2, 0]])  # always says the next class
    half = Fixed(3.0 * torch.eye(3)[[0, 2, 1]])  # right on class 0 only
    return EnsembleTeacher([good, bad, half], class_weights, batched=False, weighting=weighting)


def test_member_weights_scale_each_member_and_keep_the_columns_normalised():
    teacher = _ensemble()
    x = torch.tensor([[0.0], [1.0], [2.0]])
    logits = teacher.member_logits(x)
    assert torch.equal(teacher(x), logits.mean(0))  # no weights: the plain mean, as before
    teacher.set_member_weights([2.0, 1.0, 1.0])
    assert torch.allclose(teacher(x), (2 * logits[0] + logits[1] + logits[2]) / 4)
    assert teacher.member_weight_updates == 1
    # with class weights: w'[m, c] = a_m w[m, c] / sum_k a_k w[k, c], per class (logit weighting)
    counts = torch.tensor([[10.0, 0.0, 5.0], [10.0, 5.0, 0.0], [0.0, 5.0, 5.0]])
    teacher = _ensemble(class_weights_from_counts(counts))
    teacher.set_member_weights([1.0, 0.5, 0.0])
    # class weights (columns): [.5, .5, 0], [0, .5, .5], [.5, 0, .5]; scaled by a = (1, .5, 0), renormalised:
    w = torch.tensor([[2 / 3, 0.0, 1.0], [1 / 3, 1.0, 0.0], [0.0, 0.0, 0.0]])
    expected = (logits * w.unsqueeze(1)).sum(0)
    assert torch.allclose(teacher(x), expected)


def test_a_class_whose_holders_all_weigh_zero_keeps_its_weights():
    counts = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    teacher = _ensemble(class_weights_from_counts(counts))
    teacher.set_member_weights([0.0, 1.0, 1.0])  # the only holder of class 0 is switched off
    weights = teacher._class_weights(teacher.member_weights, torch.zeros(3, 1, 3))
    assert torch.allclose(weights.sum(0), torch.ones(3)) and weights[0, 0] == 1.0


@pytest.mark.parametrize("bad", [[1.0, 1.0], [1.0, -0.1, 1.0], [0.0, 0.0, 0.0]])
def test_bad_member_weights_end_in_one_line(bad):
    with pytest.raises(ConfigError, match="member weights") as raised:
        _ensemble().set_member_weights(bad)
    assert "\n" not in str(raised.value)


# ------------------------------------------------------------------------ the wrapper
class Labelled(Synthesizer):
    """A base whose samples are the classes themselves (feature 0 = the label), labelled."""

    def __init__(self, labelled: bool = True) -> None:
        super().__init__(SPEC, "cpu")
        self.labelled, self.calls = labelled, 0

    def synthesize(self, teacher, student):
        self.calls += 1
        return {"generator_loss": 1.0}

    def sample(self, n):
        y = torch.arange(n) % 3
        self.samples_generated += n
        return y.float().unsqueeze(1), (y if self.labelled else None)


def test_boosting_moves_weight_to_the_members_that_label_the_samples_right():
    teacher = _ensemble()
    boost = EnsembleBoosting(SPEC, "cpu", Labelled(), step_size=0.01, step_decay=0.5, steps=1, batch_size=30)
    x, y = Labelled().sample(30)
    before = F.cross_entropy(teacher(x), y).item()
    row = boost.synthesize(teacher, nn.Identity())
    assert boost.base.calls == 1 and row["generator_loss"] == 1.0  # the base's step ran, its losses kept
    w1 = teacher.member_weights.clone()
    # one signed step of 0.01 from the plain mean 1/3: the good member up, the bad one down
    assert torch.allclose(w1, torch.tensor([1 / 3 + 0.01, 1 / 3 - 0.01, w1[2].item()]))
    assert abs(w1[2] - 1 / 3) == pytest.approx(0.01)
    boost.synthesize(teacher, nn.Identity())  # the second call's step is decayed: 0.01 * 0.5
    assert (teacher.member_weights - w1).abs().max().item() == pytest.approx(0.005, abs=1e-7)
    for _ in range(60):
        boost.synthesize(teacher, nn.Identity())
    w = teacher.member_weights
    assert w[0] > max(w[1], w[2]) and (w >= 0).all() and (w <= 1).all()
    assert F.cross_entropy(teacher(x), y).item() < before
    assert row["member_weight_max"] > row["member_weight_min"] > 0


def test_a_new_teacher_starts_from_the_plain_mean_with_the_full_step():
    boost = EnsembleBoosting(SPEC, "cpu", Labelled(), step_size=0.02, step_decay=0.5, steps=2, batch_size=9)
    first = _ensemble()
    for _ in range(3):
        boost.synthesize(first, nn.Identity())
    second = _ensemble()  # the next federated round's ensemble
    boost.synthesize(second, nn.Identity())
    assert (second.member_weights - 1 / 3).abs().max().item() == pytest.approx(0.04, abs=1e-6)  # 2 steps of 0.02


def test_a_single_teacher_is_left_alone():
    teacher = EnsembleTeacher([Fixed(torch.eye(3))], batched=False)
    row = EnsembleBoosting(SPEC, "cpu", Labelled()).synthesize(teacher, nn.Identity())
    assert teacher.member_weights is None and "boost_loss" not in row


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: EnsembleBoosting(SPEC, "cpu", Labelled(), step_decay=0.0), "step_decay"),
        (lambda: EnsembleBoosting(SPEC, "cpu", Labelled(), step_size=-1), "step_size"),
        (lambda: EnsembleBoosting(SPEC, "cpu", None), "synthesizer.base is missing"),
        (lambda: EnsembleBoosting(SPEC, "cpu", Labelled(labelled=False)).synthesize(_ensemble(), nn.Identity()),
         "labelled"),
    ],
)
def test_bad_boosting_settings_end_in_one_line(make, match):
    with pytest.raises(ConfigError, match=match) as raised:
        make()
    assert "\n" not in str(raised.value)


def test_state_is_the_bases_and_round_trips():
    def make() -> EnsembleBoosting:
        base = DFADSynthesizer(SPEC, "cpu", {"name": "dfad_generator", "ngf": 8}, batch_size=8)
        return EnsembleBoosting(SPEC, "cpu", base)

    boost = make()
    boost.base.samples_generated = 40
    other = make()
    other.load_state_dict(boost.state_dict())
    assert other.samples_generated == 40 and set(boost.state_dict()) == {"base"}
    for key, value in boost.generator.state_dict().items():
        assert torch.equal(value, other.generator.state_dict()[key])


def test_the_config_wraps_fedftgs_generator_with_hard_samples():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from fedkd.config import CONF_DIR, register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="sim", overrides=["strategy=fedftg", "synthesizer@strategy.synthesizer=coboost",
                                                    "strategy.synthesizer.student.steps=3"])
    synth = instantiate(cfg.strategy.synthesizer)(spec=SPEC, device=CPU)
    assert isinstance(synth, EnsembleBoosting) and isinstance(synth.base, ConditionalSynthesizer)
    assert synth.base.hard_sample_power == 1.0 and synth.base.batch_size == 64 and synth.base.weights["bn"] == 1.0
    assert synth.step_size == 0.01 and synth.step_decay == 0.99 and synth.recipe.steps == 3
