"""Teachers: the ensemble of client models (looped and batched), its class weights and its BN statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import hook_count, random_bn_lenet

from fedkd.data import get_spec
from fedkd.datafree import BNStatHooks, EnsembleTeacher, Teacher, class_weights_from_counts, uniform_class_weights
from fedkd.errors import ConfigError
from fedkd.models import batchnorm_layers, build_model

SPEC = get_spec("digits")


def test_ensemble_of_one_equals_the_single_teacher():
    model = random_bn_lenet(1)
    x = torch.randn(16, *SPEC.shape)
    assert torch.equal(EnsembleTeacher([model])(x), Teacher(model)(x))
    weights = class_weights_from_counts([[3, 0, 5, 1, 1, 1, 1, 1, 1, 1]])
    assert torch.equal(EnsembleTeacher([model], weights)(x), Teacher(model)(x))


def test_batched_ensemble_gives_the_loop_logits_and_gradients():
    models = [random_bn_lenet(s) for s in range(3)]
    weights = class_weights_from_counts(np.random.default_rng(0).integers(0, 20, (3, 10)))
    batched, loop = EnsembleTeacher(models, weights, batched=True), EnsembleTeacher(models, weights, batched=False)
    assert batched.batched and not loop.batched
    x = torch.randn(16, *SPEC.shape, requires_grad=True)
    out_b = batched(x)
    (grad_b,) = torch.autograd.grad(out_b.sum(), x)
    out_l = loop(x)
    (grad_l,) = torch.autograd.grad(out_l.sum(), x)
    torch.testing.assert_close(out_b, out_l, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_b, grad_l, rtol=1e-4, atol=1e-5)
    # Per-class weights: each class's logit comes from the members in their shares.
    manual = sum(weights[m] * models[m](x) for m in range(3))
    torch.testing.assert_close(out_l, manual)
    # "auto" stacks the members only for CUDA inputs: on the CPU the loop is faster.
    auto = EnsembleTeacher(models, weights)
    torch.testing.assert_close(auto(x), out_l)
    assert auto.batched and auto._stacked is None
    # Different architectures fall back to the loop; demanding the batched path is an error.
    mixed = [models[0], build_model("lenet5_half", SPEC).eval()]
    assert not EnsembleTeacher(mixed).batched
    with pytest.raises(ConfigError):
        EnsembleTeacher(mixed, batched=True)


def test_label_weighted_ensemble_weights_whole_predictions_by_the_samples_label():
    models = [random_bn_lenet(s) for s in range(3)]
    weights = class_weights_from_counts(np.random.default_rng(1).integers(0, 20, (3, 10)))
    teacher = EnsembleTeacher(models, weights, weighting="label")
    x, labels = torch.randn(8, *SPEC.shape), torch.arange(8) % 10
    with torch.no_grad():
        out = teacher(x, labels)
        for n in range(8):  # sample n: every member's whole logit vector, weighted by its share of labels[n]
            manual = sum(weights[m, labels[n]] * models[m](x[n : n + 1])[0] for m in range(3))
            torch.testing.assert_close(out[n], manual, rtol=1e-4, atol=1e-5)
        # Without labels (real test data) it weights per class, like weighting="logit".
        torch.testing.assert_close(teacher(x), EnsembleTeacher(models, weights)(x))
        # One member: the single teacher, with or without labels.
        single = EnsembleTeacher(models[:1], torch.ones(1, 10), weighting="label")
        assert torch.equal(single(x, labels), Teacher(models[0])(x))
    with pytest.raises(ConfigError, match="weighting"):
        EnsembleTeacher(models, weights, weighting="votes")


def test_class_weights_from_counts():
    w = class_weights_from_counts([[10, 0, 0], [30, 5, 0]])
    torch.testing.assert_close(w.sum(0), torch.ones(3))
    torch.testing.assert_close(w[:, 0], torch.tensor([0.25, 0.75]))
    torch.testing.assert_close(w[:, 1], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(w[:, 2], torch.tensor([0.5, 0.5]))  # nobody has it: uniform
    torch.testing.assert_close(uniform_class_weights(4, 3), torch.full((4, 3), 0.25))
    with pytest.raises(ConfigError):
        EnsembleTeacher([random_bn_lenet(0)], torch.full((1, 10), 0.5))  # columns must sum to 1


def test_ensemble_exposes_every_members_bn_layers_and_averages_the_bn_loss():
    a = random_bn_lenet(2)
    twins = EnsembleTeacher([a, a], batched=True)
    assert len(twins.bn_layers()) == 2 * len(batchnorm_layers(a))
    x = torch.randn(32, *SPEC.shape)
    with BNStatHooks(Teacher(a)) as hooks:
        Teacher(a)(x)
        single = hooks.loss()
    with BNStatHooks(twins) as hooks:  # forces the per-member path so member hooks fire
        twins(x)
        both = hooks.loss()
    torch.testing.assert_close(both, single)
    assert hook_count(a) == 0


def test_the_first_bn_layer_of_each_member_can_weigh_more():
    a, b = random_bn_lenet(2), random_bn_lenet(3)
    x = torch.randn(32, *SPEC.shape)

    def per_layer(model):  # each BN layer's own term, by hand from its recorded input
        seen = []
        handles = [layer.register_forward_hook(lambda m, i, o: seen.append((m, i[0])))
                   for layer in batchnorm_layers(model)]
        with torch.no_grad():
            model(x)
        for handle in handles:
            handle.remove()
        terms = []
        for layer, inp in seen:
            dims = [0, *range(2, inp.dim())]
            terms.append(torch.linalg.vector_norm(inp.mean(dims) - layer.running_mean)
                         + torch.linalg.vector_norm(inp.var(dims, unbiased=False) - layer.running_var))
        return torch.stack(terms)

    terms_a, terms_b = per_layer(a), per_layer(b)
    pair = EnsembleTeacher([a, b], batched=False)
    with BNStatHooks(pair, first_layer_weight=10.0) as hooks:
        pair(x)
        weighted = hooks.loss()
    expected = (10 * terms_a[0] + terms_a[1:].sum() + 10 * terms_b[0] + terms_b[1:].sum()) / 2
    torch.testing.assert_close(weighted, expected)
    with BNStatHooks(pair) as hooks:  # the default weighs every layer alike
        pair(x)
        torch.testing.assert_close(hooks.loss(), (terms_a.sum() + terms_b.sum()) / 2)


def _skewed_members(num: int = 6, seed: int = 0):
    """Random BN LeNets, each holding 2-3 classes (Dirichlet-0.1-like), with skewed counts."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((num, 10), dtype=np.int64)
    for m in range(num):
        held = rng.choice(10, size=int(rng.integers(2, 4)), replace=False)
        counts[m, held] = rng.integers(1, 500, size=len(held))
    return [random_bn_lenet(seed * 100 + m) for m in range(num)], class_weights_from_counts(counts)


