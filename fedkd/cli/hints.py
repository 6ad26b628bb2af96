"""What to say instead of Hydra's ``+key=value`` hint when an override names a key the config lacks.

Hydra answers ``strategy.nosuch=1`` with "To append to your config use +strategy.nosuch=1" and
``fedkd-compare dataset=arrays`` with "use +dataset=arrays"; both suggestions fail again (the
option's schema or the tool's schema has no such key). :func:`override_error` words the real
problem in one line: the option or node that has no such key and the keys it has, the config
group the tool does not have and its groups, or -- in ``fedkd-compare`` -- the ``overrides=[...]``
that carries a setting of the runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fedkd.cli.help import COMMANDS, group_names
from fedkd.config import CompareConfig, SimConfig
from fedkd.errors import ConfigError
from fedkd.utils.option_schema import check_option_node, is_option_node

_NOT_OVERRIDDEN = re.compile(r"Could not override '([^']+)'")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("~+")


def _schema_keys(schema: type) -> list[str]:
    return [f.name for f in fields(schema) if not f.name.startswith("_")]


def override_error(compose: Any, config_name: str, argv: Sequence[str], exc: BaseException) -> ConfigError | None:
    """The one-line error for an override Hydra could not apply because the config lacks its key or
    group, or ``None`` (then Hydra's own reason is reported). ``compose(overrides)`` composes the
    entry point's config (to read the node the key was meant for)."""
    found = _NOT_OVERRIDDEN.search(str(exc))
    if found is None:
        return None
    key = found.group(1)
    override = next((o for o in argv if _key(o) == key), f"{key}=VALUE")
    if config_name == "compare":
        return _compare_error(key, override)
    command = COMMANDS.get(config_name, config_name)
    if "No match in the defaults list" in str(exc):
        return _missing_group(compose, config_name, key, [o for o in argv if o != override])
    try:
        cfg = compose([o for o in argv if o != override])
    except Exception:  # another override does not compose either: Hydra's reason for the first
        return None
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if is_option_node(node):
        trial = OmegaConf.create(OmegaConf.to_container(node, resolve=False))
        trial[leaf] = override.split("=", 1)[1] if "=" in override else None
        try:
            check_option_node(trial, parent)  # the option's own words: "<key> is not an option of <target>..."
        except ConfigError as error:
            return error
        return None  # the option takes any key: Hydra's +key=value is right
    if isinstance(node, DictConfig):
        keys = [str(k) for k in node if not str(k).startswith("_") and str(k) != "hydra"]
        where = f"'{parent}'" if parent else command
        return ConfigError(
            f"{key} is not a key of {where}; use one of its keys: {', '.join(keys)} (see {command} --help)"
        )
    return None


def _compare_error(key: str, override: str) -> ConfigError:
    """fedkd-compare's own keys, or a setting of the runs, which goes in ``overrides``."""
    top = key.split(".", 1)[0]
    if top in _schema_keys(SimConfig) or top in ("experiment",):
        return ConfigError(
            f"{key} is a setting of the runs, not of fedkd-compare; give it in overrides: "
            f"\"overrides=['{override}', ...]\" (every run), or \"+strategy_overrides.<strategy>=['{override}']\" "
            "(one strategy's runs)"
        )
    return ConfigError(
        f"{key} is not a key of fedkd-compare; use one of its keys: {', '.join(_schema_keys(CompareConfig))}, "
        "and give settings of the runs in \"overrides=['KEY=VALUE', ...]\" (see fedkd-compare --help)"
    )


def _missing_group(compose: Any, config_name: str, key: str, rest: Sequence[str]) -> ConfigError:
    """A config group the entry point does not have: name those it has."""
    command = COMMANDS.get(config_name, config_name)
    try:
        groups = group_names(config_name, compose(rest))
    except Exception:  # another override does not compose either
        groups = []
    have = f"; its groups: {', '.join(groups)}" if groups else ""
    return ConfigError(f"{command} has no config group '{key}'{have} (see {command} --help)")
