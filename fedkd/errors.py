"""User-facing errors.

Every problem a user can fix (bad config value, missing file, wrong checkpoint) is raised as a
:class:`FedkdError` whose message names the problem and the remedy on one line. The command-line
entry points catch it, print that line and exit non-zero without a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class FedkdError(Exception):
    """An error caused by input the user can fix. The message is one line: problem; remedy."""


class ConfigError(FedkdError):
    """A configuration value is invalid. The message names the config key."""


class DataError(FedkdError):
    """A dataset cannot be found or read."""


class CheckpointError(FedkdError):
    """A checkpoint is missing, unreadable or does not fit the model it is loaded into."""


def check_choice(key: str, value: object, choices: Sequence[str]) -> None:
    """Raise the one-line :class:`ConfigError` for a ``key`` whose ``value`` is not among ``choices``."""
    if value not in choices:
        raise ConfigError(f"{key} '{value}' is unknown; choose one of: {', '.join(choices)}")