def _logits_and_input_grads(teacher, x, labels):
    x = x.clone().requires_grad_(True)
    out = teacher(x, labels)
    (grad,) = torch.autograd.grad((out * torch.linspace(-1, 1, out.shape[1])).sum(), x)
    return out.detach(), grad


@pytest.mark.parametrize("seed", [0, 1])
def test_label_sparse_teacher_equals_the_dense_one_with_input_gradients(seed):
    models, weights = _skewed_members(seed=seed)
    sparse = EnsembleTeacher(models, weights, weighting="label", batched=False)
    dense = EnsembleTeacher(models, weights, weighting="label", batched=False, sparse=False)
    x = torch.randn(24, *SPEC.shape)
    labels = torch.arange(24) % 10  # labels some members lack, one class (or more) with a single holder
    out_s, grad_s = _logits_and_input_grads(sparse, x, labels)
    out_d, grad_d = _logits_and_input_grads(dense, x, labels)
    torch.testing.assert_close(out_s, out_d, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad_s, grad_d, rtol=1e-6, atol=1e-6)
    # Co-Boosting's member weights (one member switched off) keep it exact.
    for teacher in (sparse, dense):
        teacher.set_member_weights([0.0, 2.0, 1.0, 0.5, 1.0, 3.0])
    torch.testing.assert_close(sparse(x, labels), dense(x, labels), rtol=1e-6, atol=1e-6)


