"""FedDF's early stopping: the server keeps the best student on labelled validation images
(``validation_size``) that no client holds, the average it started from included."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import SMALL_SIM, bound_strategy, client_updates, one_line_error, same_arrays

from fedkd.federated import data as D
from fedkd.federated import records as R
from fedkd.federated.config import compose_sim_config
from fedkd.federated.sanity import check_run_inputs
from fedkd.models import build_from_config
from fedkd.training import evaluate

PROXY, VALIDATION = 300, 200  # of digits' 1,438 training images
FEDDF = [*SMALL_SIM, "strategy=feddf", f"proxy_size={PROXY}", "strategy.iterations_per_round=4",
         "strategy.diagnostics_every=0"]
VALIDATED = [*FEDDF, f"validation_size={VALIDATION}", "strategy.keep_best_on_validation=true"]


@pytest.fixture(scope="module")
def cfg():
    return compose_sim_config(VALIDATED)


@pytest.fixture(scope="module")
def replies(cfg, tmp_path_factory):
    _, run = bound_strategy(cfg, tmp_path_factory.mktemp("validated_clients"))
    return client_updates(cfg, run, epochs=2, same_start=True)


def _accuracy(run, arrays) -> float:
    model = build_from_config(run.client_model_configs[0], run.spec)
    model.load_state_dict(R.state_dict(arrays))
    return evaluate(model, run.validation, run.device)["accuracy"]


def test_the_validation_split_is_labelled_held_by_no_client_and_leaves_the_proxy_as_it_was(cfg):
    pool = len(D.load_data(cfg).train)
    proxy, validation = D.proxy_indices(cfg), D.validation_indices(cfg)
    assert len(validation) == VALIDATION and not np.isin(validation, proxy).any() and validation.max() < pool
    np.testing.assert_array_equal(proxy, D.proxy_indices(compose_sim_config(FEDDF)))  # the same proxy without it
    held = np.concatenate(D.partitions(cfg))
    np.testing.assert_array_equal(np.sort(np.concatenate([held, proxy, validation])), np.arange(pool))
    split = D.server_validation(cfg)
    assert torch.equal(split.y, D.load_data(cfg).train.y[torch.from_numpy(validation)])
    assert len(np.unique(split.y.numpy())) == 10


def test_the_server_keeps_its_best_student_on_validation(cfg, replies, tmp_path):
    strategy, run = bound_strategy(cfg, tmp_path)
    assert strategy.uses_validation and len(run.validation) == VALIDATION
    arrays, _ = strategy.aggregate(1, replies)
    server = dict(strategy._round.server)
    assert server["validation_accuracy_best"] >= server["validation_accuracy_start"]
    assert _accuracy(run, arrays) == pytest.approx(server["validation_accuracy_best"], abs=1e-9)
    assert server["server_seconds_validation"] > 0
    if server["validation_best_iteration"] == 0:
        assert same_arrays(arrays, strategy.average(replies))


def test_when_every_step_hurts_the_round_keeps_the_average(replies, tmp_path):
    strategy, run = bound_strategy(compose_sim_config([*VALIDATED, "strategy.optimizer.lr=1000"]), tmp_path)
    arrays, _ = strategy.aggregate(1, replies)
    assert strategy._round.server["validation_best_iteration"] == 0
    assert same_arrays(arrays, strategy.average(replies))


def test_early_stopping_without_a_validation_split_ends_in_one_line(tmp_path):
    cfg = compose_sim_config([*FEDDF, "strategy.keep_best_on_validation=true"])
    for make in (lambda: check_run_inputs(cfg), lambda: bound_strategy(cfg, tmp_path)):
        error = one_line_error(make)
        assert "no validation split" in error and "set validation_size=<n>" in error


def test_a_validation_split_that_leaves_the_clients_nothing_ends_in_one_line():
    cfg = compose_sim_config([*FEDDF, "validation_size=1138"])  # 1,438 - 300 of the proxy
    error = one_line_error(lambda: D.partitions(cfg))
    assert error.startswith("validation_size=1138") and "set validation_size between 0 and 1137" in error


def test_a_validation_split_no_strategy_reads_is_a_warning(tmp_path, caplog):
    cfg = compose_sim_config([*SMALL_SIM, "strategy=fedavg", f"validation_size={VALIDATION}"])
    with caplog.at_level(logging.WARNING):
        bound_strategy(cfg, tmp_path)
    assert f"the {VALIDATION} labelled images kept from the clients for it go unused" in caplog.text
