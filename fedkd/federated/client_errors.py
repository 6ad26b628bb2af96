"""A client's exception as one line, and Flower's copies of its traceback kept off the console.

Flower answers an instruction whose ClientApp raised with an error reply whose reason is
``str(type(ex)) + ":<'" + str(ex) + "'>"``. In a deployment ``ex`` is the client's own exception
(``<class 'IndexError'>:<'Target 8 is out of bounds.'>``); on the simulation engine it is Ray's
``RayTaskError(ClientAppException)``, whose text is the worker's whole traceback with terminal
colour codes, and the engine logs that traceback twice more per client. :func:`client_exception`
finds the innermost exception's type and message in either; :class:`ClientTracebacks` sends the
engine's copies to the run's log file instead of the console (``debug=true`` keeps them there too).
"""

from __future__ import annotations

import logging
import os
import re

#: Terminal escape sequences (colours, cursor moves): ESC [ parameters final-byte.
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
#: A traceback's exception line: a (dotted) class name at the start of a line, a colon, the message.
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Fault|Warning)): ?(.*)$")
#: Flower's ``str(type(ex)) + ":<'" + str(ex) + "'>"``.
FLOWER_REASON = re.compile(r"^<class '([\w.()]+)'>:<'(.*)'>\s*$", re.S)
#: The wrappers around the client's own exception (Ray's task error and Flower's ClientApp error).
WRAPPERS = ("ClientAppException", "RayTaskError")

#: Where the simulation engine logs a client's exception (path suffix, function or None for any).
ENGINE_SITES = (
    ("/server/superlink/fleet/vce/vce_api.py", "worker"),
    ("/server/superlink/fleet/vce/backend/raybackend.py", None),
)


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences."""
    return ANSI.sub("", text)


def client_exception(reason: str, limit: int = 300) -> str:
    """``"Type: message"`` of the innermost exception in an error reply's ``reason``: the client's
    own, not Ray's or Flower's wrapper around it; no colour codes, one line, at most ``limit`` characters."""
    text = strip_ansi(str(reason)).strip()
    match = FLOWER_REASON.match(text)
    if match is not None:
        cls, body = match.group(1), match.group(2)
        if not any(w in cls for w in WRAPPERS):
            return _one_line(f"{cls.rsplit('.', 1)[-1]}: {body}", limit)
        text = body
    # Python prints a chain from the original exception to the last: the first exception line of
    # the client's own is the innermost.
    for line in text.splitlines():
        found = EXCEPTION_LINE.match(line.rstrip())
        if found is not None and not any(w in found.group(1) for w in WRAPPERS):
            return _one_line(f"{found.group(1).rsplit('.', 1)[-1]}: {found.group(2)}", limit)
    # No exception line: Flower's "Exception ClientAppException occurred. Message: <str(ex)>", or the text.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else text
    return _one_line(last.split("Message: ", 1)[-1].rstrip("'>"), limit)


def _one_line(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


def run_log_files() -> list[logging.FileHandler]:
    """The run's log files: the file handlers on the root logger (Hydra's ``<job>.log``), not the
    null device (pytest's handler when it writes no log file)."""
    return [h for h in logging.getLogger().handlers
            if isinstance(h, logging.FileHandler) and h.baseFilename != os.devnull]


def where_tracebacks_are() -> str:
    """Where a client's full traceback can be read, for the one-line error."""
    files = run_log_files()
    if files:
        return f"full traceback in {files[0].baseFilename}; debug=true shows it"
    return "the client's full traceback is in the SuperNode's log; debug=true shows it"


class ClientTracebacks(logging.Filter):
    """A filter for Flower's logger: the simulation engine's reports of a client's exception go to
    the run's log files, colour codes stripped, and not to the console. ``show`` (``debug=true``)
    lets them through to the console as well."""

    def __init__(self, show: bool = False) -> None:
        super().__init__()
        self.show = show

    def filter(self, record: logging.LogRecord) -> bool:
        if not _from_engine(record):
            return True
        plain = logging.makeLogRecord({**record.__dict__, "msg": strip_ansi(record.getMessage()), "args": None})
        for handler in run_log_files():
            if plain.levelno >= handler.level:
                handler.handle(plain)
        return self.show


def _from_engine(record: logging.LogRecord) -> bool:
    path = record.pathname.replace("\\", "/")
    return record.levelno >= logging.ERROR and any(
        path.endswith(suffix) and (func is None or record.funcName == func) for suffix, func in ENGINE_SITES
    )
