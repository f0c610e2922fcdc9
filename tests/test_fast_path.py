"""The receiver's fast path for steady-state data (`InboxState.next_data`, as the worker's
feed uses it) against the general path (`InboxState.receive`): same buffers, same counts,
and every gap, duplicate or malformed payload still refused, with the same error."""

from __future__ import annotations

from fractions import Fraction

import msgpack
import numpy as np
import pytest

from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.audio.format import AudioFormat
from flowengine.engine.wire.codec import Caps, checked_messages, encode_batch, encode_frame, \
    message_of
from flowengine.engine.wire.protocol import InboxState, ProtocolError, StreamData, StreamEnd, \
    StreamSender, Violation
from flowengine.errors import WireError

STEREO = AudioFormat(48000, 2)
MP3 = Caps("packet", STEREO, "mp3", Fraction(1, 48000))


def _frame(stream: str, index: int, samples: int = 6) -> AudioFrame:
    data = np.arange(2 * samples, dtype=np.float32).reshape(2, samples) + 100 * index
    return AudioFrame(data, STEREO, pts=index * samples, stream=stream)


def _packet(stream: str, index: int) -> Packet:
    return Packet(bytes([index % 256]) * (3 + index), 1, 48000, pts=index * 1152, dts=index * 1152,
                  duration=1152, flags=index % 2, codec="mp3", stream=stream)


def _wire(sender: StreamSender, streams: int = 2, messages: int = 5) -> list[list]:
    """What `sender` sends for `streams` pcm streams and one packet stream, interleaved."""
    out = []
    names = [f"s{i}" for i in range(streams)]
    for name in names:
        out.append(sender.caps(name, Caps("pcm", STEREO)))
    out.append(sender.caps("p", MP3))
    for index in range(messages):
        for name in names:
            out.append(sender.data(_frame(name, index)))
        out.append(sender.data(_packet("p", index)))
    for name in [*names, "p"]:
        out.append(sender.eos(name))
    return out


def _feed(inbox: InboxState, wire: list[list], fast: bool) -> list:
    """What the worker's feed does with each ZeroMQ message: the fast path first (when
    `fast`), the general one for the rest. The buffers delivered, and the other events."""
    got = []
    for parts in wire:
        for header, payload, nbytes in checked_messages(parts):
            if fast and type(header) is list:
                buffer = inbox.next_data(header, payload, nbytes)
                if buffer is not None:
                    got.append(buffer)
                    continue
            for event in inbox.receive(message_of(header, payload, nbytes)):
                got.append(event.buffer if isinstance(event, StreamData) else event)
    return got


def _same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert type(x) is type(y)
        if isinstance(x, AudioFrame):
            assert (x.stream, x.pts, x.samples, x.format, x.time_base) == \
                (y.stream, y.pts, y.samples, y.format, y.time_base)
            assert np.array_equal(x.data, y.data) and not x.data.flags.writeable
        elif isinstance(x, Packet):
            assert (x.stream, x.pts, x.dts, x.duration, x.flags, x.codec, x.time_base,
                    bytes(x.data)) == (y.stream, y.pts, y.dts, y.duration, y.flags, y.codec,
                                       y.time_base, bytes(y.data))
        elif isinstance(x, Violation):
            assert (x.error.problem, str(x.error)) == (y.error.problem, str(y.error))
        else:
            assert x == y


@pytest.mark.parametrize("batched", [False, True])
def test_fast_and_general_paths_give_the_same_buffers_and_counts(batched):
    wire = _wire(StreamSender("a:0"))
    if batched:
        wire = [encode_batch(wire[i:i + 4]) for i in range(0, len(wire), 4)]
    fast, general = InboxState({"a:0"}), InboxState({"a:0"})
    got_fast, got_general = _feed(fast, wire, True), _feed(general, wire, False)
    _same(got_fast, got_general)
    assert fast.statistics() == general.statistics()
    ends = [e for e in got_fast if isinstance(e, StreamEnd)]
    assert [(e.stream, e.messages, e.samples) for e in ends] == \
        [("s0", 5, 30), ("s1", 5, 30), ("p", 5, 0)]


