"""The checks synthesizer constructors share: settings that must be positive, non-negative, or Adam's betas.

Each raises a one-line :class:`~fedkd.errors.ConfigError` that names the ``synthesizer.<key>`` to fix,
so every method words the same mistake the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedkd.errors import ConfigError


def check_positive(**values: float) -> None:
    """Sizes, step counts and rates that must be > 0."""
    for key, value in values.items():
        if value is None or value <= 0:
            raise ConfigError(f"synthesizer.{key} must be > 0 (got {value}); set synthesizer.{key}=<positive number>")


def check_non_negative(**values: float) -> None:
    """Loss weights and sizes that may be 0 (off) but not negative."""
    for key, value in values.items():
        if value is None or value < 0:
            raise ConfigError(f"synthesizer.{key} must be >= 0 (got {value}); set synthesizer.{key}=0 to switch it off")


def check_betas(betas: Sequence[float]) -> tuple[float, float]:
    """Adam's two decay rates, each in [0, 1), as a tuple of floats."""
    betas = tuple(betas)
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(
            f"synthesizer.betas must be two numbers in [0, 1) (got {list(betas)}); "
            "set synthesizer.betas=[<beta1>,<beta2>], e.g. [0.9,0.999]"
        )
    return float(betas[0]), float(betas[1])
