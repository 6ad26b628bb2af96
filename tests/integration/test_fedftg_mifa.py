"""FedFTG on MIFA (``strategy=fedftg_mifa``): the student starts from MIFA's step instead of the average."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from conftest import FEDFTG_BUDGET, SMALL_SIM, bound_strategy, client_updates, global_accuracy, same_arrays
from fakes import FakeGrid, task_identity  # noqa: F401  (task_identity: an autouse fixture)
from flwr.app import ConfigRecord

from fedkd.errors import ConfigError
from fedkd.federated.config import compose_sim_config

RUN = [*SMALL_SIM, "partition.alpha=0.1", "num_clients=6", *FEDFTG_BUDGET, "strategy.image_every=0",
       "strategy.diagnostics_every=0"]


def _bound(overrides, out_dir):
    cfg = compose_sim_config(overrides)
    return (cfg, *bound_strategy(cfg, out_dir))


def _round(strategy, server_round, sent, updates):
    strategy.configure_train(server_round, sent, ConfigRecord(), FakeGrid(6, random.Random(0)))
    return strategy.aggregate(server_round, updates)[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two rounds of replies from clients 0-2 then 3-5 (partial participation), trained 5 epochs from the start."""
    cfg, _, run = _bound([*RUN, "strategy=fedftg_mifa"], tmp_path_factory.mktemp("clients"))
    replies = client_updates(cfg, run, epochs=5, same_start=True)
    return replies[:3], replies[3:], run.initial_arrays()


def test_in_warm_up_the_round_is_mifas_step_and_after_it_the_student_moves_off_it(setup, tmp_path):
    first, second, start = setup
    _, ours, run = _bound([*RUN, "strategy=fedftg_mifa"], tmp_path / "ours")
    plain = [o for o in RUN if not o.startswith("strategy.")]
    _, mifa, _ = _bound([*plain, "strategy=mifa", "strategy.memory_rounds=10"], tmp_path / "mifa")
    w1 = _round(ours, 1, start, first)  # round 1: FedFTG's warm-up, the generator learns, the model is MIFA's
    assert same_arrays(w1, _round(mifa, 1, start, first))
    assert ours._round.server["memory_clients"] == 3
    w2 = _round(ours, 2, w1, second)  # round 2 distils, from MIFA's step over all six remembered updates
    mifa2 = _round(mifa, 2, w1, second)
    assert not same_arrays(w2, mifa2)
    assert ours._round.server["memory_clients"] == 6 and np.isfinite(ours._round.server["student_loss"])
    assert global_accuracy(run, w2) > 0.2  # 10 classes


def test_the_update_memory_survives_the_checkpoint_and_round_2_is_bit_identical(setup, tmp_path):
    first, second, start = setup
    _, ours, _ = _bound([*RUN, "strategy=fedftg_mifa"], tmp_path / "a")
    w1 = _round(ours, 1, start, first)
    saved = io.BytesIO()
    torch.save(ours.state_dict(), saved)  # as the checkpoint holds it: safe to load, no live references
    torch.manual_seed(5)
    w2 = _round(ours, 2, w1, second)
    _, restored, _ = _bound([*RUN, "strategy=fedftg_mifa"], tmp_path / "b")
    restored.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=True))
    assert sorted(restored.updates.entries) == [0, 1, 2]  # the three updates of round 1
    torch.manual_seed(5)
    assert same_arrays(_round(restored, 2, w1, second), w2)


def test_mixed_architectures_and_robust_rules_end_in_one_line(tmp_path):
    mixed = [*RUN, "strategy=fedftg_mifa", "client_models=[{name:small_cnn},{name:lenet5_half}]"]
    with pytest.raises(ConfigError, match="steps one global model") as raised:
        _bound(mixed, tmp_path / "mixed")
    assert "\n" not in str(raised.value)
    with pytest.raises(Exception, match="aggregation must be mean"):  # noqa: PT011 -- Hydra wraps it
        _bound([*RUN, "strategy=fedftg_mifa", "strategy.aggregation=median"], tmp_path / "median")
