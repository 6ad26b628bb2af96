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
        assert torch.equal(EnsembleTeacher(models[:1], torch.ones(1, 10), weighting="label")(x, labels), Teacher(models[0])(x))
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
        handles = [layer.register_forward_hook(lambda m, i, o: seen.append((m, i[0]))) for layer in batchnorm_layers(model)]
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
