"""The restart logic of the protocol and the replay buffer as pure state machines (no sockets):
generations of a replaced sender, stale generations, resumed inboxes, replays that start at the
first unacknowledged message, duplicates dropped by data index, and the bounded buffer."""

from __future__ import annotations

import numpy as np
import pytest

from flowengine.audio.buffers import AudioFrame
from flowengine.engine.wire.protocol import InboxState, ProtocolError, RunEnd, SenderEnd, StreamCaps, \
    StreamData, StreamEnd, StreamSender
from flowengine.engine.recovery.replay import AckRelay, Forget, ReplayBuffer, ReplayStamp
from flowengine.engine.wire.codec import Caps, decode
from flowengine.errors import FlowError
from flowengine.audio.format import AudioFormat

MONO = AudioFormat(48000, 1)
CAPS = Caps("pcm", MONO)


def frame(stream: str, start: int, samples: int = 4) -> AudioFrame:
    return AudioFrame(np.arange(start, start + samples, dtype=np.float32)[None, :], MONO,
                      pts=start, stream=stream)


def feed(inbox: InboxState, frames_list: list) -> list:
    return [event for frames in frames_list for event in inbox.receive(decode(frames))]


def starts(events: list) -> list[int]:
    """The first sample of every delivered data buffer."""
    return [int(e.buffer.planar()[0][0]) for e in events if isinstance(e, StreamData)]


def test_a_newer_generation_retires_the_old_one_and_its_stragglers_are_dropped():
    old, new = StreamSender("mid:0"), StreamSender("mid:0@1")
    inbox = InboxState(["mid:0"])
    feed(inbox, [old.caps("s", CAPS), old.data(frame("s", 0))])
    straggler = old.data(frame("s", 4))
    events = feed(inbox, [new.caps("s", CAPS), new.data(frame("s", 8)), straggler])
    assert [type(e) for e in events] == [StreamCaps, StreamData]
    assert starts(events) == [8] and events[0].sender == "mid:0"
    assert inbox.statistics().dropped == 1
    # The old generation's stream was abandoned: the new one's eof ends the sender.
    events = feed(inbox, [new.eos("s"), new.eof()])
    assert [type(e) for e in events] == [StreamEnd, SenderEnd, RunEnd]


def test_an_older_generation_after_a_newer_one_is_stale_even_for_a_new_stream():
    gen1, gen2 = StreamSender("mid:0@1"), StreamSender("mid:0@2")
    inbox = InboxState(["mid:0"])
    feed(inbox, [gen2.caps("s", CAPS)])
    assert feed(inbox, [gen1.caps("t", CAPS), gen1.data(frame("t", 0))]) == []
    assert inbox.statistics().dropped == 2


def test_a_resumed_inbox_drops_the_middle_of_a_stream_until_its_caps():
    sender = StreamSender("src:0")
    feed(InboxState(["src:0"]), [sender.caps("s", CAPS), sender.data(frame("s", 0))])
    inbox = InboxState(["src:0"], resumed=True)
    assert feed(inbox, [sender.data(frame("s", 4))]) == []
    events = feed(inbox, [sender.caps("s", CAPS), sender.data(frame("s", 8)), sender.eos("s")])
    assert starts(events) == [8]
    # Its eos is not checked for completeness: the dead worker had the first part.
    assert events[-1] == StreamEnd("src:0", "s", 1, 4)
    assert inbox.statistics().dropped == 1


def test_a_replay_may_skip_from_the_caps_to_the_first_unacknowledged_message():
    sender = StreamSender("src:0", index_data=True)
    caps = sender.caps("s", CAPS)
    sent = [sender.data(frame("s", 4 * i)) for i in range(5)]
    inbox = InboxState(["src:0"], resumed=True)
    events = feed(inbox, [caps] + sent[3:] + [sender.eos("s"), sender.eof()])
    assert starts(events) == [12, 16]
    assert [e.buffer for e in events if isinstance(e, StreamData)][0].pts == 12
    # ... but only right after the caps: a later gap is still a gap.
    inbox = InboxState(["src:0"], resumed=True)
    with pytest.raises(ProtocolError, match=r"^sender 'src:0' stream 's': gap: expected seq 3, "
                                            r"got 4 \(1 message\(s\) missing\)$"):
        feed(inbox, [caps, sent[0], sent[1], sent[3]])


def test_a_normal_inbox_still_refuses_a_skip_after_the_caps():
    sender = StreamSender("src:0")
    caps = sender.caps("s", CAPS)
    sender.data(frame("s", 0))
    with pytest.raises(ProtocolError, match=r"^sender 'src:0' stream 's': gap: expected seq 1, "
                                            r"got 2 \(1 message\(s\) missing\)$"):
        feed(InboxState(["src:0"]), [caps, sender.data(frame("s", 4))])


