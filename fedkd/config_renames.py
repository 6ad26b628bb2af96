"""Config keys renamed in 0.2 (one name per concept): old overrides keep working until 0.3.

The entry points (:mod:`fedkd.cli.common`), ``flwr run`` and ``fedkd-compare``
(:func:`fedkd.federated.config.compose_sim_config`) rewrite old overrides with a one-line notice;
a run folder saved under the old names still resumes (:mod:`fedkd.utils.run_state`).
"""

from __future__ import annotations

from typing import Any

#: Keys renamed in 0.2 (one name per concept), per config: old override key -> new. The old names
#: keep working until 0.3, with a one-line notice (:func:`renamed_overrides`).
RENAMED_KEYS: dict[str, dict[str, str]] = {
    "centralized": {
        "distill": "synthesizer",  # the config group: one name in fedkd-distill and the strategy
        "batch_size": "student_batch_size",
        "synthesizer.iterations": "synthesizer.synthesis_steps",
        # the student's recipe: one node, not the synthesizer's own settings (fedkd.datafree.StudentRecipe)
        "synthesizer.student_steps": "synthesizer.student.steps",
        "synthesizer.student_loss": "synthesizer.student.loss",
        "synthesizer.temperature": "synthesizer.student.temperature",
        "synthesizer.base.student_steps": "synthesizer.base.student.steps",
        "synthesizer.base.student_loss": "synthesizer.base.student.loss",
        "synthesizer.base.temperature": "synthesizer.base.student.temperature",
    },
    "sim": {
        "batch_size": "local_batch_size",
        "distill": "synthesizer",
        "strategy.iterations": "strategy.iterations_per_round",
        "strategy.batch_size": "strategy.student_batch_size",
        "strategy.synthesizer.iterations": "strategy.synthesizer.synthesis_steps",
        "strategy.synthesizer.student_steps": "strategy.synthesizer.student.steps",
        "strategy.synthesizer.student_loss": "strategy.synthesizer.student.loss",
        "strategy.synthesizer.temperature": "strategy.synthesizer.student.temperature",
        "strategy.synthesizer.base.student_steps": "strategy.synthesizer.base.student.steps",
        "strategy.synthesizer.base.student_loss": "strategy.synthesizer.base.student.loss",
        "strategy.synthesizer.base.temperature": "strategy.synthesizer.base.student.temperature",
    },
}

#: Where each config keeps its synthesizer node (:func:`upgrade_synthesizer_identity`).
SYNTHESIZER_NODES: dict[str, str] = {"centralized": "synthesizer", "sim": "strategy.synthesizer"}


def upgrade_synthesizer_identity(node: dict[str, Any]) -> dict[str, Any]:
    """A saved synthesizer node from before the student recipe got its own ``student`` node,
    completed as the YAMLs write it now (after :data:`RENAMED_KEYS` moved ``student_steps``,
    ``student_loss`` and ``temperature`` into it), so the run folder still resumes: DFAD's
    implicit temperature 1 written out, a replay wrapper's ``student`` node (its base's recipe),
    ZSKT's generator temperature (the student's, as it was). A current node passes unchanged."""
    base = node.get("base")
    if isinstance(base, dict):
        upgrade_synthesizer_identity(base)
        if "student" not in node and isinstance(base.get("student"), dict):
            node["student"] = dict(base["student"])
    student = node.get("student")
    if isinstance(student, dict):
        student.setdefault("temperature", 1.0)  # DFAD's YAML had none: its class default, 1
        if str(node.get("_target_", "")).endswith("ZSKTSynthesizer"):
            node.setdefault("kl_temperature", student["temperature"])
    return node


def _rename_key(key: str, table: dict[str, str]) -> str:
    """``key`` under its new name: every renamed prefix replaced (``distill.iterations`` passes
    through ``synthesizer.iterations`` to ``synthesizer.synthesis_steps``)."""
    for _ in range(len(table) + 1):
        match = next((old for old in sorted(table, key=len, reverse=True) if key == old or key.startswith(old + ".")), None)
        if match is None:
            break
        key = table[match] + key[len(match):]
    return key


def renamed_overrides(config_name: str, overrides: list[str]) -> tuple[list[str], list[str]]:
    """``overrides`` with renamed keys replaced, and one notice per replaced override.

    Handles ``key=value``, ``+key=``, ``~key``, ``group@package=option`` (both sides renamed).
    """
    table = RENAMED_KEYS.get(config_name, {})
    out, notices = [], []
    for item in overrides:
        prefix = item[: len(item) - len(item.lstrip("+~"))]
        body = item[len(prefix):]
        key, sep, value = body.partition("=")
        group, at, package = key.partition("@")
        new_key = _rename_key(group, table) + (at + _rename_key(package, table) if at else "")
        if new_key != key:
            new = f"{prefix}{new_key}{sep}{value}"
            notices.append(f"fedkd: deprecated: {item} is now {new} (the old name works until 0.3)")
            item = new
        out.append(item)
    return out, notices
