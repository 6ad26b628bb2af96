"""``flwr run``: the number of clients follows the federation unless the run config's overrides set it.

``conf/sim.yaml`` says ``num_clients: 10``, while the federation ``flwr run .`` starts by default (the
local SuperLink's simulation) has 2 SuperNodes, and a deployment has as many as were started; each
SuperNode knows the federation's size from its node config (``num-partitions``). Under ``flwr run``
both apps compose the config from the run config's ``overrides``; when those do not name
``num_clients``:

- a client takes ``num_clients`` from its node's ``num-partitions`` (:func:`client_overrides`);
- the server asks the first SuperNode that connects for it (:func:`federation_config`), once,
  before the run starts.

``num_clients=N`` in the overrides keeps its meaning: every SuperNode must then report
``num-partitions=N`` (a one-line error, and the run ends as failed, otherwise). ``fedkd-sim`` is
unaffected: it starts ``num_clients`` SuperNodes itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from omegaconf import DictConfig

from fedkd.errors import FedkdError
from fedkd.federated import records as R
from fedkd.federated.client_errors import client_exception
from fedkd.federated.config import RUN_CONFIG_OVERRIDES, compose_sim_config, parse_overrides

log = logging.getLogger("fedkd.sim")

KEY = "num_clients"


def sets_num_clients(overrides: Sequence[str]) -> bool:
    """Whether the Hydra ``overrides`` set ``num_clients`` themselves."""
    return any(o.split("=", 1)[0].lstrip("+~") == KEY for o in overrides)


def client_overrides(overrides: Sequence[str], node_config: Mapping[str, Any]) -> list[str]:
    """A client's overrides: ``num_clients`` from its node's ``num-partitions`` unless they set it."""
    if sets_num_clients(overrides) or R.NUM_PARTITIONS not in node_config:
        return list(overrides)
    return [*overrides, f"{KEY}={int(node_config[R.NUM_PARTITIONS])}"]


def federation_size(grid: Grid, timeout: float) -> int:
    """``num-partitions`` as the first SuperNode to connect reports it; waits up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    nodes = sorted(grid.get_node_ids())
    while not nodes:
        if time.monotonic() > deadline:
            raise FedkdError(
                f"no SuperNode connected within {timeout:.0f}s; start the SuperNodes (flwr run: "
                "--federation-config num-supernodes=N) or raise node_timeout"
            )
        time.sleep(0.5)
        nodes = sorted(grid.get_node_ids())
    content = RecordDict({R.CONFIG: ConfigRecord({"query": "partition"})})
    query = Message(content=content, dst_node_id=nodes[0], message_type=MessageType.QUERY)
    replies = list(grid.send_and_receive([query], timeout=timeout))
    if not replies:
        raise FedkdError(f"SuperNode {nodes[0]} did not answer within {timeout:.0f}s; check it or raise node_timeout")
    if replies[0].has_error():
        raise FedkdError(
            f"SuperNode {nodes[0]} could not report its partition ({client_exception(replies[0].error.reason)}); check "
            "that its ClientApp loads (fedkd installed) and its --node-config 'partition-id=<k> num-partitions=<n>'"
        )
    return int(R.reply_metrics(replies[0])[R.NUM_PARTITIONS])


def federation_config(grid: Grid, run_config: Mapping[str, Any]) -> DictConfig:
    """The ServerApp's config under ``flwr run``: ``conf/sim.yaml`` with the run config's overrides,
    and ``num_clients`` from the federation (:func:`federation_size`) unless the overrides set it."""
    overrides = parse_overrides(str(run_config.get(RUN_CONFIG_OVERRIDES, "")))
    cfg = compose_sim_config(overrides)
    if sets_num_clients(overrides):
        return cfg
    size = federation_size(grid, float(cfg.node_timeout))
    if size != int(cfg.num_clients):
        log.info("num_clients=%d: the federation's SuperNodes hold %d partitions (set num_clients in the run "
                 "config's overrides to require a size)", size, size)
        cfg = compose_sim_config([*overrides, f"{KEY}={size}"])
    return cfg
