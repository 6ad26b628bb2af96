"""Which node is which client: Flower's node ids are random, so the server asks each node once
for its partition id and samples clients by partition id (a seed then gives the same clients)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedkd.errors import FedkdError
from fedkd.federated import records as R
from fedkd.federated.client_errors import client_exception

#: ``construct(record, node_ids, message_type) -> messages`` (:func:`fedkd.strategies.messages.build_messages`).
MessageBuilder = Callable[[RecordDict, list[int], str], Iterable[Message]]


class PartitionDirectory:
    """``{node_id: partition_id}`` learned by one query message per new node.

    Args:
        num_clients: partitions ``0..num_clients-1``; every node must report this count.
        node_timeout: seconds to wait for enough clients (and for the query replies).
        construct: builds the query messages (:func:`fedkd.strategies.messages.build_messages`).
    """

    def __init__(self, num_clients: int, node_timeout: float, construct: MessageBuilder) -> None:
        self.num_clients = num_clients
        self.node_timeout = node_timeout
        self.construct = construct
        self.node_partition: dict[int, int] = {}

    def connected(self, grid: Grid, needed: int) -> dict[int, int]:
        """``{partition_id: node_id}`` of the connected clients, once ``needed`` are online.

        Asks each node not seen before for its partition id; waits up to ``node_timeout`` seconds.
        """
        deadline = time.monotonic() + self.node_timeout
        while True:
            nodes = sorted(grid.get_node_ids())
            unknown = [n for n in nodes if n not in self.node_partition]
            if unknown:
                self._query(grid, unknown)
            online: dict[int, int] = {}
            for node in nodes:
                if node not in self.node_partition:
                    continue
                pid = self.node_partition[node]
                if pid in online:
                    raise FedkdError(
                        f"two SuperNodes report partition-id {pid}; give each SuperNode its own "
                        "--node-config 'partition-id=<k> num-partitions=<n>'"
                    )
                online[pid] = node
            if len(online) >= needed:
                return online
            if time.monotonic() > deadline:
                raise FedkdError(
                    f"only {len(online)} of the {needed} clients needed connected within "
                    f"{self.node_timeout:.0f}s; start num_clients={self.num_clients} SuperNodes "
                    "(flwr run: --federation-config num-supernodes=N) or raise node_timeout"
                )
            time.sleep(1.0)

    def _query(self, grid: Grid, nodes: Sequence[int]) -> None:
        query = RecordDict({R.CONFIG: ConfigRecord({"query": "partition"})})
        messages = self.construct(query, list(nodes), MessageType.QUERY)
        replies = grid.send_and_receive(messages, timeout=self.node_timeout)
        for reply in replies:
            if reply.has_error():
                raise FedkdError(
                    f"node {reply.metadata.src_node_id} could not report its partition "
                    f"({client_exception(reply.error.reason)}); "
                    "check that its ClientApp loads (fedkd installed) and its --node-config"
                )
            metrics = R.reply_metrics(reply)
            num_partitions = int(metrics[R.NUM_PARTITIONS])
            if num_partitions != self.num_clients:
                raise FedkdError(
                    f"a SuperNode has num-partitions={num_partitions} but num_clients={self.num_clients}; "
                    "make them equal (--node-config 'num-partitions=N' or num_clients=N)"
                )
            self.node_partition[reply.metadata.src_node_id] = int(metrics[R.PARTITION_ID])
