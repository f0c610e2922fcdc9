"""Per-socket coalescing of outgoing wire messages into batches (``wire.encode_batch``).

Theory of operation
-------------------
ZeroMQ costs tens of µs per message it moves (the sender wakes its I/O
thread, the receiver polls), whatever the size, so a worker queues what it
sends to one downstream socket in an ``Outbox`` and sends the queue as one
batch when it holds `max_messages` messages or `max_bytes` bytes, or when
the worker is about to wait (its inbox is empty, a paced source sleeps, a
send must wait for room): a live stream's lone buffer leaves at once, an
offline run moves batches. Order per socket is kept by construction (one
queue per socket, sent whole, in order).

A stage's ``hwm`` still counts messages: ZeroMQ's HWM counts batches, so
``batching(hwm)`` gives batches of at most ``hwm // 2`` messages (and
``BATCH_MAX_MESSAGES``, ``BATCH_MAX_BYTES``) and a socket HWM of
``ceil(hwm / that)`` batches: each side of an edge holds about `hwm`
messages at most, as before batching, and memory stays bounded.

The price of an HWM of 2 batches: ZeroMQ's reader signals its writer's side
(its I/O thread) every HWM/2 batches it reads, and each side's I/O thread
signals its socket as often. A live stream's batch holds one message (or a
tick's, one per stream), so it would pay those wake-ups on every message. So
the planner marks the stages whose every stream is live (``WorkerSpec.live``:
fed by paced sources only), and their edges batch ``hwm // 8`` messages with
an 8-batch HWM (``batching(hwm, live=True)``): the same bound in messages,
and the signals come every 4th batch. In a live 1-stream hop that took the
sink's I/O thread from 3.1 to 2.1 wake-ups per message and its main thread
from 2.2 to 1.4 (a wake-up per message is the least). Bulk edges keep large
batches: batches of hwm // 8 cost 1152-sample blocks ~50 % more CPU per
message (bench_hop, one hop: 87-90 against 53-62 µs). Edges into an ordered
stage are not batched: the balanced router picks a replica by its room for
one message, and the reorder window downstream counts messages.

Pure bookkeeping: no sockets, no clocks.
"""

from __future__ import annotations

from flowengine.engine.wire.codec import ZERO_COPY_MIN_BYTES, Part, encode_batch

__all__ = ["Outbox", "BATCH_MAX_MESSAGES", "BATCH_MAX_BYTES", "batching"]

# 1152-sample stereo f32 blocks (~9 KB) go ~28 to a batch, 4096-sample ones (32 KB) 8.
BATCH_MAX_MESSAGES = 32
BATCH_MAX_BYTES = 256 * 1024


def batching(hwm: int, live: bool = False) -> tuple[int, int]:
    """(messages per batch at most, socket HWM in batches) for an edge of `hwm` messages;
    `live`: the edge of a stage whose streams are all live (deeper queue, smaller batches)."""
    per_batch = max(1, min(BATCH_MAX_MESSAGES, hwm // (8 if live else 2)))
    return per_batch, max(1, -(-hwm // per_batch))


class Outbox:
    """The messages waiting to go to one destination socket."""

    __slots__ = ("dest", "socket", "max_messages", "max_bytes", "messages", "_bytes",
                 "_largest")

    def __init__(self, dest: str, socket: object, *, max_messages: int = BATCH_MAX_MESSAGES,
                 max_bytes: int = BATCH_MAX_BYTES) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError(f"an outbox holds at least one message and one byte, got "
                             f"max_messages={max_messages}, max_bytes={max_bytes}")
        self.dest = dest
        self.socket = socket
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.messages: list[list[Part]] = []   # queued (true when any: no call to ask)
        self._bytes = self._largest = 0

    def add(self, parts: list[Part], nbytes: int) -> bool:
        """Queue one encoded message of `nbytes` bytes; True when the batch is full (send it)."""
        self.messages.append(parts)
        self._bytes += nbytes
        if nbytes > self._largest:
            self._largest = nbytes
        return len(self.messages) >= self.max_messages or self._bytes >= self.max_bytes

    def __len__(self) -> int:
        return len(self.messages)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def take(self) -> tuple[list[Part], bool]:
        """The queued messages as one multipart message, and whether ZeroMQ should copy its
        parts (every message is small: see ``wire.ZERO_COPY_MIN_BYTES``); empties it."""
        messages, self.messages = self.messages, []
        # A batch is one body built by join; a single message keeps its views (and goes as
        # it is: a live stream's usual case).
        copy = len(messages) > 1 or self._largest < ZERO_COPY_MIN_BYTES
        self._bytes = self._largest = 0
        return (messages[0] if len(messages) == 1 else encode_batch(messages)), copy
