"""FedGen: the run on digits (through the shared comparison), the feature generator's shape, the
client regulariser, the class-level weights, and the server's generator training."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from conftest import FEDGEN_BUDGET, SMALL_SIM, bound_strategy, client_updates
from fakes import FakeGrid, task_identity  # noqa: F401  (Flower-like node ids; message identity)
from flwr.app import ConfigRecord

from fedkd.clients.train import GeneratorRegularizer, local_train
from fedkd.data import load_dataset
from fedkd.datafree.losses import weighted_member_cross_entropy
from fedkd.errors import ConfigError
from fedkd.federated import records as R
from fedkd.federated.config import compose_sim_config
from fedkd.federated.data import client_split, partition_label_counts
from fedkd.federated.resume import STATE_FILE
from fedkd.models import build_model, count_parameters
from fedkd.utils.run_logger import read_metrics

CHANCE = 0.1
CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- the run
def test_fedgen_run_learns_broadcasts_the_generator_and_logs_its_losses(compare_dir):
    run = compare_dir / "runs" / "fedgen" / "seed0"
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    first, last = rows
    assert last["test_accuracy"] > 3 * CHANCE
    for row in rows:
        for key in ("generator_ce", "generator_diversity", "generator_accuracy", "server_seconds"):
            assert key in row and np.isfinite(row[key]), key
    # Round 1 has no trained generator to send; round 2's clients train with its term.
    assert "client_generator_loss" not in first
    assert np.isfinite(last["client_generator_loss"]) and last["client_generator_weight"] == pytest.approx(1.0)
    assert last["bytes_sent"] > first["bytes_sent"]  # the generator travels with the model
    # The parameter count is logged once; the checkpoint keeps the generator for resume.
    assert first["generator_parameters"] == pytest.approx(44416) and "generator_parameters" not in last
    state = torch.load(run / STATE_FILE, weights_only=True)
    assert state["strategy"]["rounds_trained"] == 2 and "net.0.weight" in state["strategy"]["generator"]
    report = json.loads((compare_dir / "report.json").read_text())
    assert "fedgen" in [r["strategy"] for r in report]


# ----------------------------------------------------------------------------- the generator
@pytest.mark.parametrize("name", ["small_cnn", "lenet5", "lenet5_half", "resnet8"])
def test_generated_features_have_the_heads_input_size(name):
    spec = load_dataset("digits").spec
    classifier = build_model(name, spec)
    generator = build_model("fedgen_generator", spec, feature_dim=classifier.feature_dim)
    labels = torch.arange(10).repeat(3)
    features = generator(labels)
    assert features.shape == (30, classifier.feature_dim)
    assert classifier.head(features).shape == (30, spec.num_classes)
    assert count_parameters(generator) < 300_000
    with pytest.raises(ConfigError, match="feature_dim"):
        build_model("fedgen_generator", spec, feature_dim=0)


# ----------------------------------------------------------------------------- the client term
@pytest.fixture(scope="module")
def cfg():
    return compose_sim_config(SMALL_SIM + FEDGEN_BUDGET + ["strategy=fedgen", "model=lenet5_half"])


def _local_update(cfg, regularizer=None) -> dict[str, torch.Tensor]:
    spec = load_dataset("digits").spec
    torch.manual_seed(0)
    model = build_model("lenet5_half", spec)
    local_train(model, client_split(cfg, 0), torch.optim.SGD, 0.05, 1, 32, CPU, torch.Generator().manual_seed(0),
                regularizer=regularizer)
    return model.state_dict()


def _regularizer(weight: float, spec, kl_weight: float = 0.0) -> GeneratorRegularizer:
    torch.manual_seed(1)
    generator = build_model("fedgen_generator", spec, feature_dim=build_model("lenet5_half", spec).feature_dim)
    return GeneratorRegularizer(generator, label_prior=[1.0] * 10, weight=weight, kl_weight=kl_weight, seed=7)


def test_regularizer_changes_the_update_and_with_weight_zero_equals_plain_training_bit_for_bit(cfg):
    spec = load_dataset("digits").spec
    plain = _local_update(cfg)
    zero = _regularizer(0.0, spec)
    with_zero = _local_update(cfg, zero)
    assert zero._steps > 0  # the term ran (on its own RNG stream) and added exactly nothing
    assert all(torch.equal(plain[k], with_zero[k]) for k in plain)
    term = _regularizer(1.0, spec)
    regularised = _local_update(cfg, term)
    assert term.mean_loss > 0
    assert not torch.equal(plain["head.weight"], regularised["head.weight"])
    # The optional KL term of the authors' code changes the update too.
    kl = _local_update(cfg, _regularizer(0.0, spec, kl_weight=1.0))
    assert not torch.equal(plain["head.weight"], kl["head.weight"])


def test_regularizer_is_the_heads_cross_entropy_on_generated_features():
    spec = load_dataset("digits").spec
    model = build_model("lenet5_half", spec)
    term = _regularizer(2.0, spec)
    value = term(model, torch.zeros(4, *spec.shape), torch.zeros(4, dtype=torch.long))
    # Replay the same draw: labels from the prior, then the noise, from a fresh stream of the same seed.
    rng = torch.Generator().manual_seed(7)
    labels = torch.multinomial(term.prior, 4, replacement=True, generator=rng)
    noise = torch.randn(4, term.generator.noise_dim, generator=rng)
    with torch.no_grad():
        features = term.generator(labels, noise=noise)
    expected = 2.0 * torch.nn.functional.cross_entropy(model.head(features), labels)
    torch.testing.assert_close(value, expected)
    value.backward()  # only the head learns from it; the generator is frozen
    assert model.head.weight.grad is not None
    assert all(p.grad is None for p in term.generator.parameters())


# ----------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def updates(cfg, tmp_path_factory):
    _, run = bound_strategy(cfg, tmp_path_factory.mktemp("run"))
    return client_updates(cfg, run, epochs=3)


def test_class_level_weights_sum_to_one_per_label_and_weight_each_clients_cross_entropy(cfg, tmp_path):
    strategy, _ = bound_strategy(cfg, tmp_path)
    counts = partition_label_counts(cfg)
    weights = strategy.class_weights(counts).numpy()
    np.testing.assert_allclose(weights.sum(0), 1.0, atol=1e-6)
    np.testing.assert_allclose(weights, counts / counts.sum(0, keepdims=True), atol=1e-6)
    # The loss judges each label by the clients that hold it: a client without label c adds nothing for c.
    logits = torch.randn(2, 3, 4)
    labels = torch.tensor([0, 1, 1])
    w = torch.tensor([[1.0, 0.0, 0.5, 0.5], [0.0, 1.0, 0.5, 0.5]])
    ce = torch.nn.functional.cross_entropy
    expected = (ce(logits[0, :1], labels[:1], reduction="sum") + ce(logits[1, 1:], labels[1:], reduction="sum")) / 3
    torch.testing.assert_close(weighted_member_cross_entropy(logits, labels, w), expected)


def test_server_generator_learns_the_heads_and_persists_across_rounds(cfg, updates, tmp_path):
    strategy, _ = bound_strategy(cfg, tmp_path)
    strategy.generator_steps, strategy.generator_batch_size = 200, 128
    generator = strategy.generator
    first = strategy.train_generator(updates)
    second = strategy.train_generator(updates)
    assert strategy.generator is generator and strategy.rounds_trained == 2
    assert second["generator_ce"] < first["generator_ce"]
    assert second["generator_accuracy"] >= 0.8  # the weighted heads classify generated features as asked
    # What clients receive: the generator, its config and the label prior, from round 2 on.
    strategy.label_prior = np.asarray(partition_label_counts(cfg).sum(0), dtype=np.float64)
    weight, _ = strategy.regularizer_weights(3)
    assert weight == pytest.approx(strategy.regularizer_weight * strategy.regularizer_decay)
    # Resume: the generator and its optimiser survive a safe save/load round trip.
    path = tmp_path / "state.pt"
    torch.save(strategy.state_dict(), path)
    restored, _ = bound_strategy(cfg, tmp_path / "again")
    restored.load_state_dict(torch.load(path, weights_only=True))
    for key, value in restored.generator.state_dict().items():
        assert torch.equal(value, generator.state_dict()[key])
    assert restored.rounds_trained == 2


def test_fedgen_refuses_bad_settings_with_one_line_errors():
    from fedkd.strategies.fedgen import FedGen

    generator = {"name": "fedgen_generator"}
    with pytest.raises(ConfigError, match="class_weighting"):
        FedGen(num_clients=2, generator=generator, class_weighting="votes")
    with pytest.raises(ConfigError, match="regularizer_decay"):
        FedGen(num_clients=2, generator=generator, regularizer_decay=0.0)
    with pytest.raises(ConfigError, match="generator_steps"):
        FedGen(num_clients=2, generator=generator, generator_steps=0)


def test_train_instruction_carries_the_generator_only_once_it_is_trained(cfg, updates, tmp_path):
    strategy, _ = bound_strategy(cfg, tmp_path)
    arrays = updates[0].arrays
    grid = FakeGrid(cfg.num_clients, random.Random(0))
    before = list(strategy.configure_train(1, arrays, ConfigRecord(), grid))
    assert all(R.GENERATOR not in m.content.array_records for m in before)
    strategy.train_generator(updates)
    after = list(strategy.configure_train(2, arrays, ConfigRecord(), grid))
    assert all(R.GENERATOR in m.content.array_records for m in after)
    config = after[0].content[R.CONFIG]
    assert json.loads(config[R.GENERATOR_MODEL])["feature_dim"] == strategy.generator.feature_dim
    assert len(config[R.GENERATOR_LABEL_PRIOR]) == 10 and config[R.GENERATOR_WEIGHT] == pytest.approx(1.0)
