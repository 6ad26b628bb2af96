"""Qu et al.'s student-side terms: activation regularisation and virtual interpolation, on digits."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fedkd.data import get_spec
from fedkd.datafree import DFADSynthesizer, EnsembleTeacher, StudentRecipe, Teacher, distill
from fedkd.datafree import losses as L
from fedkd.datafree.student_terms import ActivationRegularizer, StudentBatch, VirtualInterpolation
from fedkd.datafree.student_terms.activation import PointwiseConv
from fedkd.errors import ConfigError
from fedkd.models import build_model
from fedkd.training import evaluate
from fedkd.utils.seeding import seed_everything

CPU = torch.device("cpu")
SPEC = get_spec("digits")


def _pre_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def _batch(x: torch.Tensor, teacher: nn.Module, student: nn.Module) -> StudentBatch:
    """What the loop hands the terms: teacher without grad, then the student, on the same x."""
    with torch.no_grad():
        t = teacher(x)
    s = student(x)
    return StudentBatch(x, None, s, t, student, teacher, lambda a, b: L.l1_discrepancy(a, b), 1.0)


# ------------------------------------------------------------------- virtual interpolation
@pytest.mark.parametrize("label_space", ["probs", "logits"])
def test_virtual_labels_lie_between_their_endpoints_teacher_outputs(digits, digits_teacher, label_space):
    torch.manual_seed(0)
    x = digits.test.x[:64]
    with torch.no_grad():
        t = digits_teacher(x)
    term = VirtualInterpolation(alpha=0.5, label_space=label_space)
    v = term.interpolate(x, t, temperature=2.0)
    assert ((v.lam >= 0) & (v.lam <= 1)).all() and v.lam.std() > 0  # one lam per sample, in [0, 1]
    assert v.partner.sort().values.equal(torch.arange(64))  # a permutation of the batch
    ends = torch.softmax(t / 2.0, 1) if label_space == "probs" else t
    a, b = ends, ends[v.partner]
    tol = 1e-6
    assert (v.target >= torch.minimum(a, b) - tol).all() and (v.target <= torch.maximum(a, b) + tol).all()
    lam = v.lam[:, None]
    torch.testing.assert_close(v.target, lam * a + (1 - lam) * b)  # the convex combination, same lam as x
    torch.testing.assert_close(v.x, lam[:, :, None, None] * x + (1 - lam[:, :, None, None]) * x[v.partner])
    if label_space == "probs":
        torch.testing.assert_close(v.target.sum(1), torch.ones(64))  # still a distribution


def test_interpolation_loss_trains_the_student_on_virtual_samples(digits, digits_teacher):
    torch.manual_seed(0)
    x = digits.train.x[:64]
    student = build_model("lenet5_half", SPEC)
    term = VirtualInterpolation()
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        torch.manual_seed(1)  # the same virtual batch each time: its loss must fall
        loss = term(_batch(x, digits_teacher, student))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    assert L.soft_target_kl(torch.tensor([[2.0, 0.0]]), torch.softmax(torch.tensor([[2.0, 0.0]]), 1)).abs() < 1e-6


# ------------------------------------------------------------------ activation boundaries
def test_activation_boundary_loss_is_zero_only_with_the_teachers_signs_and_margin():
    torch.manual_seed(0)
    t = torch.randn(8, 6, 4, 4)
    good = torch.where(t > 0, 1.5, -1.5)
    assert L.activation_boundary_loss(good, t, margin=1.0) == 0
    assert L.activation_boundary_loss(torch.where(t > 0, 1.0, -1.0), t, margin=1.0) == 0  # on the margin
    assert L.activation_boundary_loss(torch.where(t > 0, 0.5, -0.5), t, margin=1.0) > 0  # right sign, no margin
    flipped = L.activation_boundary_loss(-good, t, margin=1.0)
    assert flipped == pytest.approx(2.5**2)  # every element wrong by 1.5 + margin
    # The decision term: zero when the teacher's class leads every other by the margin.
    t_logits = torch.randn(16, 10)
    s = torch.zeros(16, 10).scatter(1, t_logits.argmax(1, keepdim=True), 1.0)
    assert L.decision_boundary_loss(s, t_logits, margin=1.0) == 0
    assert L.decision_boundary_loss(s, t_logits, margin=2.0) > 0
    # Capped at the teacher's own gap: the teacher itself scores 0 whatever the margin.
    assert L.decision_boundary_loss(t_logits, t_logits, margin=5.0) == 0
    assert L.decision_boundary_loss(-s, t_logits, margin=5.0) > L.decision_boundary_loss(s, t_logits, margin=5.0) > 0


def test_activation_boundary_loss_prices_each_side_with_its_own_hinge():
    torch.manual_seed(0)
    s, t = torch.randn(8, 6, 4, 4), torch.randn(8, 6, 4, 4)
    expected = torch.where(t > 0, (1.0 - s).clamp(min=0), (1.0 + s).clamp(min=0)).pow(2).mean()
    assert L.activation_boundary_loss(s, t, margin=1.0) == pytest.approx(expected.item(), rel=1e-6)


def test_connector_pointwise_conv_is_a_1x1_convolution_in_value_gradient_and_state():
    torch.manual_seed(0)
    conv = PointwiseConv(3, 6)
    reference = nn.Conv2d(3, 6, 1, bias=False)
    reference.load_state_dict(conv.state_dict())  # the same keys and shapes
    x = torch.randn(4, 3, 7, 7, requires_grad=True)
    assert torch.allclose(conv(x), reference(x), atol=1e-6)
    (mine,) = torch.autograd.grad(conv(x).square().sum(), x)
    (theirs,) = torch.autograd.grad(reference(x).square().sum(), x)
    assert torch.allclose(mine, theirs, atol=1e-5)


def test_activation_term_pairs_relu_inputs_before_the_inplace_relu_and_unhooks(digits_teacher):
    torch.manual_seed(0)
    student = build_model("lenet5_half", SPEC)
    teacher = Teacher(digits_teacher)
    term = ActivationRegularizer()
    term.attach(student, teacher)
    assert _pre_hooks(digits_teacher) == 4 and _pre_hooks(student) == 4  # 2 conv + 2 fc ReLUs each
    x = torch.randn(8, *SPEC.shape)
    loss = term(_batch(x, teacher, student))
    assert loss > 0 and loss.requires_grad
    assert [s[:2] for s in term._specs] == [(3, 6), (8, 16), (60, 120), (42, 84)]  # student -> teacher widths
    assert (term._teacher_cap.values[0] < 0).any()  # pre-activations, not the in-place ReLU's output
    loss.backward()
    assert all(p.grad is not None for p in term.connectors.parameters())
    assert student.conv[0].weight.grad is not None
    term.detach()
    assert _pre_hooks(digits_teacher) == 0 and _pre_hooks(student) == 0


def test_activation_term_with_named_layers_matches_a_copy_of_the_teacher_exactly(digits_teacher):
    """A student equal to the teacher, whose connectors are scaled identities, has zero AB loss
    once the margin is 0: the named-layer path captures the same pre-activations."""
    torch.manual_seed(0)
    names = ["fc.1", "fc.3"]  # the ReLUs of the two hidden fc layers
    term = ActivationRegularizer(margin=0.0, logit_weight=0.0, teacher_layers=names, student_layers=names)
    student = copy.deepcopy(digits_teacher)
    term.attach(student, Teacher(digits_teacher))
    x = torch.randn(32, *SPEC.shape)
    term(_batch(x, Teacher(digits_teacher), student))
    for conn, (s, t, _) in zip(term.connectors, term._specs, strict=True):
        conn[0].weight.data = torch.eye(t, s)
        conn[1].reset_running_stats()  # (0, 1), and eval mode: BN keeps every sign
        conn[1].eval()
    assert term(_batch(x, Teacher(digits_teacher), student)) == 0
    term.detach()


def test_activation_term_on_an_ensemble_is_the_mean_of_its_members_losses_and_leaves_no_hooks(digits_teacher):
    """FedFTG's server teacher: members of one architecture, hooked only inside the term's call.
    Two copies of one model give the single model's loss; two different members the mean of the
    losses each gives alone (through the same connectors)."""
    torch.manual_seed(0)
    student = build_model("lenet5_half", SPEC)
    other = copy.deepcopy(digits_teacher)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(16, *SPEC.shape)

    def loss_with(teacher: nn.Module, term: ActivationRegularizer) -> torch.Tensor:
        term.attach(student, teacher)
        value = term(_batch(x, teacher, student))
        term.detach()
        return value

    term = ActivationRegularizer(logit_weight=0.0)
    loss_with(Teacher(digits_teacher), term)  # builds the connectors; the calls below reuse them
    term.connectors.eval()  # BatchNorm in eval mode: the same connector output in every call
    single = loss_with(Teacher(digits_teacher), term)
    alone = loss_with(Teacher(other), term)
    twins = EnsembleTeacher([digits_teacher, copy.deepcopy(digits_teacher)], batched=False)
    torch.testing.assert_close(loss_with(twins, term), single)
    pair = EnsembleTeacher([digits_teacher, other], batched=False)
    torch.testing.assert_close(loss_with(pair, term), (single + alone) / 2)
    assert single != alone
    assert _pre_hooks(digits_teacher) == 0 and _pre_hooks(other) == 0 and _pre_hooks(student) == 0


def test_activation_state_round_trip_resumes_connectors_and_adam_exactly(digits, digits_teacher):
    def run(steps: int, term: ActivationRegularizer, student: nn.Module, seed: int) -> None:
        teacher = Teacher(digits_teacher)
        term.attach(student, teacher)
        opt = torch.optim.SGD(student.parameters(), lr=0.01)
        torch.manual_seed(seed)
        for _ in range(steps):
            loss = term(_batch(torch.randn(16, *SPEC.shape), teacher, student))
            opt.zero_grad()
            loss.backward()
            opt.step()
            term.step()
        term.detach()

    torch.manual_seed(0)
    student = build_model("lenet5_half", SPEC)
    assert ActivationRegularizer().state_dict() == {}  # nothing before the first step
    term = ActivationRegularizer()
    run(3, term, student, seed=1)
    state = copy.deepcopy(term.state_dict())
    assert state["optimizer"]["state"]  # Adam moments are there
    resumed, resumed_student = ActivationRegularizer(), copy.deepcopy(student)
    rng = torch.get_rng_state()
    resumed.load_state_dict(state)
    assert torch.get_rng_state().equal(rng)  # rebuilding drew no random numbers
    for a, b in zip(term.connectors.state_dict().values(), resumed.connectors.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    run(2, term, student, seed=2)
    run(2, resumed, resumed_student, seed=2)
    for a, b in zip(term.connectors.parameters(), resumed.connectors.parameters(), strict=True):
        assert torch.equal(a, b)  # the connectors went on exactly as without the interruption
    assert resumed.optimizer.state_dict()["state"][0]["step"] == 5


# ----------------------------------------------------------------------- the loop, configs
def test_dfad_with_both_terms_beats_chance_and_leaves_no_hooks(digits, digits_teacher):
    seed_everything(0)
    student = build_model("lenet5_half", SPEC)
    synth = DFADSynthesizer(SPEC, "cpu", {"name": "dfad_generator", "ngf": 8}, batch_size=64)
    opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    # conf/student_terms/ defaults; the loop runs the hook reader (activation) first.
    terms = [VirtualInterpolation(weight=0.1), ActivationRegularizer()]
    out = distill(student, Teacher(digits_teacher), synth, opt, iterations_per_epoch=25,
                  recipe=StudentRecipe(steps=5, loss="l1"), student_batch_size=64, progress=False, terms=terms)
    acc = evaluate(student, digits.test, CPU)["accuracy"]
    assert acc > 0.5, acc  # chance: 0.1
    assert out["term/activation"] > 0 and out["term/interpolation"] > 0
    assert _pre_hooks(digits_teacher) == 0 and _pre_hooks(student) == 0


def test_bad_settings_are_one_line_config_errors(digits_teacher):
    bad = [
        (lambda: VirtualInterpolation(alpha=0.0), "interpolation.alpha must be > 0"),
        (lambda: VirtualInterpolation(label_space="onehot"), "label_space 'onehot' is unknown"),
        (lambda: VirtualInterpolation(weight=-1.0), "weight must be >= 0"),
        (lambda: ActivationRegularizer(margin=-1.0), "activation.margin must be >= 0"),
        (lambda: ActivationRegularizer(logit_weight=float("nan")), "logit_weight must be >= 0"),
        (lambda: ActivationRegularizer(connector_lr=0.0), "connector_lr must be > 0"),
        (lambda: ActivationRegularizer(teacher_layers=["fc.1"]), "give both teacher_layers and student_layers"),
        (lambda: ActivationRegularizer(teacher_layers=["fc.1"], student_layers=[]), "list as many student layers"),
    ]
    student = build_model("lenet5_half", SPEC)
    attach = [
        (ActivationRegularizer(teacher_layers=["fc.9"], student_layers=["fc.1"]), Teacher(digits_teacher),
         "no module named 'fc.9' in the teacher"),
        (ActivationRegularizer(), EnsembleTeacher([digits_teacher, build_model("small_cnn", SPEC)]),
         "needs ensemble members of one architecture"),
        (ActivationRegularizer(), Teacher(build_model("small_cnn", SPEC)), "cannot pair 3 teacher layers with 4"),
    ]
    for make, message in bad:
        with pytest.raises(ConfigError, match=message) as err:
            make()
        assert "\n" not in str(err.value)
    for term, teacher, message in attach:
        with pytest.raises(ConfigError, match=message) as err:
            term.attach(student, teacher)
        assert "\n" not in str(err.value)
        assert _pre_hooks(student) == 0
    # Pairs whose feature maps differ in size cannot share a 1x1 connector: named at the first step.
    term = ActivationRegularizer(teacher_layers=["conv.2"], student_layers=["conv.6"])
    term.attach(student, Teacher(digits_teacher))
    with pytest.raises(ConfigError, match="layer pair 0 has teacher shape"):
        term(_batch(torch.randn(4, *SPEC.shape), Teacher(digits_teacher), student))
    term.detach()
