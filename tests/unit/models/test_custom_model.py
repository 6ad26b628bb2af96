"""model._target_: your own class or factory, how it is called, what survives in the config dict and
checkpoints, the per-feature checks, and one-line errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedkd.data import get_spec
from fedkd.errors import ConfigError
from fedkd.federated.records import group_key
from fedkd.models import build_from_config, model_config, model_label
from fedkd.models.checkpoint import model_from_checkpoint, model_meta
from fedkd.models.custom import batchnorm_layers_of, linear_head
from fedkd.utils.checkpoint import save_model

SPEC = get_spec("cifar10")
HERE = __name__  # importable module path of the classes below


class KwargsNet(nn.Module):
    """Takes plain keyword arguments: num_classes/in_channels filled from the spec."""

    def __init__(self, num_classes: int, in_channels: int, width: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class SpecNet(nn.Module):
    """Takes the dataset spec."""

    def __init__(self, spec, hidden: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(spec.channels * spec.image_size**2, hidden), nn.ReLU(),
                                 nn.Linear(hidden, spec.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class NeedsDepth(nn.Module):
    def __init__(self, depth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Identity() for _ in range(depth))


def factory(spec, width: int = 2) -> nn.Module:
    return KwargsNet(spec.num_classes, spec.channels, width)


def not_a_module(spec):
    return {"weights": 1}


def test_kwargs_class_gets_spec_values_and_options():
    model = build_from_config({"_target_": f"{HERE}.KwargsNet", "width": 6}, SPEC)
    assert isinstance(model, KwargsNet) and model.head.out_features == 10 and model.body[0].in_channels == 3
    assert model(torch.zeros(2, *SPEC.shape)).shape == (2, 10)


def test_spec_class_and_factory_and_hydra_node():
    from omegaconf import OmegaConf

    assert build_from_config({"_target_": f"{HERE}.SpecNet"}, SPEC)(torch.zeros(1, *SPEC.shape)).shape == (1, 10)
    node = OmegaConf.create({"_target_": f"{HERE}.factory", "width": 3, "name": "mine"})  # name: a label only
    assert build_from_config(node, SPEC).head.in_features == 3
    assert model_label(node) == f"{HERE}.factory"


def test_target_survives_model_config_but_fedkds_builder_does_not():
    mine = {"_target_": f"{HERE}.KwargsNet", "_partial_": True, "width": 6}
    assert model_config(mine) == {"_target_": f"{HERE}.KwargsNet", "width": 6}
    registry = {"_target_": "fedkd.models.build_model", "_partial_": True, "name": "lenet5", "batch_norm": True}
    assert model_config(registry) == {"name": "lenet5", "batch_norm": True}
    assert group_key(model_config(mine)).startswith("KwargsNet-")


def test_checkpoint_rebuilds_your_class(tmp_path):
    cfg = {"_target_": f"{HERE}.KwargsNet", "width": 5}
    model = build_from_config(cfg, SPEC)
    save_model(tmp_path / "m.pt", model, **model_meta(cfg, SPEC))
    again, meta = model_from_checkpoint(tmp_path / "m.pt", SPEC)
    assert isinstance(again, KwargsNet) and meta["model_config"]["_target_"] == f"{HERE}.KwargsNet"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize(
    "cfg, needle",
    [
        ({"_target_": "no_such_package_xyz.nets.Net"}, "cannot be imported (No module named 'no_such_package_xyz')"),
        ({"_target_": f"{HERE}.Missing"}, "has no Missing; check the name"),
        ({"_target_": f"{HERE}.not_a_module"}, "returned a dict, not a torch.nn.Module"),
        ({"_target_": f"{HERE}.KwargsNet", "name": "lenet5", "batch_norm": True}, "takes no argument batch_norm"),
        ({"_target_": f"{HERE}.NeedsDepth"}, "needs depth; set model.depth=..."),
        ({"_target_": "???"}, "model._target_ is not set"),
        ({"_target_": "not a path"}, "is not a dotted path"),
        ({"batch_norm": True}, "neither 'name'"),
        ({"_target_": "torch.nn.ReLU"}, "without parameters"),
    ],
)
def test_bad_model_config_is_one_line(cfg, needle):
    with pytest.raises(ConfigError) as info:
        build_from_config(cfg, SPEC)
    assert needle in str(info.value) and "\n" not in str(info.value) and "; " in str(info.value)


def test_feature_requirements_are_found_by_inspection():
    mine = build_from_config({"_target_": f"{HERE}.KwargsNet", "width": 7}, SPEC)
    assert linear_head(mine, "FedGen").in_features == 7  # FedGen's feature size
    assert len(batchnorm_layers_of(mine, "the BN-statistics loss")) == 1
    plain = build_from_config({"_target_": f"{HERE}.SpecNet"}, SPEC)
    with pytest.raises(ConfigError, match="FedGen needs a model whose last layer is an nn.Linear attribute "
                                          "named 'head'"):
        linear_head(plain, "FedGen")
    with pytest.raises(ConfigError, match="BN-statistics loss needs BatchNorm layers.*SpecNet"):
        batchnorm_layers_of(plain, "the BN-statistics loss")
