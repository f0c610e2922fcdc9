"""flowengine.pacing: how live sources wait, and one wait per tick for streams that start together."""

from __future__ import annotations

import time

import numpy as np

from flowengine import pacing
from flowengine.io import ToneSource
from flowengine.io.multitone import MultiToneSource
from flowengine.pacing import MediaClock, wait_until, waiting_with

RATE = 8000
CHUNK = 400          # 50 ms per chunk


class RecordingWaiter:
    """A worker-like waiter: notes each wait (deadline, frames handed out so far), then sleeps."""

    def __init__(self, frames: list) -> None:
        self.frames = frames
        self.waits: list[tuple[float, int]] = []

    def __call__(self, deadline: float) -> None:
        self.waits.append((deadline, len(self.frames)))
        pacing._sleep_until(deadline)


def test_wait_until_sleeps_without_a_waiter_and_skips_a_past_deadline():
    start = time.monotonic()
    wait_until(start + 0.05)
    assert time.monotonic() - start >= 0.05
    calls: list[float] = []
    with waiting_with(calls.append):
        wait_until(time.monotonic() - 1.0)      # already due: the waiter is not even asked
        deadline = time.monotonic() + 0.01
        wait_until(deadline)
    assert calls == [deadline]


def test_waiting_with_restores_the_previous_waiter_even_after_an_error():
    outer: list[float] = []
    try:
        with waiting_with(outer.append):
            with waiting_with(lambda deadline: None):
                raise KeyError("inner")
    except KeyError:
        pass
    assert pacing._waiter is None
    with waiting_with(outer.append):
        with waiting_with(lambda deadline: None):
            pass
        wait_until(time.monotonic() + 5.0)      # the outer waiter again (it returns at once)
    assert len(outer) == 1


def test_media_clock_is_scheduled_from_its_first_wait():
    clock = MediaClock()
    assert clock.start is None
    clock.wait(0.0)
    start = clock.start
    assert start is not None and abs(start - time.monotonic()) < 0.05
    time.sleep(0.03)                 # late by 30 ms: the next due time does not move
    clock.wait(0.06)
    assert time.monotonic() >= start + 0.06
    assert time.monotonic() - start < 0.06 + 0.03


def test_realtime_tone_waits_through_the_installed_waiter_once_per_chunk():
    frames: list = []
    waiter = RecordingWaiter(frames)
    source = ToneSource(seconds=0.2, sample_rate=RATE, channels=1, chunk_samples=CHUNK,
                        realtime=True)
    with waiting_with(waiter):
        frames.extend(source)
    assert [f.samples for f in frames] == [CHUNK] * 4
    # Chunk k is due when its last sample has happened: (k + 1) x 50 ms after the start.
    deadlines = np.array([deadline for deadline, _ in waiter.waits])
    assert len(deadlines) == 4
    np.testing.assert_allclose(np.diff(deadlines), CHUNK / RATE, atol=1e-9)


def test_streams_that_start_together_wait_once_per_tick_and_hand_out_a_whole_tick():
    """Every stream's chunk of one tick is due at once: the first waits, the others follow
    without a wait, so a worker sends the whole tick as one batch before it waits again."""
    frames: list = []
    waiter = RecordingWaiter(frames)
    source = MultiToneSource(streams=3, seconds=0.2, sample_rate=RATE, channels=1,
                             chunk_samples=CHUNK, realtime=True)
    start = time.monotonic()
    with waiting_with(waiter):
        frames.extend(source)
    elapsed = time.monotonic() - start
    assert [(f.stream, f.pts) for f in frames] == [
        (f"tone-{i}", k * CHUNK) for k in range(4) for i in range(3)]
    # One wait per tick, each after the previous tick's three chunks were handed out.
    assert [count for _, count in waiter.waits] == [0, 3, 6, 9]
    assert 0.2 <= elapsed < 0.2 + 0.15
