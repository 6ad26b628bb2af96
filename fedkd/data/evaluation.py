"""Which real images a run reports on: the test set, or a holdout carved from the training set.

Settings (a synthesizer's weights, a strategy's options) must be chosen without looking at the
test set. ``evaluate_on=holdout`` reports on the last ``holdout_size`` training images instead; the
centralized student never trains on real data, and the federated partitions leave those images to
no client (:func:`fedkd.federated.data.partitions`), so the holdout is unseen by whoever is measured.
"""

from __future__ import annotations

from fedkd.data.bundle import DataBundle, Split
from fedkd.errors import ConfigError, check_choice

EVALUATE_ON = ("test", "holdout")


def holdout_count(evaluate_on: str, holdout_size: int, train_size: int) -> int:
    """Training images set aside for evaluation: ``holdout_size`` with ``evaluate_on=holdout``, else 0."""
    check_choice("evaluate_on", evaluate_on, EVALUATE_ON)
    if evaluate_on == "test":
        return 0
    if not 0 < holdout_size < train_size:
        raise ConfigError(
            f"holdout_size={holdout_size} must leave training images and keep some (the set has {train_size}); "
            f"set holdout_size between 1 and {train_size - 1}"
        )
    return int(holdout_size)


def evaluation_split(data: DataBundle, evaluate_on: str, holdout_size: int) -> tuple[str, Split]:
    """``(name, split)`` to report on: ``("test", data.test)``, or ``("holdout", last training images)``."""
    size = holdout_count(evaluate_on, holdout_size, len(data.train))
    if size == 0:
        return "test", data.test
    n = len(data.train)
    return "holdout", data.train.subset(range(n - size, n))
