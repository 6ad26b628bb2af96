"""Fixtures of the client and federated unit tests: the small fedkd-sim config they share, and the
torch thread count the client handlers change (restored after each test)."""

import pytest
import torch

from fedkd.federated.config import compose_sim_config


@pytest.fixture(autouse=True)
def restore_threads():
    # Client handlers set torch's thread count (client_resources.num_cpus); keep other tests' setting.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cfg():
    return compose_sim_config(["dataset=digits", "num_clients=4", "model=lenet5_half", "keep_local_model=true"])
