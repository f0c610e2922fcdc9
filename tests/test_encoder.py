"""Encoder: real codecs on generated audio, decoded back with PyAV directly.

Checks sample counts, pts continuity, dominant frequency and correlation for the
lossy codecs, bit-exactness for flac/wav, ADTS and MP3 framing, flush, reset and
every documented bad-input error.
"""

from __future__ import annotations

import io
import re
from fractions import Fraction

import av
import numpy as np
import pytest

from audio_checks import best_lag, dominant_frequency

from flowengine.audio.buffers import PACKET_FLAG_KEY, AudioFrame
from flowengine.ops.codecs.adts import AdtsFramer, parse_adts_header, parse_audio_specific_config
from flowengine.ops.codecs.configs import (AacEncoderConfig, FlacEncoderConfig, Mp3DecoderConfig,
                                       Mp3EncoderConfig, OpusEncoderConfig, WavDecoderConfig,
                                       WavEncoderConfig)
from flowengine.ops.codecs.encoder import Encoder
from flowengine.ops.codecs.lame import MP3_INITIAL_PADDING, LameMp3Encoder
from flowengine.ops.codecs.mp3frames import Mp3FrameSplitter, find_frame_sync, parse_frame_header
from flowengine.errors import CodecError, FormatError, UnknownCodecError
from flowengine.audio.format import AudioFormat, from_float

SR = 48000
F32 = AudioFormat(SR, 2, "f32", planar=True)
S16 = AudioFormat(SR, 2, "s16", planar=True)
FREQS = (440.0, 1000.0)      # channel 0, channel 1
# Start-up delay in samples: the first packet's pts is minus this.
DELAY = {"mp3": MP3_INITIAL_PADDING, "aac": 1024, "opus": 312}
FRAME = {"mp3": 1152, "aac": 1024, "opus": 960}
# Where the source starts in the decoded output: FFmpeg's mp3 and aac decoders keep the
# start-up delay; libopus skips the pre-skip signalled in OpusHead.
DECODED_LAG = {"mp3": MP3_INITIAL_PADDING, "aac": 1024, "opus": 0}


def sines(seconds: float = 1.0, rate: int = SR, channels: int = 2, amp: float = 0.5) -> np.ndarray:
    """Planar f32: 440 Hz on channel 0, 1000 Hz on channel 1 (and 440 again for more channels)."""
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([amp * np.sin(2 * np.pi * FREQS[c % 2] * t) for c in range(channels)]).astype(np.float32)


def encode(enc: Encoder, pcm: np.ndarray, block: int = 1000):
    """Put `pcm` (planar) in `block`-sample pieces, pulling packets as they come, then flush."""
    packets = []
    for start in range(0, pcm.shape[1], block):
        enc.put_frame(pcm[:, start:start + block])
        while (packet := enc.get_packet()) is not None:
            packets.append(packet)
    while (packet := enc.get_packet(force=True)) is not None:
        packets.append(packet)
    return packets


def planar(frames) -> np.ndarray:
    """PyAV frames (planar or packed) -> one planar float64 array (channels, n), original scale."""
    arrays = []
    for frame in frames:
        array = frame.to_ndarray()
        if not frame.format.is_planar:          # packed: (1, n * channels)
            array = array.reshape(-1, len(frame.layout.channels)).T
        arrays.append(array)
    return np.concatenate(arrays, axis=1).astype(np.float64)


def decode_stream(data: bytes, container: str) -> np.ndarray:
    """Decode a byte stream with PyAV's demuxer."""
    with av.open(io.BytesIO(data), format=container) as box:
        return planar(list(box.decode(audio=0)))


def decode_opus(packets, extradata: bytes) -> np.ndarray:
    cc = av.CodecContext.create("libopus", "r")
    cc.extradata = extradata
    return planar([frame for packet in packets for frame in cc.decode(av.Packet(packet.data))])


def flac_file(enc: Encoder, packets) -> bytes:
    """A minimal .flac: marker, STREAMINFO (the encoder's extradata, last block), frames."""
    info = enc.extradata
    return b"fLaC" + bytes([0x80, 0, 0, len(info)]) + info + b"".join(p.data for p in packets)


