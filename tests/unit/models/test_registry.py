"""Every registry classifier: output and feature shapes for 1- and 3-channel inputs, BN exposure."""

from __future__ import annotations

import pytest
import torch

from fedkd.data import get_spec
from fedkd.errors import ConfigError
from fedkd.models import Classifier, batchnorm_layers, build_model, list_models

CLASSIFIERS = list_models("classifier")


def test_registry_has_the_documented_models():
    assert {"lenet5", "lenet5_half", "small_cnn", "resnet8", "resnet18", "resnet34", "wrn16_2",
            "wrn40_2"} <= set(CLASSIFIERS)


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("dataset", ["fashion_mnist", "cifar100"])
def test_output_and_feature_shapes(name, dataset):
    spec = get_spec(dataset)
    torch.manual_seed(0)
    model = build_model(name, spec).eval()
    x = torch.randn(2, *spec.shape)
    with torch.no_grad():
        logits, feats = model(x, return_features=True)
    assert isinstance(model, Classifier)
    assert logits.shape == (2, spec.num_classes)
    assert feats.shape == (2, model.feature_dim)
    assert torch.allclose(model.head(feats), logits, atol=1e-5)
    assert torch.isfinite(logits).all()


def test_lenet_half_is_smaller_and_bn_is_optional():
    spec = get_spec("mnist")
    full, half = build_model("lenet5", spec), build_model("lenet5_half", spec)
    assert sum(p.numel() for p in half.parameters()) < sum(p.numel() for p in full.parameters()) / 2
    assert len(batchnorm_layers(full)) == 2
    assert batchnorm_layers(build_model("lenet5", spec, batch_norm=False)) == []
    assert len(batchnorm_layers(build_model("resnet8", spec))) > 5


def test_lenet_fc_batch_norm_gives_model_inversion_four_bn_layers():
    from fedkd.datafree.bn_hooks import BNStatHooks

    spec = get_spec("fashion_mnist")
    model = build_model("lenet5", spec, fc_batch_norm=True)
    layers = batchnorm_layers(model)
    assert [layer.num_features for layer in layers] == [6, 16, 120, 84]
    model.train()
    model(torch.randn(32, *spec.shape))  # give the running statistics something to differ from
    model.eval()
    x = torch.randn(16, *spec.shape, requires_grad=True)
    with BNStatHooks(model, features=True) as hooks:
        model(x)
        loss = hooks.loss()
        assert hooks.features().shape == (16, 6 + 16 + 120 + 84)
    (grad,) = torch.autograd.grad(loss, x)
    assert loss.item() > 0 and grad.abs().sum() > 0
    assert not any(layer._forward_hooks for layer in layers)  # removed on leaving the block


def test_lenet_accepts_32x32():
    spec = get_spec("mnist").resized(32)
    assert build_model("lenet5", spec)(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_unknown_model_lists_choices():
    with pytest.raises(ConfigError, match="resnet8"):
        build_model("vgg99", get_spec("mnist"))
