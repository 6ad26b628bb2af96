"""Input validation as a class: every numeric field of every config schema declares its valid range,
and the entry points' checks refuse a value outside it in one line.

The same holds for option nodes (``conf/<group>/*.yaml``): each YAML key is a parameter of the node's
``_target_``, and every numeric parameter of those targets declares a ``Range`` in its type hint
(:mod:`fedkd.utils.option_types`).
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from fedkd import config as C
from fedkd.errors import ConfigError
from fedkd.utils.option_schema import check_option_node, option_schema
from fedkd.utils.option_types import numeric, ranges

SCHEMAS = [C.TrainConfig, C.SimConfig, C.CentralizedConfig, C.CompareConfig, C.DatasetConfig]


def _all_schemas() -> list[type]:
    seen, todo = [], list(SCHEMAS)
    while todo:
        schema = todo.pop()
        if schema in seen:
            continue
        seen.append(schema)
        todo += [f.default_factory for f in fields(schema) if is_dataclass(f.default_factory)]
    return seen


def _numeric(schema: type, name: str) -> bool:
    hint = typing.get_type_hints(schema)[name]
    args = typing.get_args(hint) or (hint,)
    return any(a in (int, float) for a in args) and bool not in args


def test_every_numeric_schema_field_declares_its_range():
    missing = [f"{s.__name__}.{f.name}" for s in _all_schemas() for f in fields(s)
               if _numeric(s, f.name) and "range" not in f.metadata]
    assert not missing, f"give these fields a range with fedkd.config.ranged(...): {missing}"


@pytest.mark.parametrize(("check", "schema", "override", "message"), [
    (C.check_sim, C.SimConfig, {"num_clients": 0}, "num_clients must be >= 1 (got 0)"),
    (C.check_sim, C.SimConfig, {"faults": {"raise_fraction": 1.5}},
     "faults.raise_fraction must be >= 0 and <= 1 (got 1.5)"),
    (C.check_sim, C.SimConfig, {"client_resources": {"num_cpus": 0.0}},
     "client_resources.num_cpus must be > 0 (got 0.0)"),
    (C.check_sim, C.SimConfig, {"dataset": {"name": "digits", "test_fraction": 1.0}},
     "dataset.test_fraction must be > 0 and < 1"),
    (C.check_centralized, C.CentralizedConfig, {"teacher": {"augment": {"shift": -1}}},
     "teacher.augment.shift must be >= 0"),
    (C.check_centralized, C.CentralizedConfig, {"preview_images": -1}, "preview_images must be >= 0 (got -1)"),
    (C.check_train, C.TrainConfig, {"eval_batch_size": 0}, "eval_batch_size must be >= 1"),
])
def test_values_outside_the_range_end_in_one_line(check, schema, override, message):
    cfg = OmegaConf.merge(OmegaConf.structured(schema), override)
    with pytest.raises(ConfigError) as info:
        check(cfg)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_values_inside_the_range_and_nulls_pass():
    cfg = OmegaConf.merge(
        OmegaConf.structured(C.SimConfig), {"faults": {"raise_fraction": 1.0}, "backend": {"num_cpus": None}}
    )
    C.check_sim(cfg)


def test_lists_of_numbers_are_checked_item_by_item():
    cfg = OmegaConf.merge(OmegaConf.structured(C.CompareConfig), {"seeds": [0, -3]})
    with pytest.raises(ConfigError, match=r"seeds must be >= 0 \(got -3\)"):
        C.check_ranges(cfg, C.CompareConfig)


# --- option nodes: every YAML of every option group, against its target's signature

#: Option groups, the entry point whose config composes each option, and the override that picks it.
GROUPS = {
    "model": ("train", "model={}"),
    "optim": ("train", "optim={}"),
    "partition": ("sim", "partition={}"),
    "strategy": ("sim", "strategy={}"),
    "synthesizer": ("centralized", "synthesizer={}"),
    "student_terms": ("centralized", "student_terms=[{}]"),
}
#: Folders of conf/ that hold no option of their own: typed by a dataclass schema above (dataset),
#: presets of other keys (experiment), the replay wrapper's settings (composed into synthesizer=replay_*).
NOT_OPTION_GROUPS = {"dataset", "experiment", "replay"}
#: Options without a target to check: your own model names its class on the command line.
NO_TARGET = {"model/custom"}

#: Library code we cannot annotate: flwr-datasets' partitioners check their own values when built
#: (fedkd.data.flwr_partitions.flower turns a refusal into one line).
LIBRARIES = ("flwr_datasets.",)


def _option_nodes(value: object, path: str) -> Iterator[tuple[str, DictConfig]]:
    """Every node with ``_target_`` in ``value``, nested ones included."""
    if isinstance(value, DictConfig):
        if "_target_" in value:
            yield path, value
        for key in value:
            if not OmegaConf.is_missing(value, key):
                yield from _option_nodes(value[key], f"{path}.{key}")
    elif isinstance(value, ListConfig):
        for i, item in enumerate(value):
            yield from _option_nodes(item, f"{path}[{i}]")


@pytest.fixture(scope="module")
def composed_options() -> dict[str, DictConfig]:
    """``{"group/option": the composed node}`` for every YAML of every option group."""
    C.register_schemas()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    out = {}
    with initialize_config_dir(config_dir=C.CONF_DIR, version_base="1.3"):
        for group, (entry, override) in GROUPS.items():
            for yaml in sorted(Path(C.CONF_DIR, group).glob("*.yaml")):
                cfg = compose(config_name=entry, overrides=[override.format(yaml.stem)])
                out[f"{group}/{yaml.stem}"] = cfg[group]
    GlobalHydra.instance().clear()
    return out


def test_every_conf_folder_is_an_option_group_or_listed():
    folders = {p.name for p in Path(C.CONF_DIR).iterdir() if p.is_dir()}
    assert folders == set(GROUPS) | NOT_OPTION_GROUPS, "add the new conf/ folder to GROUPS (or NOT_OPTION_GROUPS)"


def test_every_option_key_is_a_parameter_of_its_target_and_every_numeric_parameter_has_a_range(composed_options):
    unranged, untyped = [], []
    for option, node in composed_options.items():
        if option in NO_TARGET:
            continue
        group = option.split("/")[0]
        nodes = list(_option_nodes(node, group))
        assert nodes, f"{option} has no _target_"
        for path, sub in nodes:
            schema = option_schema(str(sub._target_), sub)
            assert schema is not None, f"{option}: {path}._target_ {sub._target_} cannot be located"
            check_option_node(sub, path)  # a YAML key the target does not take, a wrong type, a value out of range
            for name, hint in schema.params.items():
                owner = schema.owners[name]
                if owner.startswith(LIBRARIES):
                    continue
                if numeric(hint) and not ranges(hint):
                    unranged.append(f"{owner}({name}) in {option}")
                if hint is typing.Any and name in sub:
                    untyped.append(f"{owner}({name}) in {option}")
    assert not unranged, f"give these parameters a Range (fedkd.utils.option_types): {sorted(set(unranged))}"
    assert not untyped, f"give these parameters a type hint: {sorted(set(untyped))}"
