"""fedkd.models.sanity: one forward pass on one real image finds a model whose output width is not
the class count, or that cannot take the images; it draws no random numbers and moves no BatchNorm
statistics, and leaves the model in its mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedkd.data import DataBundle, Split
from fedkd.errors import ConfigError
from fedkd.models import build_model
from fedkd.models.sanity import build_checked, check_model_fits


def _small(digits, side: int = 8) -> DataBundle:
    """digits resized down to ``side`` x ``side``."""
    import dataclasses

    def shrink(split: Split) -> Split:
        return Split(nn.functional.interpolate(split.x[:64], size=side), split.y[:64])

    return DataBundle(dataclasses.replace(digits.spec, image_size=side), shrink(digits.train), shrink(digits.test))


def test_a_fitting_model_passes_and_keeps_its_state(digits):
    model = build_model("lenet5", digits.spec)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    check_model_fits(model, digits, "model lenet5")
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    check_model_fits(model, digits, "model lenet5")
    assert not model.training


@pytest.mark.parametrize("width, effect", [(12, "outputs 10..11 match no label"), (8, "labels 8..9 have no output")])
def test_an_output_width_other_than_the_class_count_is_refused(digits, width, effect):
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, width))
    with pytest.raises(ConfigError, match=rf"model mine gives {width} outputs but digits has 10 classes \({effect}"):
        check_model_fits(model, digits, "model mine")


def test_images_smaller_than_the_model_takes(digits):
    small = _small(digits)
    with pytest.raises(ConfigError, match=r"student lenet5 cannot take one 1x8x8 image of digits \(.*Kernel size"
                                          r".*\); resize the images with dataset.image_size=28"):
        build_checked({"name": "lenet5"}, small, "student lenet5")  # LeNet-5 sizes its layers while built
    conv = nn.Sequential(nn.Conv2d(1, 4, 5), nn.Conv2d(4, 4, 5), nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(ConfigError, match="model deep cannot take one 1x8x8 image"):
        check_model_fits(conv, small, "model deep")  # fails in its forward


def test_a_model_that_returns_no_logits_is_refused(digits):
    with pytest.raises(ConfigError, match=r"returns \(1, 1, 28, 28\) for one 1x28x28 image"):
        check_model_fits(nn.Conv2d(1, 1, 1), digits, "model conv")
