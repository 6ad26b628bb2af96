"""Reply screening: which train replies a round may aggregate (docs/reliability.md).

Flower's own consistency check raises on one odd reply; here a failed, late, non-finite or
malformed reply is counted and dropped, and the round goes on with the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, Message

from fedkd.errors import FedkdError
from fedkd.federated import records as R
from fedkd.federated.client_errors import client_exception, where_tracebacks_are
from fedkd.federated.faults import INJECTED
from fedkd.federated.robust import screen_reply
from fedkd.federated.server_run import ServerRun

log = logging.getLogger("fedkd.sim")


@dataclass
class Screened:
    """The usable replies of a round and the count of each kind of reply (``ok``, ``failed``,
    ``late``, ``nonfinite``, ``malformed``)."""

    usable: list[Message] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def screen_replies(
    server_round: int,
    valid: list[Message],
    failed: list[Message],
    sampled: int,
    reference: Callable[[Message], ArrayRecord | None],
    weighted_by_key: str,
) -> Screened:
    """Drop the replies a round cannot use and count why.

    Args:
        valid, failed: the replies with content and those with an error
            (:func:`fedkd.strategies.messages.split_replies`).
        sampled: how many clients were asked (the rest are late).
        reference: the global weights a reply must match (keys, shapes, dtypes).

    Raises :class:`FedkdError` when every client raised, and not by an injected fault: that is a
    bug or config error on the clients, not a fault to ride out. Its one line names the first
    client's own exception (type and message, not Ray's wrapper) and where its traceback is.
    """
    counts = {"ok": 0, "failed": len(failed), "late": max(0, sampled - len(valid) - len(failed)),
              "nonfinite": 0, "malformed": 0}
    if failed and not valid and not any(INJECTED in m.error.reason for m in failed):
        raise FedkdError(
            f"round {server_round}: every client failed; the first: {client_exception(failed[0].error.reason)} "
            f"({where_tracebacks_are()})"
        )
    for msg in failed:
        log.warning("round %d: a client failed: %s", server_round, client_exception(msg.error.reason))
    usable = []
    for msg in valid:
        kind = screen_reply(msg.content, reference(msg), weighted_by_key)
        if kind is None:
            usable.append(msg)
        else:
            counts[kind] += 1
            log.warning("round %d: dropped a %s reply from node %d", server_round, kind, msg.metadata.src_node_id)
    counts["ok"] = len(usable)
    if counts["late"]:
        log.warning("round %d: %d client(s) did not reply within round_timeout", server_round, counts["late"])
    return Screened(usable, counts)


def enough_replies(server_round: int, screened: Screened, min_replies: int) -> bool:
    """Whether the round has ``strategy.min_replies`` usable replies; if not, say why it is skipped."""
    if len(screened.usable) >= min_replies:
        return True
    counts = screened.counts
    log.warning(
        "round %d skipped: %d usable replies, fewer than strategy.min_replies=%d (failed %d, late %d, "
        "non-finite %d, malformed %d); the global model stays as it was",
        server_round, len(screened.usable), min_replies, counts["failed"], counts["late"], counts["nonfinite"],
        counts["malformed"],
    )
    return False


def group_reference(
    global_arrays: ArrayRecord | None, run: ServerRun | None, partition_id: int | None
) -> ArrayRecord | None:
    """The weights a reply of client ``partition_id`` must match: the round's global model, or with
    mixed architectures (a packed global record) the client's group in it; ``None`` when unknown."""
    if global_arrays is None or not R.is_packed(global_arrays):
        return global_arrays
    if run is None or partition_id is None:
        return None
    try:
        return R.unpack_group(global_arrays, run.group_of(partition_id))
    except IndexError:
        return None
