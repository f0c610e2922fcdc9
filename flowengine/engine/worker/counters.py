"""What a worker counts: totals per direction for its stats, and per stream for the audit.

``Counts`` is one direction (in or out) of a worker's ``stats`` heartbeat:
messages, samples, bytes and seconds of audio. ``StreamTally`` keeps, per
stream, the counts and clocks the end-of-run audit compares (``audit.py``).
Both are updated once per buffer, so they stay plain attribute arithmetic.

Pure bookkeeping: no sockets, no clocks.
"""

from __future__ import annotations

from typing import Any

from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.ops.node import Node
from flowengine.core.audit import clock_samples, count_buffer, new_stream_counts

__all__ = ["Counts", "StreamTally", "rate_of"]


def _seconds(buf: AudioFrame | Packet) -> float:
    if type(buf) is AudioFrame:
        return buf.samples / buf.format.sample_rate
    if not buf.duration:
        return 0.0
    # int / int is correctly rounded, as float(Fraction) is: the same value, no Fraction.
    return buf.duration * buf.time_base_num / buf.time_base_den


def _samples(buf: AudioFrame | Packet) -> int:
    """Samples per channel; a packet's duration when its time base is 1/sample rate."""
    if type(buf) is AudioFrame:
        return buf.samples
    return clock_samples(buf) or 0


def rate_of(node: Node) -> int | None:
    """The sample rate a node's packets count at (their time base may be a container's)."""
    fmt = getattr(node, "output_format", None)
    return getattr(fmt, "sample_rate", None)


class Counts:
    """Messages, samples, bytes and seconds of audio in one direction."""

    __slots__ = ("messages", "samples", "bytes", "seconds")

    def __init__(self) -> None:
        self.messages = self.samples = self.bytes = 0
        self.seconds = 0.0

    def add(self, buf: AudioFrame | Packet, nbytes: int) -> None:
        self.messages += 1
        self.samples += _samples(buf)
        self.bytes += nbytes
        self.seconds += _seconds(buf)

    def as_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "samples": self.samples, "bytes": self.bytes,
                "seconds": self.seconds}


class StreamTally:
    """Per stream: the audit's counts (``audit.new_stream_counts``) and its clocks (rates)."""

    def __init__(self) -> None:
        self.stream_counts: dict[str, dict[str, int]] = {}
        self.stream_clocks: dict[str, dict[str, int]] = {}

    def count(self, stream: str, side: str, buf: Any, rate: int | None = None) -> None:
        """Per-stream counts of one buffer, and its clock for the end-of-run audit."""
        clocks = self.stream_clocks.get(stream)
        if clocks is None:
            clocks = self.stream_clocks[stream] = {}
        count_buffer(self.counts_for(stream), clocks, side, buf, rate)

    def counts_for(self, stream: str) -> dict[str, int]:
        counts = self.stream_counts.get(stream)
        if counts is None:
            counts = self.stream_counts[stream] = new_stream_counts()
        return counts
