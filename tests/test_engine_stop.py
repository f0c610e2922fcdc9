"""The coordinator's stop of its workers (``Engine._stop_all``) with real processes and a real
ROUTER: a ``shutdown`` that had to wait is still handed over, and a socket error while sending
it neither escapes the ``finally`` it runs in nor skips the terminate that follows."""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import signal
import sys
import time
from pathlib import Path

import zmq

from flowengine.config.model import RunConfig
from flowengine.engine import Engine, build_plan
from flowengine.engine.control.messages import COORDINATOR_MESSAGES, decode_control
from flowengine.engine.control.delivery import ControlOutbox
from flowengine.core.report import WorkerReport
from flowengine.engine.control.coordinator import _Tracked
from test_engine_failures import faulty_run

WAIT_MS = 10_000   # how long a stand-in worker waits for its shutdown


def late_worker(endpoint: str, identity: bytes, delay: float) -> None:
    """A worker that connects its control socket only after `delay` s; exit code 0 when its
    first control message is ``shutdown``, 3 when none comes within WAIT_MS."""
    time.sleep(delay)
    context = zmq.Context()
    control = context.socket(zmq.DEALER)
    control.setsockopt(zmq.IDENTITY, identity)
    control.connect(endpoint)
    kind = decode_control(control.recv(), expect=COORDINATOR_MESSAGES)["t"] \
        if control.poll(WAIT_MS) else None
    context.destroy(linger=0)
    sys.exit(0 if kind == "shutdown" else 3)


def stopping(tmp_path: Path, router_open: bool, delay: float, stop_timeout: float
             ) -> tuple[Engine, list]:
    """An Engine whose workers are `late_worker`s, stopped at once; (engine, processes)."""
    plan = build_plan(faulty_run(tmp_path, "PassThrough"), run_dir=str(tmp_path / "run"))
    engine = Engine(plan, stop_timeout=stop_timeout)
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.bind(plan.control_endpoint)
    if not router_open:
        router.close(linger=0)
    engine._router, engine._control = router, ControlOutbox(router)
    mp = multiprocessing.get_context("fork")
    processes = []
    try:
        for spec in plan.workers:
            process = mp.Process(target=late_worker, daemon=True,
                                 args=(plan.control_endpoint, spec.id.encode(), delay))
            engine._workers[spec.id] = _Tracked(spec, process,
                                                WorkerReport(spec.stage, spec.replica))
            process.start()
            processes.append(process)
        engine._stop_all()
    finally:
        for process in processes:     # whatever happened above: nothing stays behind
            if process.is_alive():
                process.kill()
            process.join(1.0)
        context.destroy(linger=0)
        shutil.rmtree(plan.run_dir, ignore_errors=True)
    return engine, processes


def test_a_shutdown_for_a_worker_not_connected_yet_is_handed_over_while_stopping(tmp_path):
    # The workers connect 0.3 s after the shutdown was sent: it waited in the FIFO.
    _, processes = stopping(tmp_path, router_open=True, delay=0.3, stop_timeout=5.0)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]


def test_a_socket_error_at_shutdown_is_logged_and_the_workers_still_stopped(tmp_path, caplog):
    # The ROUTER is closed: sending raises ENOTSOCK, neither EAGAIN nor EHOSTUNREACH.
    with caplog.at_level(logging.WARNING, logger="flowengine.engine"):
        engine, processes = stopping(tmp_path, router_open=False, delay=30.0,
                                     stop_timeout=0.3)
    assert [p.exitcode for p in processes] == [-signal.SIGTERM] * 4
    assert [r.getMessage() for r in caplog.records] == [
        f"shutdown to worker {worker_id!r} not sent (Socket operation on non-socket): it is "
        f"stopped by signal" for worker_id in engine._workers]


def sleep_a_while() -> None:
    time.sleep(30)


def test_the_applications_own_forkserver_processes_still_die_of_sigterm(tmp_path):
    """flowengine's forkserver ignores SIGTERM (a group-wide SIGTERM must not kill it), but
    the forkserver is the program's: a process the application starts from it afterwards
    must still stop on Process.terminate() (it ignored SIGTERM, and join() waited)."""
    run = RunConfig.model_validate({"stages": [
        {"name": "src", "op": "tone", "params": {"seconds": 0.05}},
        {"name": "out", "op": "null_sink"}]})
    Engine(build_plan(run)).run()           # flowengine's forkserver, with its preload
    process = multiprocessing.get_context("forkserver").Process(target=sleep_a_while)
    process.start()
    try:
        time.sleep(0.3)
        process.terminate()
        process.join(5)
        assert process.exitcode == -signal.SIGTERM
    finally:
        if process.is_alive():
            process.kill()
            process.join()