def indexed_outputs(wire_id: str, first: int, count: int) -> tuple[StreamSender, list]:
    """A lossless stage's replica sending outputs for inputs first..first+count-1."""
    sender = StreamSender(wire_id)
    frames = [sender.caps("s", CAPS)]
    frames += [sender.data(frame("s", 4 * i), order=i) for i in range(first, first + count)]
    return sender, frames


def test_outputs_a_consumer_already_has_are_dropped_by_data_index():
    inbox = InboxState(["mid:0"], indexed=["mid:0"])
    _, before = indexed_outputs("mid:0", 0, 5)
    assert starts(feed(inbox, before)) == [0, 4, 8, 12, 16]
    assert (inbox.progress("mid:0"), inbox.take_ended("mid:0")) == ({"s": 5}, [])
    # The replacement starts again at input 3 (the first one not acknowledged).
    replacement, after = indexed_outputs("mid:0@1", 3, 4)
    events = feed(inbox, after + [replacement.eos("s")])
    assert starts(events) == [20, 24]
    # The eos counts what that generation sent, duplicates included: no incomplete stream.
    assert events[-1] == StreamEnd("mid:0", "s", 4, 16)
    stats = inbox.statistics()
    assert (stats.duplicates, stats.index_gaps, inbox.delivered) == (2, 0, 7)
    # Ended: reported once, and no index is kept for it any more.
    assert (inbox.progress("mid:0"), inbox.take_ended("mid:0")) == ({}, ["s"])
    assert inbox.take_ended("mid:0") == []


def test_a_replay_of_a_stream_that_ended_here_is_dropped_whole():
    inbox = InboxState(["mid:0"], indexed=["mid:0"])
    sender, frames = indexed_outputs("mid:0", 0, 2)
    feed(inbox, frames + [sender.eos("s")])
    replacement, again = indexed_outputs("mid:0@1", 1, 1)
    assert feed(inbox, again + [replacement.eos("s")]) == []
    assert inbox.statistics().duplicates == 3


def test_a_skipped_index_is_counted_as_lost_not_hidden():
    inbox = InboxState(["mid:0"], indexed=["mid:0"])
    feed(inbox, indexed_outputs("mid:0", 0, 2)[1])
    assert starts(feed(inbox, indexed_outputs("mid:0@1", 5, 1)[1])) == [20]
    assert inbox.statistics().index_gaps == 3


def test_a_replacement_of_a_sender_that_had_sent_its_eof_is_dropped_whole():
    inbox = InboxState(["mid:0", "mid:1"])
    done = StreamSender("mid:0")
    feed(inbox, [done.caps("s", CAPS), done.data(frame("s", 0)), done.eos("s"), done.eof()])
    replacement = StreamSender("mid:0@1")
    late = [replacement.caps("s", CAPS), replacement.data(frame("s", 0)), replacement.eos("s"),
            replacement.eof()]
    assert feed(inbox, late) == []
    assert inbox.statistics().dropped == 4 and not inbox.run_ended
    # The same generation sending after its eof is still a broken sender.
    with pytest.raises(ProtocolError, match=r"^sender 'mid:0': caps after its eof$"):
        feed(inbox, [StreamSender("mid:0").caps("t", CAPS)])


def test_the_replay_buffer_keeps_the_caps_in_effect_and_drops_what_is_acknowledged():
    sender = StreamSender("src:0", index_data=True)
    buffer = ReplayBuffer("mid:0", max_messages=4, max_bytes=10 ** 6)
    caps = sender.caps("s", CAPS)
    buffer.record("caps", "s", None, caps)
    sent = []
    for i in range(4):
        sent.append(sender.data(frame("s", 4 * i)))
        assert sender.last == ("data", "s", i)
        buffer.record("data", "s", i, sent[-1])
    assert buffer.full and buffer.messages == 4       # data only: the caps is stream state
    buffer.acknowledge("s", 3)
    assert not buffer.full and buffer.messages == 1   # data 3 (and the caps, not counted)
    replay = InboxState(["src:0"], resumed=True)
    assert starts(feed(replay, buffer.unacknowledged())) == [12]
    # Everything acknowledged: the caps and the last data still go (not counted), so a
    # replacement opens the stream and has an output to carry its caps and eos on.
    buffer.acknowledge("s", 4)
    last = sent[3]
    assert (buffer.messages, buffer.unacknowledged(), buffer.streams) == \
        (0, [caps, last], ["s"])
    eos = sender.eos("s")
    buffer.record("eos", "s", None, eos)
    buffer.acknowledge("s", 4)
    assert (buffer.messages, buffer.unacknowledged()) == (0, [caps, last, eos])
    events = feed(InboxState(["src:0"], resumed=True), buffer.unacknowledged())
    assert [type(e) for e in events] == [StreamCaps, StreamData, StreamEnd]
    buffer.forget("s")                      # the eos was kept until the stream ended everywhere
    assert (buffer.messages, buffer.nbytes, buffer.unacknowledged(), buffer.streams) == \
        (0, 0, [], [])