def decode(codec: str, enc: Encoder, packets) -> np.ndarray:
    if codec == "opus":
        return decode_opus(packets, enc.extradata)
    if codec == "flac":
        return decode_stream(flac_file(enc, packets), "flac")
    return decode_stream(b"".join(p.data for p in packets), codec)




def assert_timeline(packets, first_pts: int, end: int) -> None:
    """pts continuous and increasing, first and end as given, time base 1/rate."""
    assert packets[0].pts == first_pts
    for a, b in zip(packets, packets[1:]):
        assert b.pts == a.pts + a.duration
        assert b.pts > a.pts
    assert packets[-1].pts + packets[-1].duration == end
    assert all(p.dts == p.pts and p.time_base == Fraction(1, SR) for p in packets)


def check_lossy(codec: str, enc: Encoder, packets, source: np.ndarray) -> None:
    n = source.shape[1]
    assert_timeline(packets, -DELAY[codec], n)
    out = decode(codec, enc, packets)
    assert out.shape[0] == source.shape[0]
    # Nothing lost, and no more than the codec's delay plus one frame of padding added.
    assert n <= out.shape[1] <= n + DECODED_LAG[codec] + FRAME[codec]
    lag = best_lag(source[0], out[0])
    assert abs(lag - DECODED_LAG[codec]) <= 64, lag
    aligned = out[:, lag:lag + n]
    body = slice(2048, n - 2048)        # skip the codec's fade-in/out
    for ch in range(source.shape[0]):
        assert np.corrcoef(source[ch, body], aligned[ch, body])[0, 1] > 0.9
        assert abs(dominant_frequency(aligned[ch, body], SR) - FREQS[ch % 2]) < 3


# --- lossy round trips -----------------------------------------------------------------

LOSSY = [
    ("mp3", lambda chunk: Mp3EncoderConfig(F32, chunk_samples=chunk, backend="lame")),
    ("mp3", lambda chunk: Mp3EncoderConfig(F32, chunk_samples=chunk, backend="pyav")),
    ("aac", lambda chunk: AacEncoderConfig(F32, chunk_samples=chunk)),
    ("opus", lambda chunk: OpusEncoderConfig(F32, chunk_samples=chunk)),
]


@pytest.mark.parametrize("codec,make_config", LOSSY, ids=["mp3-lame", "mp3-pyav", "aac", "opus"])
@pytest.mark.parametrize("chunk", [100, "frame", 4096])
def test_lossy_round_trip(codec, make_config, chunk):
    chunk = FRAME[codec] if chunk == "frame" else chunk
    source = sines(1.0)
    enc = Encoder(codec, make_config(chunk))
    assert enc.frame_size == FRAME[codec]
    packets = encode(enc, source, block=777)
    assert all(p.codec == codec and p.flags & PACKET_FLAG_KEY for p in packets)
    check_lossy(codec, enc, packets, source)


def test_mp3_backends_agree_on_packets():
    """Same frame count, pts, durations and frame sizes from lameenc and PyAV's libmp3lame."""
    source = sines(0.5)
    runs = {}
    for backend in ("lame", "pyav"):
        enc = Encoder("mp3", Mp3EncoderConfig(F32, backend=backend))
        runs[enc.backend] = encode(enc, source, block=1152)
    lame, pyav = runs["lameenc"], runs["libmp3lame"]
    assert [(p.pts, p.duration, len(p.data)) for p in lame] == \
        [(p.pts, p.duration, len(p.data)) for p in pyav]


def test_lameenc_packets_do_not_depend_on_how_the_input_comes(monkeypatch):
    """LAME gets every chunk waiting in one call (Encoder._encode_buffered): the packets,
    bytes and timestamps alike, are those of one chunk per call."""
    source = sines(0.7)
    fed: list[int] = []     # samples per call into LAME
    encode_samples = LameMp3Encoder.encode

    def counted(self, pcm, pts):
        fed.append(pcm.shape[1])
        return encode_samples(self, pcm, pts)

    monkeypatch.setattr(LameMp3Encoder, "encode", counted)

    def packets(block: int, pull_each: bool = True) -> list[tuple]:
        fed.clear()
        enc = Encoder("mp3", Mp3EncoderConfig(F32, backend="lame"))
        if pull_each:
            got = encode(enc, source, block=block)
        else:   # everything put first: one call for all of it, then the tail at the flush
            for start in range(0, source.shape[1], block):
                enc.put_frame(source[:, start:start + block], pts=start)
            got = []
            while (packet := enc.get_packet(force=True)) is not None:
                got.append(packet)
        return [(p.pts, p.duration, p.data) for p in got]

    one_chunk_a_call = packets(1152)
    assert len(one_chunk_a_call) == 31     # ceil((33600 + 1105) / 1152)
    assert fed == [1152] * 29 + [192]
    assert packets(4096) == one_chunk_a_call
    assert len(fed) == 10 and sum(fed) == 33600     # 3 or 4 chunks a call, then the tail
    assert packets(1000, pull_each=False) == one_chunk_a_call
    assert fed == [29 * 1152, 192]           # every full chunk at once, then the tail


