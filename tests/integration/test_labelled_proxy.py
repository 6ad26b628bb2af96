"""The labelled real-image reference (``strategy=fedftg_labelled_proxy``): FedFTG with the proxy's real
images, each served with its label for the teacher's label weighting, in place of generated samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SMALL_SIM, bound_strategy, client_updates, global_accuracy

from fedkd.data import Split
from fedkd.datafree import RealDataSource
from fedkd.errors import ConfigError
from fedkd.federated import data as D
from fedkd.federated.config import compose_sim_config
from fedkd.federated.sanity import check_run_inputs

PROXY = 300  # of digits' 1,438 training images
REFERENCE = [*SMALL_SIM, "partition.alpha=0.1", "strategy=fedftg_labelled_proxy", f"proxy_size={PROXY}",
             "strategy.iterations_per_round=10", "strategy.optimizer.lr=1e-3", "strategy.diagnostics_every=0"]


@pytest.fixture(scope="module")
def cfg():
    return compose_sim_config(REFERENCE)


@pytest.fixture(scope="module")
def replies(cfg, tmp_path_factory):
    _, run = bound_strategy(cfg, tmp_path_factory.mktemp("reference_clients"))
    return client_updates(cfg, run, epochs=2, same_start=True)


def test_the_reference_serves_the_proxy_images_with_their_own_labels(cfg, tmp_path):
    strategy, run = bound_strategy(cfg, tmp_path)
    source = strategy.synthesizer
    assert isinstance(source, RealDataSource) and isinstance(run.proxy, Split)
    train = D.load_data(cfg).train
    index = torch.from_numpy(D.proxy_indices(cfg))
    assert torch.equal(run.proxy.x, train.x[index]) and torch.equal(run.proxy.y, train.y[index])
    x, y = source.sample(50)
    # every served image is a proxy image, with that image's label
    match = (x.flatten(1).unsqueeze(1) == run.proxy.x.flatten(1).unsqueeze(0)).all(-1)  # (50, PROXY)
    assert (match.sum(1) >= 1).all()
    assert all(y[i] in run.proxy.y[match[i]] for i in range(len(y)))


def test_the_labels_weight_the_teacher_and_the_round_beats_chance(cfg, replies, tmp_path):
    """Round 1 distils (no warm-up) well above the average; with the proxy's labels shuffled the teacher
    weights its members by wrong labels and the student learns less: the labels reach the teacher."""
    strategy, run = bound_strategy(cfg, tmp_path / "true")
    torch.manual_seed(1)
    arrays, _ = strategy.aggregate(1, replies)
    assert np.isfinite(dict(strategy._round.server)["student_loss"])
    assert global_accuracy(run, arrays) > global_accuracy(run, strategy.average(replies)) + 0.1

    shuffled, run2 = bound_strategy(cfg, tmp_path / "shuffled")
    labels = shuffled.synthesizer.labels
    shuffled.synthesizer.labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    torch.manual_seed(1)
    other, _ = shuffled.aggregate(1, replies)
    assert any(not np.array_equal(arrays[k].numpy(), other[k].numpy()) for k in arrays)
    assert global_accuracy(run, arrays) > global_accuracy(run2, other) + 0.1  # the right labels make the better teacher


def test_a_users_unlabeled_folder_cannot_serve_the_labelled_reference(tmp_path):
    """proxy_path images carry no labels: refused in one line before Ray starts."""
    np.save(tmp_path / "proxy.npy", np.random.default_rng(0).random((40, 8, 8)).astype("float32"))
    own = [o for o in REFERENCE if not o.startswith("proxy_size")] + [f"proxy_path={tmp_path / 'proxy.npy'}"]
    with pytest.raises(ConfigError, match="proxy_path images carry none; set proxy_size") as raised:
        check_run_inputs(compose_sim_config(own))
    assert "\n" not in str(raised.value)
    spec = D.load_data(compose_sim_config(REFERENCE)).spec
    with pytest.raises(ConfigError, match="needs labelled real images"):
        RealDataSource(spec, train=torch.zeros(4, *spec.shape), labelled=True)
