"""Build models by name.

Each entry is a function ``(spec, **kwargs) -> nn.Module`` registered with :func:`register_model`;
configuration picks the name (``model.name``) and code never branches on it.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.errors import ConfigError

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


def build_model(name: str, spec: DatasetSpec, **kwargs) -> nn.Module:
    """Build registered model ``name`` for inputs and classes described by ``spec``."""
    if name not in _REGISTRY:
        _load_builtins()
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"model name '{name}' is not registered; choose one of: {', '.join(list_models())}"
        ) from None
    return builder(spec, **kwargs)


def model_config(cfg) -> dict:
    """The plain ``{"name": ..., **kwargs}`` of a Hydra model config (``_target_`` etc. dropped)."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
    return {k: v for k, v in plain.items() if not k.startswith("_")}


def build_from_config(cfg, spec: DatasetSpec) -> nn.Module:
    """Build the model that a ``conf/model/*.yaml`` config (or its plain dict) describes."""
    kwargs = model_config(cfg)
    return build_model(kwargs.pop("name"), spec, **kwargs)
