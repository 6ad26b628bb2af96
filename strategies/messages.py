"""The messages a strategy sends and the split of the replies it gets back, on Flower's public
message API (``flwr.app.Message``) alone."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import Message, RecordDict

log = logging.getLogger("fedkd.sim")


def build_messages(record: RecordDict, node_ids: Iterable[int], message_type: str) -> list[Message]:
    """One message per node, all carrying the same ``record`` (sent once per node by the grid).

    ``message_type`` is one of :class:`flwr.app.MessageType`'s values (train, evaluate, query).
    """
    return [Message(content=record, message_type=message_type, dst_node_id=node) for node in node_ids]


def split_replies(replies: Iterable[Message], phase: str) -> tuple[list[Message], list[Message]]:
    """``(replies with content, replies with an error)``, each in the order received.

    Only the split: what a reply holds is checked by :func:`fedkd.strategies.screening.screen_replies`,
    which drops an odd reply instead of failing the round. ``phase`` (``train``, ``evaluate``) names
    the round's phase in the debug line.
    """
    valid: list[Message] = []
    failed: list[Message] = []
    for reply in replies:
        (failed if reply.has_error() else valid).append(reply)
    log.debug("%s: %d replies with content, %d with an error", phase, len(valid), len(failed))
    return valid, failed
