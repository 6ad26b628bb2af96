"""``--help`` of each entry point: the config groups and settings that tool accepts, one line each.

Hydra's own ``--help`` lists every group of ``conf/`` for every tool (``strategy`` under
``fedkd-distill`` too), describes none, and offers the internal ``dataset_schema``. This help is
built from the tool's composed config (its groups and current choices, with the command line's
overrides applied) and its schema dataclass (:mod:`fedkd.config`: each field's ``help``).
Hydra's page stays available as ``--hydra-help``.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fedkd.config import CentralizedConfig, CompareConfig, SimConfig, TrainConfig
from fedkd.utils.option_schema import is_option_node, option_schema

#: The console command of each config (for messages).
COMMANDS = {"train": "fedkd-train", "sim": "fedkd-sim", "compare": "fedkd-compare", "centralized": "fedkd-distill"}
#: The schema of each entry point's config.
SCHEMAS: dict[str, type] = {
    "train": TrainConfig, "sim": SimConfig, "compare": CompareConfig, "centralized": CentralizedConfig,
}
#: Groups of a defaults list that no schema field describes.
GROUP_HELP = {"experiment": "presets that set several keys at once (conf/experiment/), e.g. experiment=one_shot"}
#: The flags the help mentions (``hydra.main`` handles them).
HELP_FLAGS = ("--help", "-h")

_GROUP_FIELD = re.compile(r"\(conf/(\w+)/\)")
_WIDTH = 110


def wants_help(argv: Sequence[str]) -> bool:
    """Whether the command line asks for this help (``--hydra-help`` stays Hydra's)."""
    return any(arg in HELP_FLAGS for arg in argv)


def _field(schema: type, path: str) -> Any:
    """The schema field at dotted ``path`` (``teacher.model``), or ``None``."""
    *parents, leaf = path.split(".")
    for part in parents:
        found = next((f for f in fields(schema) if f.name == part), None)
        if found is None or not is_dataclass(found.default_factory):
            return None
        schema = found.default_factory
    return next((f for f in fields(schema) if f.name == leaf), None)


def _help_of(schema: type, path: str) -> str:
    found = _field(schema, path)
    return "" if found is None else str(found.metadata.get("help", ""))


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if value == "":
        return '""'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):  # as the command line writes it: [fedavg,fedftg]
        return "[" + ",".join(_shown(v) for v in value) + "]"
    return str(value)


def _value(cfg: DictConfig, path: str) -> str:
    try:
        if OmegaConf.is_missing(cfg, path):
            return "???"
        value = OmegaConf.select(cfg, path, throw_on_missing=False)
        if isinstance(value, DictConfig | list) or OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        return _shown(value)
    except Exception:  # an interpolation that resolves only in a run (${now:...})
        return "?"


def _settings(schema: type, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted key, help)`` of every plain setting of ``schema``, nested schemas expanded; group
    fields (those whose help names ``conf/<group>/``) are left to the groups section."""
    for f in fields(schema):
        if f.name.startswith("_"):
            continue
        doc = str(f.metadata.get("help", ""))
        if is_dataclass(f.default_factory):
            yield from _settings(f.default_factory, f"{prefix}{f.name}.")
        elif not _GROUP_FIELD.search(doc):
            yield f"{prefix}{f.name}", doc


def _groups(cfg: DictConfig, schema: type) -> list[tuple[str, str, str, str]]:
    """``(group, package, choice, help)`` of each config group the tool has: its defaults list, and
    list-valued groups of the schema (``student_terms``)."""
    found = []
    for key, choice in cfg.hydra.runtime.choices.items():
        key = str(key)
        if key.startswith("hydra/"):
            continue
        group, _, package = key.partition("@")
        package = package or group
        found.append((group, package, _shown(choice), _help_of(schema, package) or GROUP_HELP.get(group, "")))
    listed = {package for _, package, _, _ in found}
    for path, doc in _all_fields(schema):
        match = _GROUP_FIELD.search(doc)
        if match and path not in listed:
            found.append((match.group(1), path, _value(cfg, path), doc))
    return sorted(found, key=lambda g: g[1])


def group_names(config_name: str, cfg: DictConfig) -> list[str]:
    """The config groups of the entry point (``model@student`` for a group at another package)."""
    return sorted(package if package == group else f"{group}@{package}"
                  for group, package, _, _ in _groups(cfg, SCHEMAS[config_name]))


def _all_fields(schema: type, prefix: str = "") -> Iterator[tuple[str, str]]:
    for f in fields(schema):
        if is_dataclass(f.default_factory):
            yield from _all_fields(f.default_factory, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", str(f.metadata.get("help", ""))


def _option_keys(cfg: DictConfig, package: str) -> list[str]:
    """The keys the chosen option at ``package`` takes (its target's signature), or none."""
    try:
        node = OmegaConf.select(cfg, package)
        if not is_option_node(node):
            return []
        schema = option_schema(str(node["_target_"]), node)
        return [] if schema is None else schema.accepted()
    except Exception:  # an option whose module does not import: its builder says so when it runs
        return []


def _wrapped(label: str, text: str, indent: int = 6) -> list[str]:
    return textwrap.wrap(f"{label}{text}", _WIDTH, initial_indent=" " * indent, subsequent_indent=" " * (indent + 2))


def help_text(config_name: str, cfg: DictConfig, group_options: Callable[[str], list[str]]) -> str:
    """The help page of the entry point whose config is ``conf/<config_name>.yaml``, composed as ``cfg``;
    ``group_options(group)`` lists a group's options (Hydra's config loader)."""
    schema = SCHEMAS[config_name]
    command = COMMANDS[config_name]
    summary = (schema.__doc__ or "").strip().splitlines()[0].replace("``", "")
    groups = _groups(cfg, schema)
    usage = f"{command} {'[GROUP=OPTION ...] ' if groups else ''}[KEY=VALUE ...]"
    lines = [summary, "", f"Usage: {usage}   (Hydra overrides of conf/{config_name}.yaml)"]
    if groups:
        lines += ["", "Config groups (GROUP=OPTION, or GROUP@PACKAGE=OPTION; an option's key: PACKAGE.KEY=VALUE):"]
        for group, package, choice, doc in groups:
            name = package if package == group else f"{group}@{package}"
            lines.append(f"  {f'{name}={choice}':<34} {doc}")
            options = [o for o in group_options(group) if not o.endswith("_schema")]
            lines += _wrapped("options: ", ", ".join(options))
            field = _field(schema, package)
            keys = [] if field is not None and is_dataclass(field.default_factory) else _option_keys(cfg, package)
            if keys:  # a schema node's keys (dataset) are listed among the settings
                lines += _wrapped(f"keys of {choice}: ", ", ".join(keys))
    lines += ["", "Settings (KEY=VALUE; the value now):"]
    for key, doc in _settings(schema):
        lines.append(f"  {f'{key}={_value(cfg, key)}':<34} {doc}")
    if config_name == "compare":
        lines += ["", "Settings of the runs (fedkd-sim's groups and keys, see fedkd-sim --help) go in overrides:",
                  "  fedkd-compare strategies=[fedavg,fedftg] seeds=[0,1] \"overrides=['dataset=mnist','rounds=20']\""]
    lines += ["", "Hydra's own flags: --hydra-help, --cfg job (print the composed config), -m (sweeps)."]
    return "\n".join(lines)
