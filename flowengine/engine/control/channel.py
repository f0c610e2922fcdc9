"""The control channel between the coordinator (ROUTER) and its workers (DEALER).

Each control message is one ZeroMQ part: a msgpack map whose ``t`` key is
the message type. Worker → coordinator::

    ready   sockets bound and connected; waiting for start
    stats   counters so far (about once a second); doubles as the heartbeat
    done    end of run reached: final counts, per-stream counts in and out
    error   the worker failed: ``tb`` holds the formatted traceback
    ack     a consumer of stages that restart losslessly: per replica ``acks`` {stream: next
            data index it expects}, ``ended`` [streams] since the last ack (``replay.py``), and
            ``again`` [ended streams a replay brought again] when there are any
    held    ``to``: this worker holds everything for that dead replica (answer to hold)
    replayed  ``to``, ``generation``, ``messages``, ``streams`` (a count), ``names``: what it
              re-sent to that generation of a replacement
    resumed   ``to``, ``generation``, ``sent``: this upstream resumed that replacement, having
              sent ``sent`` messages to its replica before (the base of its queue depth)

Coordinator → worker::

    start     sources may produce (every worker is ready: no slow-joiner loss)
    drain     sources stop early and end their streams normally (EOS, then EOF)
    shutdown  the run is over (or aborted): close the data sockets and exit
    resume    ``to``, ``generation``: a replacement downstream replica (worker id, and which
              one: a resume still queued behind a newer hold is outdated); send it the caps
              of every open stream routed to it (and eof again if already sent), or, when it
              restarts losslessly, everything of its streams not acknowledged
    hold      ``to``, ``generation``: that downstream replica died; send it nothing until the
              resume of that generation (its replacement)
    ack       ``to``, ``acks``, ``ended``: what the consumers of that replica have taken
    forget    ``sender``, ``generation``, ``streams``, ``replayed``: to the consumers of a
              losslessly restarting replica: ended streams its upstreams forgot, so the
              consumer may stop remembering them (``indexed.py``)

Delivery: the coordinator's messages go through ``control_outbox.ControlOutbox``
(``ROUTER_MANDATORY``, a FIFO per worker for what it cannot take yet), so none
is lost silently; a worker's DEALER blocks at its HWM rather than dropping.

The module is pure encode/decode, like ``wire``: no sockets.
"""

from __future__ import annotations

from typing import Any

import msgpack

from flowengine.errors import WireError

__all__ = ["WORKER_MESSAGES", "COORDINATOR_MESSAGES", "encode_control", "decode_control",
           "MAX_CONTROL_BYTES"]

WORKER_MESSAGES = ("ready", "stats", "done", "error", "ack", "held", "replayed", "resumed")
COORDINATOR_MESSAGES = ("start", "drain", "shutdown", "resume", "hold", "ack", "forget")
# A done message carries per-stream counts and an error carries a traceback: both small.
MAX_CONTROL_BYTES = 4 * 1024 * 1024


def encode_control(kind: str, **fields: Any) -> bytes:
    """One control message of type `kind` with `fields` (msgpack-able values)."""
    if kind not in WORKER_MESSAGES + COORDINATOR_MESSAGES:
        raise WireError(f"unknown control message type {kind!r}")
    return msgpack.packb({"t": kind, **fields}, use_bin_type=True)


def _reject_ext(code: int, data: bytes) -> Any:
    raise WireError(f"control message: msgpack extension type {code} is not allowed")


def decode_control(part: Any, *, expect: tuple[str, ...]) -> dict[str, Any]:
    """Decode one control message whose type must be one of `expect`; WireError otherwise."""
    data = memoryview(part)
    if data.nbytes > MAX_CONTROL_BYTES:
        raise WireError(f"control message of {data.nbytes} bytes over the maximum "
                        f"{MAX_CONTROL_BYTES}")
    try:
        message = msgpack.unpackb(data, raw=False, ext_hook=_reject_ext)
    except WireError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure on received bytes
        raise WireError(f"control message is not valid msgpack ({type(exc).__name__}: "
                        f"{exc})") from None
    if not isinstance(message, dict) or message.get("t") not in expect:
        got = message.get("t") if isinstance(message, dict) else type(message).__name__
        raise WireError(f"unexpected control message {got!r} (expected one of "
                        f"{', '.join(expect)})")
    return message
