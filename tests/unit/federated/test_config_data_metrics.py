"""Federated glue: label counts, client models, the round recorder, one config for both launch paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from flwr.common.config import flatten_dict, fuse_dicts, get_project_config, parse_config_args
from omegaconf import OmegaConf

from fedkd.apps.server_app import check_models
from fedkd.errors import ConfigError
from fedkd.federated.config import config_from_run_config, plain
from fedkd.federated.data import (
    client_model_config,
    client_split,
    evaluation_split,
    load_data,
    partition_label_counts,
    partitions,
)
from fedkd.federated.metrics import RoundRecorder
from fedkd.strategies.fedavg import FedAvg
from fedkd.utils.run_logger import RunLogger, read_metrics

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def test_label_counts_cover_the_training_set(cfg):
    counts = partition_label_counts(cfg)
    assert counts.shape == (4, 10)
    assert counts.sum() == sum(len(client_split(cfg, p)) for p in range(4))


def test_holdout_is_no_clients_data_and_is_what_the_server_evaluates(cfg):
    n = len(load_data(cfg).train)
    held = OmegaConf.merge(cfg, {"evaluate_on": "holdout", "holdout_size": 300})
    assert max(int(i.max()) for i in partitions(held)) < n - 300  # no client holds a holdout image
    assert sum(len(i) for i in partitions(held)) == n - 300
    name, split = evaluation_split(held)
    assert name == "holdout" and len(split) == 300
    assert (split.y == load_data(cfg).train.y[n - 300:]).all()
    assert evaluation_split(cfg)[0] == "test"
    with pytest.raises(ConfigError, match="holdout_size"):
        partitions(OmegaConf.merge(cfg, {"evaluate_on": "holdout", "holdout_size": n}))
    with pytest.raises(ConfigError, match="evaluate_on"):
        evaluation_split(OmegaConf.merge(cfg, {"evaluate_on": "validation"}))


def test_client_models_per_partition_and_fedavg_refuses_mixed_architectures(cfg):
    mixed = OmegaConf.merge(cfg, {"client_models": [{"name": "lenet5"}, {"name": "lenet5_half"}]})
    assert [client_model_config(mixed, p).name for p in range(4)] == ["lenet5", "lenet5_half"] * 2
    single = OmegaConf.merge(cfg, {"client_models": {3: {"name": "small_cnn"}}})
    assert [client_model_config(single, p).name for p in range(4)] == ["lenet5_half"] * 3 + ["small_cnn"]
    check_models(cfg, FedAvg(num_clients=4))
    with pytest.raises(ConfigError, match="averages weights"):
        check_models(mixed, FedAvg(num_clients=4))


def test_recorder_writes_one_row_per_round_and_a_summary(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        recorder = RoundRecorder(logger, rounds=3, echo=lambda line: None)
        for rnd, acc in enumerate([0.5, 0.7, 0.6], start=1):
            recorder.record(rnd, {"test_accuracy": acc, "test_loss": 1.0 / rnd, "round_seconds": 2.0, "bytes_sent": 10})
        summary = recorder.summary()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    assert summary["final_test_accuracy"] == 0.6 and summary["best_test_accuracy"] == 0.7 and summary["best_round"] == 2
    assert summary["bytes_sent"] == 30
    assert json.loads((tmp_path / "summary.json").read_text())["best_round"] == 2


def test_hydra_entry_and_flwr_run_compose_the_same_config():
    overrides = "strategy=fedprox strategy.proximal_mu=0.05 dataset=digits partition.alpha=0.1 num_clients=4 rounds=2"
    # Launch path 1: the Hydra console entry (prints the composed job config and exits).
    shown = subprocess.run(
        [str(BIN / "fedkd-sim"), *overrides.split(), "--cfg", "job"],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=True,
    ).stdout
    hydra_cfg = OmegaConf.to_container(OmegaConf.create(shown), resolve=True)
    # Launch path 2: what `flwr run . -c 'overrides="..."'` hands the apps as run config.
    project = get_project_config(REPO)
    run_config = fuse_dicts(
        flatten_dict(project["tool"]["flwr"]["app"]["config"]), parse_config_args([f'overrides="{overrides}"'])
    )
    flwr_cfg = plain(config_from_run_config(run_config))
    assert flwr_cfg == hydra_cfg
    assert flwr_cfg["strategy"]["proximal_mu"] == 0.05 and flwr_cfg["num_clients"] == 4
    assert project["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "fedkd.apps.server_app:app", "clientapp": "fedkd.apps.client_app:app",
    }
