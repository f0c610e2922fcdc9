"""What a lossless restart keeps is bounded: the replay buffer counts data messages only (a
stream's retained caps and eos are per-stream state, bounded by the streams in flight), and the
acknowledgement bookkeeping of a stream (consumer inbox, reporter, relay) is pruned once nothing
can need it any more, so a long run of many short streams does not grow it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine_ops import op as engine_op
from flowengine.audio.buffers import AudioFrame
from flowengine.config.model import RunConfig
from flowengine.engine import Engine, build_plan
from flowengine.engine.wire.protocol import InboxState, StreamSender
from flowengine.engine.recovery.replay import AckRelay, AckReporter, Forget, ReplayBuffer
from flowengine.engine.wire.codec import Caps, decode
from flowengine.audio.format import AudioFormat
from restart_ops import op
from test_restart import assert_nothing_left


def ramp_run(tmp_path: Path, *, streams: int, samples: int, replay_messages: int,
             after: int) -> RunConfig:
    (tmp_path / "out").mkdir()
    return RunConfig.model_validate({"stages": [
        {"name": "src", "op": engine_op("RampSource"),
         "params": {"streams": streams, "samples": samples, "block": 256}},
        {"name": "mid", "op": op("KillOncePass"), "restart": "on-failure", "hwm": 8,
         "replay_messages": replay_messages,
         "params": {"marker": str(tmp_path / "killed"), "replica": 0, "after": after}},
        {"name": "sink", "op": op("RampRecorder"), "hwm": 8,
         "params": {"out_dir": str(tmp_path / "out"), "expected": samples}},
    ]})


def test_a_replay_buffer_smaller_than_the_open_streams_still_lets_the_run_through(tmp_path):
    # 16 streams open at once, 4 messages of buffer: the caps each stream keeps do not count.
    streams, samples = 16, 256 * 12
    engine = Engine(build_plan(ramp_run(tmp_path, streams=streams, samples=samples,
                                        replay_messages=4, after=6)))
    report = engine.run()
    assert (tmp_path / "killed").exists()
    assert [(e.stage, e.replica, e.generation) for e in report.restarts] == [("mid", 0, 1)]
    assert report.complete and report.audit_ok and report.gaps == []
    for i in range(streams):
        result = json.loads((tmp_path / "out" / f"s{i}.json").read_text())
        assert result == {"samples": samples, "missing": []}
    assert_nothing_left(engine)


def test_many_short_streams_through_a_restart_leave_no_bookkeeping_behind(tmp_path):
    # 200 streams of 3 blocks, 4 open at a time; the lossless stage dies once in the middle.
    streams, samples = 200, 3 * 256
    (tmp_path / "out").mkdir()
    engine = Engine(build_plan(RunConfig.model_validate({"stages": [
        {"name": "src", "op": engine_op("RampStreams"),
         "params": {"streams": streams, "samples": samples, "block": 256, "max_open": 4}},
        {"name": "mid", "op": op("KillOnceAfterPass"), "restart": "on-failure", "hwm": 8,
         "replay_messages": 16,
         "params": {"marker": str(tmp_path / "killed"), "replica": 0, "after": 300}},
        {"name": "sink", "op": op("RampRecorder"), "hwm": 8,
         "params": {"out_dir": str(tmp_path / "out"), "expected": samples}},
    ]})))
    report = engine.run()
    assert (tmp_path / "killed").exists() and len(report.restarts) == 1
    assert report.complete and report.audit_ok and report.gaps == []
    for i in range(streams):
        result = json.loads((tmp_path / "out" / f"r{i}.json").read_text())
        assert result == {"samples": samples, "missing": []}
    # Every stream ended at the sink and was forgotten by the coordinator's relay.
    assert engine._acks.sizes() == {"streams": 0, "deferred": 0}
    # At their done the workers still held the last streams only, not the 200 (the sink's
    # marks wait for the coordinator's forget, src's buffer for the sink's last acks).
    [sink] = report.stage("sink").workers
    [source] = report.stage("src").workers
    assert sink.lossless["inbox"]["open"] == 0 and sink.lossless["reporter"] == 0
    assert sink.lossless["inbox"]["ended"] + sink.lossless["inbox"]["waiting"] <= LEFT_AT_DONE
    buffer = source.lossless["buffers"]["mid:0"]
    assert buffer["streams"] <= LEFT_AT_DONE and buffer["messages"] <= 16
    assert report.stage("mid").workers[0].lossless == {}   # no bookkeeping of its own
    assert_nothing_left(engine)


LEFT_AT_DONE = 20   # streams one ack round trip may leave, far below the run's 200


# ---------------------------------------------------- the same bookkeeping without sockets

MONO = AudioFormat(48000, 1)
CAPS = Caps("pcm", MONO)


def frame(stream: str, start: int) -> AudioFrame:
    return AudioFrame(np.arange(start, start + 4, dtype=np.float32)[None, :], MONO, pts=start,
                      stream=stream)


def one_stream(sender: StreamSender, stream: str, first: int, count: int, end: bool = True
               ) -> list:
    """A lossless replica's outputs for inputs first..first+count-1 of `stream`."""
    frames = [sender.caps(stream, CAPS)]
    frames += [sender.data(frame(stream, 4 * i), order=i) for i in range(first, first + count)]
    return frames + ([sender.eos(stream)] if end else [])


def feed(inbox: InboxState, frames_list: list) -> list:
    return [event for frames in frames_list for event in inbox.receive(decode(frames))]


