"""Resume identity: the import-path move of strategies/ and clients/, and keys this version does not know."""

import json

import pytest
from omegaconf import OmegaConf

from fedkd.errors import ConfigError
from fedkd.utils.run_state import check_identity, config_identity, unknown_keys


def _check(now: dict, saved: dict, folder) -> None:
    check_identity(OmegaConf.create(now), folder, {"config": json.dumps(saved)}, lambda c: config_identity(c, ()))


def test_a_run_saved_with_the_old_import_names_still_resumes(tmp_path):
    now = OmegaConf.create({"seed": 0, "strategy": {"_target_": "fedkd.strategies.fedftg.FedFTG", "iterations": 20}})
    old = {"seed": 0, "strategy": {"_target_": "strategies.fedftg.FedFTG", "iterations": 20}}
    check_identity(now, tmp_path, {"config": json.dumps(old)}, lambda c: config_identity(c, ()))
    changed = dict(old, strategy={"_target_": "strategies.fedftg.FedFTG", "iterations": 5})
    with pytest.raises(ConfigError, match="differs from the run's in strategy"):
        check_identity(now, tmp_path, {"config": json.dumps(changed)}, lambda c: config_identity(c, ()))


FTG = {"_target_": "fedkd.strategies.fedftg.FedFTG", "student_batch_size": 64}
CMI = {"_target_": "fedkd.datafree.CMISynthesizer", "cr_temperature": 0.1}


@pytest.mark.parametrize(("now", "saved", "keys"), [
    # a key of the entry point's own schema
    ({"seed": 0, "synthesizer": CMI}, {"seed": 0, "distill": CMI}, ["distill"]),
    ({"seed": 0, "student_batch_size": 128}, {"seed": 0, "batch_size": 128}, ["batch_size"]),
    # a key of an option node, the option unchanged
    ({"strategy": {**FTG, "iterations_per_round": 4}}, {"strategy": {**FTG, "iterations": 4}}, ["strategy.iterations"]),
    # a synthesizer node of the old shape: the student's recipe beside the synthesizer's settings
    ({"synthesizer": {**CMI, "student": {"steps": 20, "loss": "kl", "temperature": 20.0}}},
     {"synthesizer": {**CMI, "student_steps": 20, "student_loss": "kl", "temperature": 20.0}},
     ["synthesizer.student_loss", "synthesizer.student_steps", "synthesizer.temperature"]),
])
def test_a_run_saved_with_a_key_this_version_does_not_know_is_refused(now, saved, keys, tmp_path):
    assert unknown_keys(saved, now) == keys
    with pytest.raises(ConfigError) as refused:
        _check(now, saved, tmp_path)
    line = str(refused.value)
    assert line == (f"run folder {tmp_path} was saved with key{'s' if len(keys) > 1 else ''} "
                    f"{', '.join(repr(k) for k in keys)}, which this version does not know; start a new run")


def test_another_option_is_a_config_that_differs_not_an_unknown_key(tmp_path):
    lenet = {"_target_": "fedkd.models.build_model", "name": "lenet5", "batch_norm": True}
    resnet = {"_target_": "fedkd.models.build_model", "name": "resnet8", "width": 16}
    assert unknown_keys({"model": resnet}, {"model": lenet}) == []
    with pytest.raises(ConfigError, match="the config differs from the run's in model"):
        _check({"seed": 0, "model": lenet}, {"seed": 0, "model": resnet}, tmp_path)
    # A key the run did not have (a new default) is a difference too, not an unknown key.
    with pytest.raises(ConfigError, match="differs from the run's in strategy"):
        _check({"strategy": {**FTG, "safeguard": 0.0}}, {"strategy": FTG}, tmp_path)
