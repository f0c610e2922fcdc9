"""Probe operators for the engine benchmarks (``op: "_bench_ops:ProbeSource"``).

Each probe notes, in steady state (after `warmup` messages), the wall clock
(``time.monotonic``, system-wide on Linux so comparable across processes)
and its process's CPU time (``time.process_time``: the whole worker, socket
and wire work included) at its first and last message, and writes them to
``out_dir/<tag>-<pid>-<stream>.json`` when it closes. ``collect`` merges
the files of one process, so a worker carrying many streams counts once.

Latency of a paced run: the source notes when its clock started (block r of
every stream is due r periods later), the sink the arrival time of every
steady-state block; ``latencies_ms`` gives arrival - due per block (one
machine, one monotonic clock).
"""

from __future__ import annotations

import json
import os
from array import array
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from flowengine.audio.buffers import AudioFrame
from flowengine.errors import FlowError
from flowengine.audio.format import AudioFormat
from flowengine.ops.node import AGAIN, EOF, PCM, Node
from flowengine.ops.pacing import MediaClock

__all__ = ["op", "ProbeSource", "ProbeIdentity", "ProbeSink", "collect", "latencies_ms"]

# Reading the process CPU clock is a syscall (~1 µs alone, far more while the ZeroMQ I/O
# thread runs on the other core): sample it a few times a second, not per message.
_CPU_SAMPLE_S = 0.05


def op(name: str) -> str:
    """The config spelling of one operator of this module."""
    return f"{__name__}:{name}"


class _Probe:
    """First/last (wall, cpu) of the steady-state messages of one node."""

    def __init__(self, out_dir: str, tag: str, warmup: int) -> None:
        self.out_dir, self.tag, self.warmup = out_dir, tag, warmup
        self.count = 0
        self.first: tuple[float, float] | None = None
        self.last: tuple[float, float] | None = None
        self.stream = "?"
        self.at_last = 0
        self.extra: dict = {}              # written with the record (epoch, arrivals)

    def tick(self, stream: str) -> None:
        self.count += 1
        if self.count <= self.warmup:
            return
        wall = time.monotonic()
        if self.first is None:
            self.first, self.stream = (wall, time.process_time()), stream
            self.last = self.first
            self.at_last = self.count
        elif wall - self.last[0] >= _CPU_SAMPLE_S:
            self.last, self.at_last = (wall, time.process_time()), self.count

    def write(self) -> None:
        if self.first is None or self.out_dir == "":
            return
        if self.count > self.at_last:   # the window ends at the last message, even when the
            self.last, self.at_last = (time.monotonic(), time.process_time()), self.count
            # steady state was shorter than one CPU sample period (a fast hop, quick mode)
        # Messages between the first and the last CPU sample: the window both clocks cover.
        extra = {key: [list(a) for a in value] if key == "arrivals" else value
                 for key, value in self.extra.items()}
        record = {"tag": self.tag, "pid": os.getpid(), "stream": self.stream,
                  "messages": self.at_last - self.warmup - 1, "first": self.first,
                  "last": self.last, **extra}
        path = Path(self.out_dir) / f"{self.tag}-{os.getpid()}-{self.stream}.json"
        path.write_text(json.dumps(record))
        self.out_dir = ""  # close() may come twice


class ProbeSource(Node):
    """`streams` streams of `messages` blocks each (silence), block by block; paced when asked."""

    input_kind = None
    output_kind = PCM

    def __init__(self, out_dir: str, messages: int = 1000, samples: int = 1152,
                 streams: int = 1, sample_rate: int = 48000, channels: int = 2,
                 realtime: bool = False, warmup: int = 20, tag: str = "source") -> None:
        self.format = AudioFormat(sample_rate, channels, "f32", True)
        self.data = np.zeros((channels, samples), np.float32)
        self.samples, self.messages, self.realtime = samples, messages, realtime
        self.streams = [f"s{i}" for i in range(streams)]
        self.sent = 0                                   # blocks sent, all streams
        self.period = samples / sample_rate             # seconds of audio per block
        self.clock = MediaClock()       # every stream's block of one round is due at once
        self.probe = _Probe(out_dir, tag, warmup * streams)

    def push(self, buf: object) -> None:
        raise FlowError("ProbeSource takes no input")

    def pull(self) -> object:
        total = self.messages * len(self.streams)
        if self.sent >= total:
            return EOF
        round_, index = divmod(self.sent, len(self.streams))
        if self.realtime:   # waits as every paced source does (flowengine.ops.pacing)
            self.clock.wait(round_ * self.period)
            if round_ == 0:
                self.probe.extra["epoch"] = self.clock.start
        self.sent += 1
        stream = self.streams[index]
        self.probe.tick(stream)
        return AudioFrame(self.data, self.format, round_ * self.samples, None, stream)

    def close(self) -> None:
        self.probe.write()