def test_200_short_streams_leave_the_consumer_relay_and_buffer_bounded():
    # The whole acknowledgement loop in one process: replica -> consumer inbox -> reporter ->
    # relay -> upstream buffer and consumer forget. Nothing grows with the streams.
    relay = AckRelay({"mid:0": ["sink"]})
    inbox = InboxState(["mid:0"], indexed=["mid:0"])
    reporter = AckReporter(inbox, ["mid:0"], every=1)
    upstream, replica = StreamSender("src:0", index_data=True), StreamSender("mid:0")
    buffer = ReplayBuffer("mid:0", max_messages=8, max_bytes=10 ** 6)
    for n in range(200):
        stream = f"r{n}"
        buffer.record("caps", stream, None, upstream.caps(stream, CAPS))
        for i in range(3):
            buffer.record("data", stream, i, upstream.data(frame(stream, 4 * i)))
        buffer.record("eos", stream, None, upstream.eos(stream))
        feed(inbox, one_stream(replica, stream, 0, 3))
        for acks, ended in relay.report("sink", reporter.due(float(n))).values():
            for s, index in acks.items():
                buffer.acknowledge(s, index)
            for s in ended:
                buffer.forget(s)
        for forget in relay.take_forgets():
            inbox.forget(forget.replica, forget.streams, forget.generation, forget.replayed)
        assert inbox.index.sizes() == {"open": 0, "ended": 0, "newly_ended": 0, "again": 0,
                                          "waiting": 0}
        assert reporter.sizes() == 0 and relay.sizes() == {"streams": 0, "deferred": 0}
        assert (buffer.streams, buffer.messages) == ([], 0)
    assert inbox.statistics().streams_ended == 200


def test_an_ended_stream_a_replay_holds_is_remembered_until_that_replay_passed():
    inbox = InboxState(["mid:0"], indexed=["mid:0"])
    feed(inbox, one_stream(StreamSender("mid:0"), "s", 0, 2))
    # Generation 1 was resumed and its replay held "s": forget only once its eos came by.
    inbox.forget("mid:0", ["s"], 1, ["s"])
    assert inbox.index.sizes()["ended"] == 1
    replacement = StreamSender("mid:0@1")
    again = one_stream(replacement, "s", 1, 1)
    assert feed(inbox, again[:-1]) == []          # caps and data of the replay: dropped
    assert inbox.index.sizes() == {"open": 0, "ended": 1, "newly_ended": 1, "again": 0,
                                      "waiting": 1}
    assert feed(inbox, again[-1:]) == []          # its eos: dropped, and the mark goes
    assert inbox.index.sizes() == {"open": 0, "ended": 0, "newly_ended": 1, "again": 1,
                                      "waiting": 0}
    assert inbox.statistics().duplicates == 3


def test_an_ended_stream_is_remembered_until_the_generation_it_waits_for_shows_up():
    inbox = InboxState(["mid:0"], indexed=["mid:0"])
    feed(inbox, one_stream(StreamSender("mid:0"), "s", 0, 2))
    inbox.forget("mid:0", ["s"], 1, [])           # generation 1's replay did not hold it ...
    assert inbox.index.sizes()["ended"] == 1      # ... but generation 0 may still be arriving
    feed(inbox, one_stream(StreamSender("mid:0@1"), "t", 0, 1, end=False))
    assert inbox.index.sizes() == {"open": 1, "ended": 0, "newly_ended": 1, "again": 0,
                                      "waiting": 0}
    # A stream forgotten at generation 0, never resumed: the mark goes at once.
    inbox = InboxState(["mid:0"], indexed=["mid:0"])
    feed(inbox, one_stream(StreamSender("mid:0"), "s", 0, 2))
    inbox.forget("mid:0", ["s", "unknown"], 0, [])
    assert inbox.index.sizes()["ended"] == 0


def test_the_relay_waits_for_the_replays_before_the_consumers_forget():
    relay = AckRelay({"mid:0": ["sink"]})
    relay.resumed("mid:0", 1, ["src:0", "src:1"])
    relay.report("sink", {"ended": {"mid:0": ["a", "b"]}})
    assert relay.take_forgets() == [] and relay.sizes()["deferred"] == 2   # replay not known
    relay.replayed("mid:0", "src:0", 1, ["a", "c"])
    assert relay.take_forgets() == []
    relay.replayed("mid:0", "src:1", 1, [])
    assert relay.take_forgets() == [Forget("mid:0", 1, ["a", "b"], ["a"])]
    # A second restart before the first one's replay is known: count everything as in it.
    relay.resumed("mid:0", 2, ["src:0"])
    relay.report("sink", {"ended": {"mid:0": ["d"]}})
    relay.resumed("mid:0", 3, ["src:0"])
    assert relay.take_forgets() == [Forget("mid:0", 2, ["d"], ["d"])]
    relay.replayed("mid:0", "src:0", 2, ["e"])    # generation 2's: outdated
    relay.report("sink", {"ended": {"mid:0": ["e"]}})
    relay.replayed("mid:0", "src:0", 3, [])
    assert relay.take_forgets() == [Forget("mid:0", 3, ["e"], [])]


def test_an_upstream_that_dies_before_reporting_its_replay_counts_as_having_replayed_all():
    relay = AckRelay({"mid:0": ["sink"]})
    relay.resumed("mid:0", 1, ["src:0"])
    relay.report("sink", {"ended": {"mid:0": ["a"]}})
    relay.upstream_replaced("src:0")
    assert relay.take_forgets() == [Forget("mid:0", 1, ["a"], ["a"])]