def test_mp3_auto_backend_is_lameenc():
    assert Encoder("mp3", Mp3EncoderConfig(F32)).backend == "lameenc"


@pytest.mark.parametrize("backend", ["lame", "pyav"])
def test_mp3_packets_are_single_whole_frames(backend):
    enc = Encoder("mp3", Mp3EncoderConfig(F32, chunk_samples=500, bitrate=192_000, backend=backend))
    packets = encode(enc, sines(0.5), block=333)
    for packet in packets:
        header = parse_frame_header(packet.data)
        assert header is not None
        assert (header.version, header.layer, header.sample_rate) == ("1", 3, SR)
        assert header.bitrate == 192_000 and header.channels == 2
        assert header.frame_length == len(packet.data)
        assert header.samples_per_frame == 1152
    # No Xing/Info tag frame: the first frame is audio, like the others.
    assert b"Xing" not in packets[0].data and b"Info" not in packets[0].data


def test_mp3_mpeg2_rate_has_576_sample_frames():
    fmt = AudioFormat(24000, 1, "f32")
    source = sines(0.5, rate=24000, channels=1)
    enc = Encoder("mp3", Mp3EncoderConfig(fmt, chunk_samples=1000, bitrate=64_000))
    packets = encode(enc, source)
    assert enc.frame_size == 576
    assert {parse_frame_header(p.data).samples_per_frame for p in packets} == {576}
    assert packets[0].pts == -MP3_INITIAL_PADDING
    assert packets[-1].pts + packets[-1].duration == source.shape[1]
    out = decode_stream(b"".join(p.data for p in packets), "mp3")
    assert abs(dominant_frequency(out[0, 2000:10000], 24000) - 440) < 4


# --- lossless ----------------------------------------------------------------------------

