"""Checks that a model fits the data it is about to train on, run before the first round or epoch.

A model whose output width differs from the class count either trains silently on outputs no
label reaches (more outputs) or fails deep in the loss with ``IndexError: Target 8 is out of
bounds`` (fewer); a model too deep for small images fails in its first convolution. One forward
pass on one real training image, in eval mode and without gradients (no RNG drawn, no BatchNorm
statistics moved), finds all three and names the remedy.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from fedkd.data import DataBundle
from fedkd.data.sanity import check_training_data
from fedkd.errors import ConfigError
from fedkd.models.registry import build_from_config

#: The side that fedkd's LeNet-5 and ResNets take (the built-in datasets are 28x28 or 32x32).
SMALLEST_USUAL_SIDE = 28


def build_checked(node, data: DataBundle, name: str) -> nn.Module:
    """The model the config ``node`` describes, built for ``data`` and checked by
    :func:`check_model_fits`. A model that sizes its layers by running an empty image through them
    (LeNet-5) fails while being built when the images are too small: that is the same one line."""
    try:
        model = build_from_config(node, data.spec)
    except RuntimeError as exc:
        raise _cannot_take(exc, data, name) from None
    check_model_fits(model, data, name)
    return model


def check_model_fits(model: nn.Module, data: DataBundle, name: str) -> None:
    """Raise a one-line :class:`ConfigError` when ``model`` cannot classify ``data``'s images.

    ``name`` names the model in the message (``"model lenet5"``, ``"student lenet5_half"``). The
    model stays on its device and in its train/eval mode.
    """
    spec = data.spec
    shape = _shape(data)
    param = next(iter(model.parameters()), None)
    x = data.train.x[:1].to(param.device if param is not None else "cpu")
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except RuntimeError as exc:
        raise _cannot_take(exc, data, name) from None
    finally:
        model.train(training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"{name} returns {got} for one {shape} image; a classifier returns logits of shape (batch, num_classes)"
        )
    width = int(out.shape[1])
    if width != spec.num_classes:
        effect = (
            f"outputs {spec.num_classes}..{width - 1} match no label"
            if width > spec.num_classes
            else f"labels {width}..{spec.num_classes - 1} have no output to train"
        )
        raise ConfigError(
            f"{name} gives {width} outputs but {spec.name} has {spec.num_classes} classes ({effect}); "
            f"leave num_classes out of the model config (fedkd passes the data's count) or set it to {spec.num_classes}"
        )


def _shape(data: DataBundle) -> str:
    return "x".join(str(d) for d in data.train.x.shape[1:])


def _cannot_take(exc: RuntimeError, data: DataBundle, name: str) -> ConfigError:
    """The one line for a model whose forward fails on one image of ``data`` (torch's first line kept)."""
    text = str(exc).strip()
    reason = text.splitlines()[0][:160] if text else type(exc).__name__
    side, shape = int(data.train.x.shape[-1]), _shape(data)
    remedy = (
        f"resize the images with dataset.image_size={SMALLEST_USUAL_SIDE} (or larger), or choose a model "
        f"for {side}x{side} images"
        if side < SMALLEST_USUAL_SIDE
        else f"choose a model for {shape} images, or fix its forward"
    )
    return ConfigError(f"{name} cannot take one {shape} image of {data.spec.name} ({reason}); {remedy}")


def check_inputs(data: DataBundle, models: Mapping[str, nn.Module]) -> None:
    """The data checks (:func:`fedkd.data.sanity.check_training_data`), then every model's
    (:func:`check_model_fits`; the keys of ``models`` name them in the messages)."""
    check_training_data(data)
    for name, model in models.items():
        check_model_fits(model, data, name)
