"""Resume identity across the rename of strategies/ and clients/ to fedkd.strategies / fedkd.clients."""

import json

import pytest
from omegaconf import OmegaConf

from fedkd.errors import ConfigError
from fedkd.utils.run_state import check_identity, config_identity


def test_a_run_saved_with_the_old_import_names_still_resumes(tmp_path):
    now = OmegaConf.create({"seed": 0, "strategy": {"_target_": "fedkd.strategies.fedftg.FedFTG", "iterations": 20}})
    old = {"seed": 0, "strategy": {"_target_": "strategies.fedftg.FedFTG", "iterations": 20}}
    check_identity(now, tmp_path, {"config": json.dumps(old)}, lambda c: config_identity(c, ()))
    changed = dict(old, strategy={"_target_": "strategies.fedftg.FedFTG", "iterations": 5})
    with pytest.raises(ConfigError, match="differs from the run's in strategy"):
        check_identity(now, tmp_path, {"config": json.dumps(changed)}, lambda c: config_identity(c, ()))


def test_a_run_saved_before_the_key_renames_still_resumes(tmp_path):
    now = OmegaConf.create({"synthesizer": {"_target_": "x", "synthesis_steps": 60}, "student_batch_size": 128})
    old = {"distill": {"_target_": "x", "iterations": 60}, "batch_size": 128}
    check_identity(now, tmp_path, {"config": json.dumps(old)}, lambda c: config_identity(c, ()), "centralized")
    with pytest.raises(ConfigError, match="differs"):  # without the config's rename table they differ
        check_identity(now, tmp_path, {"config": json.dumps(old)}, lambda c: config_identity(c, ()))


@pytest.mark.parametrize(("config", "old", "new"), [
    ("centralized", "distill=cmi", "synthesizer=cmi"),
    ("centralized", "distill.iterations=3", "synthesizer.synthesis_steps=3"),
    ("centralized", "batch_size=64", "student_batch_size=64"),
    ("centralized", "+distill.extra=1", "+synthesizer.extra=1"),
    ("sim", "batch_size=16", "local_batch_size=16"),
    ("sim", "distill@strategy.synthesizer=dfad", "synthesizer@strategy.synthesizer=dfad"),
    ("sim", "strategy.iterations=4", "strategy.iterations_per_round=4"),
    ("sim", "strategy.synthesizer.iterations=4", "strategy.synthesizer.synthesis_steps=4"),
    ("train", "batch_size=64", "batch_size=64"),  # fedkd-train kept its name
])
def test_old_override_names_are_rewritten_with_a_notice(config, old, new):
    from fedkd.config_renames import renamed_overrides

    out, notices = renamed_overrides(config, [old, "seed=1"])
    assert out == [new, "seed=1"]
    assert len(notices) == (old != new) and all(n.startswith("fedkd: deprecated: ") and "\n" not in n for n in notices)
