"""FedGen (Zhu, Hong and Zhou, ICML 2021): a feature-space generator learned on the server and
broadcast to regularise the clients' training.

Each round, after the clients reply (:meth:`FedGen.aggregate`):

1. the server trains its generator ``G(eps, y) -> z`` (``z`` of the heads' input size) so that
   every client's classifier head, weighted per label by that client's share of the label
   (class-level weights from the label counts), classifies ``G(eps, y)`` as ``y``::

       L_G = mean_i sum_k w[k, y_i] * CE(head_k(G(eps_i, y_i)), y_i) + diversity * L_div

   with ``y_i`` drawn in proportion to the round's label counts and ``L_div`` the mode-seeking
   term :func:`fedkd.datafree.losses.diversity_loss` of (noise, features);
2. the clients' models are averaged as in FedAvg (with its robust options);
3. the next round's train instruction carries the global model and the generator, and clients add
   :class:`fedkd.clients.train.GeneratorRegularizer` to their loss with weight
   ``regularizer_weight * regularizer_decay ** (round - 2)`` (round 1 has no trained generator, so
   its clients train plainly).

The generator persists across rounds (with its Adam state); :meth:`state_dict` checkpoints it.
All clients must share one architecture (the average is FedAvg's).
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from torch import nn

from fedkd.datafree import class_weights_from_counts, uniform_class_weights
from fedkd.datafree.losses import diversity_loss, weighted_member_cross_entropy
from fedkd.errors import ConfigError
from fedkd.federated import records as R
from fedkd.models import build_from_config, count_parameters
from fedkd.models.custom import linear_head
from fedkd.strategies.fedavg import ClientUpdate, FedAvg, ServerRun
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import Forward, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range

log = logging.getLogger("fedkd.sim")

CLASS_WEIGHTINGS = ("label_counts", "uniform")


class FedGen(FedAvg):
    """FedAvg plus a server-trained feature generator that regularises the clients' heads.

    Parameters beyond :class:`fedkd.strategies.fedavg.FedAvg`:
        generator: the generator's model config (registry ``name`` plus kwargs, e.g.
            ``{"name": "fedgen_generator", "noise_dim": 32, "hidden": 256}``); ``feature_dim``
            is taken from the clients' model.
        generator_lr: Adam learning rate of the generator (its optimiser persists across rounds).
        generator_steps: generator updates per round (the server's budget).
        generator_batch_size: generated features per generator update.
        diversity: weight of the diversity term in the generator's loss.
        class_weighting: ``"label_counts"`` (each client's share of each label, FedGen) or ``"uniform"``.
        regularizer_weight: the clients' generator term weight in round 2 (the first with a trained generator).
        regularizer_decay: per-round factor on that weight (``weight * decay ** (round - 2)``).
        kl_weight: weight of the authors' code's extra KL term (not in the paper; 0 = off), decayed likewise.
        regularizer_batch_size: generated features per client step (0: the real batch size).
    """

    @checked("strategy")  # types and ranges from this signature, before anything is built
    def __init__(
        self,
        *,
        generator: dict[str, Any],
        generator_lr: PositiveFloat = 3e-4,
        generator_steps: PositiveInt = 100,
        generator_batch_size: Annotated[int, Range(2)] = 128,
        diversity: NonNegativeFloat = 1.0,
        class_weighting: Literal[CLASS_WEIGHTINGS] = "label_counts",
        regularizer_weight: NonNegativeFloat = 1.0,
        regularizer_decay: Annotated[float, Range(0, 1, low_open=True)] = 0.98,
        kl_weight: NonNegativeFloat = 0.0,
        regularizer_batch_size: NonNegativeInt = 0,
        **fedavg: Annotated[Any, Forward()],
    ) -> None:
        super().__init__(**fedavg)
        self.generator_config = dict(generator)
        self.generator_lr = float(generator_lr)
        self.generator_steps = int(generator_steps)
        self.generator_batch_size = int(generator_batch_size)
        self.diversity = float(diversity)
        self.class_weighting = class_weighting
        self.regularizer_weight = float(regularizer_weight)
        self.regularizer_decay = float(regularizer_decay)
        self.kl_weight = float(kl_weight)
        self.regularizer_batch_size = int(regularizer_batch_size)
        self.generator: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.label_prior: np.ndarray | None = None  # label counts the generator was last trained for
        self.rounds_trained = 0

    def bind(self, run: ServerRun) -> None:
        """Build the generator for the clients' head (its input size) on the run's device."""
        super().bind(run)
        (model_cfg,) = run.model_configs.values()  # FedAvg's ServerApp check: one architecture
        # The head's input size, by inspection, so your own model (model._target_) works too.
        feature_dim = linear_head(build_from_config(model_cfg, run.spec), "FedGen").in_features
        self.generator_config = {**self.generator_config, "feature_dim": feature_dim}
        self.generator = build_from_config(self.generator_config, run.spec).to(run.device)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=self.generator_lr)
        log.info("FedGen generator: %d parameters, features of size %d", count_parameters(self.generator), feature_dim)

    # ------------------------------------------------------------------ what the clients receive
    def regularizer_weights(self, server_round: int) -> tuple[float, float]:
        """The clients' (cross-entropy, KL) weights in ``server_round``: decayed from round 2 on."""
        decay = self.regularizer_decay ** max(server_round - 2, 0)
        return self.regularizer_weight * decay, self.kl_weight * decay

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train instructions plus, once the generator has been trained, the generator and
        the ``generator-*`` config its regulariser needs."""
        generator = self._require_generator()
        generator_keys = (
            R.GENERATOR_WEIGHT, R.GENERATOR_KL_WEIGHT, R.GENERATOR_LABEL_PRIOR,
            R.GENERATOR_MODEL, R.GENERATOR_BATCH_SIZE,
        )
        for key in generator_keys:
            config.pop(key, None)
        if self.rounds_trained > 0:
            weight, kl_weight = self.regularizer_weights(server_round)
            config[R.GENERATOR_WEIGHT] = weight
            config[R.GENERATOR_KL_WEIGHT] = kl_weight
            config[R.GENERATOR_LABEL_PRIOR] = [float(c) for c in self.label_prior]
            config[R.GENERATOR_MODEL] = json.dumps(self.generator_config)
            config[R.GENERATOR_BATCH_SIZE] = self.regularizer_batch_size
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if self.rounds_trained > 0 and messages:
            weights = ArrayRecord(OrderedDict((k, v.detach().cpu()) for k, v in generator.state_dict().items()))
            for message in messages:
                message.content[R.GENERATOR] = weights
            self._round.bytes_sent += weights.count_bytes() * len(messages)
        return messages

    # ------------------------------------------------------------------ one round
    def aggregate(self, server_round: int, updates: list[ClientUpdate]) -> tuple[ArrayRecord, MetricRecord]:
        """Train the generator against the clients' heads, then average the clients' models (FedAvg)."""
        started = time.perf_counter()
        metrics = self.train_generator(updates)
        reg = [float(u.metrics[R.GENERATOR_LOSS]) for u in updates if R.GENERATOR_LOSS in u.metrics]
        if reg:
            metrics["client_generator_loss"] = float(np.mean(reg))
            metrics["client_generator_weight"] = self.regularizer_weights(server_round)[0]
        if self.rounds_trained == 1:  # logged once, in the first round's row
            metrics["generator_parameters"] = float(count_parameters(self._require_generator()))
        metrics["server_seconds"] = time.perf_counter() - started
        self.record_server_metrics(metrics)
        return super().aggregate(server_round, updates)

    def heads(self, updates: list[ClientUpdate]) -> tuple[torch.Tensor, torch.Tensor]:
        """The clients' classifier heads stacked: weights (clients, classes, feature_dim) and biases
        (clients, classes), read from their replies' ``head.*`` arrays (every registry classifier
        ends in the linear layer ``head``). One batched product then scores a batch for every client."""
        run = self._require_run()
        try:
            weight = [torch.from_numpy(u.arrays["head.weight"].numpy()) for u in updates]
            bias = [torch.from_numpy(u.arrays["head.bias"].numpy()) for u in updates]
        except KeyError:
            raise ConfigError(
                "FedGen needs clients whose model ends in the linear layer 'head' (a registry classifier)"
            ) from None
        return torch.stack(weight).float().to(run.device), torch.stack(bias).float().to(run.device)

    def class_weights(self, label_counts: np.ndarray) -> torch.Tensor:
        """(clients, classes) weights of each client's head per label: its share of the label's
        samples (``label_counts``, columns sum to 1), or ``1/clients`` with ``uniform``."""
        if self.class_weighting == "label_counts":
            return class_weights_from_counts(label_counts)
        return uniform_class_weights(*np.shape(label_counts))

    def train_generator(self, updates: list[ClientUpdate]) -> dict[str, float]:
        """``generator_steps`` Adam steps on FedGen's generator loss; mean losses and the heads'
        weighted accuracy on the last batch of generated features."""
        run, generator, optimizer = self._require_run(), self._require_generator(), self.optimizer
        counts = np.stack([u.label_counts for u in updates])
        self.label_prior = counts.sum(0).astype(np.float64)
        weights = self.class_weights(counts).to(run.device)
        prior = torch.as_tensor(self.label_prior / self.label_prior.sum(), device=run.device)
        head_weight, head_bias = self.heads(updates)
        generator.train()
        sums = {"generator_ce": 0.0, "generator_diversity": 0.0}
        for _ in range(self.generator_steps):
            labels = torch.multinomial(prior, self.generator_batch_size, replacement=True)
            noise = generator.sample_noise(len(labels))
            features = generator(labels, noise=noise)
            # (clients, batch, classes)
            logits = torch.einsum("nd,kcd->knc", features, head_weight) + head_bias.unsqueeze(1)
            ce = weighted_member_cross_entropy(logits, labels, weights)
            div = diversity_loss(noise, features)
            loss = ce + self.diversity * div
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums["generator_ce"] += ce.item() / self.generator_steps
            sums["generator_diversity"] += div.item() / self.generator_steps
        with torch.no_grad():  # the class-weighted ensemble of heads (as FedFTG's teacher) on the last batch
            ensemble = (weights.unsqueeze(1) * logits).sum(0)
            sums["generator_accuracy"] = (ensemble.argmax(1) == labels).float().mean().item()
        generator.eval()
        self.rounds_trained += 1
        return sums

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """FedAvg's state plus the generator, its optimiser and the label prior it was trained for."""
        generator = self._require_generator()
        return {
            **super().state_dict(),
            "generator": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
            "generator_optimizer": self.optimizer.state_dict(),
            "label_prior": None if self.label_prior is None else torch.as_tensor(self.label_prior),
            "rounds_trained": self.rounds_trained,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (after :meth:`bind`, before the first resumed round)."""
        super().load_state_dict(state)
        generator = self._require_generator()
        generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["generator_optimizer"])
        prior = state.get("label_prior")
        self.label_prior = None if prior is None else prior.numpy().astype(np.float64)
        self.rounds_trained = int(state.get("rounds_trained", 0))

    def _require_run(self) -> ServerRun:
        if self.server_run is None:
            raise RuntimeError("FedGen.bind(run) must be called before the first round (run_server does this)")
        return self.server_run

    def _require_generator(self) -> nn.Module:
        self._require_run()
        assert self.generator is not None
        return self.generator