def test_label_sparse_teacher_runs_each_member_only_on_the_labels_it_holds():
    models, weights = _skewed_members(seed=2)
    teacher = EnsembleTeacher(models, weights, weighting="label")  # batched="auto": the loop on the CPU
    seen = [0] * len(models)
    handles = [m.register_forward_pre_hook(lambda mod, inp, i=i: seen.__setitem__(i, seen[i] + len(inp[0])))
               for i, m in enumerate(models)]
    x, labels = torch.randn(20, *SPEC.shape), torch.arange(20) % 10
    with torch.no_grad():
        teacher(x, labels)
        held = (weights[:, labels] > 0).sum(1).tolist()
        assert seen == held and sum(seen) < len(models) * len(x)
        # Where the rows cannot be split the dense path runs: no labels, another weighting, hooks inside.
        for call in (lambda: teacher(x), lambda: EnsembleTeacher(models, weights, weighting="logit")(x, labels)):
            seen[:] = [0] * len(models)
            call()
            assert seen == [len(x)] * len(models)
        seen[:] = [0] * len(models)
        with teacher.per_member_calls():
            teacher(x, labels)
        assert seen == [len(x)] * len(models)
    for handle in handles:
        handle.remove()


def _subset_stats(member, x):
    """Each tracked BN layer's input mean and variance when ``member`` runs on ``x`` alone."""
    seen = []
    layers = [layer for layer in batchnorm_layers(member) if layer.running_mean is not None]
    handles = [layer.register_forward_hook(lambda mod, inp, out: seen.append(inp[0])) for layer in layers]
    with torch.no_grad():
        member(x)
    for h in handles:
        h.remove()
    return [(t.mean([0, *range(2, t.dim())]), t.var([0, *range(2, t.dim())], unbiased=False)) for t in seen]


def test_label_sparse_bn_statistics_come_from_each_members_own_labels_and_never_go_stale():
    models = [random_bn_lenet(s) for s in range(3)]
    counts = np.zeros((3, 10))
    counts[0, [0, 1]], counts[1, [1, 2]], counts[2, [3]] = 10, 10, 10  # nobody else holds class 3
    teacher = EnsembleTeacher(models, class_weights_from_counts(counts), weighting="label", batched=False)
    torch.manual_seed(0)
    x = torch.randn(24, *SPEC.shape)
    labels = torch.tensor([0, 1, 2, 3] * 6)
    dense = EnsembleTeacher(models, class_weights_from_counts(counts), weighting="label", sparse=False)
    dense_logits = dense(x, labels)
    with BNStatHooks(teacher, label_sparse=True) as hooks:
        logits = teacher(x, labels)
        torch.testing.assert_close(logits, dense_logits, rtol=1e-5, atol=1e-6)  # still the same teacher
        per_layer = iter(hooks._stats[i] for i in sorted(hooks._stats))
        for m, held in enumerate(([0, 1], [1, 2], [3])):
            rows = torch.isin(labels, torch.tensor(held))
            for mean, var in _subset_stats(models[m], x[rows]):
                got_mean, got_var = next(per_layer)
                torch.testing.assert_close(got_mean, mean)
                torch.testing.assert_close(got_var, var)
        three = hooks.loss()
        # a batch of class 3 only: member 2 alone runs, and the others' statistics of the last call are gone
        teacher(x[:4], torch.full((4,), 3))
        assert {hooks.layer_members[i] for i in hooks._stats} == {2}
        alone = hooks.loss()
    with BNStatHooks(models[2]) as single:
        models[2](x[:4])
        torch.testing.assert_close(alone, single.loss())  # the mean over the members that ran: one
    with BNStatHooks(teacher) as dense:  # the default: every member on the whole batch, as before
        teacher(x, labels)
        assert {dense.layer_members[i] for i in dense._stats} == {0, 1, 2}
        assert not torch.isclose(dense.loss(), three)
