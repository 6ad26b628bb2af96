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


def _resumes(now: dict, old: dict, config_name: str, tmp_path) -> None:
    check_identity(OmegaConf.create(now), tmp_path, {"config": json.dumps(old)}, lambda c: config_identity(c, ()), config_name)


def test_a_run_saved_before_the_student_recipe_moved_still_resumes(tmp_path):
    cmi = {"_target_": "fedkd.datafree.CMISynthesizer", "cr_temperature": 0.1}
    now = {"synthesizer": {**cmi, "student": {"steps": 20, "loss": "kl", "temperature": 20.0}}}
    old = {"synthesizer": {**cmi, "student_steps": 20, "student_loss": "kl", "temperature": 20.0}}
    _resumes(now, old, "centralized", tmp_path)
    with pytest.raises(ConfigError, match="differs from the run's in synthesizer"):
        _resumes(now, {"synthesizer": {**old["synthesizer"], "student_steps": 5}}, "centralized", tmp_path)
    # DFAD's YAML had no temperature (its class default, 1, applied).
    dfad = {"_target_": "fedkd.datafree.DFADSynthesizer", "batch_size": 256}
    now = {"synthesizer": {**dfad, "student": {"steps": 5, "loss": "l1", "temperature": 1.0}}}
    _resumes(now, {"synthesizer": {**dfad, "student_steps": 5, "student_loss": "l1"}}, "centralized", tmp_path)
    # A replay wrapper: the recipe was its base's; now the wrapper carries it too.
    replay = {"_target_": "fedkd.datafree.PseudoReplaySynthesizer", "vae_steps": 4}
    now = {"synthesizer": {**replay, "base": now["synthesizer"], "student": {"steps": 5, "loss": "l1", "temperature": 1.0}}}
    old = {"synthesizer": {**replay, "base": {**dfad, "student_steps": 5, "student_loss": "l1"}}}
    _resumes(now, old, "centralized", tmp_path)
    # ZSKT's generator KL used the student's temperature; now its own key, tied to it in the YAML.
    zskt = {"_target_": "fedkd.datafree.ZSKTSynthesizer", "at_weight": 250.0}
    now = {"synthesizer": {**zskt, "kl_temperature": 2.0, "student": {"steps": 10, "loss": "kl", "temperature": 2.0}}}
    _resumes(now, {"synthesizer": {**zskt, "student_steps": 10, "student_loss": "kl", "temperature": 2.0}}, "centralized", tmp_path)
    # The federated server's synthesizer (FedFTG), under strategy.
    cond = {"_target_": "fedkd.datafree.ConditionalSynthesizer", "bn": 1.0}
    now = {"strategy": {"synthesizer": {**cond, "student": {"steps": 2, "loss": "kl", "temperature": 1.0}}}}
    old = {"strategy": {"synthesizer": {**cond, "student_steps": 2, "student_loss": "kl", "temperature": 1.0}}}
    _resumes(now, old, "sim", tmp_path)


@pytest.mark.parametrize(("config", "old", "new"), [
    ("centralized", "distill=cmi", "synthesizer=cmi"),
    ("centralized", "distill.iterations=3", "synthesizer.synthesis_steps=3"),
    ("centralized", "batch_size=64", "student_batch_size=64"),
    ("centralized", "+distill.extra=1", "+synthesizer.extra=1"),
    ("sim", "batch_size=16", "local_batch_size=16"),
    ("sim", "distill@strategy.synthesizer=dfad", "synthesizer@strategy.synthesizer=dfad"),
    ("sim", "strategy.iterations=4", "strategy.iterations_per_round=4"),
    ("sim", "strategy.synthesizer.iterations=4", "strategy.synthesizer.synthesis_steps=4"),
    ("centralized", "synthesizer.student_steps=3", "synthesizer.student.steps=3"),
    ("centralized", "synthesizer.student_loss=l1", "synthesizer.student.loss=l1"),
    ("centralized", "synthesizer.temperature=4", "synthesizer.student.temperature=4"),
    ("centralized", "distill.student_steps=3", "synthesizer.student.steps=3"),  # two renames, one notice
    ("centralized", "synthesizer.base.student_steps=3", "synthesizer.base.student.steps=3"),
    ("centralized", "synthesizer.cr_temperature=0.2", "synthesizer.cr_temperature=0.2"),  # only the exact key moves
    ("centralized", "synthesizer.adi_temperature=2", "synthesizer.adi_temperature=2"),
    ("centralized", "synthesizer.student.temperature=4", "synthesizer.student.temperature=4"),  # the new name stays
    ("sim", "strategy.synthesizer.student_steps=3", "strategy.synthesizer.student.steps=3"),
    ("sim", "strategy.synthesizer.student_loss=l1", "strategy.synthesizer.student.loss=l1"),
    ("sim", "strategy.synthesizer.temperature=4", "strategy.synthesizer.student.temperature=4"),
    ("sim", "strategy.synthesizer.base.temperature=4", "strategy.synthesizer.base.student.temperature=4"),
    ("train", "batch_size=64", "batch_size=64"),  # fedkd-train kept its name
])
def test_old_override_names_are_rewritten_with_a_notice(config, old, new):
    from fedkd.config_renames import renamed_overrides

    out, notices = renamed_overrides(config, [old, "seed=1"])
    assert out == [new, "seed=1"]
    assert len(notices) == (old != new) and all(n.startswith("fedkd: deprecated: ") and "\n" not in n for n in notices)
