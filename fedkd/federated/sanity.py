"""A federated run's data and client models, checked before the first round.

``fedkd-sim`` (:func:`fedkd.apps.simulation.check_before_start`, before Ray starts) and the
ServerApp (before it writes its run folder, which is all ``flwr run`` has) call
:func:`check_run_inputs`; the data is the cached bundle the run then uses.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fedkd.data.sanity import check_training_data
from fedkd.datafree.synthesizers.real import needs_real_images
from fedkd.errors import ConfigError
from fedkd.federated.data import (
    PROXY_REMEDY,
    VALIDATION_REMEDY,
    client_model_configs,
    load_data,
    proxy_size,
    server_proxy,
    validation_size,
)
from fedkd.federated.records import group_key
from fedkd.models import model_label
from fedkd.models.sanity import build_checked
from fedkd.utils.option_schema import located


def check_run_inputs(cfg: DictConfig) -> None:
    """Raise a one-line error when the data cannot teach (one class, NaN or constant images:
    :func:`fedkd.data.sanity.check_training_data`) or a client architecture does not fit it (output
    width other than the class count, images too small for it: :func:`fedkd.models.sanity.build_checked`).
    Builds each architecture once. A server that distils on real images (FedDF) without a proxy
    split is refused here too, before Ray starts, not when the server binds its strategy, and so is one
    that keeps its best student on a validation split without one."""
    synthesizer = cfg.get("strategy", {}).get("synthesizer")
    target = located(str(synthesizer.get("_target_", ""))) if synthesizer is not None else None
    if target is not None and needs_real_images(target) and proxy_size(cfg) == 0 and not cfg.get("proxy_path"):
        raise ConfigError(f"strategy.synthesizer distils on real images and there are none; {PROXY_REMEDY}")
    if (cfg.get("strategy") or {}).get("keep_best_on_validation") and validation_size(cfg) == 0:
        raise ConfigError("strategy.keep_best_on_validation=true and the server has no validation split; "
                          f"{VALIDATION_REMEDY} or strategy.keep_best_on_validation=false")
    data = load_data(cfg)
    if cfg.get("proxy_path"):
        server_proxy(cfg)  # the images load, fit the dataset, are the only proxy set, and no labels are asked of them
    check_training_data(data)
    what = "model" if cfg.get("client_models") is None else "client model"
    for key, model_cfg in {group_key(c): c for c in client_model_configs(cfg)}.items():
        build_checked(model_cfg, data, f"{what} {model_label(model_cfg)} ({key})" if what != "model"
                      else f"model {model_label(model_cfg)}")
