"""Operators for the restart tests (``op: "restart_ops:KillOncePass"``): replicas that die
on purpose once (or every time), and a sink that records exactly which ramp samples came."""

from __future__ import annotations

import glob
import json
import os
import signal
import time
from collections import deque
from pathlib import Path

import numpy as np

from engine_ops import replica_index
from flowengine.audio.buffers import AudioFrame
from flowengine.errors import FlowError
from flowengine.ops.node import AGAIN, EOF, Node

__all__ = ["KillOncePass", "KillOnceAfterPass", "KillOnceHolding", "KillAlwaysPass", "StopOncePass", "DieAfterEofPass",
           "DieAfterEofHolding", "RampRecorder", "op"]


def op(name: str) -> str:
    return f"{__name__}:{name}"


def _same(samples_in: int, params: dict, in_rate: int, out_rate: int) -> tuple[int, int]:
    return samples_in, samples_in


class KillOncePass(Node):
    """Stateless pass-through; replica `replica` SIGKILLs itself at its `after`-th buffer,
    once per run (the file `marker` says it happened, so its replacement lives). The other
    replicas wait `flush_sleep` seconds at the end of each stream (they end late)."""

    stateful = False
    expected_out = staticmethod(_same)
    signal = signal.SIGKILL

    def __init__(self, marker: str, replica: int = 1, after: int = 20,
                 flush_sleep: float = 0.0) -> None:
        self.queue: deque = deque()
        self.ended = False
        self.marker = Path(marker)
        self.armed = replica_index() == replica and not self.marker.exists()
        self.after, self.seen = after, 0
        self.flush_sleep = flush_sleep if replica_index() != replica else 0.0

    def _maybe_die(self) -> None:
        self.seen += 1
        if self.armed and self.seen >= self.after:
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), self.signal)
            time.sleep(10)

    def push(self, buf: AudioFrame | None) -> None:
        if buf is None:
            time.sleep(self.flush_sleep)
            self.ended = True
            return
        self._maybe_die()
        self.queue.append(buf)

    def pull(self) -> object:
        if self.queue:
            return self.queue.popleft()
        return EOF if self.ended else AGAIN


class KillOnceAfterPass(KillOncePass):
    """As KillOncePass, but `after` counts the buffers of every stream of the process: it dies
    in the middle of a run of many short streams."""

    seen_in_process = 0

    def _maybe_die(self) -> None:
        KillOnceAfterPass.seen_in_process += 1
        self.seen = KillOnceAfterPass.seen_in_process - 1
        super()._maybe_die()


class KillOnceHolding(KillOncePass):
    """Stateful: holds each buffer until the next one comes (a one-block delay line, as a
    codec or filter holds state), so a killed replica loses what it held."""

    stateful = True

    def __init__(self, marker: str, replica: int = 1, after: int = 20,
                 flush_sleep: float = 0.0) -> None:
        super().__init__(marker, replica, after, flush_sleep)
        self.held: AudioFrame | None = None

    def push(self, buf: AudioFrame | None) -> None:
        if buf is None:
            time.sleep(self.flush_sleep)
            if self.held is not None:
                self.queue.append(self.held)
            self.held, self.ended = None, True
            return
        self._maybe_die()
        if self.held is not None:
            self.queue.append(self.held)
        self.held = buf


class KillAlwaysPass(KillOncePass):
    """Replica `replica` SIGKILLs itself at its `after`-th buffer in every generation."""

    def __init__(self, marker: str, replica: int = 1, after: int = 20) -> None:
        super().__init__(marker, replica, after)
        self.armed = replica_index() == replica


class StopOncePass(KillOncePass):
    """As KillOncePass, but replica `replica` stops itself (SIGSTOP): alive, and silent."""

    signal = signal.SIGSTOP


_DEATH_ARMED = False


def _die_after_eof(marker: Path, wait_for: str | None, count: int) -> None:
    """Make this worker process SIGKILL itself when it reports done: after its eof went
    downstream (0.3 s later, so the eof has surely left), and, with `wait_for` (a glob), once
    `count` files match it. Patches the worker's control call in this process only."""
    global _DEATH_ARMED
    if _DEATH_ARMED:
        return
    _DEATH_ARMED = True
    from flowengine.engine.worker import process as worker
    tell = worker.Worker._tell

    def tell_then_die(self: object, kind: str, **fields: object) -> None:
        if kind == "done":
            deadline = time.monotonic() + 10
            while wait_for and len(glob.glob(wait_for)) < count and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        tell(self, kind, **fields)

    worker.Worker._tell = tell_then_die


def _dies_after_eof(base: type, doc: str) -> type:
    """`base` whose replica `replica` dies (once per run) after it sent its eof downstream,
    before it reports done; with `wait_for`, only once `count` files match that glob."""

    class DiesAfterEof(base):
        __doc__ = doc

        def __init__(self, marker: str, replica: int = 0, flush_sleep: float = 0.0,
                     wait_for: str | None = None, count: int = 0) -> None:
            super().__init__(marker, replica, after=10 ** 9, flush_sleep=flush_sleep)
            if self.armed:
                _die_after_eof(self.marker, wait_for, count)

    return DiesAfterEof


DieAfterEofPass = _dies_after_eof(KillOncePass, "A stateless pass-through that dies after eof.")
DieAfterEofHolding = _dies_after_eof(KillOnceHolding, "The stateful twin of DieAfterEofPass.")


class RampRecorder(Node):
    """Sink of RampSource streams: refuses a sample that does not come after the previous one
    (a duplicate or disorder) and writes `<out_dir>/<stream>.json` with the samples received
    and the missing ranges [start, end) of the ramp, up to `expected` samples."""

    output_kind = None

    def __init__(self, out_dir: str, expected: int) -> None:
        self.out_dir, self.expected = Path(out_dir), expected
        self.stream: str | None = None
        self.next = self.samples = 0
        self.missing: list[list[int]] = []
        self.ended = False

    def push(self, buf: AudioFrame | None) -> None:
        if buf is None:
            self.ended = True
            if self.stream is not None:
                if self.next < self.expected:
                    self.missing.append([self.next, self.expected])
                (self.out_dir / f"{self.stream}.json").write_text(json.dumps(
                    {"samples": self.samples, "missing": self.missing}))
            return
        self.stream = buf.stream
        values = buf.planar()[0].astype(np.int64)
        start = int(values[0])
        if start < self.next or not np.array_equal(values, np.arange(start, start + len(values))):
            raise FlowError(f"stream {buf.stream!r}: sample {start} after {self.next - 1} "
                            f"(duplicate or out of order)")
        if start > self.next:
            self.missing.append([self.next, start])
        self.next = start + len(values)
        self.samples += len(values)

    def pull(self) -> object:
        return EOF if self.ended else AGAIN
