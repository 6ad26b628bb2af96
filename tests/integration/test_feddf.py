"""FedDF (``strategy=feddf``): the server distils the round's average from the clients' mean logits on
unlabeled real proxy images (``proxy_size``) that no client holds and whose labels nobody reads."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_SIM, bound_strategy, client_updates, global_accuracy, one_line_error, same_arrays
from hydra.utils import instantiate

from fedkd.apps.simulation import simulate
from fedkd.data import load_dataset
from fedkd.data.partitions import label_counts
from fedkd.datafree import RealDataSource
from fedkd.federated import data as D
from fedkd.federated.config import compose_sim_config
from fedkd.utils.run_logger import read_metrics

CHANCE = 0.1
PROXY = 300  # of digits' 1,438 training images
FEDDF = [*SMALL_SIM, "strategy=feddf", f"proxy_size={PROXY}", "strategy.iterations_per_round=4",
         "strategy.diagnostics_every=1"]


@pytest.fixture(scope="module")
def cfg():
    return compose_sim_config(FEDDF)


@pytest.fixture(scope="module")
def replies(cfg, tmp_path_factory):
    """The four clients' replies after 2 local epochs on their proxy-free partitions."""
    _, run = bound_strategy(cfg, tmp_path_factory.mktemp("feddf_clients"))
    return client_updates(cfg, run, epochs=2, same_start=True)


# ----------------------------------------------------------------------------- the proxy split
@pytest.mark.parametrize("holdout", [[], ["evaluate_on=holdout", "holdout_size=200"]])
def test_the_proxy_is_held_by_no_client_and_never_meets_the_holdout(holdout):
    cfg = compose_sim_config([*FEDDF, *holdout])
    n = len(D.load_data(cfg).train)
    pool = n - D.holdout_size(cfg)
    proxy = D.proxy_indices(cfg)
    assert len(proxy) == PROXY and len(np.unique(proxy)) == PROXY and proxy.max() < pool  # never in the holdout
    held = np.concatenate(D.partitions(cfg))
    assert len(held) == len(np.unique(held))
    assert not np.isin(held, proxy).any() and held.max() < pool
    # digits' partition hands out every image it is given: the clients hold exactly the rest of the pool
    np.testing.assert_array_equal(np.sort(np.concatenate([held, proxy])), np.arange(pool))
    # the proxy is a draw from the whole pool, not a block: every class is in it
    assert len(np.unique(D.load_data(cfg).train.y.numpy()[proxy])) == 10
    images = D.proxy_images(cfg)
    assert torch.equal(images, D.load_data(cfg).train.x[torch.from_numpy(proxy)])


@pytest.mark.parametrize("setting", [["partition.alpha=0.1"], ["partition=shards"], ["partition=iid"],
                                     ["partition=quantity"], ["evaluate_on=holdout", "holdout_size=300"]])
