"""A script's Ctrl-C during a simulation: the first one asks the run to stop, the second one
interrupts at once, and the caller gets its KeyboardInterrupt once the run has ended."""

from __future__ import annotations

import os
import signal

import pytest

from fedkd.apps.sim_interrupt import script_stops_at_first_interrupt
from fedkd.utils import interrupt


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler, as a script has it; STOP clear before and after."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt.STOP.clear()
    yield
    interrupt.STOP.clear()
    signal.signal(signal.SIGINT, previous)


def test_the_first_ctrl_c_sets_stop_and_is_raised_when_the_run_has_ended(python_sigint):
    ran_on = False
    with pytest.raises(KeyboardInterrupt):
        with script_stops_at_first_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            assert interrupt.STOP.is_set()  # the server's thread sees this and ends its run
            ran_on = True  # the engine goes on until its server and its clients' tasks are done
    assert ran_on
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_interrupts_at_once(python_sigint):
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with script_stops_at_first_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("first")
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("second")
    assert reached == ["first"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_run_without_ctrl_c_raises_nothing(python_sigint):
    with script_stops_at_first_interrupt():
        pass
    assert not interrupt.STOP.is_set()


def test_a_handler_the_caller_installed_is_left_alone(python_sigint):
    calls = []
    signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    with script_stops_at_first_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
    assert calls == [signal.SIGINT] and not interrupt.STOP.is_set()