class ProbeSink(Node):
    """Counts frames, probing; keeps nothing but the arrival time of each steady-state frame
    (with its pts) when `arrivals` is set."""

    output_kind = None

    def __init__(self, out_dir: str, warmup: int = 20, tag: str = "sink",
                 arrivals: bool = False) -> None:
        self.probe = _Probe(out_dir, tag, warmup)
        self.ended = False
        # Two flat arrays, not a list of tuples: thousands of long-lived objects would make
        # the garbage collector's full passes (tens of ms here) part of what is measured.
        self.arrivals = (array("q"), array("d")) if arrivals else None
        if self.arrivals is not None:
            self.probe.extra["arrivals"] = self.arrivals

    def push(self, buf: object) -> None:
        if buf is None:
            self.ended = True
            self.probe.write()
            return
        self.probe.tick(buf.stream)
        if self.arrivals is not None and self.probe.count > self.probe.warmup:
            self.arrivals[0].append(buf.pts)
            self.arrivals[1].append(time.monotonic())

    def pull(self) -> object:
        return EOF if self.ended else AGAIN

    def close(self) -> None:
        self.probe.write()


class ProbeIdentity(ProbeSink):
    """Passes every frame on unchanged, probing."""

    output_kind = PCM

    def __init__(self, out_dir: str, warmup: int = 20, tag: str = "identity") -> None:
        super().__init__(out_dir, warmup, tag)
        self.pending: AudioFrame | None = None

    def push(self, buf: object) -> None:
        super().push(buf)
        if buf is not None:
            self.pending = buf

    def pull(self) -> object:
        out, self.pending = self.pending, None
        return out if out is not None else super().pull()


def latencies_ms(out_dir: str | Path, sample_rate: int) -> list[float]:
    """Arrival - due time (ms) of every block the sink noted, from the source's epoch."""
    records = [json.loads(path.read_text()) for path in Path(out_dir).glob("*.json")]
    epochs = [r["epoch"] for r in records if r.get("epoch") is not None]
    if not epochs:
        return []
    epoch = min(epochs)
    return [1000.0 * (arrival - (epoch + pts / sample_rate))
            for r in records for pts, arrival in zip(*r.get("arrivals", ([], [])))]


def collect(out_dir: str | Path) -> dict[str, dict[str, float]]:
    """Per tag: steady-state messages, wall seconds and CPU seconds, one process counted once.

    For a tag with several processes (replicas) the messages and CPU add up and the
    wall window is the union of theirs.
    """
    per_process: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for path in Path(out_dir).glob("*.json"):
        record = json.loads(path.read_text())
        per_process[(record["tag"], record["pid"])].append(record)
    tags: dict[str, dict[str, float]] = {}
    for (tag, _pid), records in per_process.items():
        first = min((r["first"] for r in records), key=lambda x: x[0])
        last = max((r["last"] for r in records), key=lambda x: x[0])
        entry = tags.setdefault(tag, {"messages": 0, "cpu_s": 0.0, "start": first[0],
                                      "end": last[0], "processes": 0})
        entry["messages"] += sum(r["messages"] for r in records)
        entry["cpu_s"] += last[1] - first[1]
        entry["start"], entry["end"] = min(entry["start"], first[0]), max(entry["end"], last[0])
        entry["processes"] += 1
    for entry in tags.values():
        entry["wall_s"] = entry["end"] - entry["start"]
    return tags
