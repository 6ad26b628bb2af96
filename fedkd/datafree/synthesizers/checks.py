"""The check synthesizer constructors share beyond their ranges: Adam's betas.

A setting's range is declared once, in the constructor's type hint (``lr: PositiveFloat``), and
checked from there, both in a composed config (:mod:`fedkd.utils.option_schema`) and on every
direct call (:func:`fedkd.utils.option_schema.checked`). What a range cannot say stays here, with a
one-line :class:`~fedkd.errors.ConfigError` that names the ``synthesizer.<key>`` to fix.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedkd.errors import ConfigError


def check_betas(betas: Sequence[float]) -> tuple[float, float]:
    """Adam's two decay rates, each in [0, 1), as a tuple of floats."""
    betas = tuple(betas)
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(
            f"synthesizer.betas must be two numbers in [0, 1) (got {list(betas)}); "
            "set synthesizer.betas=[<beta1>,<beta2>], e.g. [0.9,0.999]"
        )
    return float(betas[0]), float(betas[1])