def test_open_streams_do_not_fill_the_replay_buffer():
    sender = StreamSender("src:0", index_data=True)
    buffer = ReplayBuffer("mid:0", max_messages=2, max_bytes=1024)
    for i in range(20):
        buffer.record("caps", f"s{i}", None, sender.caps(f"s{i}", CAPS))
        buffer.record("data", f"s{i}", 0, sender.data(frame(f"s{i}", 0)))
        buffer.acknowledge(f"s{i}", 1)
    assert (buffer.messages, buffer.nbytes, buffer.full) == (0, 0, False)
    assert len(buffer.unacknowledged()) == 40    # each open stream's caps and last data


def test_the_replay_buffer_is_bounded_in_bytes_and_copies_payloads():
    buffer = ReplayBuffer("mid:0", max_messages=100, max_bytes=64)
    payload = bytearray(40)
    buffer.record("data", "s", 0, [b"h", memoryview(payload)])
    payload[0] = 1                           # a node reusing its array changes nothing here
    assert buffer.unacknowledged() == [[b"h", bytes(40)]]
    assert not buffer.full
    buffer.record("data", "s", 1, [b"h", bytes(40)])
    assert buffer.full and buffer.nbytes == 82


def test_the_stamp_of_a_lossless_stage_wants_one_output_per_input():
    stamp = ReplayStamp("gain")
    stamp.take("s", 7, frame("s", 0))
    assert stamp.stamp("s", frame("s", 0)) == 7
    with pytest.raises(FlowError, match=r"^stage 'gain' stream 's': a stage that restarts "
                                        r"losslessly needs one output per input, but its "
                                        r"operator gave a second buffer for input 7 \(declare "
                                        r"it stateful: it then restarts with a reported gap\)$"):
        stamp.stamp("s", frame("s", 4))
    stamp.take("s", 8, frame("s", 4))
    with pytest.raises(FlowError, match=r"gave none for input 8 "):
        stamp.done("s")
    with pytest.raises(FlowError, match=r"^stage 'gain' restarts losslessly but a data message "
                                        r"of stream 's' came without its data index \('oq'\)$"):
        stamp.take("s", None, frame("s", 0))


def test_the_relay_acknowledges_the_minimum_over_consumer_stages():
    relay = AckRelay({"mid:0": ["sink", "tap"]})
    assert relay.report("sink", {"acks": {"mid:0": {"s": 9}}}) == {}   # tap: nothing yet
    assert relay.report("tap", {"acks": {"mid:0": {"s": 4}}}) == {"mid:0": ({"s": 4}, [])}
    assert relay.report("tap", {"acks": {"mid:0": {"s": 12}}}) == {"mid:0": ({"s": 9}, [])}
    # Ended at the sink: only the tap holds it back now.
    assert relay.report("sink", {"ended": {"mid:0": ["s"]}}) == {"mid:0": ({"s": 12}, [])}
    assert relay.report("tap", {"ended": {"mid:0": ["s"]}}) == {"mid:0": ({}, ["s"])}
    assert relay.report("tap", {"acks": {"other:0": {"s": 1}}}) == {}
    # Never restarted: the consumers may forget it at once; nothing is kept here.
    assert relay.take_forgets() == [Forget("mid:0", 0, ["s"], [])]
    assert relay.sizes() == {"streams": 0, "deferred": 0}


@pytest.mark.parametrize("resample_restarts, gain_lossless", [(False, True), (True, False)])
def test_a_stateless_stage_after_a_stage_that_restarts_with_a_gap_is_not_lossless(
        tmp_path, resample_restarts, gain_lossless):
    # The resampler's replacement would number its streams from 0 again: the gain's consumers
    # would drop those as duplicates, so the gain restarts with a reported gap instead.
    from flowengine.config.model import RunConfig
    from flowengine.engine import build_plan

    resample = {"name": "resample", "op": "resample", "params": {"sample_rate": 48000}}
    if resample_restarts:
        resample["restart"] = "on-failure"
    plan = build_plan(RunConfig.model_validate({"stages": [
        {"name": "tone", "op": "tone", "params": {"seconds": 0.1}}, resample,
        {"name": "gain", "op": "gain", "params": {"gain_db": -3.0}, "restart": "on-failure"},
        {"name": "sink", "op": "null_sink"}]}), run_dir=str(tmp_path / "run"))  # never run
    gain = [w for w in plan.workers if w.stage == "gain"]
    assert [w.replay for w in gain] == [gain_lossless]
