"""What a server strategy may know about the run besides its messages.

:func:`fedkd.apps.server_app.run_server` builds one :class:`ServerRun` and hands it to the
strategy (``strategy.bind(run)``) before the first round: the data spec, the test split for
server-side evaluation, the device, the run logger, every client's model config and, with
``proxy_size`` > 0, the proxy's images (unlabeled; FedDF distils on them) and with
``validation_size`` > 0 a labelled validation split (FedDF's early stopping). Plain FedAvg needs none
of it; generator-based strategies build their synthesizer and client models from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from flwr.app import ArrayRecord

from fedkd.data import DatasetSpec, Split
from fedkd.federated import records as R
from fedkd.models import build_from_config
from fedkd.utils.run_logger import RunLogger


@dataclass
class ServerRun:
    spec: DatasetSpec
    test: Split  # the evaluation split, on ``device``: the test set, or a holdout (``eval_name``)
    device: torch.device
    logger: RunLogger
    client_model_configs: list[dict[str, Any]]  # plain model config, by partition id
    initial: dict[str, ArrayRecord] = field(default_factory=dict)  # group key -> initial weights
    eval_name: str = "test"  # prefix of the central metrics: "test", or "holdout" (choosing settings)
    # training images no client holds (proxy_size): images only, or a Split for the labelled reference
    proxy: torch.Tensor | Split | None = None
    validation: Split | None = None  # labelled training images no client holds (validation_size)

    @property
    def model_configs(self) -> dict[str, dict[str, Any]]:
        """``{group key: model config}`` of the architectures the clients train, in partition order."""
        return {R.group_key(c): c for c in self.client_model_configs}

    def group_of(self, partition_id: int) -> str:
        """The architecture group of client ``partition_id``."""
        return R.group_key(self.client_model_configs[partition_id])

    def initial_group_arrays(self, group: str) -> ArrayRecord:
        return self.initial[group]

    @property
    def mixed(self) -> bool:
        return len(self.model_configs) > 1

    def initial_arrays(self) -> ArrayRecord:
        """The first global model: one model, or every group's packed into one record."""
        if not self.mixed:
            return next(iter(self.initial.values()))
        return R.pack_groups(self.initial)

    @classmethod
    def create(cls, spec: DatasetSpec, test: Split, device: torch.device, logger: RunLogger,
               client_model_configs: list[dict[str, Any]], eval_name: str = "test",
               proxy: torch.Tensor | Split | None = None, validation: Split | None = None) -> ServerRun:
        """Build each group's initial model with the current (seeded) torch RNG."""
        run = cls(spec, test, device, logger, client_model_configs, eval_name=eval_name, proxy=proxy,
                  validation=validation)
        for key, cfg in run.model_configs.items():
            run.initial[key] = R.to_arrays(build_from_config(cfg, spec))
        return run
