"""Every setting of the entry points' schemas has the one-line description ``--help`` shows."""

from __future__ import annotations

from dataclasses import fields, is_dataclass

import pytest

from fedkd.config import CentralizedConfig, CompareConfig, SimConfig, TrainConfig


def _undescribed(schema: type, prefix: str = "") -> list[str]:
    missing = []
    for f in fields(schema):
        if f.name.startswith("_"):
            continue
        if is_dataclass(f.default_factory):
            missing += _undescribed(f.default_factory, f"{prefix}{f.name}.")
        if not str(f.metadata.get("help", "")).strip():
            missing.append(f"{prefix}{f.name}")
    return missing


@pytest.mark.parametrize("schema", [TrainConfig, SimConfig, CompareConfig, CentralizedConfig])
def test_every_schema_field_has_help(schema):
    assert _undescribed(schema) == []
