"""Coordinator → worker control messages are never lost silently (engine/control/delivery.py):
real ROUTER and DEALER sockets with small HWMs and a DEALER that does not read for a while."""

from __future__ import annotations

import time

import pytest
import zmq

from flowengine.engine.control.delivery import ControlBacklog, ControlOutbox

HWM = 10


@pytest.fixture
def sockets(tmp_path):
    context = zmq.Context()
    endpoint = f"ipc://{tmp_path / 'control'}"

    def router(mandatory: bool) -> zmq.Socket:
        sock = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.setsockopt(zmq.ROUTER_MANDATORY, int(mandatory))
        sock.bind(endpoint)
        return sock

    def dealer(identity: str) -> zmq.Socket:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, HWM)
        sock.setsockopt(zmq.IDENTITY, identity.encode())
        sock.connect(endpoint)
        return sock

    yield router, dealer
    context.destroy(linger=0)


def connected(router: zmq.Socket, dealer: zmq.Socket) -> None:
    """The ROUTER knows the DEALER's identity once a first message came from it."""
    dealer.send(b"ready")
    assert router.poll(2000)
    router.recv_multipart()


def read_all(dealer: zmq.Socket, wait_ms: int = 200) -> list[bytes]:
    got = []
    while dealer.poll(wait_ms):
        got.append(dealer.recv())
    return got


def test_a_plain_router_drops_what_a_full_worker_cannot_take(sockets):
    # Why the outbox exists: 200 messages to a DEALER that is not reading, 2 x HWM arrive.
    make_router, make_dealer = sockets
    router, dealer = make_router(mandatory=False), make_dealer("w:0")
    connected(router, dealer)
    for i in range(200):
        router.send_multipart([b"w:0", b"%d" % i], flags=zmq.NOBLOCK)   # never raises
    assert len(read_all(dealer)) < 200


def test_every_message_reaches_a_worker_that_reads_late_in_order(sockets):
    make_router, make_dealer = sockets
    router, dealer = make_router(mandatory=True), make_dealer("w:0")
    connected(router, dealer)
    outbox = ControlOutbox(router)
    for i in range(200):
        outbox.send("w:0", b"%d" % i)
    assert 0 < outbox.waiting("w:0") < 200     # its queue filled: the rest waits here
    got: list[bytes] = []
    deadline = time.monotonic() + 10
    while len(got) < 200 and time.monotonic() < deadline:
        got += read_all(dealer, wait_ms=50)   # the worker reads now and then ...
        outbox.flush()                         # ... and the coordinator's loop flushes
    assert got == [b"%d" % i for i in range(200)]
    assert outbox.waiting("w:0") == 0


def test_a_worker_not_connected_yet_gets_its_messages_once_it_is(sockets):
    make_router, make_dealer = sockets
    router = make_router(mandatory=True)
    outbox = ControlOutbox(router)
    outbox.send("w:1", b"resume")              # a replacement still starting
    outbox.send("w:1", b"ack")
    assert outbox.waiting("w:1") == 2
    dealer = make_dealer("w:1")
    connected(router, dealer)
    outbox.flush()
    assert read_all(dealer) == [b"resume", b"ack"]


def test_a_backlog_beyond_the_bound_names_the_worker_and_a_dropped_one_is_gone(sockets):
    make_router, _ = sockets
    outbox = ControlOutbox(make_router(mandatory=True), max_waiting=3)
    for _ in range(3):
        outbox.send("w:2", b"ack")
    with pytest.raises(ControlBacklog, match=r"^worker 'w:2' did not take its control "
                                             r"messages: 3 waiting for it \(its queue is "
                                             r"full\)$"):
        outbox.send("w:2", b"ack")
    assert outbox.drop("w:2") == 3 and outbox.waiting("w:2") == 0
