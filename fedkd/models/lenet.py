"""LeNet-5, its half-width variant (as in DAFL/DFAD), and a small CNN for 28x28/32x32 inputs."""

from __future__ import annotations

import torch
from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.models.base import Classifier, flat_size
from fedkd.models.registry import register_model
from fedkd.utils.option_types import PositiveFloat, PositiveInt


def _conv_block(c_in: int, c_out: int, kernel: int, padding: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
    return layers


def _fc_block(d_in: int, d_out: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(d_in, d_out, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(d_out))
    return [*layers, nn.ReLU(inplace=True)]


class LeNet5(Classifier):
    """LeNet-5: two 5x5 conv layers and three fully connected layers.

    ``width`` scales every layer (0.5 gives LeNet-5-half: 3/8 filters, 60/42 units). BatchNorm
    after each conv is on by default so DeepInversion's BN-statistics loss has something to match;
    ``fc_batch_norm`` also puts one after each hidden fully connected layer, which gives that loss
    the statistics of the high-level features too (2 BN layers with 22 channels become 4 with 226).
    """

    def __init__(
        self, spec: DatasetSpec, width: PositiveFloat = 1.0, batch_norm: bool = True, fc_batch_norm: bool = False
    ) -> None:
        super().__init__()
        c1, c2, f1, f2 = (max(1, round(v * width)) for v in (6, 16, 120, 84))
        # Pad the first conv on 28x28 inputs so the feature map matches the classic 32x32 path.
        pad = 2 if spec.image_size < 32 else 0
        self.conv = nn.Sequential(
            *_conv_block(spec.channels, c1, 5, pad, batch_norm),
            *_conv_block(c1, c2, 5, 0, batch_norm),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(
            *_fc_block(flat_size(self.conv, spec.shape), f1, fc_batch_norm),
            *_fc_block(f1, f2, fc_batch_norm),
        )
        self.head = nn.Linear(f2, spec.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


class SmallCNN(Classifier):
    """Two 3x3 conv blocks (conv-BN-ReLU-pool) and one hidden layer; the usual FL benchmark CNN."""

    def __init__(
        self, spec: DatasetSpec, channels: PositiveInt = 32, hidden: PositiveInt = 128, batch_norm: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            *_conv_block(spec.channels, channels, 3, 1, batch_norm),
            *_conv_block(channels, 2 * channels, 3, 1, batch_norm),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(flat_size(self.conv, spec.shape), hidden), nn.ReLU(inplace=True))
        self.head = nn.Linear(hidden, spec.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


@register_model("lenet5")
def lenet5(spec: DatasetSpec, batch_norm: bool = True, fc_batch_norm: bool = False) -> LeNet5:
    return LeNet5(spec, width=1.0, batch_norm=batch_norm, fc_batch_norm=fc_batch_norm)


@register_model("lenet5_half")
def lenet5_half(spec: DatasetSpec, batch_norm: bool = True, fc_batch_norm: bool = False) -> LeNet5:
    return LeNet5(spec, width=0.5, batch_norm=batch_norm, fc_batch_norm=fc_batch_norm)


@register_model("small_cnn")
def small_cnn(
    spec: DatasetSpec, channels: PositiveInt = 32, hidden: PositiveInt = 128, batch_norm: bool = True
) -> SmallCNN:
    return SmallCNN(spec, channels=channels, hidden=hidden, batch_norm=batch_norm)
