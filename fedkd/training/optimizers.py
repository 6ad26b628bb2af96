"""Optimisers built from config, with torch's complaints turned into one-line config errors.

``conf/optim/*.yaml`` are Hydra partials (``_target_: torch.optim.SGD``, ``_partial_: true``)
called with the parameters. torch checks their values (``Invalid learning rate: -1``) only then,
deep inside a run and with a traceback; :func:`optimizer_factory` checks them once, up front, on a
dummy parameter, and maps any later failure to the same :class:`ConfigError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any

import torch

from fedkd.errors import ConfigError
from fedkd.utils.option_types import NonNegativeFloat, PositiveFloat, Range, UnitFloat

OptimizerFactory = Callable[..., torch.optim.Optimizer]

Momentum = Annotated[float, Range(0, 1, high_open=True)]  # a decay factor of past gradients, in [0, 1)


# torch's signatures cannot carry a Range: these two annotate the numeric options of torch.optim.SGD
# and torch.optim.Adam/AdamW (conf/optim/*.yaml); fedkd.utils.option_schema.ANNOTATED_BY points at
# them, and the config is checked against them before anything runs.


def sgd_options(
    lr: PositiveFloat = 1e-3, momentum: Momentum = 0.0, dampening: UnitFloat = 0.0, weight_decay: NonNegativeFloat = 0.0
) -> None:
    """The valid ranges of ``torch.optim.SGD``'s numeric options (a schema; never called)."""


def adam_options(
    lr: PositiveFloat = 1e-3, betas: Annotated[tuple[float, float], Range(0, 1, high_open=True)] = (0.9, 0.999),
    eps: NonNegativeFloat = 1e-8, weight_decay: NonNegativeFloat = 0.0,
) -> None:
    """The valid ranges of ``torch.optim.Adam``'s (and ``AdamW``'s) numeric options (a schema; never called)."""


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
