"""A run is named for the method its config runs, not for the class that runs it."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fedkd.config import CONF_DIR, register_schemas

METHODS = {
    "fedavg": ("FedAvg", "FedAvg"),
    "mifa": ("MIFA", "MIFA"),
    "fedftg": ("FedFTG", "FedFTG"),
    "feddf": ("FedFTG", "FedDF"),
    "dfrd": ("FedFTG", "DFRD"),
    "fedftg_labelled_proxy": ("FedFTG", "FedFTG-labelled-proxy"),
    "one_shot_coboost": ("FedFTG", "Co-Boosting"),
}


@pytest.mark.parametrize("choice", sorted(METHODS))
def test_each_strategy_config_names_its_method(choice):
    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="sim", overrides=[f"strategy={choice}"])
    strategy = instantiate(cfg.strategy, num_clients=4)
    cls, method = METHODS[choice]
    assert type(strategy).__name__ == cls and strategy.method == method


def test_a_strategy_built_in_code_is_named_for_its_class():
    from fedkd.strategies.fedavg import FedAvg
    from fedkd.strategies.fedprox import FedProx

    assert FedProx(num_clients=3).method == "FedProx"
    assert FedAvg(num_clients=3, method="FedAvg-M").method == "FedAvg-M"