def test_the_fast_path_takes_in_sequence_data_of_an_open_stream_only():
    sender = StreamSender("a:0")
    inbox = InboxState({"a:0"})
    caps, data = sender.caps("s", Caps("pcm", STEREO)), sender.data(_frame("s", 0))
    ((header, payload, nbytes),) = checked_messages(data)
    assert inbox.next_data(header, payload, nbytes) is None     # before its caps
    _feed(inbox, [caps], False)
    assert isinstance(inbox.next_data(header, payload, nbytes), AudioFrame)
    assert inbox.next_data(header, payload, nbytes) is None     # the same seq again
    assert inbox.statistics().data_messages == 1


def _run(wire: list[list], fast: bool, on_loss: str = "raise") -> tuple[list, str | None]:
    inbox = InboxState({"a:0"}, on_loss=on_loss)
    try:
        return _feed(inbox, wire, fast), None
    except ProtocolError as exc:
        return [], f"{exc.problem}: {exc}"


@pytest.mark.parametrize("on_loss", ["raise", "report"])
@pytest.mark.parametrize("fault", ["drop", "duplicate", "swap"])
def test_a_gap_a_duplicate_or_a_reorder_is_caught_as_by_the_general_path(fault, on_loss):
    wire = _wire(StreamSender("a:0"), streams=1)
    at = 4          # a data message in the middle of pcm stream s0 (s0 and p alternate)
    assert checked_messages(wire[at])[0][0][1] == "pcm"
    if fault == "drop":
        del wire[at]
    elif fault == "duplicate":
        wire.insert(at, wire[at])
    else:
        wire[at], wire[at + 2] = wire[at + 2], wire[at]
    fast, general = _run(wire, True, on_loss), _run(wire, False, on_loss)
    assert fast[1] == general[1]
    if on_loss == "raise":
        assert fast[1] is not None and fast[1].split(":")[0] in ("gap", "duplicate")
    else:
        _same(fast[0], general[0])
        assert any(isinstance(e, Violation) for e in fast[0])


def test_a_wrong_payload_length_is_an_error_naming_sender_and_stream():
    sender = StreamSender("src:0")
    caps = sender.caps("live", Caps("pcm", STEREO))
    header, payload = sender.data(_frame("live", 0))
    wrong = [header, bytes(payload)[:-4]]
    inbox = InboxState({"src:0"})
    _feed(inbox, [caps], False)
    with pytest.raises(WireError) as caught:
        _feed(inbox, [wrong], True)
    assert caught.value.problem == "payload"
    assert "sender 'src:0'" in str(caught.value) and "'live'" in str(caught.value)
    assert "payload is 44 bytes" in str(caught.value)
    assert inbox.statistics().data_messages == 0     # nothing counted


def test_a_pcm_message_on_a_packet_stream_is_refused_on_either_path():
    sender = StreamSender("a:0")
    caps = sender.caps("p", MP3)
    frame = encode_frame(_frame("p", 0), 1, sender="a:0")
    for fast in (True, False):
        inbox = InboxState({"a:0"})
        _feed(inbox, [caps], False)
        with pytest.raises(ProtocolError, match="pcm data on a packet stream"):
            _feed(inbox, [frame], fast)


def test_the_senders_header_template_packs_what_encode_frame_packs():
    sender = StreamSender("a:0")
    sender.caps("s", Caps("pcm", STEREO))
    for index in range(3):
        frame = _frame("s", index)
        parts = sender.data(frame)
        assert bytes(parts[0]) == bytes(encode_frame(frame, index + 1, sender="a:0")[0])
        assert msgpack.unpackb(parts[0]) == [2, "pcm", "s", index + 1, "a:0", None,
                                             frame.pts, 6]
        assert sender.last_nbytes == len(parts[0]) + memoryview(parts[1]).nbytes
    indexed = sender.data(_frame("s", 3), order=7)   # an ordered stage's place: its own header
    assert msgpack.unpackb(indexed[0])[5] == 7
    assert msgpack.unpackb(sender.data(_frame("s", 4))[0])[5] is None
