"""The wire format: exact round trips, and strict validation of everything received."""

from __future__ import annotations

import os
import pickle
from fractions import Fraction

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.engine.wire.codec import (MAX_HEADER_BYTES, WIRE_VERSION, ZERO_COPY_MIN_BYTES, Caps,
                                         buffer_from, decode, encode_caps, encode_eof, encode_eos,
                                         encode_frame, encode_packet, message_nbytes,
                                         send_kwargs)
from flowengine.errors import WireError
from flowengine.audio.format import SAMPLE_TYPES, AudioFormat

settings.register_profile("ci", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=10_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

INT64 = st.integers(-2**63, 2**63 - 1)
POSITIVE = st.integers(1, 2**63 - 1)
NAMES = st.text(min_size=1, max_size=40)


@st.composite
def audio_frames(draw) -> AudioFrame:
    """Any AudioFrame; the samples are random bit patterns (NaNs and infinities included)."""
    fmt = AudioFormat(draw(st.integers(1, 384_000)), draw(st.integers(1, 8)),
                      draw(st.sampled_from(SAMPLE_TYPES)), draw(st.booleans()))
    samples = draw(st.integers(0, 5000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = np.frombuffer(rng.bytes(fmt.channels * samples * fmt.bytes_per_sample),
                         dtype=fmt.dtype).reshape(fmt.shape(samples))
    if draw(st.booleans()):  # the same samples as a strided, non-contiguous view
        data = np.ascontiguousarray(data.T).T
    time_base = Fraction(draw(POSITIVE), draw(POSITIVE))
    return AudioFrame(data, fmt, draw(st.none() | INT64), time_base, draw(NAMES))


packets = st.builds(Packet, st.binary(max_size=3000), POSITIVE, POSITIVE, st.none() | INT64,
                    st.none() | INT64, st.none() | INT64, st.integers(0, 2**32),
                    st.text(max_size=20), NAMES)
senders = st.none() | NAMES
seqs = st.integers(0, 2**64 - 1)
formats = st.builds(AudioFormat, st.integers(1, 10**6), st.integers(1, 64),
                    st.sampled_from(SAMPLE_TYPES), st.booleans())
scalars = st.none() | st.booleans() | INT64 | st.floats(allow_nan=False) | st.text(max_size=30)
caps_values = st.one_of(
    st.builds(Caps, st.just("pcm"), formats, st.none() | st.text(max_size=20)),
    st.builds(Caps, st.just("packet"), st.none() | formats, st.text(max_size=20),
              st.builds(Fraction, POSITIVE, POSITIVE),
              st.none() | st.binary(max_size=500),
              st.dictionaries(NAMES, scalars, max_size=8)))


# ------------------------------------------------------------------ round trips

@PROFILE
@given(audio_frames(), seqs, senders)
def test_any_audio_frame_round_trips_exactly(frame, seq, sender):
    parts = encode_frame(frame, seq, sender=sender)
    message = decode(parts, caps=Caps.for_frame(frame))
    got = message.buffer
    assert (message.kind, message.stream, message.seq, message.sender, message.samples) == \
        ("pcm", frame.stream, seq, sender, frame.samples)
    assert message.nbytes == message_nbytes(parts)
    assert got.format == frame.format
    assert got.data.dtype == frame.data.dtype and got.data.shape == frame.data.shape
    assert got.data.tobytes() == frame.data.tobytes()  # bit-exact, NaN payloads included
    assert (got.pts, got.time_base, got.stream) == (frame.pts, frame.time_base, frame.stream)


@PROFILE
@given(packets, seqs, senders)
def test_any_packet_round_trips_exactly(packet, seq, sender):
    message = decode(encode_packet(packet, seq, sender=sender), caps=Caps.for_packet(packet))
    assert (message.kind, message.stream, message.seq, message.sender) == \
        ("pkt", packet.stream, seq, sender)
    got = message.buffer
    fields = ("data", "time_base", "pts", "dts", "duration", "flags", "codec", "stream",
              "extradata")
    assert [getattr(got, f) for f in fields] == [getattr(packet, f) for f in fields]


@PROFILE
@given(audio_frames(), seqs)
def test_a_data_header_carries_nothing_its_caps_say(frame, seq):
    """The format, time base and codec travel once per stream in its caps: the same
    samples under other caps are other audio, and the header is the same."""
    header, payload = encode_frame(frame, seq)
    other = Caps("pcm", frame.format, time_base=Fraction(1, 7))
    assert decode([header, payload], caps=other).buffer.time_base == Fraction(1, 7)
    assert msgpack.unpackb(header) == [WIRE_VERSION, "pcm", frame.stream, seq, None, None,
                                       frame.pts, frame.samples]


@PROFILE
@given(NAMES, seqs, caps_values, senders)
def test_caps_round_trip(stream, seq, caps, sender):
    message = decode(encode_caps(stream, seq, caps, sender=sender))
    assert (message.kind, message.stream, message.seq, message.sender) == \
        ("caps", stream, seq, sender)
    assert message.info == {"caps": caps} and message.buffer is None


@PROFILE
@given(NAMES, seqs, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), senders,
       st.booleans())
def test_eos_round_trips(stream, seq, count, samples, sender, aborted):
    message = decode(encode_eos(stream, seq, messages=count, samples=samples, sender=sender,
                                aborted=aborted))
    assert (message.kind, message.stream, message.seq, message.sender) == \
        ("eos", stream, seq, sender)
    assert message.info == {"messages": count, "samples": samples,
                            **({"aborted": True} if aborted else {})}


@PROFILE
@given(NAMES)
def test_eof_round_trips(sender):
    message = decode(encode_eof(sender))
    assert (message.kind, message.stream, message.seq, message.sender, message.info) == \
        ("eof", None, None, sender, {})


def test_packet_codec_time_base_and_extradata_travel_in_caps_not_per_packet():
    packet = Packet(b"\x01\x02", 1, 48000, 0, 0, 960, 1, "opus", "a", extradata=b"OpusHead")
    header, payload = encode_packet(packet, 0)
    assert msgpack.unpackb(header) == [WIRE_VERSION, "pkt", "a", 0, None, None, 0, 0, 960, 1]
    caps = decode(encode_caps("a", 0, Caps.for_packet(packet, AudioFormat(48000, 2)))).info["caps"]
    got = decode([header, payload], caps=caps).buffer
    assert (got.extradata, got.codec, got.time_base) == (b"OpusHead", "opus", Fraction(1, 48000))


# ------------------------------------------------------------ copies and views

def _stereo(samples: int = 1152) -> AudioFrame:
    data = np.linspace(-1, 1, 2 * samples, dtype=np.float32).reshape(2, samples)
    return AudioFrame(data, AudioFormat(48000, 2), pts=0, stream="a")


STEREO_CAPS = Caps("pcm", AudioFormat(48000, 2))


def test_payload_is_a_view_of_the_array_on_send_and_of_the_frame_on_receive():
    frame = _stereo()
    header, payload = encode_frame(frame, 0)
    assert np.shares_memory(np.frombuffer(payload, np.float32), frame.data)
    received = bytearray(payload)
    got = decode([header, received], caps=STEREO_CAPS).buffer.data
    assert np.shares_memory(got, np.frombuffer(received, np.uint8))
    with pytest.raises(ValueError, match="read-only"):
        got[0, 0] = 1.0


def test_a_received_frame_keeps_its_bytes_until_its_samples_are_asked_for():
    """No numpy for a stage that never looks at the samples; `data` and `av` on demand."""
    frame = _stereo(1000)
    header, payload = encode_frame(frame, 0)
    got = decode([header, bytes(payload)], caps=STEREO_CAPS).buffer
    assert repr(got).endswith("bytes)") and got.samples == 1000 and got.nbytes == 8000
    assert got.av.samples == 1000 and got.av.format.name == "fltp"   # av made through data
    np.testing.assert_array_equal(got.av.to_ndarray(), frame.data)
    assert got.data is got.data and repr(got).endswith("numpy)")
    # it pickles as its samples, as a frame PyAV made does
    received = decode([header, bytes(payload)], caps=STEREO_CAPS).buffer
    for before in (received, AudioFrame.from_av(frame.av, frame.format, 0, "a")):
        after = pickle.loads(pickle.dumps(before))
        np.testing.assert_array_equal(after.data, frame.data)
        assert (after.format, after.pts, after.stream, after.samples) == (
            before.format, before.pts, before.stream, before.samples)


def test_writable_decode_copies():
    header, payload = encode_frame(_stereo(), 0)
    received = bytearray(payload)
    got = decode([header, received], caps=STEREO_CAPS, writable=True).buffer.data
    assert not np.shares_memory(got, np.frombuffer(received, np.uint8))
    got[0, 0] = 5.0
    assert got[0, 0] == 5.0


def test_decodes_zmq_frames():
    frame = _stereo(4096)
    message = decode([zmq.Frame(p) for p in encode_frame(frame, 7, sender="gain:1")],
                     caps=STEREO_CAPS)
    np.testing.assert_array_equal(message.buffer.data, frame.data)
    assert (message.seq, message.sender) == (7, "gain:1")


@pytest.mark.parametrize("samples, copy", [(8191, True), (8192, False)])
def test_send_kwargs_copies_below_the_zero_copy_threshold(samples, copy):
    # 8192 stereo f32 samples = 65536 bytes = ZERO_COPY_MIN_BYTES exactly.
    payload = encode_frame(_stereo(samples), 0)[1]
    assert (memoryview(payload).nbytes >= ZERO_COPY_MIN_BYTES) is not copy
    assert send_kwargs(payload) == {"copy": copy}


# ------------------------------------------------------- validation, exact messages

_PCM_FIELDS = ("version", "kind", "stream", "seq", "sender", "order", "pts", "samples")


def _pcm_header(**changes) -> bytes:
    header = dict(zip(_PCM_FIELDS, [WIRE_VERSION, "pcm", "a", 0, None, None, 0, 256]))
    header.update(changes)
    return msgpack.packb([v for v in header.values() if v is not _DROP])


def _control(**header) -> bytes:
    return msgpack.packb({"v": WIRE_VERSION, **header})


_DROP = object()
_PAYLOAD = bytes(2048)
_CASES = [
    ([_pcm_header(version=7), _PAYLOAD], r"^unknown wire version 7 \(expected 2\)$"),
    # a version 1 sender's header (a map): refused by its version, not a confusing field
    ([msgpack.packb({"v": 1, "k": "pcm", "s": "a", "q": 0, "n": 256}), _PAYLOAD],
     r"^unknown wire version 1 \(expected 2\)$"),
    ([_pcm_header(kind="wav"), _PAYLOAD],
     r"^unknown kind 'wav' \(expected one of pcm, pkt, caps, eos, eof\)$"),
    ([_pcm_header(version="1"), _PAYLOAD],
     r"^header: wrong type for version \(expected int, got str\)$"),
    ([msgpack.packb({"k": "eof", "src": "a:0"})],
     r"^header: missing key 'v'$"),
    ([_pcm_header(samples=_DROP), _PAYLOAD],
     r"^pcm header has 7 fields \(expected 8: version, kind, stream, seq, sender, order, pts, "
     r"samples\)$"),
    ([_pcm_header(samples="256"), _PAYLOAD],
     r"^pcm message: wrong type for samples \(expected int, got str\)$"),
    ([_pcm_header(samples=True), _PAYLOAD],
     r"^pcm message: wrong type for samples \(expected int, got bool\)$"),
    ([_pcm_header(pts=1.5), _PAYLOAD],
     r"^pcm message: wrong type for pts \(expected int or nil, got float\)$"),
    ([_pcm_header(seq=-1), _PAYLOAD], r"^pcm message: bad value for seq: -1 \(expected >= 0\)$"),
    ([_pcm_header(order=-1), _PAYLOAD],
     r"^pcm message: bad value for order: -1 \(expected >= 0\)$"),
    ([_pcm_header(sender=5), _PAYLOAD],
     r"^pcm message: wrong type for sender \(expected str or nil, got int\)$"),
    ([_pcm_header(stream=""), _PAYLOAD],
     r"^pcm message: bad value for stream: '' \(expected 1 to 256 characters\)$"),
    ([msgpack.packb([WIRE_VERSION, "pkt", "a", 0, None, None, 0, 0, 1152, -1]), b"x"],
     r"^pkt message: bad value for flags: -1 \(expected >= 0\)$"),
    ([msgpack.packb([WIRE_VERSION, "pkt", "a", 0, None, None, 0, 0, 1.5, 0]), b"x"],
     r"^pkt message: wrong type for duration \(expected int or nil, got float\)$"),
    ([_control(k="pcm", s="a", q=0), _PAYLOAD], r"^pcm header is a map \(expected an array\)$"),
    ([msgpack.packb([WIRE_VERSION, "eof", "a:0"])], r"^eof header is an array \(expected a map\)$"),
    ([msgpack.packb([WIRE_VERSION]), _PAYLOAD],
     r"^header array has 1 fields \(expected version, kind, ...\)$"),
    ([msgpack.packb(5), _PAYLOAD], r"^header is not an array or a map \(got int\)$"),
    ([_pcm_header()], r"^pcm message has 1 parts \(expected 2: header, payload\)$"),
    ([_pcm_header(), _PAYLOAD, b""], r"^message has 3 parts \(expected 1 or 2\): extra parts$"),
    ([_control(k="eof", src="a:0"), b""], r"^eof message has 2 parts \(expected 1: header\)$"),
    ([b"\xc1", _PAYLOAD], r"^header is not valid msgpack \(FormatError: "),
    ([b"\x8c\xa1v", _PAYLOAD], r"^header is not valid msgpack \(ValueError: Unpack failed"),
    ([_pcm_header() + b"\x00", _PAYLOAD], r"^header is not valid msgpack \(ExtraData"),
    ([_control(k="eof", src="a:0", t=msgpack.ExtType(5, b"x"))],
     r"^msgpack extension type 5 is not allowed in a header$"),
    ([_control(k="eof", src=msgpack.Timestamp(0))],
     r"^eof message: wrong type for 'src' \(expected str, got Timestamp\)$"),
    # A 4-billion-element array declared in a few bytes, and an over-long string: refused
    # by msgpack's limits before anything is allocated.
    ([b"\x82\xa1v\x02\xa1x\xdd\xff\xff\xff\xff"],
     r"^header is not valid msgpack \(ValueError: 4294967295 exceeds max_array_len\(128\)\)$"),
    ([_control(k="eof", src="x" * 2000)],
     r"^header is not valid msgpack \(ValueError: 2000 exceeds max_str_len\(1024\)\)$"),
    ([b"\x90" * (MAX_HEADER_BYTES + 1)],
     rf"^header of {MAX_HEADER_BYTES + 1} bytes over the maximum {MAX_HEADER_BYTES}$"),
    ([], r"^empty message \(no parts\)$"),
    ([12, b""], r"^part 0 is not a bytes-like buffer \(got int\)$"),
    (b"\x81", r"^a message is a list of parts, got bytes$"),
    ([_control(k="caps", s="a", q=0, b="pcm", sr=48000, tb=[1, 48000])],
     r"^caps message for stream 'a': format keys incomplete, missing 'ch', 'fmt', 'planar'$"),
    ([_control(k="caps", s="a", q=0, b="pcm", tb=[1, 48000])],
     r"^caps message for stream 'a': pcm caps need the format \(sr, ch, fmt, planar\)$"),
    ([_control(k="caps", s="a", q=0, b="packet", tb=[1, 48000])],
     r"^caps message for stream 'a': packet caps need the codec name$"),
    ([_control(k="caps", s="a", q=0, b="packet", codec="mp3")],
     r"^caps message: missing key 'tb'$"),
    ([_control(k="caps", s="a", q=0, b="packet", codec="mp3", tb=[1, 0])],
     r"^caps message: bad value for 'tb': \[1, 0\] \(expected \[num, den\] of positive ints\)$"),
    ([_control(k="caps", s="a", q=0, b="packet", codec="mp3", tb=[1, 48000],
               p={"rate": [1]})],
     r"^caps message: bad value for 'p': \{'rate': \[1\]\} \(expected at most 64 names to "
     r"scalars\)$"),
    ([_control(k="caps", s="a", q=0, b="pcm", sr=48000, ch=0, fmt="f32", planar=True,
               tb=[1, 48000])],
     r"^caps message: bad value for 'ch': 0 \(expected > 0\)$"),
    ([_control(k="caps", s="a", q=0, b="pcm", sr=48000, ch=2, fmt="s24", planar=True,
               tb=[1, 48000])],
     r"^caps message: bad value for 'fmt': 's24' \(expected one of u8, s16, s32, f32, f64\)$"),
    ([_control(k="caps", s="a", q=0, b="pcm", sr=48000, ch=2, fmt="f32", planar=1,
               tb=[1, 48000])],
     r"^caps message: wrong type for 'planar' \(expected bool, got int\)$"),
    ([_control(k="eos", s="a", q=3, m=2, gain=2)], r"^eos message: unknown key 'gain'$"),
    ([_control(k="eos", s="a", q=3, m=2)], r"^eos message: missing key 'n'$"),
    ([_control(k="eos", s="a", q=3, m=2, n=0, ab=False)],
     r"^eos message: bad value for 'ab': False \(expected true \(the key is left out when "
     r"false\)\)$"),
    ([_control(k="eos", s="a", q=3, m=2, n=0, ab=1)],
     r"^eos message: wrong type for 'ab' \(expected bool, got int\)$"),
]


@pytest.mark.parametrize("parts, message", _CASES, ids=[f"case{i}" for i in range(len(_CASES))])
def test_invalid_messages_raise_wire_error_naming_the_problem(parts, message):
    with pytest.raises(WireError, match=message):
        decode(parts)


@pytest.mark.parametrize("parts, caps, message", [
    (encode_frame(_stereo(256), 0), Caps("packet", None, "mp3", Fraction(1, 48000)),
     r"^pcm message for stream 'a', whose caps say packet$"),
    (encode_packet(Packet(b"x", 1, 48000, 0, 0, 1152, 1, "mp3", "a"), 0), STEREO_CAPS,
     r"^pkt message for stream 'a', whose caps say pcm$"),
    ([_pcm_header(), bytes(1000)], STEREO_CAPS,
     r"^pcm message for stream 'a': payload is 1000 bytes but its caps and header say "
     r"2 ch × 256 samples × 4 bytes = 2048$"),
])
def test_a_data_message_that_disagrees_with_its_caps_is_refused(parts, caps, message):
    with pytest.raises(WireError, match=message):
        decode(parts, caps=caps)


def test_message_over_the_maximum_size():
    parts = encode_frame(_stereo(1152), 0)
    size = message_nbytes(parts)
    assert size == 2 * 1152 * 4 + len(parts[0])
    with pytest.raises(WireError, match=rf"^message of {size} bytes over the maximum {size - 1}$"):
        decode(parts, max_message_bytes=size - 1)
    assert decode(parts, max_message_bytes=size).samples == 1152


@pytest.mark.parametrize("call, message", [
    (lambda: encode_frame(_stereo(), -1), r"^seq must be >= 0, got -1$"),
    (lambda: encode_frame(_stereo(), 1.0), r"^seq must be an int, got float$"),
    (lambda: encode_eos("", 0, messages=0), r"^stream id must have 1 to 256 characters, got 0$"),
    (lambda: encode_eof("x" * 257), r"^sender must have 1 to 256 characters, got 257$"),
    (lambda: encode_eos("a", 2**64, messages=0), r"^cannot encode eos header: "),
    (lambda: Caps.for_packet(Packet(b"", 0, 48000)), r"^caps time_base must be positive, got 0$"),
    (lambda: Caps("packet", codec="mp3"),
     r"^packet caps need the time base of the packets' timestamps$"),
    (lambda: encode_packet(Packet(b"", pts=0.5), 0), r"^pts must be an int or None, got float$"),
    (lambda: Caps("video"), r"^caps kind 'video' is not one of pcm, packet$"),
    (lambda: Caps("pcm", AudioFormat(8000, 1), params={"f": [1]}),
     r"^caps param 'f' must be int, float, str, bool or None, got list$"),
])
def test_encoding_refuses_what_decode_would_refuse(call, message):
    with pytest.raises(WireError, match=message):
        call()


def test_encode_accepts_numpy_integers_for_timestamps():
    frame = AudioFrame(np.zeros((1, 4), np.float32), AudioFormat(8000, 1), pts=np.int64(99))
    message = decode(encode_frame(frame, np.uint32(3)))
    assert (message.seq, message.pts) == (3, 99)


# --------------------------------------------------------- fuzzing: only WireError

FUZZ_CAPS = {"pcm": [STEREO_CAPS, Caps("pcm", AudioFormat(44100, 2, "s16", planar=False))],
             "pkt": [Caps("packet", None, "mp3", Fraction(1, 44100))]}


def buffers_consistent(message) -> None:
    """A data message's buffer, built with any caps, matches its payload or is refused
    with a WireError: never an array of another size."""
    for caps in FUZZ_CAPS.get(message.kind, ()):
        try:
            buffer = buffer_from(message, caps)
        except WireError:
            continue
        if message.kind == "pcm":
            assert buffer.data.nbytes == message.payload.nbytes
            assert buffer.data.shape == caps.format.shape(message.samples)
        else:
            assert buffer.data == bytes(message.payload)


def _decode_checked(parts) -> None:
    """decode must either raise WireError or return a message whose buffers are consistent."""
    try:
        message = decode(parts)
    except WireError:
        return
    buffers_consistent(message)


@PROFILE
@given(st.lists(st.binary(max_size=200), max_size=3))
def test_random_bytes_give_wire_error_or_a_consistent_message(parts):
    _decode_checked(parts)


def _valid_messages():
    frame = AudioFrame(np.arange(24, dtype=np.int16).reshape(12, 2),
                       AudioFormat(44100, 2, "s16", planar=False), pts=5, stream="left")
    return [
        encode_frame(frame, 3, sender="decode:0"),
        encode_frame(_stereo(64), 0),
        encode_packet(Packet(b"\xff\xfb" + bytes(100), 1, 44100, 0, 0, 1152, 1, "mp3", "a"), 1),
        encode_caps("a", 0, Caps("packet", AudioFormat(48000, 2), "opus", Fraction(1, 48000),
                                 b"OpusHead", {"bit_rate": 64000})),
        encode_eos("a", 9, messages=8, samples=9216, sender="gain:1"),
        encode_eof("sink:0"),
    ]


@st.composite
def mutated_messages(draw):
    parts = [bytes(f) for f in draw(st.sampled_from(_valid_messages()))]
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "drop_part", "add_part"]))
        if op == "drop_part" and parts:
            del parts[draw(st.integers(0, len(parts) - 1))]
        elif op == "add_part":
            parts.insert(draw(st.integers(0, len(parts))), draw(st.binary(max_size=16)))
        elif parts:
            i = draw(st.integers(0, len(parts) - 1))
            data = bytearray(parts[i])
            at = draw(st.integers(0, len(data)))
            if op == "flip" and data:
                data[min(at, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
            elif op == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=4))
            elif op == "delete" and data:
                del data[at:at + draw(st.integers(1, 4))]
            parts[i] = bytes(data)
    return parts


