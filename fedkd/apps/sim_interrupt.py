"""Ctrl-C on Flower's simulation engine: the main thread leaves the engine, the server thread follows.

Why a plain Ctrl-C did not stop ``fedkd-sim``: ``flwr.simulation.run_simulation`` runs the ServerApp
in a (non-daemon) thread and the engine in the main thread. SIGINT raises ``KeyboardInterrupt`` in
the main thread only; the engine then shuts Ray down, but the ServerApp thread stays in
``Grid.send_and_receive`` waiting for replies that never come (up to ``round_timeout``, an hour by
default), and Python waits for that thread before it exits. A second Ctrl-C interrupted that
wait with a traceback.

With :func:`fedkd.utils.interrupt.handle_sigint` installed, the first Ctrl-C also sets
:data:`~fedkd.utils.interrupt.STOP`; the server's grid (:class:`fedkd.federated.stoppable_grid.StoppableGrid`)
and round loop notice it and the ServerApp returns. :func:`wind_down` waits for that, briefly, and
makes sure Ray is shut down; :class:`QuietAfterStop` keeps the engine's and Ray's complaints about
their interrupted work (client tasks cancelled, actors gone) off the console.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fedkd.federated.stoppable_grid import SERVER_RUNNING
from fedkd.utils import interrupt

#: How long the main thread waits for the ServerApp to end after Ctrl-C (it notices within 0.1 s
#: while it waits for replies; a server busy distilling may take longer, and is then cut off: the
#: checkpoint of the last complete round is on disk, written atomically).
GRACE_SECONDS = 5.0
#: The loggers whose records are dropped once Ctrl-C was pressed.
LOGGERS = ("flwr", "ray")


class QuietAfterStop(logging.Filter):
    """Drop every record once Ctrl-C was pressed: what follows is the run being torn down."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not interrupt.STOP.is_set()


def wind_down(grace: float = GRACE_SECONDS) -> None:
    """After Ctrl-C left the engine: wait up to ``grace`` seconds for the ServerApp thread to end,
    then shut Ray down if the engine did not get to it (an interrupt during ``ray.init``)."""
    deadline = time.monotonic() + grace
    while SERVER_RUNNING.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    import ray

    if ray.is_initialized():
        ray.shutdown()


@contextmanager
def script_stops_at_first_interrupt() -> Iterator[None]:
    """A script's or a notebook's Ctrl-C (no handler of fedkd's installed): the first one sets
    :data:`~fedkd.utils.interrupt.STOP`, the server ends after its last complete round, the engine
    after its clients' tasks in flight, and :class:`KeyboardInterrupt` is raised once the simulation
    has ended; a second Ctrl-C raises it at once.

    Python's own handler raises in the main thread at once; the engine then shuts Ray down while its
    worker threads still wait in ``ray.get`` for client tasks, a wait that never ends, and the
    interpreter waits for those threads at exit. (The command line's handler ends the process
    instead, which a notebook's kernel must not.) A handler the caller installed is left alone.
    """
    if (interrupt.armed() or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return

    def first_stops(signum: int, frame: object) -> None:
        if interrupt.STOP.is_set():
            raise KeyboardInterrupt
        interrupt.STOP.set()

    signal.signal(signal.SIGINT, first_stops)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupt.STOP.is_set():
        raise KeyboardInterrupt
