"""Optimiser settings torch would reject deep inside a run end as one-line config errors up front."""

import functools

import pytest
import torch

from fedkd.errors import ConfigError
from fedkd.training.optimizers import optimizer_factory


@pytest.mark.parametrize("factory", [
    functools.partial(torch.optim.SGD, lr=-1.0),
    functools.partial(torch.optim.SGD, lr=0.1, momentum=-0.5),
    functools.partial(torch.optim.Adam, lr=1e-3, betas=(1.5, 0.9)),
    functools.partial(torch.optim.SGD, lr=0.1, no_such_option=1),
])
def test_bad_optimiser_settings_fail_at_once_in_one_line(factory):
    with pytest.raises(ConfigError) as info:
        optimizer_factory(factory, "optim")
    message = str(info.value)
    assert message.startswith("optim cannot build its optimiser") and "\n" not in message


def test_a_good_factory_builds_the_optimiser_it_describes():
    model = torch.nn.Linear(2, 1)
    optimizer = optimizer_factory(functools.partial(torch.optim.SGD, lr=0.05), "optim")(model.parameters(), lr=0.2)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["lr"] == 0.2
