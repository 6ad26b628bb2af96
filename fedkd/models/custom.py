"""Your own model: ``model._target_=mypackage.nets.MyNet``.

Any importable ``nn.Module`` class or factory function works. It is called with keyword
arguments only:

- ``spec`` (the :class:`~fedkd.data.specs.DatasetSpec`) when its signature has a ``spec``
  parameter; otherwise ``num_classes``, ``in_channels`` and ``image_size`` are filled from the
  spec for parameters of those names the config does not set;
- every other key of the model config (``model.width=64`` -> ``width=64``). ``name`` is only a
  label and is passed only when the signature takes it.

What features need from the model is checked by inspection when a feature starts
(:func:`linear_head`, :func:`batchnorm_layers_of`), and a missing part ends with one line naming it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.errors import ConfigError
from fedkd.models.base import batchnorm_layers

#: Parameters filled from the dataset spec when the factory has them and the config does not set them.
SPEC_ARGUMENTS = ("num_classes", "in_channels", "image_size")


def locate(target: str) -> Callable[..., Any]:
    """Import ``package.module.Name`` (the longest importable module prefix, then attributes)."""
    if target in ("???", ""):
        raise ConfigError(
            "model._target_ is not set; give your class or factory, e.g. model._target_=mypackage.nets.MyNet"
        )
    parts = target.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise ConfigError(f"model._target_ '{target}' is not a dotted path; give e.g. mypackage.nets.MyNet")
    error = ""
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            error = str(exc)
            if exc.name is not None and not module_name.startswith(exc.name):
                break  # the module exists but imports something missing: report that
            continue
        except Exception as exc:  # the module itself fails (SyntaxError, an error at import)
            raise ConfigError(
                f"model._target_ '{target}': importing {module_name} fails "
                f"({type(exc).__name__}: {str(exc)[:120]}); fix that module"
            ) from None
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            return obj
        except AttributeError:
            raise ConfigError(
                f"model._target_ '{target}': {module_name} has no {'.'.join(parts[cut:])}; check the name"
            ) from None
    raise ConfigError(
        f"model._target_ '{target}' cannot be imported ({error}); install its package or add its folder to PYTHONPATH"
    )


def _signature(factory: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool] | None:
    """Keyword-usable parameters and whether ``**kwargs`` is accepted (None: unknown signature)."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    params = {
        n: p for n, p in sig.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return params, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())


def build_custom(target: str, spec: DatasetSpec, options: dict[str, Any]) -> nn.Module:
    """Call the class or factory ``target`` for ``spec`` with the config's ``options``."""
    factory = locate(target)
    if not callable(factory):
        raise ConfigError(
            f"model._target_ '{target}' is a {type(factory).__name__}, not a class or function; "
            "give an nn.Module class or a factory"
        )
    kwargs = dict(options)
    signature = _signature(factory)
    if signature is not None:
        params, var_kw = signature
        if "name" in kwargs and "name" not in params and not var_kw:
            kwargs.pop("name")  # a label (logs, group keys), not an argument
        if "spec" in params:
            kwargs["spec"] = spec
        else:
            values = {"num_classes": spec.num_classes, "in_channels": spec.channels, "image_size": spec.image_size}
            for key in SPEC_ARGUMENTS:
                if key in params and key not in kwargs:
                    kwargs[key] = values[key]
        unknown = sorted(k for k in kwargs if k not in params) if not var_kw else []
        if unknown:
            raise ConfigError(
                f"model._target_ '{target}' takes no argument {', '.join(unknown)}; remove them from the model config "
                "(start from model=custom, or model@student=custom in fedkd-distill, not a registry model's config) "
                "or add them to its signature"
            )
        missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in kwargs]
        if missing:
            raise ConfigError(
                f"model._target_ '{target}' needs {', '.join(missing)}; set model.{missing[0]}=... "
                f"({', '.join(SPEC_ARGUMENTS)} and spec are filled from the dataset)"
            )
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"model._target_ '{target}' does not take these options ({str(exc)[:160]}); fix the model config"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model._target_ '{target}' returned a {type(model).__name__}, not a torch.nn.Module; return the network"
        )
    if not any(True for _ in model.parameters()):
        raise ConfigError(
            f"model._target_ '{target}' built a {type(model).__name__} without parameters; "
            "give a network with trainable layers"
        )
    return model


def linear_head(model: nn.Module, feature: str) -> nn.Linear:
    """The model's classifier head, ``model.head``: the ``nn.Linear`` from penultimate features to logits.

    FedGen generates penultimate features and trains/regularises through this layer, and the
    clients' replies carry it as ``head.weight``/``head.bias``.
    """
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise ConfigError(
            f"{feature} needs a model whose last layer is an nn.Linear attribute named 'head' "
            "(penultimate features -> logits); "
            f"{type(model).__name__} has none: end its forward with self.head = nn.Linear(features, num_classes)"
        )
    return head


def batchnorm_layers_of(model: nn.Module, feature: str) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers with running statistics; a one-line error when there are none."""
    layers = [m for m in batchnorm_layers(model) if m.running_mean is not None]
    if not layers:
        raise ConfigError(
            f"{feature} needs BatchNorm layers with running statistics in {type(model).__name__}, which has none; "
            "add nn.BatchNorm2d after its convolutions or turn the feature off"
        )
    return layers