def noise_s16(seconds: float = 0.5, channels: int = 2, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return from_float(np.clip(rng.normal(0, 0.2, (channels, int(seconds * SR))), -1, 1), "s16")


@pytest.mark.parametrize("chunk", [100, 4608, 5000])
def test_flac_is_bit_exact_for_s16(chunk):
    source = noise_s16()
    enc = Encoder("flac", FlacEncoderConfig(S16, chunk_samples=chunk))
    packets = encode(enc, source, block=1234)
    assert_timeline(packets, 0, source.shape[1])
    assert all(len(p.data) > 0 for p in packets)          # FLAC's empty end packet dropped
    out = decode_stream(flac_file(enc, packets), "flac")
    assert out.shape == source.shape
    np.testing.assert_array_equal(out, source)


def test_flac_float_input_is_encoded_as_24_bit():
    source = sines(0.25)
    enc = Encoder("flac", FlacEncoderConfig(F32))
    out = decode_stream(flac_file(enc, encode(enc, source)), "flac")     # decodes to s32
    assert out.shape == source.shape
    assert np.max(np.abs(out / 2**31 - source)) <= 2.0 ** -23


@pytest.mark.parametrize("chunk", [100, 1024, 4096])
@pytest.mark.parametrize("fmt", [S16, AudioFormat(SR, 2, "s16", planar=False),
                                 AudioFormat(SR, 2, "f32", planar=False)], ids=str)
def test_wav_packets_are_input_type_interleaved(chunk, fmt):
    planar = noise_s16() if fmt.sample_type == "s16" else sines(0.5)
    enc = Encoder("pcm", WavEncoderConfig(fmt, chunk_samples=chunk))
    packets = []
    for start in range(0, planar.shape[1], 999):
        block = planar[:, start:start + 999]
        enc.put_frame(block if fmt.planar else block.T)
        while (b := enc.get_packet()) is not None:
            packets.append(b)
    while (b := enc.get_packet(force=True)) is not None:
        packets.append(b)
    assert [p.duration for p in packets[:-1]] == [chunk] * (len(packets) - 1)
    assert_timeline(packets, 0, planar.shape[1])
    raw = np.frombuffer(b"".join(p.data for p in packets), dtype=fmt.dtype)
    np.testing.assert_array_equal(raw.reshape(-1, 2).T, planar)


# --- AAC ADTS ----------------------------------------------------------------------------

@pytest.mark.parametrize("rate,channels,index", [(48000, 2, 3), (44100, 1, 4)])
def test_aac_packets_carry_correct_adts_headers(rate, channels, index):
    fmt = AudioFormat(rate, channels, "f32")
    enc = Encoder("aac", AacEncoderConfig(fmt, chunk_samples=700))
    packets = encode(enc, sines(0.5, rate=rate, channels=channels))
    assert enc.extradata is None            # ADTS is self-describing
    decoder = av.CodecContext.create("aac", "r")      # no extradata: it must read ADTS
    total = 0
    for packet in packets:
        data = packet.data
        # Independent bit reading of the fixed header.
        assert data[0] == 0xFF and data[1] & 0xF0 == 0xF0         # sync word
        assert data[1] & 0x06 == 0 and data[1] & 0x01 == 1        # layer 0, no CRC
        assert data[2] >> 6 == 1                                   # profile 1 = AAC LC
        assert (data[2] >> 2) & 0xF == index
        assert ((data[2] & 1) << 2) | (data[3] >> 6) == channels
        assert ((data[3] & 3) << 11) | (data[4] << 3) | (data[5] >> 5) == len(data)
        header = parse_adts_header(data)
        assert (header.object_type, header.sample_rate, header.channel_config) == (2, rate, channels)
        for frame in decoder.decode(av.Packet(data)):
            assert frame.sample_rate == rate and len(frame.layout.channels) == channels
            total += frame.samples
    for frame in decoder.decode(None):
        total += frame.samples
    assert total == 1024 * len(packets)


def test_adts_stream_decodes_through_the_aac_parser():
    """Cut anywhere, the ADTS stream still decodes through FFmpeg's parser."""
    enc = Encoder("aac", AacEncoderConfig(F32))
    packets = encode(enc, sines(0.5))
    stream = b"".join(p.data for p in packets)
    cc = av.CodecContext.create("aac", "r")
    parsed = []
    for start in range(0, len(stream), 333):
        parsed += cc.parse(stream[start:start + 333])
    parsed += cc.parse(b"")
    assert [bytes(p) for p in parsed] == [p.data for p in packets]


def test_adts_framer_rejects_configs_adts_cannot_express():
    assert parse_audio_specific_config(bytes.fromhex("1190")).channel_config == 2
    with pytest.raises(CodecError, match="channel configuration 0"):
        AdtsFramer(bytes.fromhex("1180"))
    with pytest.raises(CodecError, match="does not fit in ADTS"):
        AdtsFramer(bytes.fromhex("1190")).header(9000)


# --- Opus ----------------------------------------------------------------------------------

def test_opus_extradata_and_16k():
    fmt = AudioFormat(16000, 1, "f32")
    enc = Encoder("opus", OpusEncoderConfig(fmt, chunk_samples=500, bitrate=32000))
    assert enc.frame_size == 320
    assert enc.extradata.startswith(b"OpusHead")
    packets = encode(enc, sines(0.5, rate=16000, channels=1))
    assert all(p.extradata == enc.extradata for p in packets)
    assert packets[-1].pts + packets[-1].duration == 8000


# --- flush, state, reset --------------------------------------------------------------------

def test_force_flush_drains_a_short_tail():
    enc = Encoder("aac", AacEncoderConfig(F32, chunk_samples=4096))
    enc.put_frame(sines(0.01))            # 480 samples < chunk
    assert enc.get_frame() is None
    assert enc.pending_samples() == 480 and enc.state() == "need_more"
    packets = []
    while (p := enc.get_packet(force=True)) is not None:
        packets.append(p)
    assert packets[-1].pts + packets[-1].duration == 480
    assert enc.state() == "empty" and enc.get_frame(force=True) is None


@pytest.mark.parametrize("codec,config", [
    ("mp3", Mp3EncoderConfig(F32)), ("mp3", Mp3EncoderConfig(F32, backend="pyav")),
    ("aac", AacEncoderConfig(F32)), ("opus", OpusEncoderConfig(F32)), ("flac", FlacEncoderConfig(S16)),
    ("wav", WavEncoderConfig(S16)),
])
def test_flushing_an_encoder_that_got_no_samples(codec, config):
    enc = Encoder(codec, config)
    assert enc.get_frame(force=True) is None
    assert enc.state() == "empty"


def test_state_transitions():
    enc = Encoder("mp3", Mp3EncoderConfig(F32, chunk_samples=1152))
    assert enc.state() == "empty" and enc.pending_samples() == 0
    enc.put_frame(np.zeros((2, 1000), np.float32))
    assert enc.state() == "need_more" and enc.pending_samples() == 1000
    enc.put_frame(np.zeros((2, 1000), np.float32))
    # The first 1152-sample chunk went to LAME, whose look-ahead holds it: no packet yet.
    assert enc.state() == "need_more" and enc.pending_samples() == 848
    assert enc.get_frame() is None


@pytest.mark.parametrize("codec,config", [
    ("mp3", Mp3EncoderConfig(F32)), ("mp3", Mp3EncoderConfig(F32, backend="pyav")),
    ("aac", AacEncoderConfig(F32)), ("opus", OpusEncoderConfig(F32)), ("flac", FlacEncoderConfig(S16)),
    ("wav", WavEncoderConfig(S16, chunk_samples=1000)),
])
def test_state_ready_means_get_frame_returns_a_packet(codec, config):
    """state() == "ready" is the promise that get_frame() returns a packet now, even when the
    codec's look-ahead swallows the first chunks."""
    source = sines(0.2) if config.input_format.sample_type == "f32" else noise_s16(0.2)
    enc = Encoder(codec, config)
    packets = 0
    for start in range(0, source.shape[1], 700):
        enc.put_frame(source[:, start:start + 700])
        while True:
            state = enc.state()
            data = enc.get_frame()
            assert (state == "ready") == (data is not None), (codec, start, state)
            if data is None:
                break
            packets += 1
    assert enc.state() == "need_more"
    packets += len(list(iter(lambda: enc.get_frame(force=True), None)))
    assert packets > 0 and enc.state() == "empty"


@pytest.mark.parametrize("codec,config", [
    ("mp3", Mp3EncoderConfig(F32)), ("mp3", Mp3EncoderConfig(F32, backend="pyav")),
    ("aac", AacEncoderConfig(F32)), ("opus", OpusEncoderConfig(F32)), ("flac", FlacEncoderConfig(S16)),
])
def test_reset_after_eof_gives_a_working_encoder(codec, config):
    source = sines(0.2) if config.input_format.sample_type == "f32" else noise_s16(0.2)
    enc = Encoder(codec, config)
    first = [p.data for p in encode(enc, source)]
    with pytest.raises(CodecError, match=r"put_frame after the end of stream .* call reset\(\)"):
        enc.put_frame(source)
    enc.reset()
    assert enc.state() == "empty"
    again = encode(enc, source)
    assert [p.data for p in again] == first
    assert again[-1].pts + again[-1].duration == source.shape[1]


def test_reset_drops_buffered_samples():
    enc = Encoder("wav", WavEncoderConfig(S16, chunk_samples=10))
    enc.put_frame(np.ones((2, 25), np.int16))
    enc.reset()
    assert enc.pending_samples() == 0 and enc.get_frame(force=True) is None


def test_audio_frame_input_gives_format_pts_and_stream():
    enc = Encoder("wav")             # no config: defaults, format from the frame
    frame = AudioFrame(np.zeros((1000, 2), np.int16), AudioFormat(SR, 2, "s16", planar=False),
                       pts=5000, stream="left")
    enc.put_frame(frame)
    packet = enc.get_packet(force=True)
    assert (packet.pts, packet.duration, packet.stream) == (5000, 1000, "left")
    assert enc.input_format == frame.format and enc.sample_rate == SR


@pytest.mark.parametrize("backend", ["lame", "pyav"])
def test_input_pts_offsets_packet_pts(backend):
    enc = Encoder("mp3", Mp3EncoderConfig(F32, backend=backend))
    source = sines(0.2)
    enc.put_frame(source[:, :5000], pts=96000)
    enc.put_frame(source[:, 5000:], pts=12345)       # mid-chunk: the timeline stays continuous
    packets = []
    while (p := enc.get_packet(force=True)) is not None:
        packets.append(p)
    assert_timeline(packets, 96000 - MP3_INITIAL_PADDING, 96000 + source.shape[1])


def test_one_dimensional_mono_input():
    fmt = AudioFormat(SR, 1, "s16")
    samples = noise_s16(0.1, channels=1)[0]
    enc = Encoder("wav", WavEncoderConfig(fmt, chunk_samples=1000))
    enc.put_frame(samples)
    data = b"".join(iter(lambda: enc.get_frame(force=True), None))
    np.testing.assert_array_equal(np.frombuffer(data, np.int16), samples)


def test_s16_interleaved_input_to_mp3():
    fmt = AudioFormat(SR, 2, "s16", planar=False)
    source = sines(0.5)
    enc = Encoder("MP3", Mp3EncoderConfig(fmt))
    packets = []
    enc.put_frame(from_float(source, "s16").T)
    while (p := enc.get_packet(force=True)) is not None:
        packets.append(p)
    check_lossy("mp3", enc, packets, source)


def test_api_example_runs_as_written():
    # The Encoder example of API.md / the seed README, with the import changed.
    fmt = AudioFormat(sample_rate=48000, channels=2, sample_type="f32", planar=True)
    cfg = Mp3EncoderConfig(fmt, chunk_samples=1152, bitrate=128_000)
    enc = Encoder("mp3", cfg)
    pcm = np.zeros((2, 1152), dtype=np.float32)
    enc.put_frame(pcm)
    pkt = enc.get_frame()
    if pkt is not None:
        assert isinstance(pkt, (bytes, bytearray))
    frames = [] if pkt is None else [pkt]
    while True:
        last = enc.get_frame(force=True)
        if last is None:
            break
        frames.append(last)
    # 1152 samples + LAME's 1105 samples of delay fill two 1152-sample frames.
    assert len(frames) == 2 and all(isinstance(f, bytes) for f in frames)


# --- bad input ----------------------------------------------------------------------------------

def test_unknown_codec():
    with pytest.raises(UnknownCodecError, match=r"unknown codec 'vorbis': expected one of mp3, aac"):
        Encoder("vorbis")


def test_config_must_match_codec():
    with pytest.raises(FormatError, match="aac encoder needs a AacEncoderConfig, got Mp3EncoderConfig"):
        Encoder("aac", Mp3EncoderConfig(F32))


def test_chunk_samples_accepts_numpy_integers_like_audio_format():
    """A chunk size computed with numpy (np.int64) is as good as an int, as for AudioFormat."""
    configs = [Mp3EncoderConfig(F32, chunk_samples=np.int64(1000)),
               Mp3DecoderConfig(chunk_samples=np.int32(1000)),
               WavDecoderConfig(S16, chunk_samples=np.uint16(1000))]
    assert [(c.chunk_samples, type(c.chunk_samples)) for c in configs] == [(1000, int)] * 3
    enc = Encoder("wav", WavEncoderConfig(S16, chunk_samples=np.int64(4)))
    enc.put_frame(np.zeros((2, 10), np.int16))
    assert [len(enc.get_frame(force=True)) for _ in range(3)] == [16, 16, 8]
    for bad in (True, 10.0, np.float64(10.0), 0, np.int64(-1)):
        with pytest.raises(FormatError, match=rf"^chunk_samples must be a positive integer, got "
                                              rf"{re.escape(repr(bad))}$"):
            Mp3EncoderConfig(F32, chunk_samples=bad)


def test_int16_array_for_f32_format_is_refused():
    enc = Encoder("mp3", Mp3EncoderConfig(F32))
    with pytest.raises(FormatError, match="expected dtype float32 for sample type f32, got int16"):
        enc.put_frame(np.zeros((2, 100), np.int16))


def test_wrong_channel_count():
    enc = Encoder("aac", AacEncoderConfig(F32))
    with pytest.raises(FormatError, match=re.escape(
            "expected 2 channel(s) in planar (channels, samples) layout, got shape (3, 100)")):
        enc.put_frame(np.zeros((3, 100), np.float32))


def test_wrong_ndim():
    enc = Encoder("opus", OpusEncoderConfig(F32))
    with pytest.raises(FormatError, match=re.escape(
            "expected a 2-D array (channels, samples), got 3-D shape (1, 2, 100)")):
        enc.put_frame(np.zeros((1, 2, 100), np.float32))


def test_opus_at_44100_says_to_resample():
    message = ("opus encodes at 8000, 12000, 16000, 24000 or 48000 Hz, got 44100 Hz: "
               "resample to 48000 Hz first (Processor.resample)")
    with pytest.raises(FormatError, match=re.escape(message)):
        Encoder("opus", OpusEncoderConfig(AudioFormat(44100, 2, "f32")))
    enc = Encoder("opus")                      # format learned from the first put_frame
    with pytest.raises(ValueError, match=re.escape(message)):
        enc.put_frame(np.zeros((2, 960), np.float32), format=AudioFormat(44100, 2, "f32"))


def test_first_put_frame_without_a_format():
    enc = Encoder("flac")
    with pytest.raises(FormatError, match=r"no input format: pass format= to the first put_frame"):
        enc.put_frame(np.zeros((2, 100), np.int16))


def test_format_change_mid_stream_names_the_sample():
    enc = Encoder("wav", WavEncoderConfig(chunk_samples=100))
    enc.put_frame(np.zeros((2, 1000), np.int16), format=S16)
    with pytest.raises(FormatError, match=r"input format changed at sample 1000: expected "
                                          r"48000 Hz 2 ch s16 planar, got 44100 Hz 2 ch s16 planar"):
        enc.put_frame(np.zeros((2, 10), np.int16), format=AudioFormat(44100, 2, "s16"))


@pytest.mark.parametrize("config,message", [
    (Mp3EncoderConfig(F32, bitrate=100_000), r"mp3: bitrate 100000 is not allowed at 48000 Hz"),
    (Mp3EncoderConfig(F32, quality=11), r"mp3: quality must be an integer 0 \(best\) \.\. 9"),
    (Mp3EncoderConfig(F32, backend="shine"), r"mp3: backend must be one of auto, lame, pyav"),
    (Mp3EncoderConfig(AudioFormat(44000, 2)), r"mp3: sample_rate 44000 Hz is not an MP3 rate"),
    (Mp3EncoderConfig(AudioFormat(SR, 3)), r"mp3: channels must be 1 or 2, got 3"),
    (AacEncoderConfig(AudioFormat(44000, 2)), r"aac: sample_rate 44000 Hz is not an AAC rate"),
    (OpusEncoderConfig(F32, bitrate=100), r"opus: bitrate must be 500\.\.512000 bit/s"),
    (FlacEncoderConfig(S16, compression_level=13), r"flac: compression_level must be 0\.\.12"),
])
def test_bad_codec_parameters_are_codec_errors(config, message):
    codec = type(config).__name__[:-len("EncoderConfig")].lower()
    with pytest.raises(CodecError, match=message):
        Encoder(codec, config)


# --- MP3 frame splitting ---------------------------------------------------------------------

def test_mp3_splitter_reassembles_frames_cut_anywhere():
    enc = Encoder("mp3", Mp3EncoderConfig(F32, bitrate=96_000))
    frames = [p.data for p in encode(enc, sines(0.3))]
    stream = b"".join(frames)
    splitter = Mp3FrameSplitter()
    out = []
    for start in range(0, len(stream), 100):
        out += splitter.push(stream[start:start + 100])
    splitter.finish()
    assert out == frames
    assert find_frame_sync(b"\x00\x01" + stream) == 2


def test_mp3_splitter_reports_garbage_and_truncation_with_offsets():
    enc = Encoder("mp3", Mp3EncoderConfig(F32))
    frame = encode(enc, sines(0.1))[0].data
    splitter = Mp3FrameSplitter()
    with pytest.raises(CodecError, match=rf"expected an MPEG audio frame header at byte offset {len(frame)}"):
        splitter.push(frame + b"\x00" * 8)
    truncated = Mp3FrameSplitter()
    assert truncated.push(frame + frame[:100]) == [frame]
    with pytest.raises(CodecError, match=rf"stream ends inside a frame at byte offset {len(frame)}"):
        truncated.finish()
