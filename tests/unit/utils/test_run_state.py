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
