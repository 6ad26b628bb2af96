"""Ray for the simulation engine: a cluster address that answers, and a local Ray fit for a busy machine.

**A dead ``backend.address``.** ``ray.init(address="127.0.0.1:1")`` with nothing listening there
retries the connection to the cluster's GCS for minutes (30 s per attempt, printing C++ warnings),
so :func:`probe_address` tries a plain TCP connection first (:data:`PROBE_SECONDS`) and ends with one
line naming ``backend.address`` and the remedy.

**A busy machine.** Ray starts its worker processes -- the simulated clients -- at niceness 15
(Ray's ``worker_niceness``), so that its own daemons stay responsive. Beside other CPU-bound
processes at the default niceness 0 (a second experiment, a build, a ``while True`` loop) such a
worker gets a few percent of a core: the clients' actors took 40-50 s just to import the ClientApp
and the first round did not end within minutes. Killing the stuck run (Ctrl-C, ``timeout``) then
SIGTERMs the workers, which is where Ray's ``ActorUnavailableError ... The process receives a
SIGTERM`` tracebacks came from. A local Ray (not a cluster, whose configuration is its own) runs
its workers at the niceness of the ``fedkd-sim`` process instead (:data:`LOCAL_SYSTEM_CONFIG`), and
gives a worker more time to register with Ray than the 60 s default under such load.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from fedkd.errors import ConfigError

#: Seconds the TCP probe of ``backend.address`` may take.
PROBE_SECONDS = 3.0
#: Ray's system config for a local Ray: workers at the driver's niceness, not Ray's 15, and up to
#: five minutes for a worker process to start and register on a loaded machine.
LOCAL_SYSTEM_CONFIG: dict[str, Any] = {"worker_niceness": 0, "worker_register_timeout_seconds": 300}


def local_system_config() -> dict[str, Any]:
    """:data:`LOCAL_SYSTEM_CONFIG`, the workers' niceness that of this process (``os.nice(0)``)."""
    return {**LOCAL_SYSTEM_CONFIG, "worker_niceness": max(0, os.nice(0))}


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT`` or ``ray://HOST:PORT``; ``None`` for ``auto`` and other forms."""
    text = address.split("://", 1)[-1].strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def probe_address(address: str, timeout: float = PROBE_SECONDS) -> None:
    """Raise a one-line :class:`ConfigError` when nothing accepts a TCP connection at the Ray
    cluster ``address`` (``HOST:PORT``) within ``timeout`` seconds. ``auto`` is left to Ray (it
    reads the address of a cluster started on this machine, and fails at once without one)."""
    target = _host_port(str(address))
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            return
    except OSError as exc:
        reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else (
            f"no answer within {timeout:.0f}s" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc)))
    raise ConfigError(
        f"backend.address={address}: no Ray cluster answers there ({reason}); start one with "
        f"`ray start --head --port={target[1]}` on that host, or set backend.address=null for a local Ray"
    )
