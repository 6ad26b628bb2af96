"""Ctrl-C: the first press stops a run cleanly, a second one at once; both end in one line, exit code 130.

SIGTERM (``kill``, ``timeout``, a job scheduler's stop) is handled the same way and ends with exit
code 143 (128 + 15), as a process killed by it would: the run stops after its last checkpoint and
says how to resume, instead of dying mid-round with the simulation's workers.

The command-line entry points run inside :func:`handle_sigint`. The first SIGINT sets :data:`STOP`
and raises :class:`KeyboardInterrupt` in the main thread, as Python's own handler does: a
centralized run (``fedkd-train``, ``fedkd-distill``) leaves its epoch there, and on Flower's
simulation engine the main thread leaves the engine, which shuts Ray down. The federated server
runs in a thread of its own there, which a signal never reaches: it checks :data:`STOP` between
rounds and while it waits for replies (:class:`fedkd.federated.stoppable_grid.StoppableGrid`) and
ends with :class:`Interrupted`. Checkpoints are written atomically after every complete epoch or
round, so the last one stays valid whatever the interrupt hits. A second SIGINT while the first is
being handled prints the same line and exits at once.

:func:`message` words the line from the run's folder: the last complete epoch or round is the one
in its checkpoint file, and the command that resumes it is the run's own command line with
``resume=<folder>``.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

#: Set by the first Ctrl-C; cleared when the handler is removed.
STOP = threading.Event()
#: The shell's exit code for a process ended by SIGINT (128 + 2); SIGTERM's is 143 (128 + 15).
EXIT_CODE = 130
#: The signals that stop a run: Ctrl-C, and a polite request to stop from outside.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: The console command of each entry point's config.
COMMANDS = {"sim": "fedkd-sim", "train": "fedkd-train", "centralized": "fedkd-distill", "compare": "fedkd-compare"}
#: Each resumable config: (checkpoint file, the key of its last complete step, the step's name).
CHECKPOINTS = {
    "sim": ("server_state.pt", "round", "round"),
    "train": ("train_state.pt", "epoch", "epoch"),
    "centralized": ("train_state.pt", "epoch", "epoch"),
}


class Interrupted(KeyboardInterrupt):
    """Raised where a thread that signals never reach notices :data:`STOP` (the federated server)."""


@dataclass
class RunInfo:
    """What the one-line message names: the entry point's config, the run folder, the command line's overrides."""

    config_name: str
    folder: Path
    overrides: Sequence[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        return COMMANDS.get(self.config_name, f"fedkd ({self.config_name})")


_run: RunInfo | None = None
_owned: tuple[int, ...] = ()  # the stop signals whose handler this module installed (none: not armed)
_exit_code = EXIT_CODE  # 128 + the number of the first stop signal received


def armed() -> bool:
    """Whether a Ctrl-C handler of this module is installed (a run can be stopped by :data:`STOP`)."""
    return bool(_owned)


def rearm() -> None:
    """Put the stop handler back on the signals :func:`handle_sigint` holds. ``ray.init`` replaces
    SIGTERM's with ``sys.exit(15)``, and ``ray.shutdown`` leaves it there: without this, a SIGTERM
    after a simulation (fedkd-compare's next run, its report) would end the command with exit code 15
    and no stop line."""
    if _owned and threading.current_thread() is threading.main_thread():
        for signum in _owned:
            signal.signal(signum, _on_stop_signal)


def check_stop() -> None:
    """Raise :class:`Interrupted` once Ctrl-C was pressed."""
    if STOP.is_set():
        raise Interrupted()


def describe(run: RunInfo | None) -> None:
    """Register the run that :func:`message` words (``None``: none yet)."""
    global _run
    _run = run


def last_step(path: Path, key: str) -> int | None:
    """The last complete epoch or round in a checkpoint file, or ``None`` when there is none."""
    if not path.is_file():
        return None
    try:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # tensors stay on disk
        return int(state[key])
    except Exception:  # a file being replaced, or not a fedkd state: no step to name
        return None


def _quote(word: str) -> str:
    """``word`` for a POSIX shell: bare, in double quotes when it holds single quotes only (a Hydra
    list of strings reads better so), else as :func:`shlex.quote` writes it."""
    if shlex.quote(word) == word:
        return word
    if "'" in word and not any(c in word for c in '"$`\\!'):
        return f'"{word}"'
    return shlex.quote(word)


def _command(run: RunInfo, *extra: str) -> str:
    kept = [o for o in run.overrides if o.split("=", 1)[0].lstrip("+~") not in ("resume", "hydra.run.dir")]
    return " ".join([run.command, *(_quote(o) for o in [*kept, *extra])])


def _compare_message(run: RunInfo) -> str:
    """Where a comparison stopped: its unfinished run (one without ``summary.json``) and the command."""
    again = _command(run, f"hydra.run.dir={run.folder}")
    state, key, unit = CHECKPOINTS["sim"]
    for folder in sorted((run.folder / "runs").glob("*/seed*")):
        if (folder / "summary.json").exists():
            continue
        step = last_step(folder / state, key)
        where = f"in {folder.relative_to(run.folder)}"
        if step is not None:
            return (f"fedkd: interrupted {where} after {unit} {step}; continue with {again} "
                    f"(finished runs are kept, that run resumes after {unit} {step})")
        return f"fedkd: interrupted {where} before its first {unit} completed; continue with {again}"
    return f"fedkd: interrupted; continue with {again} (finished runs are kept)"


def message() -> str:
    """The one line that ends an interrupted run: where it stopped and how to resume it."""
    run = _run
    if run is None:
        return "fedkd: interrupted before the run started"
    if run.config_name == "compare":
        return _compare_message(run)
    if run.config_name not in CHECKPOINTS:
        return f"fedkd: interrupted; output in {run.folder}"
    state, key, unit = CHECKPOINTS[run.config_name]
    step = last_step(run.folder / state, key)
    if step is None:
        return f"fedkd: interrupted before {unit} 1 completed; nothing to resume, run the command again"
    return f"fedkd: interrupted after {unit} {step}; resume with {_command(run, f'resume={run.folder}')}"


def exit_code() -> int:
    """128 + the stop signal's number: 130 after Ctrl-C, 143 after SIGTERM."""
    return _exit_code


def exit_interrupted() -> None:
    """Print :func:`message` and exit with :func:`exit_code`; at once (``os._exit``) when a thread
    that would keep the interpreter alive is still running (a federated server busy in its round)."""
    print(message(), file=sys.stderr, flush=True)
    exit_if_held(_exit_code)
    sys.exit(_exit_code)


def exit_if_held(code: int) -> None:
    """Exit with ``code`` at once (``os._exit``) when a thread that would keep the interpreter alive
    is still running: Python waits for every non-daemon thread before it exits."""
    busy = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if busy:
        _exit_now(code)


def _exit_now(code: int | None = None) -> None:
    import logging

    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()  # the run's log file gets its last lines
    os._exit(_exit_code if code is None else code)


def request_stop(signum: int) -> None:
    """Stop the run as the first ``signum`` does: set :data:`STOP`, and the exit code to 128 + ``signum``."""
    global _exit_code
    _exit_code = 128 + signum
    STOP.set()


def _on_stop_signal(signum: int, frame: object) -> None:
    if STOP.is_set():  # the second Ctrl-C (or SIGTERM): stop now, the last checkpoint stays as it is
        print(message(), file=sys.stderr, flush=True)
        _exit_now()
    request_stop(signum)
    raise KeyboardInterrupt


#: What each stop signal's handler is when the process was not told to ignore it.
_DEFAULTS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


@contextmanager
def handle_sigint() -> Iterator[None]:
    """Install the Ctrl-C and SIGTERM handler for the ``with`` block (main thread only; a signal that
    the process was started ignoring, a background job's SIGINT, stays ignored)."""
    global _exit_code, _owned
    mine = [s for s in STOP_SIGNALS if signal.getsignal(s) is _DEFAULTS[s]]
    if threading.current_thread() is not threading.main_thread() or not mine:
        yield
        return
    STOP.clear()
    _exit_code = EXIT_CODE
    for signum in mine:
        signal.signal(signum, _on_stop_signal)
    _owned = tuple(mine)
    try:
        yield
    finally:
        for signum in mine:
            signal.signal(signum, _DEFAULTS[signum])
        _owned = ()
        STOP.clear()
