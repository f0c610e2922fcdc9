"""A worker of a plan run inside a test's own process, under a ROUTER standing in for its
coordinator: for tests that drive a Worker's waits and control messages directly."""

from __future__ import annotations

import zmq

from flowengine.engine.plan import WorkerSpec
from flowengine.engine.worker.process import Worker


def worker_under_router(context: zmq.Context, spec: WorkerSpec, wait_s: float
                        ) -> tuple[Worker, zmq.Socket]:
    """A Worker of `spec` whose control socket is connected to a ROUTER bound where the
    coordinator's would be, and that ROUTER, which has heard the worker's ready (so it
    knows its identity); `wait_s` bounds the wait for that ready."""
    router = context.socket(zmq.ROUTER)
    router.bind(spec.control_endpoint)
    control = context.socket(zmq.DEALER)
    control.setsockopt(zmq.IDENTITY, spec.id.encode())
    control.connect(spec.control_endpoint)
    worker = Worker(spec, context, control)
    worker._tell("ready")
    assert router.poll(int(wait_s * 1000)), f"no ready from {spec.id} within {wait_s} s"
    router.recv_multipart()
    return worker, router
