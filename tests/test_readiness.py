"""engine/worker/readiness.py: the looks a worker makes at its sockets, on real ZeroMQ sockets."""

from __future__ import annotations

import time

import pytest
import zmq

from flowengine.engine.worker.readiness import readable_check, writable


def _until(check, seconds: float = 10.0) -> bool:
    """True once `check()` is true (a message takes a moment through inproc's pipe)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_readable_and_writable_say_what_the_sockets_can_do_now() -> None:
    context = zmq.Context()
    push, pull = context.socket(zmq.PUSH), context.socket(zmq.PULL)
    try:
        push.setsockopt(zmq.SNDHWM, 1)
        pull.setsockopt(zmq.RCVHWM, 1)
        pull.bind("inproc://readiness")
        readable = readable_check(pull)
        assert not writable(push) and not readable()     # no peer yet: nowhere to send
        push.connect("inproc://readiness")
        assert _until(lambda: writable(push))
        push.send(b"one")
        assert _until(readable) and pull.recv() == b"one"
        assert not readable()
        sent = 0
        while writable(push) and sent < 100:   # fill the pipe (both high-water marks)
            push.send(b"more", zmq.NOBLOCK)
            sent += 1
        assert 0 < sent < 100 and not writable(push)     # then no room
        pull.recv()
        assert _until(lambda: writable(push))   # room again once the reader took one
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        context.term()


def test_a_closed_socket_is_an_error_not_room() -> None:
    # zmq_poll itself takes a closed socket for descriptor 0 (whatever the process's stdin
    # is): `writable` must say ENOTSOCK before it polls, as getsockopt did.
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.close()
    with pytest.raises(zmq.ZMQError, match="not a socket|non-socket"):
        writable(push)
    context.term()
