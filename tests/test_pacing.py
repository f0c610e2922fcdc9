"""flowengine.ops.pacing: how live sources wait, and one wait per tick for streams that start together."""

from __future__ import annotations

import os
import time

import numpy as np

from flowengine.ops import pacing
from flowengine.ops.io import ToneSource
from flowengine.ops.io.multitone import MultiToneSource
from flowengine.ops.pacing import MediaClock, wait_readable, wait_until, waiting_with

RATE = 8000
CHUNK = 400          # 50 ms per chunk


class RecordingWaiter:
    """A worker-like waiter: notes each wait (deadline, frames handed out so far), then sleeps."""

    def __init__(self, frames: list) -> None:
        self.frames = frames
        self.waits: list[tuple[float, int]] = []

    def __call__(self, deadline: float, fd: int | None) -> None:
        self.waits.append((deadline, len(self.frames)))
        pacing.wait_here(deadline, fd)


def test_wait_until_sleeps_without_a_waiter_and_skips_a_past_deadline():
    start = time.monotonic()
    wait_until(start + 0.05)
    assert time.monotonic() - start >= 0.05
    calls: list[tuple[float, int | None]] = []
    with waiting_with(lambda deadline, fd: calls.append((deadline, fd))):
        wait_until(time.monotonic() - 1.0)      # already due: the waiter is not even asked
        deadline = time.monotonic() + 0.01
        wait_until(deadline)
    assert calls == [(deadline, None)]


def test_wait_readable_returns_when_the_descriptor_is_readable_or_at_the_timeout():
    read_end, write_end = os.pipe()
    try:
        start = time.monotonic()
        wait_readable(read_end, 0.05)                  # nothing written: the timeout
        assert time.monotonic() - start >= 0.05
        os.write(write_end, b"x")
        start = time.monotonic()
        wait_readable(read_end, 5.0)                   # readable: at once
        assert time.monotonic() - start < 1.0
        calls: list[tuple[float, int | None]] = []
        with waiting_with(lambda deadline, fd: calls.append((deadline, fd))):
            before = time.monotonic()
            wait_readable(read_end, 2.0)
        assert len(calls) == 1 and calls[0][1] == read_end
        assert before + 2.0 <= calls[0][0] <= time.monotonic() + 2.0
    finally:
        os.close(read_end)
        os.close(write_end)


def test_waiting_with_restores_the_previous_waiter_even_after_an_error():
    outer: list[float] = []

    def note(deadline: float, fd: int | None) -> None:
        outer.append(deadline)

    try:
        with waiting_with(note):
            with waiting_with(lambda deadline, fd: None):
                raise KeyError("inner")
    except KeyError:
        pass
    assert getattr(pacing._local, "waiter", None) is None
    with waiting_with(note):
        with waiting_with(lambda deadline, fd: None):
            pass
        wait_until(time.monotonic() + 5.0)      # the outer waiter again (it returns at once)
    assert len(outer) == 1


def test_media_clock_is_scheduled_from_its_first_wait():
    # The waiter notes the deadlines instead of sleeping: what is checked is the schedule,
    # not how promptly a loaded machine wakes a thread.
    deadlines: list[float] = []
    clock = MediaClock()
    assert clock.start is None
    with waiting_with(lambda deadline, fd: deadlines.append(deadline)):
        before = time.monotonic()
        clock.wait(0.0)              # media time 0 is now: nothing to wait for
        after = time.monotonic()
        start = clock.start
        time.sleep(0.03)             # late by 30 ms: the next due times do not move
        clock.wait(30.0)
        clock.wait(60.0)
    assert start is not None and before <= start <= after
    assert deadlines == [start + 30.0, start + 60.0]


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
    assert elapsed >= 0.2            # paced (how much later a loaded machine ends: not checked)


def test_an_in_process_run_does_not_count_a_paced_sources_waits_as_busy():
    """As in a worker: a live source waiting for its next block is idle, not busy (an idle
    tcp_ingest showed ~97 % busy in --in-process runs)."""
    import yaml

    from flowengine.config import load_source
    from flowengine.config.model import RunConfig
    from flowengine.config.validate import validate_run
    from flowengine.local.run import run_in_process

    config = RunConfig.model_validate({"name": "paced", "stages": [
        {"name": "tone", "op": "tone",
         "params": {"seconds": 0.5, "realtime": True, "chunk_samples": 1200}},
        {"name": "sink", "op": "null_sink"}]})
    text = yaml.safe_dump(config.model_dump(exclude_defaults=True))
    report = run_in_process(validate_run(config, load_source(text, "run.yaml"),
                                         check_paths=False))
    tone = report.stage("tone").workers[0]
    assert report.wall_seconds >= 0.45          # it was paced
    assert tone.samples_out == 24000 and tone.busy_seconds < 0.2 * report.wall_seconds, \
        (tone.busy_seconds, report.wall_seconds)


def test_each_thread_has_its_own_waiter():
    """Two in-process runs in two threads: neither waits through the other's waiter (and
    its count of idle time), and neither leaves one behind."""
    import threading

    seen: dict[str, list] = {"a": [], "b": []}
    inside, release, done = threading.Event(), threading.Event(), threading.Event()

    def run_a() -> None:
        with waiting_with(lambda deadline, fd: seen["a"].append(deadline)):
            inside.set()
            release.wait(5)
            wait_until(time.monotonic() + 5)     # while b's waiter is installed too
        done.set()

    thread = threading.Thread(target=run_a)
    thread.start()
    with waiting_with(lambda deadline, fd: seen["b"].append(deadline)):
        assert inside.wait(5)
        release.set()
        assert done.wait(5)
        wait_until(time.monotonic() + 5)
    thread.join(5)
    assert len(seen["a"]) == 1 and len(seen["b"]) == 1
    assert getattr(pacing._local, "waiter", None) is None
