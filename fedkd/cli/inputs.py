"""The run's data and models, checked before Hydra writes the run folder.

:func:`fedkd.cli.guard.preflight` calls :func:`check_run_inputs` between composing the config and
starting the job, so data that cannot teach (one class, NaN or constant images) or a model that
does not fit it (another output width than the class count, images too small for it) ends with one
line and leaves no run folder. The job runs the same checks again on what it builds (a run started
by ``hydra.main`` with Hydra's flags has no preflight); the data is loaded once per process
(:func:`fedkd.federated.data.load_data` caches it), and the data checks run once per bundle.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fedkd.data import DataBundle
from fedkd.data.sanity import check_training_data
from fedkd.errors import FedkdError
from fedkd.federated.data import load_data
from fedkd.models import model_label
from fedkd.models.sanity import build_checked


def check_run_inputs(config_name: str, cfg: DictConfig) -> None:
    """Raise the one-line :class:`FedkdError` of the data or model checks for the entry point whose
    config is ``conf/<config_name>.yaml`` (``sim``, ``train``, ``centralized``; others: nothing)."""
    if config_name == "sim":
        from fedkd.apps.simulation import check_before_start

        check_before_start(cfg)
        return
    if config_name not in ("train", "centralized"):
        return
    data = load_data(cfg)
    check_training_data(data)
    nodes = {"model": cfg.model} if config_name == "train" else {"student": cfg.student}
    if config_name == "centralized" and not cfg.teacher.checkpoint:  # a checkpoint is checked when loaded
        nodes["teacher.model"] = cfg.teacher.model
    for key, node in nodes.items():
        _check_model(node, data, f"{key} {model_label(node)}")


def _check_model(node: DictConfig, data: DataBundle, name: str) -> None:
    """:func:`fedkd.models.sanity.build_checked`; a failure other than its one-line error (a model
    config its class does not take) is left to the job, which reports it in its own words."""
    try:
        build_checked(node, data, name)
    except FedkdError:
        raise
    except Exception:
        return