@PROFILE
@given(mutated_messages())
def test_mutated_messages_give_wire_error_or_a_consistent_message(parts):
    _decode_checked(parts)


@PROFILE
@given(st.integers(1, 40), st.integers(0, 400))
def test_a_pcm_payload_of_the_wrong_length_never_becomes_an_array(samples, length):
    header, payload = encode_frame(_stereo(samples), 0)
    assume(length != memoryview(payload).nbytes)
    wrong = (bytes(payload) + bytes(400))[:length]
    with pytest.raises(WireError, match=rf"payload is {length} bytes but its caps and header say"):
        decode([header, wrong], caps=STEREO_CAPS)


# One sample short or long, one byte short or long (not a whole number of samples), and a
# whole number of samples that is no multiple of the channels: each must be refused by the
# length check, by name, before numpy sees the bytes (frombuffer and reshape would raise a
# ValueError, or worse, build an array of another shape).
PAYLOAD_LENGTH_CASES = [
    # format, samples, wrong length of the payload in bytes
    (AudioFormat(48000, 2, "f32"), 256, 2047), (AudioFormat(48000, 2, "f32"), 256, 2049),
    (AudioFormat(48000, 2, "f32"), 256, 2044), (AudioFormat(48000, 2, "f32"), 256, 2052),
    (AudioFormat(48000, 2, "f32"), 256, 2050), (AudioFormat(48000, 2, "f32"), 256, 0),
    (AudioFormat(44100, 2, "s16", planar=False), 100, 399),
    (AudioFormat(44100, 2, "s16", planar=False), 100, 401),
    (AudioFormat(44100, 2, "s16", planar=False), 100, 402),
    (AudioFormat(8000, 1, "f64"), 10, 79), (AudioFormat(8000, 1, "f64"), 10, 81),
    (AudioFormat(8000, 3, "u8"), 5, 14), (AudioFormat(8000, 3, "u8"), 5, 16),
    (AudioFormat(8000, 1, "s32"), 0, 4),
]


