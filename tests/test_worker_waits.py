"""A worker's idle wait (``Worker.wait_readable``: one poll(2) on the sockets' ZMQ_FD
descriptors, not zmq_poll) still answers control at once: a shutdown ends a wait on the inbox,
a message that arrived before the worker sent on its control socket (which can take the
message's signal) is not left waiting, and a message on the inbox ends the wait."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
import zmq

from engine_ops import op
from flowengine.config.model import RunConfig
from flowengine.engine import build_plan
from flowengine.engine.control.channel import encode_control
from flowengine.engine.worker.process import _Shutdown
from worker_rig import worker_under_router

LONG_S = 60.0      # the wait asked for: longer than any of the bounds below
BOUND_S = 10.0     # no test waits longer than this for a thread that should be done at once


@pytest.fixture
def sink_worker(tmp_path):
    """The sink of a two-stage run as a Worker in this process (stats a minute apart, so no
    heartbeat ends a wait), its coordinator's ROUTER, and a PUSH into its inbox."""
    config = RunConfig.model_validate({"stages": [
        {"name": "src", "op": op("RampSource"), "params": {"streams": 1, "samples": 256}},
        {"name": "sink", "op": op("CheckingSink"), "params": {"out_dir": str(tmp_path)}}]})
    plan = build_plan(config, run_dir=str(tmp_path / "run"), stats_interval=LONG_S * 2)
    spec = plan.stage("sink").workers[0]
    context = zmq.Context()
    try:
        worker, router = worker_under_router(context, spec, BOUND_S)
        push = context.socket(zmq.PUSH)
        push.connect(spec.inbox_endpoint)
        worker.service()                       # the first stats go now, not in the waits
        yield worker, router, push
    finally:
        context.destroy(linger=0)
        shutil.rmtree(plan.run_dir, ignore_errors=True)


def in_thread(call):
    """Run `call` in a thread; its result (or exception) once it is done, within BOUND_S."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def wait_as_run_inbox(worker) -> int:
    """Wait as ``run_inbox`` does until the inbox has a message (a wake-up may also come from
    a peer connecting); the number of waits."""
    poll = worker.readable_poll(worker.inbox_fd)
    for waits in range(1, 100):
        if worker.inbox.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            return waits
        worker.wait_readable(poll, LONG_S)
    raise AssertionError("100 wake-ups and no message")


def tell(router, worker, kind: str) -> None:
    router.send_multipart([worker.id.encode(), encode_control(kind)])


def test_a_shutdown_ends_a_wait_on_the_inbox_and_control(sink_worker):
    worker, router, _push = sink_worker
    thread, outcome = in_thread(lambda: wait_as_run_inbox(worker))
    time.sleep(0.2)                            # (it is blocked by now, or soon)
    tell(router, worker, "shutdown")
    thread.join(BOUND_S)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), _Shutdown)


def test_a_control_message_whose_signal_a_send_took_is_answered_before_waiting(sink_worker):
    worker, router, _push = sink_worker
    tell(router, worker, "drain")
    time.sleep(0.2)                            # the drain is in the worker's queue
    worker._tell("ack", acks={}, ended={})     # a send on control reads its commands
    poll = worker.readable_poll(worker.inbox_fd)
    thread, outcome = in_thread(lambda: worker.wait_readable(poll, LONG_S))
    thread.join(BOUND_S)
    assert not thread.is_alive() and "error" not in outcome
    assert worker.draining


def test_a_message_on_the_inbox_ends_the_wait(sink_worker):
    worker, _router, push = sink_worker
    thread, outcome = in_thread(lambda: wait_as_run_inbox(worker))
    time.sleep(0.2)
    push.send(b"anything")
    thread.join(BOUND_S)
    assert not thread.is_alive() and "error" not in outcome
    assert worker.inbox.recv(zmq.NOBLOCK) == b"anything"
