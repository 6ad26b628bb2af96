"""Optimisers built from config, with torch's complaints turned into one-line config errors.

``conf/optim/*.yaml`` are Hydra partials (``_target_: torch.optim.SGD``, ``_partial_: true``)
called with the parameters. torch checks their values (``Invalid learning rate: -1``) only then,
deep inside a run and with a traceback; :func:`optimizer_factory` checks them once, up front, on a
dummy parameter, and maps any later failure to the same :class:`ConfigError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from fedkd.errors import ConfigError

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def _config_error(key: str, exc: Exception) -> ConfigError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ConfigError(f"{key} cannot build its optimiser ({reason}); fix {key} (e.g. {key}.lr=0.01)")


def optimizer_factory(factory: OptimizerFactory, key: str) -> OptimizerFactory:
    """``factory`` (``factory(params, **kw) -> Optimizer``) checked now on a dummy parameter and
    wrapped so that a later failure is a one-line :class:`ConfigError` naming ``key``."""

    def build(params: Iterable[torch.nn.Parameter], **kwargs: Any) -> torch.optim.Optimizer:
        try:
            return factory(params, **kwargs)
        except (ValueError, TypeError) as exc:
            raise _config_error(key, exc) from None

    build([torch.nn.Parameter(torch.zeros(1))])
    return build