def pcm_message(fmt: AudioFormat, samples: int, stream: str = "left") -> list:
    data = np.zeros(fmt.shape(samples), fmt.dtype)
    return encode_frame(AudioFrame(data, fmt, pts=0, stream=stream), 7, sender="gain:1")


def payload_length_error(fmt: AudioFormat, samples: int, length: int, stream: str) -> str:
    """The exact message of the length check (a regex matching the whole text)."""
    width = fmt.bytes_per_sample
    return (rf"^pcm message for stream '{stream}': payload is {length} bytes but its caps and "
            rf"header say "
            rf"{fmt.channels} ch × {samples} samples × {width} bytes = "
            rf"{fmt.channels * samples * width}$")


@pytest.mark.parametrize("fmt, samples, length", PAYLOAD_LENGTH_CASES)
def test_a_pcm_payload_of_the_wrong_length_is_a_wire_error_naming_both_lengths(fmt, samples,
                                                                              length):
    header, payload = pcm_message(fmt, samples)
    assert memoryview(payload).nbytes != length
    wrong = (bytes(payload) + bytes(16))[:length]
    for writable in (False, True):
        with pytest.raises(WireError, match=payload_length_error(fmt, samples, length, "left")) \
                as refused:
            decode([header, wrong], caps=Caps("pcm", fmt), writable=writable)
        assert type(refused.value) is WireError


def test_parts_may_be_any_contiguous_buffer():
    header, payload = encode_frame(_stereo(16), 0)
    samples = np.frombuffer(payload, np.float32).reshape(2, 16)
    message = decode((np.frombuffer(header, np.uint8), samples), caps=STEREO_CAPS)
    np.testing.assert_array_equal(message.buffer.data, samples)
    empty = decode([encode_frame(_stereo(0), 0)[0], np.zeros((2, 0), np.float32)],
                   caps=STEREO_CAPS)
    assert empty.buffer.data.shape == (2, 0)
    with pytest.raises(WireError, match=r"^part 1 is not a contiguous buffer$"):
        decode([header, samples[:, ::2]])
