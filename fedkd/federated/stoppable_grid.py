"""A Grid whose waits end at Ctrl-C: the federated server's thread notices :data:`fedkd.utils.interrupt.STOP`.

On Flower's simulation engine the ServerApp runs in a thread of its own and spends a round waiting
in ``Grid.send_and_receive`` (up to ``round_timeout`` seconds). A signal reaches only the main
thread, so this wrapper polls for the replies itself and raises
:class:`fedkd.utils.interrupt.Interrupted` within :data:`POLL_SECONDS` of :data:`~fedkd.utils.interrupt.STOP`:
the first Ctrl-C or SIGTERM of a command line, or an interrupt that ended the simulation engine of
a script calling :func:`fedkd.apps.simulation.simulate` (no handler of ours installed). Polling is
what Flower's own grid does between pulls, so the wait is otherwise the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedkd.utils import interrupt

#: Seconds between polls for replies (Flower's in-memory grid polls every 0.1 s too).
POLL_SECONDS = 0.1
#: Set while a ServerApp of this process is in its main function: an interrupted simulation waits
#: for it to end (it notices Ctrl-C within :data:`POLL_SECONDS` while it waits for replies).
SERVER_RUNNING = threading.Event()


class StoppableGrid(Grid):
    """Delegates to ``grid``; :meth:`send_and_receive` checks for Ctrl-C while it waits."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def set_run(self, run) -> None:  # noqa: ANN001 (Flower's Run)
        """Flower's hook: the run this grid serves."""
        self.grid.set_run(run)

    @property
    def run(self):  # noqa: ANN201
        """The run this grid serves."""
        return self.grid.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        """Flower's hook: a message to one node."""
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        """Flower's hook: the connected nodes."""
        interrupt.check_stop()
        return self.grid.get_node_ids()

    def get_nodes(self):  # noqa: ANN201
        """Flower's hook: the connected nodes' information."""
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Flower's hook: send ``messages``; their ids."""
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Flower's hook: the replies that arrived so far to ``message_ids``."""
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Flower's ``send_and_receive`` (push, then pull until every reply is in or ``timeout``
        passed), raising :class:`~fedkd.utils.interrupt.Interrupted` at Ctrl-C."""
        interrupt.check_stop()
        pending = set(self.push_messages(messages))
        end = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending and (end is None or time.monotonic() < end):
            arrived = list(self.pull_messages(pending))
            replies.extend(arrived)
            pending.difference_update(m.metadata.reply_to_message_id for m in arrived)
            if pending:
                interrupt.STOP.wait(POLL_SECONDS)
                interrupt.check_stop()
        return replies
