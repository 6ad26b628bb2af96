"""The fedkd ``ClientApp``: routes Flower's messages to the client handlers.

``app`` (the object ``flwr run`` loads, see ``[tool.flwr.app.components]``) composes the
``fedkd-sim`` config from the run config (``overrides``); :func:`make_client_app` builds the
same app around a config already composed (``fedkd-sim``, in-process simulation). What a client
does with each message is :mod:`fedkd.clients.handlers`.
"""

from __future__ import annotations

import functools
import json

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from omegaconf import DictConfig, OmegaConf

from fedkd.apps.federation import client_overrides
from fedkd.clients.handlers import handle_evaluate, handle_query, handle_train
from fedkd.federated.config import RUN_CONFIG_OVERRIDES, compose_sim_config, parse_overrides, plain


@functools.lru_cache(maxsize=4)
def _config_from_json(text: str) -> DictConfig:
    return OmegaConf.create(json.loads(text))


@functools.lru_cache(maxsize=4)
def _config_from_overrides(overrides: tuple[str, ...]) -> DictConfig:
    return compose_sim_config(overrides)


def client_config(context: Context, fixed: str | None) -> DictConfig:
    """The run's config: the one the app was built with, else composed from the run config (cached),
    ``num_clients`` from the node's ``num-partitions`` unless the overrides set it (:mod:`fedkd.apps.federation`)."""
    if fixed is not None:
        return _config_from_json(fixed)
    overrides = parse_overrides(str(context.run_config.get(RUN_CONFIG_OVERRIDES, "")))
    return _config_from_overrides(tuple(client_overrides(overrides, context.node_config)))


def make_client_app(cfg: DictConfig | None = None) -> ClientApp:
    """The ClientApp; with ``cfg`` it uses that config, else the one composed from the run config.

    The config travels to the simulation's worker processes as JSON inside the app (Flower
    pickles the app for them), and each process loads its data once.
    """
    fixed = json.dumps(plain(cfg)) if cfg is not None else None
    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        return handle_train(msg, context, client_config(context, fixed))

    @client.evaluate()
    def evaluate_(msg: Message, context: Context) -> Message:
        return handle_evaluate(msg, context, client_config(context, fixed))

    @client.query()
    def query(msg: Message, context: Context) -> Message:
        return handle_query(msg, context, client_config(context, fixed))

    return client


app = make_client_app()
