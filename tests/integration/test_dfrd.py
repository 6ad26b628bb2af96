"""DFRD (``strategy=dfrd``) on the federated server: FedFTG's loop with DFRD's generator, on real
digits client models; mixed architectures; a state that resumes; bad options in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SMALL_SIM, bound_strategy, client_updates

from fedkd.datafree import DFRDSynthesizer
from fedkd.errors import ConfigError
from fedkd.federated import records as R
from fedkd.federated.config import compose_sim_config
from fedkd.models import build_from_config
from fedkd.training import evaluate
from fedkd.utils.option_schema import check_option_node

CHANCE = 0.1
DFRD = ["strategy=dfrd", "strategy.iterations_per_round=2", "strategy.student_batch_size=32",
        "strategy.synthesizer.batch_size=32", "strategy.diagnostics_every=0", "strategy.image_every=0"]


def _accuracy(run, arrays, key=None) -> float:
    configs = run.model_configs
    model = build_from_config(configs[key] if key else run.client_model_configs[0], run.spec)
    model.load_state_dict(R.state_dict(arrays))
    return evaluate(model, run.test, run.device)["accuracy"]


def test_dfrd_distils_after_its_warmup_beats_chance_and_resumes_exactly(fedftg_replies, tmp_path):
    cfg = compose_sim_config(SMALL_SIM + DFRD)
    strategy, run = bound_strategy(cfg, tmp_path / "run")
    synth = strategy.synthesizer
    assert isinstance(synth, DFRDSynthesizer) and strategy.class_weighting == "label_counts"
    average, _ = strategy.aggregate(1, fedftg_replies)  # warm-up: the generator learns, the average stays
    assert synth.ema_rounds == 1
    arrays, _ = strategy.aggregate(2, fedftg_replies)
    server = dict(strategy._round.server)
    assert {"loss_fidelity", "loss_transferability", "loss_diversity"} <= set(server) and "loss_bn" not in server
    assert synth.ema_rounds == 2
    assert any(not torch.equal(e, g) for e, g in zip(synth.ema_generator.parameters(), synth.generator.parameters()))
    assert _accuracy(run, arrays) > 3 * CHANCE and not np.array_equal(arrays[k := next(iter(arrays))].numpy(),
                                                                       average[k].numpy())

    # resume: a fresh server loaded from the saved state runs round 3 exactly as the first does
    torch.save(strategy.state_dict(), tmp_path / "state.pt")
    restored, _ = bound_strategy(cfg, tmp_path / "again")
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    for a, b in ((restored.synthesizer.ema_generator, synth.ema_generator),
                 (restored.synthesizer.generator, synth.generator)):
        assert all(torch.equal(v, w) for v, w in zip(a.state_dict().values(), b.state_dict().values()))
    torch.manual_seed(3)
    third, _ = strategy.aggregate(3, fedftg_replies[:2])
    torch.manual_seed(3)
    again, _ = restored.aggregate(3, fedftg_replies[:2])
    for key in third:
        assert np.array_equal(third[key].numpy(), again[key].numpy()), key


def test_dfrd_serves_clients_of_two_architectures(tmp_path):
    mixed = ["client_models=[{name:small_cnn,channels:8},{name:lenet5_half}]", "strategy.warmup_rounds=0"]
    cfg = compose_sim_config(SMALL_SIM + DFRD + mixed)
    strategy, run = bound_strategy(cfg, tmp_path / "run")
    replies = client_updates(cfg, run, epochs=3, same_start=True)
    packed, _ = strategy.aggregate(1, replies)
    assert R.is_packed(packed) and len(run.model_configs) == 2
    for key in run.model_configs:
        assert _accuracy(run, R.unpack_group(packed, key), key) > 2 * CHANCE, key


@pytest.mark.parametrize("bad, match", [("strategy.synthesizer.ema_decay=1.0", "ema_decay"),
                                        ("strategy.synthesizer.ema_weight=-1", "ema_weight"),
                                        ("strategy.synthesizer.transferability=-0.5", "transferability"),
                                        ("+strategy.synthesizer.bn=1.0", "bn")])
def test_bad_dfrd_options_end_in_one_line(bad, match, tmp_path):
    cfg = compose_sim_config(SMALL_SIM + DFRD + [bad])
    with pytest.raises(ConfigError) as raised:  # what the command line checks before anything runs
        check_option_node(cfg.strategy, "strategy")
    assert match in str(raised.value) and "\n" not in str(raised.value)
