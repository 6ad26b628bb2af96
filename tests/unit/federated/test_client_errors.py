"""A client's exception reaches the user as one line: its own type and message, not Ray's wrapper,
traceback or colour codes; the simulation engine's copies of the traceback go to the run's log file."""

from __future__ import annotations

import logging

import pytest
from flwr.app import Error, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedkd.errors import FedkdError
from fedkd.federated.client_errors import ClientTracebacks, client_exception, strip_ansi
from fedkd.federated.faults import INJECTED
from fedkd.strategies.screening import screen_replies

# The reason of an error reply under the simulation engine, as Flower 1.42 builds it from Ray's
# RayTaskError(ClientAppException) (paths shortened): the worker's traceback, with colour codes.
RAY_REASON = (
    "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor.run()\x1b[39m "
    "(pid=3891, ip=192.0.2.2, actor_id=a279, repr=<flwr.simulation.ray_transport.ray_actor.ClientAppActor "
    "object at 0x7f20>)\n"
    "                  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    '  File "flwr/clientapp/client_app.py", line 161, in __call__\n'
    "    return self._registered_funcs[full_name](message, context)\n"
    '  File "fedkd/training/supervised.py", line 53, in train_epoch\n'
    "    loss = F.cross_entropy(logits, y)\n"
    "IndexError: Target 8 is out of bounds.\n"
    "\n"
    "The above exception was the direct cause of the following exception:\n"
    "\n"
    "\x1b[36mray::ClientAppActor.run()\x1b[39m (pid=3891, ip=192.0.2.2)\n"
    '  File "flwr/simulation/ray_transport/ray_actor.py", line 65, in run\n'
    "    raise ClientAppException(str(ex)) from ex\n"
    "flwr.clientapp.client_app.ClientAppException: \n"
    "Exception ClientAppException occurred. Message: Target 8 is out of bounds.'>"
)


@pytest.fixture(autouse=True)
def task_identity():
    # Flower stamps new messages with the running task's identity; outside a run we set one.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 1


def test_ray_reason_gives_the_innermost_exception():
    assert client_exception(RAY_REASON) == "IndexError: Target 8 is out of bounds."


def test_deployment_reason_gives_the_exception_itself():
    assert client_exception("<class 'ZeroDivisionError'>:<'division by zero'>") == "ZeroDivisionError: division by zero"
    assert client_exception("<class 'mypkg.errors.BadShape'>:<'x\ny'>") == "BadShape: x y"


def test_other_reasons_keep_their_last_words():
    assert client_exception("Exception ClientAppException occurred. Message: boom'>") == "boom"
    assert client_exception("An exception was raised when attempting to load `ClientApp`") == (
        "An exception was raised when attempting to load `ClientApp`"
    )
    assert strip_ansi("\x1b[91mERROR \x1b[0m:") == "ERROR :"


def _failed(reason: str, node: int) -> Message:
    instruction = Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
    return Message(Error(code=0, reason=reason), reply_to=instruction)


def test_every_client_failing_stops_the_run_with_one_line(tmp_path):
    failed = [_failed(RAY_REASON, 10), _failed("<class 'KeyError'>:<'w'>", 11)]
    logging.getLogger().addHandler(handler := logging.FileHandler(tmp_path / "run.log"))
    try:
        with pytest.raises(FedkdError) as raised:
            screen_replies(1, [], failed, 2, lambda m: None, "num-examples")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    line = str(raised.value)
    assert line == (f"round 1: every client failed; the first: IndexError: Target 8 is out of bounds. "
                    f"(full traceback in {tmp_path / 'run.log'}; debug=true shows it)")
    assert "\x1b" not in line and "\n" not in line


def test_injected_faults_never_stop_the_run(caplog):
    failed = [_failed(f"<class 'fedkd.federated.faults.InjectedFault'>:<'{INJECTED}: client 0 raises'>", 10)]
    with caplog.at_level("WARNING", logger="fedkd.sim"):
        screened = screen_replies(1, [], failed, 1, lambda m: None, "num-examples")
    assert screened.usable == [] and screened.counts["failed"] == 1
    assert any("a client failed: InjectedFault: fedkd injected fault" in r.getMessage() for r in caplog.records)


def _engine_record(message: str) -> logging.LogRecord:
    return logging.LogRecord("flwr", logging.ERROR, "/x/flwr/server/superlink/fleet/vce/vce_api.py", 143,
                             message, None, None, func="worker")


@pytest.mark.parametrize("show", [False, True])
def test_engine_tracebacks_go_to_the_run_log_not_the_console(tmp_path, show):
    root = logging.getLogger()
    root.addHandler(handler := logging.FileHandler(tmp_path / "sim.log"))
    try:
        keep = ClientTracebacks(show=show).filter(_engine_record(RAY_REASON))
        other = logging.LogRecord("flwr", logging.ERROR, "/x/flwr/simulation/run_simulation.py", 344, "server",
                                  None, None)
        assert ClientTracebacks().filter(other)  # the server's own errors stay on the console
    finally:
        root.removeHandler(handler)
        handler.close()
    assert keep is show
    text = (tmp_path / "sim.log").read_text()
    assert "IndexError: Target 8 is out of bounds." in text and "\x1b" not in text
