"""Build models by name.

Each entry is a function ``(spec, **kwargs) -> nn.Module`` registered with :func:`register_model`;
configuration picks the name (``model.name``) and code never branches on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.errors import ConfigError
from fedkd.utils.option_types import Forward

ModelBuilder = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelBuilder] = {}
_KINDS: dict[str, str] = {}

#: This package's modules whose classifiers register themselves on import, loaded on the first
#: lookup. Generators live one layer up (``fedkd.datafree.generators``) and register when that
#: layer is imported: whoever builds a generator imports it (models never import upwards).
BUILTIN_MODULES = ("fedkd.models.lenet", "fedkd.models.resnet")


def _load_builtins() -> None:
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def register_model(name: str, kind: str = "classifier") -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: make ``fn(spec, **kwargs)`` buildable as ``build_model(name, spec)``.

    ``kind`` is ``"classifier"`` (maps images to logits) or ``"generator"`` (maps noise, and
    possibly labels, to images or features).
    """

    def wrap(fn: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        _REGISTRY[name] = fn
        _KINDS[name] = kind
        return fn

    return wrap


def list_models(kind: str | None = None) -> list[str]:
    """Registered names, optionally only those of one ``kind``."""
    _load_builtins()
    return sorted(n for n in _REGISTRY if kind is None or _KINDS[n] == kind)


def registered(name: str) -> ModelBuilder:
    """The builder registered as ``name``; a one-line error lists the registered names."""
    if name not in _REGISTRY:
        _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"model name '{name}' is not registered; choose one of: {', '.join(list_models())}"
        ) from None


def build_model(
    name: str, spec: DatasetSpec, **kwargs: Annotated[Any, Forward(choice="name", lookup=registered)]
) -> nn.Module:
    """Build registered model ``name`` for inputs and classes described by ``spec`` (``kwargs``: the
    options of that model's builder, which is also the schema its config node is checked against)."""
    return registered(name)(spec, **kwargs)


#: ``_target_`` values that mean "the registry builder": the model is looked up by ``name``.
REGISTRY_TARGETS = ("fedkd.models.build_model", "fedkd.models.registry.build_model")


def model_config(cfg) -> dict:
    """The plain dict of a Hydra model config, as clients, the server and checkpoints carry it.

    A registry model is ``{"name": ..., **kwargs}`` (fedkd's ``_target_`` and ``_partial_``
    dropped); your own model keeps its ``_target_`` (``{"_target_": "mypackage.nets.MyNet",
    **kwargs}``) so every process that rebuilds it from this dict builds the same class.
    """
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
    target = plain.get("_target_")
    kwargs = {k: v for k, v in plain.items() if not k.startswith("_")}
    if target is not None and target not in REGISTRY_TARGETS:
        return {"_target_": target, **kwargs}
    return kwargs


def model_label(cfg) -> str:
    """A short name of a model config for logs: the registry name, or your class's dotted path."""
    plain = model_config(cfg)
    return str(plain.get("_target_") or plain.get("name"))


def build_from_config(cfg, spec: DatasetSpec) -> nn.Module:
    """Build the model that a ``conf/model/*.yaml`` config (or its plain dict) describes.

    With ``_target_`` other than fedkd's builder, that importable class or factory is called
    (:func:`fedkd.models.custom.build_custom`); otherwise the registry model ``name``.
    """
    kwargs = model_config(cfg)
    target = kwargs.pop("_target_", None)
    if target is not None:
        from fedkd.models.custom import build_custom

        return build_custom(target, spec, kwargs)
    if "name" not in kwargs:
        raise ConfigError(
            f"model config {kwargs} has neither 'name' (a registered model) nor '_target_' (your model class); "
            "use e.g. model=lenet5, or model=custom model._target_=mypackage.nets.MyNet"
        )
    return build_model(kwargs.pop("name"), spec, **kwargs)
