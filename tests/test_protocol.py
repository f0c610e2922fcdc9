"""The per-edge protocol state machines: every transition, every error, and any interleaving."""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.engine.wire.protocol import (InboxState, ProtocolError, Reorderer, RunEnd, SenderEnd,
                                        StreamCaps, StreamData, StreamEnd, StreamSender,
                                        Violation)
from flowengine.engine.wire.codec import (Caps, decode, encode_caps, encode_eof, encode_eos,
                                    encode_frame, encode_packet)
from flowengine.errors import ConfigError
from flowengine.audio.format import AudioFormat

settings.register_profile("ci", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=10_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

STEREO = AudioFormat(48000, 2)
MONO = AudioFormat(48000, 1)
PCM_CAPS = Caps("pcm", STEREO)
MP3_CAPS = Caps("packet", STEREO, "mp3", Fraction(1, 48000), extradata=b"\x01\x02")


def _frame(stream: str, samples: int = 4, fmt: AudioFormat = STEREO, value: float = 0.0):
    return AudioFrame(np.full(fmt.shape(samples), value, fmt.dtype), fmt, stream=stream)


# Steps of the receiver table: (kind, stream, seq, ...) sent by sender "a:0" unless
# the step ends with a "from" sender.
def _message(step: tuple):
    kind, *args = step
    sender = "a:0"
    if args and isinstance(args[-1], dict):
        sender = args.pop()["from"]
    if kind == "caps":
        stream, seq, *caps = args
        return decode(encode_caps(stream, seq, caps[0] if caps else PCM_CAPS, sender=sender))
    if kind == "pcm":
        stream, seq, *fmt = args
        return decode(encode_frame(_frame(stream, fmt=fmt[0] if fmt else STEREO), seq,
                                   sender=sender))
    if kind == "pkt":
        stream, seq, codec = args
        return decode(encode_packet(Packet(b"\xff", codec=codec, stream=stream), seq,
                                    sender=sender))
    if kind == "eos":
        stream, seq, messages, samples = args
        return decode(encode_eos(stream, seq, messages=messages, samples=samples, sender=sender))
    if kind == "nosender":
        return decode(encode_frame(_frame(args[0]), args[1]))
    return decode(encode_eof(sender))


def _summary(events) -> list[tuple]:
    out = []
    for e in events:
        if isinstance(e, StreamCaps):
            out.append(("caps", e.sender, e.stream, e.changed))
        elif isinstance(e, StreamData):
            out.append(("data", e.sender, e.stream, e.seq))
        elif isinstance(e, StreamEnd):
            out.append(("end", e.sender, e.stream, e.messages, e.samples))
        elif isinstance(e, SenderEnd):
            out.append(("sender_end", e.sender))
        elif isinstance(e, RunEnd):
            out.append(("run_end",))
        else:
            out.append(("violation", e.error.problem))
    return out


def _run(steps, on_loss="raise"):
    inbox = InboxState({"a:0", "b:0"}, on_loss=on_loss)
    events = []
    for step in steps:
        events += inbox.receive(_message(step))
    return inbox, _summary(events)


B = {"from": "b:0"}

RECEIVER_ERRORS = [
    ([("pcm", "s", 0)], r"^sender 'a:0' stream 's': data before caps$"),
    ([("eos", "s", 0, 0, 0)], r"^sender 'a:0' stream 's': eos before caps$"),
    ([("caps", "s", 0), ("eos", "s", 1, 0, 0), ("pcm", "s", 2)],
     r"^sender 'a:0' stream 's': data after eos$"),
    ([("caps", "s", 0), ("eos", "s", 1, 0, 0), ("caps", "s", 2)],
     r"^sender 'a:0' stream 's': caps after eos$"),
    ([("caps", "s", 0), ("eos", "s", 1, 0, 0), ("eos", "s", 2, 0, 0)],
     r"^sender 'a:0' stream 's': eos after eos$"),
    ([("caps", "s", 0), ("pcm", "s", 3)],
     r"^sender 'a:0' stream 's': gap: expected seq 1, got 3 \(2 message\(s\) missing\)$"),
    ([("caps", "s", 0), ("pcm", "s", 1), ("pcm", "s", 1)],
     r"^sender 'a:0' stream 's': duplicate or out of order: expected seq 2, got 1$"),
    ([("caps", "s", 0), ("pcm", "s", 1), ("eos", "s", 2, 1, 8)],
     r"^sender 'a:0' stream 's': incomplete: eos says 1 message\(s\), 8 sample\(s\); "
     r"received 1, 4$"),
    ([("caps", "s", 0), ("pcm", "s", 1), ("eos", "s", 2, 2, 4)],
     r"^sender 'a:0' stream 's': incomplete: eos says 2 message\(s\), 4 sample\(s\); "
     r"received 1, 4$"),
    # A data header says no format: the payload is read as the caps say, so a mono
    # frame on a stereo stream is a payload of the wrong length.
    ([("caps", "s", 0), ("pcm", "s", 1, MONO)],
     r"^sender 'a:0': pcm message for stream 's': payload is 16 bytes but its caps and header "
     r"say 2 ch × 4 "
     r"samples × 4 bytes = 32$"),
    ([("caps", "s", 0), ("pkt", "s", 1, "mp3")], r"^sender 'a:0' stream 's': packet data on a "
                                                  r"pcm stream$"),
    ([("caps", "s", 0, {"from": "z:0"})],
     r"^caps from unknown sender 'z:0' \(expected one of 'a:0', 'b:0'\)$"),
    ([("nosender", "s", 0)], r"^pcm message without a sender id \('src'\)$"),
    ([("caps", "s", 0), ("caps", "t", 0), ("eof",)],
     r"^sender 'a:0': eof while stream\(s\) 's', 't' still open \(no eos\)$"),
    ([("eof",), ("caps", "s", 0)], r"^sender 'a:0': caps after its eof$"),
    ([("eof",), ("eof",)], r"^sender 'a:0': eof after its eof$"),
    ([("eof",), ("eof", B), ("pcm", "s", 0)],
     r"^pcm from 'a:0' after the run ended \(eof from every sender\)$"),
]


@pytest.mark.parametrize("steps, message", RECEIVER_ERRORS,
                         ids=[f"case{i}" for i in range(len(RECEIVER_ERRORS))])
def test_receiver_refuses_with_an_exact_message(steps, message):
    with pytest.raises(ProtocolError, match=message):
        _run(steps)


RECEIVER_FLOWS = [
    # Two senders, a format change, the run ends once, after the last eof.
    ([("caps", "s", 0), ("caps", "s", 0, B), ("pcm", "s", 1), ("caps", "s", 2),
      ("eos", "s", 3, 1, 4), ("eof",), ("pcm", "s", 1, B), ("eos", "s", 2, 1, 4, B), ("eof", B)],
     "raise",
     [("caps", "a:0", "s", False), ("caps", "b:0", "s", False), ("data", "a:0", "s", 1),
      ("caps", "a:0", "s", True), ("end", "a:0", "s", 1, 4), ("sender_end", "a:0"),
      ("data", "b:0", "s", 1), ("end", "b:0", "s", 1, 4), ("sender_end", "b:0"), ("run_end",)]),
    # An empty stream and a sender with no streams at all.
    ([("caps", "e", 0), ("eos", "e", 1, 0, 0), ("eof",), ("eof", B)], "raise",
     [("caps", "a:0", "e", False), ("end", "a:0", "e", 0, 0), ("sender_end", "a:0"),
      ("sender_end", "b:0"), ("run_end",)]),
    # report: a gap is reported and the data still delivered; the eos then reports the loss.
    ([("caps", "s", 0), ("pcm", "s", 2), ("eos", "s", 3, 2, 8)], "report",
     [("caps", "a:0", "s", False), ("violation", "gap"), ("data", "a:0", "s", 2),
      ("violation", "incomplete"), ("end", "a:0", "s", 1, 4)]),
    # report: a duplicate is reported and dropped.
    ([("caps", "s", 0), ("pcm", "s", 1), ("pcm", "s", 1), ("eos", "s", 2, 1, 4)], "report",
     [("caps", "a:0", "s", False), ("data", "a:0", "s", 1), ("violation", "duplicate"),
      ("end", "a:0", "s", 1, 4)]),
]


@pytest.mark.parametrize("steps, on_loss, expected", RECEIVER_FLOWS,
                         ids=["two_senders", "empty", "report_gap", "report_duplicate"])
def test_receiver_events(steps, on_loss, expected):
    _, events = _run(steps, on_loss)
    assert events == expected


def test_report_mode_still_raises_on_order_violations():
    with pytest.raises(ProtocolError, match=r"^sender 'a:0' stream 's': data before caps$"):
        _run([("pcm", "s", 0)], on_loss="report")


def test_receiver_statistics_count_what_happened():
    inbox, _ = _run([("caps", "s", 0), ("pcm", "s", 1), ("pcm", "s", 1), ("caps", "p", 0, MP3_CAPS),
                     ("pkt", "p", 1, "mp3"), ("eos", "p", 2, 1, 0), ("eof", B)], on_loss="report")
    stats = inbox.statistics()
    assert stats._asdict() == dict(stats._asdict(), senders=2, senders_open=1, streams_open=1,
                                   streams_ended=1, messages=7, data_messages=2, samples=4,
                                   packets=1, violations=1, dropped=1)
    assert stats.bytes > 0 and inbox.open_senders == {"a:0"} and not inbox.run_ended


def test_packets_get_the_extradata_of_their_caps():
    inbox = InboxState({"a:0"})
    inbox.receive(_message(("caps", "p", 0, MP3_CAPS)))
    (data,) = inbox.receive(_message(("pkt", "p", 1, "mp3")))
    assert data.buffer.extradata == b"\x01\x02"


@pytest.mark.parametrize("senders, on_loss, message", [
    ((), "raise", r"^an inbox needs at least one sender$"),
    (("a:0",), "ignore", r"^on_loss must be 'raise' or 'report', got 'ignore'$"),
])
def test_inbox_configuration_errors(senders, on_loss, message):
    with pytest.raises(ConfigError, match=message):
        InboxState(senders, on_loss=on_loss)


# ------------------------------------------------------------------------ sender

def test_sender_numbers_counts_and_ends_a_stream():
    sender = StreamSender("decode:0")
    messages = [decode(f) for f in (
        sender.caps("s", PCM_CAPS), sender.data(_frame("s", 1152)), sender.data(_frame("s", 100)),
        sender.caps("p", MP3_CAPS), sender.data(Packet(b"abc", codec="mp3", stream="p")),
        sender.eos("s"), sender.eos("p"), sender.eof())]
    assert [(m.kind, m.stream, m.seq, m.sender) for m in messages] == [
        ("caps", "s", 0, "decode:0"), ("pcm", "s", 1, "decode:0"), ("pcm", "s", 2, "decode:0"),
        ("caps", "p", 0, "decode:0"), ("pkt", "p", 1, "decode:0"), ("eos", "s", 3, "decode:0"),
        ("eos", "p", 2, "decode:0"), ("eof", None, None, "decode:0")]
    assert messages[5].info == {"messages": 2, "samples": 1252}
    assert messages[6].info == {"messages": 1, "samples": 0}
    stats = sender.statistics()
    assert (stats.streams_open, stats.streams_ended, stats.messages, stats.data_messages,
            stats.samples, stats.packets) == (0, 2, 8, 3, 1252, 1)
    assert stats.bytes == sum(m.nbytes for m in messages)


def _sender_steps(sender: StreamSender, steps):
    for kind, *args in steps:
        if kind == "caps":
            sender.caps(args[0], args[1] if len(args) > 1 else PCM_CAPS)
        elif kind == "data":
            sender.data(args[0])
        elif kind == "eos":
            sender.eos(args[0])
        else:
            sender.eof()


SENDER_ERRORS = [
    ([("data", _frame("s"))], r"^sender 'a:0' stream 's': data before caps$"),
    ([("eos", "s")], r"^sender 'a:0' stream 's': eos before caps$"),
    ([("caps", "s"), ("eos", "s"), ("data", _frame("s"))],
     r"^sender 'a:0' stream 's': data after eos$"),
    ([("caps", "s"), ("data", _frame("s", fmt=MONO))],
     r"^sender 'a:0' stream 's': frame format 48000 Hz 1 ch f32 planar differs from the caps' "
     r"48000 Hz 2 ch f32 planar$"),
    ([("caps", "s", MP3_CAPS), ("data", _frame("s"))],
     r"^sender 'a:0' stream 's': pcm data on a packet stream$"),
    ([("caps", "s", MP3_CAPS), ("data", Packet(b"x", codec="aac", stream="s"))],
     r"^sender 'a:0' stream 's': packet codec 'aac' differs from the caps' 'mp3'$"),
    ([("caps", "s", MP3_CAPS), ("data", Packet(b"x", 1, 44100, codec="mp3", stream="s"))],
     r"^sender 'a:0' stream 's': time base 1/44100 differs from the caps' 1/48000$"),
    ([("caps", "s"), ("data", AudioFrame(np.zeros((2, 4), np.float32), STEREO, 0,
                                         Fraction(1, 1000), "s"))],
     r"^sender 'a:0' stream 's': time base 1/1000 differs from the caps' 1/48000$"),
    ([("caps", "s"), ("eof",)], r"^sender 'a:0': eof while stream\(s\) 's' still open \(no eos\)$"),
    ([("eof",), ("caps", "s")], r"^sender 'a:0': caps after eof$"),
    ([("eof",), ("eof",)], r"^sender 'a:0': eof after eof$"),
]


@pytest.mark.parametrize("steps, message", SENDER_ERRORS,
                         ids=[f"case{i}" for i in range(len(SENDER_ERRORS))])
def test_sender_refuses_with_an_exact_message(steps, message):
    with pytest.raises(ProtocolError, match=message):
        _sender_steps(StreamSender("a:0"), steps)


def test_a_refused_send_changes_nothing():
    sender = StreamSender("a:0")
    sender.caps("s", PCM_CAPS)
    with pytest.raises(ProtocolError):
        sender.data(_frame("s", fmt=MONO))
    assert decode(sender.data(_frame("s"))).seq == 1
    assert sender.open_streams == ["s"] and sender.statistics().data_messages == 1


# ------------------------------------------------- any interleaving, end to end

@st.composite
def runs(draw):
    """Per sender: streams with their frame sizes, and the order their steps interleave."""
    plan = {}
    for s in range(draw(st.integers(1, 3))):
        streams = {f"s{k}": draw(st.lists(st.integers(0, 50), max_size=5))
                   for k in range(draw(st.integers(0, 3)))}
        # Each stream needs caps + its frames + eos: shuffle which stream moves next.
        tokens = [name for name, sizes in streams.items() for _ in range(len(sizes) + 2)]
        plan[f"stage:{s}"] = (streams, draw(st.permutations(tokens)))
    arrival = [name for name, (streams, tokens) in plan.items() for _ in range(len(tokens) + 1)]
    return plan, draw(st.permutations(arrival))


def _sender_queue(name: str, streams: dict, order: list) -> list:
    sender, queue = StreamSender(name), []
    steps = {stream: 0 for stream in streams}
    for stream in order:
        sizes, step = streams[stream], steps[stream]
        if step == 0:
            queue.append(sender.caps(stream, PCM_CAPS))
        elif step <= len(sizes):
            queue.append(sender.data(_frame(stream, sizes[step - 1], value=step / 64)))
        else:
            queue.append(sender.eos(stream))
        steps[stream] += 1
    queue.append(sender.eof())
    return queue


@PROFILE
@given(runs())
def test_any_interleaving_delivers_every_stream_in_order_and_ends_once(run):
    plan, arrival = run
    queues = {name: iter(_sender_queue(name, *plan[name])) for name in plan}
    inbox = InboxState(plan)
    events = []
    for name in arrival:  # each edge is FIFO; the edges interleave arbitrarily
        events += inbox.receive(decode(next(queues[name])))
    assert isinstance(events[-1], RunEnd) and sum(isinstance(e, RunEnd) for e in events) == 1
    for name, (streams, _) in plan.items():
        for stream, sizes in streams.items():
            mine = [e for e in events if getattr(e, "sender", None) == name
                    and getattr(e, "stream", None) == stream]
            data = [e for e in mine if isinstance(e, StreamData)]
            assert [e.seq for e in data] == list(range(1, len(sizes) + 1))
            assert [e.buffer.samples for e in data] == sizes
            assert all(np.all(e.buffer.data == np.float32(i / 64)) for i, e in
                       enumerate(data, 1))
            assert isinstance(mine[0], StreamCaps) and mine[-1] == \
                StreamEnd(name, stream, len(sizes), sum(sizes))
    stats = inbox.statistics()
    assert (stats.senders_open, stats.streams_open, stats.violations) == (0, 0, 0)
    assert stats.samples == sum(sum(sizes) for streams, _ in plan.values()
                                for sizes in streams.values())


# --------------------------------------------------------------------- reorderer

def _window_needed(order: list[int]) -> int:
    """The smallest window that lets `order` through: how far ahead of the next seq it gets."""
    seen, next_seq, needed = set(), 0, 1
    for seq in order:
        needed = max(needed, seq - next_seq + 1)
        seen.add(seq)
        while next_seq in seen:
            next_seq += 1
    return needed


@PROFILE
@given(st.integers(0, 60).flatmap(lambda n: st.permutations(range(n))))
def test_reorderer_restores_any_permutation_within_its_window(order):
    window = _window_needed(order)
    reorderer = Reorderer(window)
    out = [item for seq in order for item in reorderer.push(seq, f"m{seq}")]
    reorderer.finish(len(order))
    assert out == [f"m{i}" for i in range(len(order))]
    assert reorderer.max_waiting <= window - 1 and reorderer.waiting == 0
    if window > 1:  # one less and it must refuse, never deliver out of order
        tight = Reorderer(window - 1)
        with pytest.raises(ProtocolError, match="reorder window overflow"):
            for seq in order:
                tight.push(seq, seq)


@pytest.mark.parametrize("pushes, end, message", [
    ([0, 0], None, r"^s: duplicate seq 0 \(delivered up to 0\)$"),
    ([2, 2], None, r"^s: duplicate seq 2 \(already waiting\)$"),
    ([4], None, r"^s: reorder window overflow: seq 4 is 4 ahead of the next expected 0 "
                r"\(window 4\)$"),
    ([0, 2, 3], 5, r"^s: gap at the end: 2 message\(s\) missing, first missing seq 1 \(end 5\)$"),
    ([0, 1], 1, r"^s: seq 1 is beyond the end \(1 message\(s\)\)$"),
    ([0, 2], 2, r"^s: seq 2 is beyond the end \(2 message\(s\)\)$"),
])
def test_reorderer_errors(pushes, end, message):
    reorderer = Reorderer(4, name="s")
    with pytest.raises(ProtocolError, match=message):
        for seq in pushes:
            reorderer.push(seq, seq)
        reorderer.finish(end)


@pytest.mark.parametrize("pushes, end, missing, first", [
    ([0, 1], 3, 1, 2),            # the last one never came
    ([1, 2], 3, 1, 0),            # the first
    ([0, 2], 4, 2, 1),            # one in the middle, one at the end
    ([0, 2, 4], 6, 3, 1),         # every other one (seq 1, 3, 5)
    ([], 2, 2, 0),                # the eos says 2, nothing came
])
def test_reorderer_finish_names_how_many_messages_are_missing_and_the_first(pushes, end,
                                                                            missing, first):
    reorderer = Reorderer(4, name="s")
    delivered = [item for seq in pushes for item in reorderer.push(seq, seq)]
    assert delivered == list(range(first))         # in order, up to the first gap
    with pytest.raises(ProtocolError, match=rf"^s: gap at the end: {missing} message\(s\) "
                                            rf"missing, first missing seq {first} "
                                            rf"\(end {end}\)$") as error:
        reorderer.finish(end)
    assert (error.value.problem, error.value.stream) == ("gap", "s")


def test_reorderer_starts_anywhere_and_refuses_a_zero_window():
    reorderer = Reorderer(2, start=10)
    assert reorderer.push(11, "b") == [] and reorderer.push(10, "a") == ["a", "b"]
    assert reorderer.next_seq == 12
    with pytest.raises(ConfigError, match=r"^reorder window must be at least 1, got 0$"):
        Reorderer(0)
