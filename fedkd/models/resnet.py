"""CIFAR-style ResNets (3x3 stem, no max-pool) and Wide ResNets, for 1- or 3-channel inputs.

ResNet-8 follows He et al.'s 6n+2 CIFAR family (16/32/64 channels); ResNet-18/34 use the
ImageNet widths (64..512) with the CIFAR stem, as is usual in data-free KD papers. WRN-d-k is
Zagoruyko & Komodakis' pre-activation wide network.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.errors import ConfigError
from fedkd.models.base import Classifier
from fedkd.models.registry import register_model
from fedkd.utils.option_types import PositiveInt, Range

Dropout = Annotated[float, Range(0, 1, high_open=True)]  # a share of units dropped in training


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(Classifier):
    def __init__(
        self, spec: DatasetSpec, widths: Annotated[list[int], Range(1)], blocks: Annotated[list[int], Range(1)]
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(spec.channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        stages, c_in = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                stages.append(BasicBlock(c_in, width, stride=2 if (i > 0 and j == 0) else 1))
                c_in = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(c_in, spec.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1).flatten(1)


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv twice, with a 1x1 projection when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.project = None if (c_in == c_out and stride == 1) else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = F.relu(self.bn2(out))
        out = F.dropout(out, self.dropout, self.training)
        out = self.conv2(out)
        return out + (x if self.project is None else self.project(pre))


class WideResNet(Classifier):
    def __init__(self, spec: DatasetSpec, depth: PositiveInt, widen: PositiveInt, dropout: Dropout = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ConfigError(f"model depth {depth} is not a valid WRN depth; use 6n+4 (16, 22, 28, 40)")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(spec.channels, widths[0], 3, 1, 1, bias=False)
        blocks, c_in = [], widths[0]
        for i, width in enumerate(widths[1:]):
            for j in range(n):
                blocks.append(WideBlock(c_in, width, stride=2 if (i > 0 and j == 0) else 1, dropout=dropout))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.head = nn.Linear(c_in, spec.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.stem(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


@register_model("resnet8")
def resnet8(spec: DatasetSpec) -> ResNet:
    return ResNet(spec, [16, 32, 64], [1, 1, 1])


@register_model("resnet18")
def resnet18(spec: DatasetSpec) -> ResNet:
    return ResNet(spec, [64, 128, 256, 512], [2, 2, 2, 2])


@register_model("resnet34")
def resnet34(spec: DatasetSpec) -> ResNet:
    return ResNet(spec, [64, 128, 256, 512], [3, 4, 6, 3])


def _register_wrn(depth: int, widen: int) -> None:
    @register_model(f"wrn{depth}_{widen}")
    def build(spec: DatasetSpec, dropout: Dropout = 0.0) -> WideResNet:
        return WideResNet(spec, depth, widen, dropout)


for _depth in (16, 40):
    for _widen in (1, 2, 4):
        _register_wrn(_depth, _widen)