def test_without_a_proxy_the_partitions_are_what_they_were(setting):
    """proxy_size=0 (the default): the partitioner sees the first pool labels as before, so every
    earlier result stays valid."""
    base = [o for o in SMALL_SIM if not o.startswith("partition.")]
    cfg = compose_sim_config([*base, *setting])
    assert D.proxy_size(cfg) == 0 and D.proxy_images(cfg) is None and len(D.proxy_indices(cfg)) == 0
    pool = len(D.load_data(cfg).train) - D.holdout_size(cfg)
    partitioner = instantiate(cfg.partition)
    before = partitioner(D.load_data(cfg).train.y.numpy()[:pool], cfg.num_clients, seed=cfg.seed)  # the old formula
    now = D.partitions(cfg)
    assert len(now) == len(before)
    for a, b in zip(now, before, strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(a, b)


# ----------------------------------------------------------------------------- the server
def test_feddf_distils_the_average_on_the_proxy_and_beats_chance(cfg, replies, tmp_path):
    strategy, run = bound_strategy(cfg, tmp_path)
    assert isinstance(strategy.synthesizer, RealDataSource)
    assert torch.equal(strategy.synthesizer.images, run.proxy)  # the proxy's images, nothing else
    arrays, _ = strategy.aggregate(1, replies)  # no warm-up: distilled in round 1
    server = dict(strategy._round.server)
    average = strategy.average(replies)
    assert not same_arrays(arrays, average)  # the student moved away from the average
    assert np.isfinite(server["student_loss"]) and server["student_samples"] == 4 * 64
    assert global_accuracy(run, arrays) > 3 * CHANCE
    assert global_accuracy(run, arrays) == pytest.approx(server["student_accuracy_after"], abs=1e-6)


def test_feddf_never_reads_the_proxy_labels(cfg, replies, tmp_path):
    """Out-of-range garbage in the proxy's labels changes nothing the server computes: partitions,
    label counts, proxy images and two rounds of distilled weights stay bit for bit the same."""

    def server_side(out):
        D._partitions.cache_clear()
        parts = D.partitions(cfg)
        counts = D.partition_label_counts(cfg)
        strategy, run = bound_strategy(cfg, out)
        strategy.diagnostics_every = 0  # they only report (on the test set); the rounds' weights are the point
        torch.manual_seed(1)
        rounds = [strategy.aggregate(r, replies)[0] for r in (1, 2)]
        return parts, counts, run.proxy, rounds

    clean = server_side(tmp_path / "clean")
    y = D.load_data(cfg).train.y  # the process's cached dataset: what the server loads
    proxy = torch.from_numpy(D.proxy_indices(cfg))
    kept = y[proxy].clone()
    try:
        y[proxy] = torch.randint(10**6, 10**7, (len(proxy),))  # no class: any read would fail or differ
        poisoned = server_side(tmp_path / "poisoned")
    finally:
        y[proxy] = kept
        D._partitions.cache_clear()
    assert all(np.array_equal(a, b) for a, b in zip(clean[0], poisoned[0], strict=True))
    np.testing.assert_array_equal(clean[1], poisoned[1])
    assert torch.equal(clean[2], poisoned[2])
    assert all(same_arrays(a, b) for a, b in zip(clean[3], poisoned[3], strict=True))
    # and the poison was real: the proxy's labels did count as labels nowhere above
    assert label_counts(kept.numpy(), [np.arange(len(kept))], 10).sum() == PROXY


@pytest.mark.slow  # a Ray simulation: about a minute on two busy cores
def test_feddf_runs_end_to_end_through_fedkd_sim(tmp_path):
    """One real simulation: the ServerApp hands its proxy to the strategy; the clients train on the rest."""
    cfg = compose_sim_config([*FEDDF, "rounds=2", "local_epochs=2"])
    summary = simulate(cfg, tmp_path)
    assert summary["rounds_completed"] == 2 and summary["strategy"] == "FedDF"
    rows = read_metrics(tmp_path)
    assert all(np.isfinite(r["student_loss"]) and r["server_seconds_distillation"] > 0 for r in rows)
    assert rows[-1]["test_accuracy"] > 3 * CHANCE


def test_feddf_distils_on_a_users_own_unlabeled_images(replies, tmp_path):
    """proxy_path: the server's proxy is the user's array file; the clients keep every training image."""
    from fedkd.data.unlabeled import load_unlabeled
    from fedkd.federated.sanity import check_run_inputs

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "data"))
    from own_data import digits_arrays

    np.save(tmp_path / "proxy.npy", digits_arrays(n_train=400)["x_train"])  # 8x8 digits, resized to the run's side
    own = [o for o in FEDDF if not o.startswith("proxy_size")] + [f"proxy_path={tmp_path / 'proxy.npy'}"]
    cfg = compose_sim_config(own)
    check_run_inputs(cfg)  # what fedkd-sim checks before Ray starts
    assert D.proxy_size(cfg) == 0 and len(np.concatenate(D.partitions(cfg))) == len(D.load_data(cfg).train)
    strategy, run = bound_strategy(cfg, tmp_path / "run")
    assert torch.equal(strategy.synthesizer.images, load_unlabeled(tmp_path / "proxy.npy", run.spec))
    arrays, _ = strategy.aggregate(1, replies)
    assert global_accuracy(run, arrays) > 3 * CHANCE
    both = compose_sim_config([*FEDDF, f"proxy_path={tmp_path / 'proxy.npy'}"])
    assert "set one" in one_line_error(lambda: check_run_inputs(both))


# ----------------------------------------------------------------------------- bad options, one line each
def test_feddf_without_a_proxy_ends_in_one_line(tmp_path):
    from fedkd.federated.sanity import check_run_inputs

    cfg = compose_sim_config([*SMALL_SIM, "strategy=feddf"])  # proxy_size=0
    # before Ray starts, and when the server binds its strategy
    for make in (lambda: check_run_inputs(cfg), lambda: bound_strategy(cfg, tmp_path)):
        error = one_line_error(make)
        assert "strategy.synthesizer distils on real images" in error and "set proxy_size=<n>" in error
    check_run_inputs(compose_sim_config([*SMALL_SIM, "strategy=feddf", f"proxy_size={PROXY}"]))  # with one: fine


@pytest.mark.parametrize("size", [1438, 5000])
def test_a_proxy_that_leaves_the_clients_nothing_ends_in_one_line(size):
    cfg = compose_sim_config([*SMALL_SIM, "strategy=feddf", f"proxy_size={size}"])
    error = one_line_error(lambda: D.partitions(cfg))
    assert error.startswith(f"proxy_size={size}") and "set proxy_size between 0 and 1437" in error


def test_a_negative_proxy_size_is_refused_before_the_run(tmp_path, cli):
    done = cli("fedkd-sim", *SMALL_SIM, "strategy=feddf", "proxy_size=-1", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("fedkd: error:")]
    assert len(errors) == 1 and "proxy_size" in errors[0], done.stderr[-1500:]


def test_a_proxy_no_synthesizer_uses_is_a_warning(tmp_path, caplog):
    """FedFTG's generator does not read the proxy: the clients lost those images for nothing."""
    cfg = compose_sim_config([*SMALL_SIM, "strategy=fedftg", f"proxy_size={PROXY}"])
    with caplog.at_level(logging.WARNING):
        bound_strategy(cfg, tmp_path)
    assert f"the {PROXY} images set aside for it go unused" in caplog.text


def test_real_kd_keeps_images_only(digits):
    source = RealDataSource(load_dataset("digits").spec, train=digits.train, seed=0)
    assert not hasattr(source, "train") and torch.equal(source.images, digits.train.x)
    assert source.sample(5)[1] is None
