"""Input validation as a class: every numeric field of every config schema declares its valid range,
and the entry points' checks refuse a value outside it in one line."""

from __future__ import annotations

import typing
from dataclasses import fields, is_dataclass

import pytest
from omegaconf import OmegaConf

from fedkd import config as C
from fedkd.errors import ConfigError

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
    (C.check_sim, C.SimConfig, {"faults": {"raise_fraction": 1.5}}, "faults.raise_fraction must be >= 0 and <= 1 (got 1.5)"),
    (C.check_sim, C.SimConfig, {"client_resources": {"num_cpus": 0.0}}, "client_resources.num_cpus must be > 0 (got 0.0)"),
    (C.check_sim, C.SimConfig, {"dataset": {"name": "digits", "test_fraction": 1.0}}, "dataset.test_fraction must be > 0 and < 1"),
    (C.check_centralized, C.CentralizedConfig, {"teacher": {"augment": {"shift": -1}}}, "teacher.augment.shift must be >= 0"),
    (C.check_centralized, C.CentralizedConfig, {"preview_images": -1}, "preview_images must be >= 0 (got -1)"),
    (C.check_train, C.TrainConfig, {"eval_batch_size": 0}, "eval_batch_size must be >= 1"),
])
def test_values_outside_the_range_end_in_one_line(check, schema, override, message):
    cfg = OmegaConf.merge(OmegaConf.structured(schema), override)
    with pytest.raises(ConfigError) as info:
        check(cfg)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_values_inside_the_range_and_nulls_pass():
    cfg = OmegaConf.merge(OmegaConf.structured(C.SimConfig), {"faults": {"raise_fraction": 1.0}, "backend": {"num_cpus": None}})
    C.check_sim(cfg)


def test_lists_of_numbers_are_checked_item_by_item():
    cfg = OmegaConf.merge(OmegaConf.structured(C.CompareConfig), {"seeds": [0, -3]})
    with pytest.raises(ConfigError, match=r"seeds must be >= 0 \(got -3\)"):
        C.check_ranges(cfg, C.CompareConfig)
