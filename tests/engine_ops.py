"""Operators for the engine tests, used as ``op: "engine_ops:RampSource"`` (module:attribute).

The ramp source numbers every sample of a stream 0, 1, 2, ... so a sink can
check that each stream arrived complete and in order; the faulty nodes fail
in the ways a real worker can (exception, exit code, hang, signal).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import deque
from pathlib import Path

import numpy as np

from flowengine.buffers import AudioFrame
from flowengine.errors import FlowError
from flowengine.format import AudioFormat
from flowengine.node import AGAIN, EOF, PCM, Node

__all__ = ["RampSource", "PassThrough", "CheckingSink", "CrashingPass", "ExitingPass",
           "HangingPass", "SignalPass", "op"]

RATE = 8000


def op(name: str) -> str:
    """The config spelling of one operator of this module."""
    return f"{__name__}:{name}"


class RampSource(Node):
    """`streams` streams of `samples` samples each, interleaved block by block; sample i = i."""

    input_kind = None
    output_kind = PCM

    def __init__(self, streams: int = 3, samples: int = 10000, block: int = 512,
                 channels: int = 1, prefix: str = "s") -> None:
        self.format = AudioFormat(RATE, channels, "f32", True)
        self.samples, self.block = samples, block
        self.positions = {f"{prefix}{i}": 0 for i in range(streams)}
        self.order = deque(self.positions)

    def push(self, buf: object) -> None:
        raise FlowError("RampSource takes no input")

    def pull(self) -> object:
        while self.order:
            stream = self.order.popleft()
            start = self.positions[stream]
            count = min(self.block, self.samples - start)
            if count <= 0:
                continue
            self.positions[stream] = start + count
            self.order.append(stream)
            ramp = np.arange(start, start + count, dtype=np.float32)
            data = np.repeat(ramp[None, :], self.format.channels, axis=0)
            return AudioFrame(data, self.format, start, stream=stream)
        return EOF


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


class CheckingSink(Node):
    """Checks that every sample continues its stream's ramp; writes `<out_dir>/<stream>.json`
    ({"samples": n, "messages": m}) when the stream ends. `delay` seconds per buffer make a
    deliberately slow sink."""

    output_kind = None

    def __init__(self, out_dir: str, delay: float = 0.0) -> None:
        self.out_dir, self.delay = Path(out_dir), delay
        self.stream: str | None = None
        self.next = self.messages = 0
        self.ended = False

    def push(self, buf: AudioFrame | None) -> None:
        if buf is None:
            self.ended = True
            if self.stream is not None:
                result = {"samples": self.next, "messages": self.messages}
                (self.out_dir / f"{self.stream}.json").write_text(json.dumps(result))
            return
        if self.delay:
            time.sleep(self.delay)
        self.stream = buf.stream
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
