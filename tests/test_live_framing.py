"""The live ingest framing and protocol as pure code: no sockets (flowengine/live/framing.py,
protocol.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audio_checks import encoded_chirp_frames
from flowengine.errors import WireError
from flowengine.live.framing import (
    CLOSED, END_MARKER, END_OF_STREAM, NEED_DATA, FrameDecoder, encode_frame,
)
from flowengine.live.messages import (
    StreamInfo, clock_message, control_frame_bytes, is_control_frame, is_frame_of, parse_control,
    probe_frame,
)


def drain(decoder: FrameDecoder) -> list:
    events = []
    while (event := decoder.next_event()) is not NEED_DATA:
        events.append(event)
        if event is CLOSED:
            break
    return events


@settings(max_examples=60, deadline=None)
@given(payloads=st.lists(st.binary(min_size=1, max_size=300), max_size=12),
       cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20))
def test_any_split_of_the_byte_stream_gives_the_same_frames(payloads, cuts):
    wire = b"".join(encode_frame(p) for p in payloads) + END_MARKER
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    decoder = FrameDecoder(max_frame_bytes=300)
    events = []
    for start, end in zip(points, points[1:]):
        decoder.receive_data(wire[start:end])
        events += drain(decoder)
    decoder.receive_data(b"")
    events += drain(decoder)
    assert events == [*payloads, END_OF_STREAM, CLOSED]
    assert decoder.frames == len(payloads) and decoder.ends == 1
    assert decoder.offset == len(wire) and decoder.buffered == 0


def test_byte_by_byte_and_frames_after_the_end_marker_start_a_new_stream():
    wire = encode_frame(b"abc") + END_MARKER + encode_frame(b"de") + END_MARKER
    decoder = FrameDecoder()
    events = []
    for i in range(len(wire)):
        decoder.receive_data(wire[i:i + 1])
        events += drain(decoder)
    assert events == [b"abc", END_OF_STREAM, b"de", END_OF_STREAM]
    assert decoder.next_event() is NEED_DATA


def test_oversize_frame_is_refused_from_its_header_alone():
    decoder = FrameDecoder(max_frame_bytes=1000)
    decoder.receive_data(encode_frame(b"x" * 10) + (1001).to_bytes(4, "big"))
    assert decoder.next_event() == b"x" * 10
    with pytest.raises(WireError, match=r"^ingest: frame of 1001 bytes at byte offset 14 exceeds "
                                        r"the maximum of 1000 bytes \(max_frame_bytes\)$"):
        decoder.next_event()
    assert decoder.buffered == 0          # nothing of the refused frame is kept
    with pytest.raises(WireError, match="exceeds the maximum"):   # and it stays broken
        decoder.receive_data(b"more")


def test_garbage_reads_as_an_oversize_length():
    decoder = FrameDecoder(max_frame_bytes=1 << 16, where="ingest 1.2.3.4:5")
    decoder.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(WireError, match=r"^ingest 1\.2\.3\.4:5: frame of 1195725856 bytes at "
                                        r"byte offset 0 exceeds the maximum of 65536 bytes"):
        decoder.next_event()


@pytest.mark.parametrize("wire, message", [
    (b"\x00\x00", "got 2 of 4 header bytes"),
    (encode_frame(b"hello")[:7], "got 3 of 5 payload bytes"),
    (encode_frame(b"ok") + encode_frame(b"hello")[:4], "at byte offset 6: got 0 of 5 payload"),
])
def test_close_in_the_middle_of_a_message_is_an_error(wire, message):
    decoder = FrameDecoder()
    decoder.receive_data(wire)
    drain(decoder)
    decoder.receive_data(b"")
    with pytest.raises(WireError, match=f"connection closed mid-frame.*{message}"):
        decoder.next_event()


def test_close_between_messages_is_clean_and_data_after_close_is_refused():
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(b"a"))
    decoder.receive_data(b"")
    assert drain(decoder) == [b"a", CLOSED]
    with pytest.raises(WireError, match="data received after the peer closed"):
        decoder.receive_data(b"x")


def test_encode_refuses_an_empty_frame_and_a_bad_maximum():
    with pytest.raises(WireError, match="length 0 means end of stream"):
        encode_frame(b"")
    assert encode_frame(b"\x01\x02") == b"\x00\x00\x00\x02\x01\x02"
    with pytest.raises(ValueError, match="max_frame_bytes must be a positive integer, got 0"):
        FrameDecoder(max_frame_bytes=0)


def test_memory_stays_bounded_over_a_long_stream():
    decoder = FrameDecoder(max_frame_bytes=4096)
    chunk = b"".join(encode_frame(bytes([i % 251]) * 4000) for i in range(20))
    for _ in range(50):
        decoder.receive_data(chunk)
        assert len(drain(decoder)) == 20
        assert len(decoder._buf) <= 2 * len(chunk) + (1 << 16)
    assert decoder.offset == 50 * len(chunk)


@pytest.mark.parametrize("codec, rate, channels, chunk", [
    ("mp3", 48000, 2, 1152), ("mp3", 44100, 1, 1152), ("mp3", 24000, 2, 576),
    ("aac", 48000, 2, 1024), ("aac", 22050, 1, 1024),
])
def test_stream_info_comes_from_the_first_frame_header(codec, rate, channels, chunk):
    frames = encoded_chirp_frames(codec, 0.3, rate, channels)
    info = probe_frame(frames[0])
    assert (info.codec, info.sample_rate, info.channels, info.chunk_samples) == \
        (codec, rate, channels, chunk)
    assert all(is_frame_of(codec, f) for f in frames)
    other = "aac" if codec == "mp3" else "mp3"
    assert not any(is_frame_of(other, f) for f in frames)
    meta = info.metadata()
    assert {"codec", "mime", "sample_rate", "channels", "chunk_samples", "bitrate"} <= set(meta)
    assert meta["mime"] == {"mp3": "audio/mpeg", "aac": "audio/aac"}[codec]


def test_garbage_is_no_frame_and_hello_values_fill_in_what_headers_lack():
    assert probe_frame(b"\x00\x01garbage") is None and probe_frame(b"{}") is None
    info = StreamInfo("aac", 48000, 2, 1024).with_hello({"bitrate": 96000, "stream": "x"})
    assert info.bitrate == 96000


def test_control_frames():
    frame = control_frame_bytes(clock_message(1700000000.25, 7))
    assert is_control_frame(frame)
    assert parse_control(frame, "ingest") == {"type": "clock", "sender_time": 1700000000.25,
                                              "seq": 7}
    with pytest.raises(WireError, match="^ingest: control frame is not valid JSON"):
        parse_control(b"{nope", "ingest")
    with pytest.raises(WireError, match="control frame type must be one of hello, clock, got 'x'"):
        parse_control(json.dumps({"type": "x"}).encode(), "ingest")
    with pytest.raises(WireError, match="clock frame needs a numeric sender_time, got 'now'"):
        parse_control(b'{"type":"clock","sender_time":"now"}', "ingest")
    with pytest.raises(WireError, match="hello codec must be one of mp3, aac, got 'opus'"):
        parse_control(b'{"type":"hello","codec":"opus"}', "ingest")
