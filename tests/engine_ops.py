"""Operators for the engine tests, used as ``op: "engine_ops:RampSource"`` (module:attribute).

The ramp source numbers every sample of a stream 0, 1, 2, ... so a sink can
check that each stream arrived complete and in order; the faulty nodes fail
in the ways a real worker can (exception, exit code, hang, signal).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from collections import deque
from pathlib import Path

import numpy as np

from flowengine.audio.buffers import AudioFrame
from flowengine.errors import FlowError
from flowengine.audio.format import AudioFormat
from flowengine.ops.io.multistream import StreamInterleaver
from flowengine.ops.node import AGAIN, EOF, PACKET, PCM, Node
from flowengine.ops.streams import MultiStreamSourceNode

__all__ = ["RampSource", "PassThrough", "CheckingSink", "CrashingPass", "ExitingPass",
           "HangingPass", "SignalPass", "op", "replica_index", "StatelessPass", "SlowReplicaPass",
           "KillReplicaPass", "ToneStreams", "PacketFileSink", "DropOnePass", "RampStreams",
           "SlowFlushPass"]

RATE = 8000


def op(name: str) -> str:
    """The config spelling of one operator of this module."""
    return f"{__name__}:{name}"


class RampSource(Node):
    """`streams` streams of `samples` samples each, interleaved block by block; sample i = i."""

    input_kind = None
    output_kind = PCM

    def __init__(self, streams: int = 3, samples: int = 10000, block: int = 512,
                 channels: int = 1, prefix: str = "s", extra: int = 0) -> None:
        self.format = AudioFormat(RATE, channels, "f32", True)
        self.block = block
        self.positions = {f"{prefix}{i}": 0 for i in range(streams)}
        # Stream i has samples + i * extra samples (streams of different lengths end apart).
        self.lengths = {name: samples + i * extra for i, name in enumerate(self.positions)}
        self.order = deque(self.positions)

    def push(self, buf: object) -> None:
        raise FlowError("RampSource takes no input")

    def pull(self) -> object:
        while self.order:
            stream = self.order.popleft()
            start = self.positions[stream]
            count = min(self.block, self.lengths[stream] - start)
            if count <= 0:
                continue
            self.positions[stream] = start + count
            self.order.append(stream)
            ramp = np.arange(start, start + count, dtype=np.float32)
            data = np.repeat(ramp[None, :], self.format.channels, axis=0)
            return AudioFrame(data, self.format, start, stream=stream)
        return EOF


def RampStreams(streams: int = 24, samples: int = 8192, block: int = 1024,
                max_open: int = 4) -> Node:
    """A multi-stream source like ``files``: `streams` ramps ("r0", "r1", ...) read through a
    StreamInterleaver with at most `max_open` open at once, each ended as soon as it is done."""
    fmt = AudioFormat(RATE, 1, "f32", True)

    def ramp(stream: str):
        for start in range(0, samples, block):
            count = min(block, samples - start)
            yield AudioFrame(np.arange(start, start + count, dtype=np.float32)[None, :], fmt,
                             start, stream=stream)

    entries = [(f"r{i}", lambda stream=f"r{i}": (ramp(stream), lambda: None))
               for i in range(streams)]
    source = StreamInterleaver(entries, max_open=max_open, name="ramps")
    source.format = fmt          # what SourceNode.output_format reports
    return MultiStreamSourceNode(source, PCM, name="ramps")


RampStreams.input_kind, RampStreams.output_kind = None, PCM   # a source (engine.operators)


class PassThrough(Node):
    """Gives back what it gets; flush ends it."""

    def __init__(self) -> None:
        self.queue: deque = deque()
        self.ended = False

    def push(self, buf: object) -> None:
        if buf is None:
            self.ended = True
        else:
            self.queue.append(self.transform(buf))

    def transform(self, buf: AudioFrame) -> AudioFrame:
        return buf

    def pull(self) -> object:
        if self.queue:
            return self.queue.popleft()
        return EOF if self.ended else AGAIN


class SlowFlushPass(PassThrough):
    """A pass-through whose flush (a stream's end, e.g. after a drain) writes `marker` +
    ".flushing", takes `seconds`, then writes `marker` + ".flushed" and lets the end go on:
    a point a test can see (the drain reached it) and a flush a stop must cut short."""

    def __init__(self, marker: str, seconds: float = 1.0) -> None:
        super().__init__()
        self.marker, self.seconds = marker, seconds

    def push(self, buf: object) -> None:
        if buf is None:
            Path(self.marker + ".flushing").write_text(str(os.getpid()))
            time.sleep(self.seconds)
            Path(self.marker + ".flushed").write_text(str(os.getpid()))
        super().push(buf)


class CheckingSink(Node):
    """Checks that every sample continues its stream's ramp; writes `<out_dir>/<stream>.json`
    ({"samples": n, "messages": m}) when the stream ends. `delay` seconds per buffer make a
    deliberately slow sink; `check_pts` also checks that pts count the samples (time base
    1/8000); `arrivals` adds "arrivals": the time.monotonic() of every buffer (one clock
    for every process on the machine)."""

    output_kind = None

    def __init__(self, out_dir: str, delay: float = 0.0, check_pts: bool = False,
                 arrivals: bool = False) -> None:
        self.out_dir, self.delay, self.check_pts = Path(out_dir), delay, check_pts
        self.arrivals: list[float] | None = [] if arrivals else None
        self.stream: str | None = None
        self.next = self.messages = 0
        self.ended = False

    def push(self, buf: AudioFrame | None) -> None:
        if buf is None:
            self.ended = True
            if self.stream is not None:
                result = {"samples": self.next, "messages": self.messages}
                if self.arrivals is not None:
                    result["arrivals"] = self.arrivals
                (self.out_dir / f"{self.stream}.json").write_text(json.dumps(result))
            return
        if self.arrivals is not None:
            self.arrivals.append(time.monotonic())
        if self.delay:
            time.sleep(self.delay)
        self.stream = buf.stream
        if self.check_pts and buf.pts * buf.time_base * RATE != self.next:
            raise FlowError(f"stream {buf.stream!r}: pts {buf.pts} (time base {buf.time_base}) "
                            f"at sample {self.next}")
        expected = np.arange(self.next, self.next + buf.samples, dtype=np.float32)
        if not np.array_equal(buf.planar()[0], expected):
            raise FlowError(f"stream {buf.stream!r}: samples out of order at {self.next}: "
                            f"got {buf.planar()[0][:4]}...")
        self.next += buf.samples
        self.messages += 1

    def pull(self) -> object:
        return EOF if self.ended else AGAIN


class _FaultAfter(PassThrough):
    """A pass-through that misbehaves at its `after`-th buffer."""

    def __init__(self, after: int = 5) -> None:
        super().__init__()
        self.after, self.seen = after, 0

    def transform(self, buf: AudioFrame) -> AudioFrame:
        self.seen += 1
        if self.seen >= self.after:
            self.fault()
        return buf

    def fault(self) -> None:
        raise NotImplementedError


class CrashingPass(_FaultAfter):
    def fault(self) -> None:
        raise RuntimeError(f"deliberate failure at buffer {self.seen}")


class ExitingPass(_FaultAfter):
    def fault(self) -> None:
        os._exit(3)


class HangingPass(_FaultAfter):
    def fault(self) -> None:
        time.sleep(3600)


class SignalPass(_FaultAfter):
    """Kills its own process with a signal (SIGSEGV stands for a crash in native code)."""

    def __init__(self, after: int = 5, signum: int = int(signal.SIGSEGV)) -> None:
        super().__init__(after)
        self.signum = signum

    def fault(self) -> None:
        os.kill(os.getpid(), self.signum)
        time.sleep(10)


def replica_index() -> int:
    """The replica this worker process runs (its process is named "flowengine stage:replica")."""
    name = multiprocessing.current_process().name
    return int(name.rpartition(":")[2]) if name.startswith("flowengine ") else 0


class StatelessPass(PassThrough):
    """A pass-through the engine may spread over replicas (``ordered: true``)."""

    stateful = False


class SlowReplicaPass(StatelessPass):
    """Stateless pass-through that sleeps `delay` seconds per buffer on replica `slow` only."""

    def __init__(self, slow: int = 0, delay: float = 0.005) -> None:
        super().__init__()
        self.delay = delay if replica_index() == slow else 0.0

    def transform(self, buf: AudioFrame) -> AudioFrame:
        if self.delay:
            time.sleep(self.delay)
        return buf


class KillReplicaPass(StatelessPass):
    """Stateless pass-through whose replica `replica` SIGKILLs itself at its `after`-th buffer."""

    def __init__(self, replica: int = 1, after: int = 5) -> None:
        super().__init__()
        self.armed, self.after, self.seen = replica_index() == replica, after, 0

    def transform(self, buf: AudioFrame) -> AudioFrame:
        self.seen += 1
        if self.armed and self.seen >= self.after:
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(10)
        return buf


class ToneStreams(Node):
    """`streams` sine streams ("t0", "t1", ...; stream i at 220 + 110·i Hz, 0.5 amplitude) of
    `seconds` each, interleaved block by block; `only` keeps one of them (the in-process
    reference of one stream)."""

    input_kind = None
    output_kind = PCM

    def __init__(self, streams: int = 4, seconds: float = 0.5, rate: int = 44100,
                 block: int = 1152, only: str | None = None) -> None:
        self.format = AudioFormat(rate, 1, "f32", True)
        total = int(seconds * rate)
        self.signals = {}
        for i in range(streams):
            name = f"t{i}"
            if only is None or name == only:
                t = np.arange(total) / rate
                self.signals[name] = (0.5 * np.sin(2 * np.pi * (220 + 110 * i) * t)).astype(
                    np.float32)[None, :]
        self.positions = dict.fromkeys(self.signals, 0)
        self.order = deque(self.signals)
        self.block = block

    def push(self, buf: object) -> None:
        raise FlowError("ToneStreams takes no input")

    def pull(self) -> object:
        while self.order:
            stream = self.order.popleft()
            start = self.positions[stream]
            data = self.signals[stream][:, start:start + self.block]
            if data.shape[1] == 0:
                continue
            self.positions[stream] = start + data.shape[1]
            self.order.append(stream)
            return AudioFrame(np.ascontiguousarray(data), self.format, start, stream=stream)
        return EOF


class PacketFileSink(Node):
    """Writes each stream's packets to `<out_dir>/<stream>.json` (pts, duration and hex bytes
    of every packet) when the stream ends; `arrivals` also writes
    `<out_dir>/<stream>.arrivals.json`, the time.monotonic() each packet came in at."""

    input_kind = PACKET
    output_kind = None

    def __init__(self, out_dir: str, arrivals: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.stream: str | None = None
        self.packets: list = []
        self.arrivals: list[float] | None = [] if arrivals else None
        self.ended = False

    def push(self, buf: object) -> None:
        if buf is None:
            self.ended = True
            if self.stream is not None:
                (self.out_dir / f"{self.stream}.json").write_text(json.dumps(self.packets))
                if self.arrivals is not None:
                    (self.out_dir / f"{self.stream}.arrivals.json").write_text(
                        json.dumps(self.arrivals))
            return
        if self.arrivals is not None:
            self.arrivals.append(time.monotonic())
        self.stream = buf.stream
        self.packets.append([buf.pts, buf.duration, bytes(buf.data).hex()])

    def pull(self) -> object:
        return EOF if self.ended else AGAIN


class DropOnePass(PassThrough):
    """Silently loses the `at`-th buffer of stream `stream` while claiming, like gain, that
    every sample it takes comes out: the end-of-run sample audit must catch it."""

    def __init__(self, stream: str = "s1", at: int = 3) -> None:
        super().__init__()
        self.target, self.at, self.seen = stream, at, 0

    @staticmethod
    def expected_out(samples_in: int, params: dict, in_rate: int, out_rate: int
                     ) -> tuple[int, int]:
        return samples_in, samples_in

    def push(self, buf: AudioFrame | None) -> None:
        if buf is not None and buf.stream == self.target:
            self.seen += 1
            if self.seen == self.at:
                return
        super().push(buf)
