"""Decoder tests on real streams encoded by PyAV, plus FLAC from flowengine's own Encoder.

Each codec's sine is decoded from whole packets, random byte slices and
single bytes; output is checked for chunking, pts, length, frequency,
correlation (lossy) or bit-exactness (lossless), and damaged input for
typed errors naming codec, stream and byte offset. flowengine's FLAC
encoder on noise-like signals picks the stereo coding (independent,
left/side, right/side, mid/side) per frame, which the byte-stream splitter
must follow: those streams are checked bit-exact in many slicings.
"""

from __future__ import annotations

import io
import random
import re
from fractions import Fraction

import av
import numpy as np
import pytest

from audio_checks import aligned_correlation, dominant_frequency

from flowengine.audio.buffers import Packet
from flowengine.ops.codecs.configs import (AacDecoderConfig, FlacDecoderConfig, FlacEncoderConfig,
                                       Mp3DecoderConfig, OpusDecoderConfig, WavDecoderConfig)
from flowengine.ops.codecs.decoder import Decoder
from flowengine.ops.codecs.decoder_headers import flac_frame_end, parse_flac_frame_header
from flowengine.ops.codecs.encoder import Encoder
from flowengine.ops.io import ToneSource
from flowengine.errors import CodecError, FormatError, UnknownCodecError
from flowengine.audio.format import AudioFormat, from_float

RATE = 48000
FREQ = 440.0
CONTAINERS = {"mp3": ("mp3", "libmp3lame"), "aac": ("adts", "aac"), "flac": ("flac", "flac")}
# Samples a decoder may add to the source: encoder delay + padding to whole frames.
LENGTH_SLACK = {"mp3": 576 + 529 + 2 * 1152, "aac": 2 * 1024, "opus": 312 + 960, "flac": 0, "wav": 0}
FRAME_SAMPLES = {"mp3": 1152, "aac": 1024, "flac": 4608}


def sine(seconds: float, channels: int = 2, freq: float = FREQ) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return np.repeat((0.5 * np.sin(2 * np.pi * freq * t))[None, :], channels, axis=0).astype(np.float32)


def s16(pcm: np.ndarray) -> np.ndarray:
    return from_float(pcm, "s16")


def encode_file(codec: str, pcm: np.ndarray) -> bytes:
    """A whole stream (mp3 with ID3v2 + Info frame, ADTS, native FLAC) written by PyAV's muxers."""
    container, encoder = CONTAINERS[codec]
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(encoder, rate=RATE, layout="stereo" if pcm.shape[0] == 2 else "mono")
        sample_fmt = "s16" if codec == "flac" else "fltp"
        stream.format = sample_fmt
        data = s16(pcm).T.reshape(1, -1) if codec == "flac" else pcm
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=sample_fmt,
                                           layout=stream.layout.name)
        frame.sample_rate, frame.pts = RATE, 0
        for packet in stream.encode(frame) + stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def demux_packets(codec: str, data: bytes) -> list[Packet]:
    container = CONTAINERS[codec][0]
    with av.open(io.BytesIO(data), format=container) as src:
        return [Packet(bytes(p), 1, RATE, pts=p.pts if p.pts is None else int(p.pts * p.time_base * RATE))
                for p in src.demux(audio=0) if p.size]


def frame_positions(codec: str, data: bytes) -> list[tuple[int, int]]:
    with av.open(io.BytesIO(data), format=CONTAINERS[codec][0]) as src:
        return [(p.pos, p.size) for p in src.demux(audio=0) if p.size]


def encode_opus(pcm: np.ndarray) -> tuple[list[Packet], bytes]:
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.format, ctx.bit_rate = RATE, "flt", 96000
    ctx.layout = "stereo" if pcm.shape[0] == 2 else "mono"
    ctx.time_base = Fraction(1, RATE)
    packets = []
    for start in range(0, pcm.shape[1], 960):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, start:start + 960].T).reshape(1, -1),
                                           format="flt", layout=ctx.layout.name)
        frame.sample_rate, frame.pts = RATE, start
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    return [Packet(bytes(p), 1, RATE, pts=p.pts) for p in packets], bytes(ctx.extradata)


def drain(dec: Decoder, layout: str = "planar") -> list[tuple[np.ndarray, int]]:
    """Every chunk the decoder gives: full chunks first, then the forced remainder."""
    out = []
    while (info := dec.get_frame_info(layout=layout)) is not None:
        out.append(info[:2])
    while (info := dec.get_frame_info(force=True, layout=layout)) is not None:
        out.append(info[:2])
    return out


def joined(chunks) -> np.ndarray:
    return np.concatenate([c for c, _ in chunks], axis=1)


def check_chunks(chunks, chunk_samples: int) -> None:
    sizes = [c.shape[1] for c, _ in chunks]
    assert all(n == chunk_samples for n in sizes[:-1]), sizes
    assert 0 < sizes[-1] <= chunk_samples
    for (prev, pts), (_, nxt) in zip(chunks, chunks[1:]):
        assert nxt == pts + prev.shape[1]


def feed_slices(dec: Decoder, data: bytes, seed: int = 7, largest: int = 3000) -> None:
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        size = rng.randint(1, largest)
        dec.put_frame(data[pos:pos + size])
        pos += size




@pytest.fixture(scope="module")
def streams():
    source = sine(1.0)
    return source, {codec: encode_file(codec, source) for codec in CONTAINERS}


@pytest.mark.parametrize("codec", ["mp3", "aac", "flac"])
def test_packets_slices_and_single_bytes_give_identical_output(codec, streams):
    source, files = streams
    data = files[codec]
    by_packet = Decoder(codec, DECODER_CONFIG(codec, 1000))
    for packet in demux_packets(codec, data):
        by_packet.put_packet(packet)
    by_slice = Decoder(codec, DECODER_CONFIG(codec, 1000))
    feed_slices(by_slice, data)
    outputs = [drain(by_packet), drain(by_slice)]
    if codec != "flac":   # one byte per call: keep the stream short
        short = encode_file(codec, sine(0.3))
        by_byte, by_slice_short = Decoder(codec, DECODER_CONFIG(codec, 1000)), Decoder(codec, DECODER_CONFIG(codec, 1000))
        for i in range(len(short)):
            by_byte.put_frame(short[i:i + 1])
        feed_slices(by_slice_short, short, seed=3, largest=700)
        assert np.array_equal(joined(drain(by_byte)), joined(drain(by_slice_short)))
    else:
        by_byte = Decoder(codec, DECODER_CONFIG(codec, 1000))
        for i in range(len(data)):
            by_byte.put_frame(data[i:i + 1])
        outputs.append(drain(by_byte))
    for chunks in outputs:
        check_chunks(chunks, 1000)
    assert outputs[1][0][1] == 0
    for chunks in outputs[1:]:
        assert np.array_equal(joined(chunks), joined(outputs[0]))
    total = joined(outputs[1]).shape[1]
    assert source.shape[1] <= total <= source.shape[1] + LENGTH_SLACK[codec]


def DECODER_CONFIG(codec: str, chunk: int):
    return {"mp3": Mp3DecoderConfig, "aac": AacDecoderConfig, "flac": FlacDecoderConfig}[codec](chunk_samples=chunk)


@pytest.mark.parametrize("codec", ["mp3", "aac"])
def test_lossy_output_matches_source(codec, streams):
    source, files = streams
    dec = Decoder(codec)
    dec.put_frame(files[codec])
    out = joined(drain(dec))
    assert dec.output_format() == AudioFormat(RATE, 2, "f32")
    assert out.dtype == np.float32 and out.shape[0] == 2
    assert abs(dominant_frequency(out[0], RATE) - FREQ) < 2
    assert aligned_correlation(source[0], out[0]) > 0.9


def test_force_drains_like_a_whole_file_decode(streams):
    """Our output equals FFmpeg's decode of the file (mp3: the demuxer trims 1105 delay samples)."""
    _, files = streams
    for codec in ("aac", "flac", "mp3"):
        with av.open(io.BytesIO(files[codec])) as src:
            ref = np.concatenate([f.to_ndarray() for f in src.decode(audio=0)], axis=1)
        if codec == "flac":
            ref = (ref.reshape(-1, 2).T / 32768.0).astype(np.float32)
        dec = Decoder(codec)
        feed_slices(dec, files[codec], seed=11)
        out = joined(drain(dec))
        if codec == "mp3":
            assert np.abs(out[:, 1105:1105 + ref.shape[1]] - ref).max() < 1e-4
            assert out.shape[1] == ref.shape[1] + 1105 + 431   # + encoder padding to a whole frame
        else:
            assert np.array_equal(out, ref), codec


def test_flac_is_bit_exact_and_needs_no_streaminfo(streams):
    source, files = streams
    dec = Decoder("flac")
    dec.put_frame(files["flac"])
    out = joined(drain(dec))
    assert np.array_equal(from_float(out, "s16"), s16(source))
    headerless = Decoder("flac")   # frames alone (joined mid-stream): STREAMINFO is not needed
    for packet in demux_packets("flac", files["flac"]):
        headerless.put_frame(packet.data)
    assert np.array_equal(joined(drain(headerless)), out)


def test_wav_raw_pcm_bit_exact_in_any_slicing():
    source = s16(sine(0.5))
    raw = source.T.tobytes()
    fmt = AudioFormat(RATE, 2, "s16")
    results = []
    for feed in ("whole", "slices", "bytes"):
        dec = Decoder("pcm", WavDecoderConfig(fmt, chunk_samples=700))
        if feed == "whole":
            dec.put_packet(Packet(raw, 1, RATE, pts=480))
        elif feed == "slices":
            feed_slices(dec, raw, seed=2)
        else:
            for i in range(0, 20000):
                dec.put_frame(raw[i:i + 1])
            dec.put_frame(raw[20000:])
        chunks = drain(dec)
        check_chunks(chunks, 700)
        results.append(chunks)
        assert dec.output_format() == fmt
    assert results[0][0][1] == 480 and results[1][0][1] == 0
    for chunks in results:
        out = joined(chunks)
        assert out.dtype == np.int16 and np.array_equal(out, source)
    interleaved = Decoder("wav", WavDecoderConfig(fmt, chunk_samples=700))
    interleaved.put_frame(raw)
    first = interleaved.get_frame(layout="interleaved")
    assert first.shape == (700, 2) and np.array_equal(first, source[:, :700].T)


def test_wav_truncated_sample_frame():
    dec = Decoder("wav", WavDecoderConfig(AudioFormat(RATE, 2, "s16"), chunk_samples=4))
    dec.put_frame(bytes(range(19)))   # 4 whole frames of 4 bytes and 3 bytes over
    assert dec.get_frame().shape == (2, 4)
    with pytest.raises(CodecError, match=r"wav decoder, stream '0': truncated input: 3 trailing bytes "
                                         r"at byte offset 16 do not make a whole sample frame"):
        dec.get_frame(force=True)
    assert dec.get_frame(force=True) is None


@pytest.fixture(scope="module")
def opus_stream():
    source = sine(1.0)
    packets, extradata = encode_opus(source)
    return source, packets, extradata


def test_opus_packets_with_extradata(opus_stream):
    source, packets, extradata = opus_stream
    dec = Decoder("opus", OpusDecoderConfig(extradata=extradata))
    for packet in packets:
        dec.put_packet(packet)
    chunks = drain(dec)
    check_chunks(chunks, 960)
    out = joined(chunks)
    assert chunks[0][1] == 0                  # first packet pts -312 + pre-skip 312
    assert out.shape[1] == len(packets) * 960 - 312
    assert source.shape[1] <= out.shape[1] <= source.shape[1] + LENGTH_SLACK["opus"]
    assert abs(dominant_frequency(out[0], RATE) - FREQ) < 2
    assert aligned_correlation(source[0], out[0]) > 0.9
    one_per_call = Decoder("opus", OpusDecoderConfig(extradata=extradata))
    for packet in packets:
        one_per_call.put_frame(packet.data)
    assert np.array_equal(joined(drain(one_per_call)), out)


def test_opus_without_extradata_is_48k_stereo_without_pre_skip():
    packets, _ = encode_opus(sine(0.5, channels=1))
    dec = Decoder("opus")
    for packet in packets:
        dec.put_frame(packet.data)
    out = joined(drain(dec))
    assert dec.output_format() == AudioFormat(48000, 2, "f32")
    assert out.shape == (2, len(packets) * 960)
    assert np.array_equal(out[0], out[1])


def test_interleaved_layout_is_the_transpose(streams):
    _, files = streams
    planar, interleaved = Decoder("aac"), Decoder("aac")
    planar.put_frame(files["aac"])
    interleaved.put_frame(files["aac"])
    a = planar.get_frame_info()
    b = interleaved.get_frame_info(layout="interleaved")
    assert b[0].shape == (1024, 2) and b[0].flags["C_CONTIGUOUS"]
    assert np.array_equal(a[0].T, b[0]) and a[1:] == b[1:] == (0, (1, RATE))
    with pytest.raises(ValueError, match="layout must be 'planar' or 'interleaved', got 'rows'"):
        planar.get_frame(layout="rows")


@pytest.mark.parametrize("codec", ["mp3", "aac", "flac"])
def test_corrupt_frame_is_reported_and_decoding_continues(codec, streams):
    _, files = streams
    data = files[codec]
    clean = Decoder(codec)
    clean.put_frame(data)
    reference = joined(drain(clean))
    positions = frame_positions(codec, data)
    index = len(positions) // 2
    pos, size = positions[index]
    damaged = bytearray(data)
    damaged[pos:pos + size] = np.random.default_rng(4).integers(0, 256, size, dtype=np.uint8).tobytes()
    dec = Decoder(codec, stream="left")
    with pytest.raises(CodecError, match=rf"{codec} decoder, stream 'left': .*byte offset {pos}\b"):
        feed_slices(dec, bytes(damaged), seed=5)
    err = dec.errors[0]
    assert (err.codec, err.stream, err.offset) == (codec, "left", pos) and err.size <= size
    good = index * FRAME_SAMPLES[codec]      # samples of the frames before the bad one
    before = []
    while sum(c.shape[1] for c in before) < good - 1024:
        before.append(dec.get_frame())       # still delivered after the error
    before = np.concatenate(before, axis=1)
    assert np.array_equal(before, reference[:, :before.shape[1]])

    skipping = Decoder(codec, on_error="skip")
    feed_slices(skipping, bytes(damaged), seed=5)
    out = joined(drain(skipping))
    assert skipping.errors[0].offset == pos
    assert all(pos <= e.offset < pos + size for e in skipping.errors)
    assert out.shape[1] == reference.shape[1] - FRAME_SAMPLES[codec]
    lost = index * FRAME_SAMPLES[codec]
    assert np.array_equal(out[:, :lost], reference[:, :lost])
    if codec == "flac":   # lossless and frame-independent: everything else is exact
        assert np.array_equal(out[:, :lost], reference[:, :lost])
        assert np.array_equal(out[:, lost:], reference[:, lost + 4608:])


def test_truncated_mp3_packet_is_reported_not_concealed(streams):
    """FFmpeg decodes an MP3 packet cut short without a word (the lost main data becomes
    silence); put_packet checks the length its header announces, as put_frame's splitter
    does: under skip the frame is silence of its duration (the stream keeps its timeline)
    and counted, under fail it is an error naming the stream and where."""
    _, files = streams
    packets = demux_packets("mp3", files["mp3"])
    index = len(packets) // 2
    offset = sum(len(p.data) for p in packets[:index])
    size = len(packets[index].data)
    cut = Packet(packets[index].data[:size // 2], packets[index].time_base_num,
                 packets[index].time_base_den, packets[index].pts, None,
                 packets[index].duration)
    whole = Decoder("mp3")
    for packet in packets[:index]:
        whole.put_packet(packet)
    before = joined(drain(whole))
    dec = Decoder("mp3", on_error="skip")
    for packet in packets[:index] + [cut] + packets[index + 1:]:
        dec.put_packet(packet)
    got = joined(drain(dec))
    seconds = packets[index].pts / packets[index].time_base_den
    assert [str(e) for e in dec.errors] == [
        f"mp3 decoder, stream '0': damaged frame at byte of the stream's packets {offset} "
        f"({seconds:.3f} s) (it has {size // 2} of the {size} bytes its header announces; its "
        f"header announces another length): replaced by silence (on_error: skip)"]
    assert dec.errors[0].offset == offset
    assert (dec.damage.frames, dec.damage.samples) == (1, 1152)
    # Everything before the cut is intact, and the cut frame's samples are silence.
    assert np.array_equal(got[:, :before.shape[1] - 1152], before[:, :-1152])
    assert got.shape[1] == len(packets) * 1152
    assert not got[:, index * 1152:(index + 1) * 1152].any()
    raising = Decoder("mp3")
    for packet in packets[:index]:
        raising.put_packet(packet)
    with pytest.raises(CodecError, match=rf"^mp3 decoder, stream '0': damaged frame at byte of "
                                         rf"the stream's packets {offset} \({seconds:.3f} s\) "
                                         rf"\(it has {size // 2} of the {size} bytes"):
        raising.put_packet(cut)


@pytest.mark.parametrize("codec", ["mp3", "aac", "flac"])
def test_truncated_stream_delivers_all_then_raises(codec, streams):
    _, files = streams
    data = files[codec]
    pos, size = frame_positions(codec, data)[-1]
    cut = data[:pos + size // 2]
    complete = Decoder(codec)
    complete.put_frame(data[:pos])
    expected = joined(drain(complete))
    dec = Decoder(codec, FlacDecoderConfig(chunk_samples=512) if codec == "flac" else None)
    feed_slices(dec, cut)
    got = []
    with pytest.raises(CodecError, match=rf"{codec} decoder, stream '0': truncated input: .*byte offset {pos}\b"):
        while True:
            got.append(dec.get_frame(force=True))
    assert np.array_equal(np.concatenate(got, axis=1), expected)
    assert dec.get_frame(force=True) is None
    skipping = Decoder(codec, on_error="skip")
    skipping.put_frame(cut)
    assert np.array_equal(joined(drain(skipping)), expected)
    assert len(skipping.errors) == 1 and "truncated" in str(skipping.errors[0])


@pytest.mark.parametrize("codec", ["mp3", "aac", "flac"])
def test_garbage_that_never_syncs_raises_at_force(codec):
    garbage = np.random.default_rng(9).integers(0, 256, 30000, dtype=np.uint8).tobytes()
    dec = Decoder(codec)
    feed_slices(dec, garbage)
    assert dec.get_frame() is None and dec.output_format() is None
    with pytest.raises(CodecError, match=rf"{codec} decoder, stream '0': no {codec} frame was found "
                                         r"in 30000 bytes of input"):
        dec.get_frame(force=True)
    assert dec.get_frame(force=True) is None


def test_raw_aac_from_an_mp4_says_the_decoder_takes_adts(tmp_path):
    from flowengine.ops.io import AudioFileWriter

    writer = AudioFileWriter(tmp_path / "raw.m4a")
    for frame in ToneSource(seconds=0.5):
        writer.push(frame)
    writer.push(None)
    dec = Decoder("aac")
    with av.open(str(tmp_path / "raw.m4a")) as container:
        raw = b"".join(bytes(p) for p in container.demux(audio=0) if p.size)
    dec.put_frame(raw)
    with pytest.raises(CodecError, match=re.escape(
            f"aac decoder, stream '0': no aac frame was found in {len(raw)} bytes of input (the "
            f"aac decoder takes ADTS-framed AAC; AudioFileReader gives M4A/MP4 packets ADTS "
            f"headers)")):
        dec.get_frame(force=True)


@pytest.mark.parametrize("codec", ["mp3", "aac", "opus", "flac"])
def test_empty_input_gives_nothing_and_no_error(codec):
    dec = Decoder(codec)
    assert dec.state() == "empty"
    dec.put_frame(b"")
    assert dec.get_frame(force=True) is None
    assert dec.errors == [] and dec.samples_out == 0


def test_unknown_codec_and_wrong_inputs():
    with pytest.raises(UnknownCodecError, match=r"unknown codec 'vorbis': expected one of mp3, aac, opus, flac, wav"):
        Decoder("vorbis")
    with pytest.raises(FormatError, match="needs WavDecoderConfig"):
        Decoder("wav")
    with pytest.raises(TypeError, match="the mp3 decoder needs a Mp3DecoderConfig, got AacDecoderConfig"):
        Decoder("MP3", AacDecoderConfig())
    dec = Decoder("mp3")
    with pytest.raises(TypeError, match="mp3 Decoder.put_frame expects bytes, got str"):
        dec.put_frame("abc")
    with pytest.raises(TypeError, match=r"expects bytes, got ndarray \(for raw PCM pass array.tobytes\(\)\)"):
        dec.put_frame(np.zeros(4))
    with pytest.raises(TypeError, match="put_packet expects a flowengine Packet, got bytes"):
        dec.put_packet(b"abc")
    with pytest.raises(ValueError, match="on_error must be one of fail, raise, skip"):
        Decoder("aac", on_error="ignore")


def test_state_counters_reset_and_reuse_after_force(streams):
    _, files = streams
    dec = Decoder("aac", AacDecoderConfig(chunk_samples=4096))
    dec.put_frame(files["aac"][:3000])
    assert dec.state() == "ready" and dec.pending_samples() >= 4096 and dec.bytes_in == 3000
    assert dec.get_frame().shape == (2, 4096) and dec.samples_out == 4096
    dec.put_frame(files["aac"][3000:])
    first = joined(drain(dec))
    assert dec.state() == "empty"
    dec.put_frame(files["aac"])         # a new stream after the drain works
    second = joined(drain(dec))
    assert second.shape[1] == first.shape[1] + 4096
    dec.reset()
    assert (dec.state(), dec.bytes_in, dec.samples_out, dec.errors, dec.output_format()) == \
        ("empty", 0, 0, [], None)
    dec.put_frame(files["aac"])
    assert np.array_equal(joined(drain(dec)), second)


def test_packet_pts_sets_the_timeline(streams):
    _, files = streams
    dec = Decoder("mp3", Mp3DecoderConfig(chunk_samples=1152))
    for i, packet in enumerate(demux_packets("mp3", files["mp3"])):
        dec.put_packet(Packet(packet.data, 1, 44100, pts=44100 + i * 1058))
    chunks = drain(dec)
    assert chunks[0][1] == RATE       # 1 s in the packets' 1/44100 time base, in samples at 48 kHz
    check_chunks(chunks, 1152)


def test_api_example(streams):
    """The README/API.md Decoder example, with one real MP3 frame."""
    _, files = streams
    frame = demux_packets("mp3", files["mp3"])[5].data
    cfg = Mp3DecoderConfig(chunk_samples=1024, packet_time_base_den=48000)
    dec = Decoder("mp3", cfg)
    dec.put_frame(frame)
    pcm = dec.get_frame()
    assert pcm is not None and pcm.shape == (2, 1024) and pcm.dtype == np.float32


# ------------------------------------------- FLAC from flowengine's own Encoder

def flowengine_flac(pcm: np.ndarray, chunk: int = 1500) -> list[bytes]:
    """Packets of flowengine's FLAC Encoder for planar s16 `pcm`."""
    encoder = Encoder("flac", FlacEncoderConfig(AudioFormat(RATE, pcm.shape[0], "s16"), chunk_samples=chunk))
    for start in range(0, pcm.shape[1], 777):
        encoder.put_frame(pcm[:, start:start + 777])
    return [p.data for p in iter(lambda: encoder.get_packet(force=True), None)]


def decode_pieces(pieces, chunk: int = 1000, on_error: str = "raise") -> tuple[np.ndarray, Decoder]:
    """Feed byte pieces with put_frame, drain, and return the output as s16 (FLAC is exact in f32)."""
    dec = Decoder("flac", FlacDecoderConfig(chunk_samples=chunk), on_error=on_error)
    for piece in pieces:
        dec.put_frame(piece)
    chunks = drain(dec)
    check_chunks(chunks, chunk)
    return from_float(joined(chunks), "s16"), dec


def slices(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.fixture(scope="module")
def bursts_flac():
    source = ToneSource(waveform="bursts", frequency=1000, amplitude=0.5, sample_rate=RATE, channels=2,
                        seconds=1.0, chunk_samples=RATE)
    pcm = s16(np.concatenate([frame.data for frame in source], axis=1))
    return pcm, flowengine_flac(pcm)


def test_flowengine_flac_stream_with_changing_stereo_coding_in_any_slicing(bursts_flac):
    pcm, packets = bursts_flac
    codings = {packet[3] >> 4 for packet in packets}     # channel assignment of each frame header
    assert 1 in codings and codings & {8, 9, 10}, codings   # independent and side-coded frames mix
    data = b"".join(packets)
    for pieces in ([data], slices(data, 1), slices(data, 1234), slices(data, 5000), packets):
        out, dec = decode_pieces(pieces)
        assert dec.errors == [] and dec.skipped_leading_bytes == 0
        assert out.shape == pcm.shape
        np.testing.assert_array_equal(out, pcm)


def test_flac_damaged_header_after_a_frame_with_a_chance_crc_zero(bursts_flac):
    # Frame 0's running CRC-16 also passes zero well before its end (a 1 in 64 KiB
    # chance per byte): when frame 1's header is broken, frame 0 must still be cut at
    # its real end, the zero followed by a sync code, not at the first zero.
    pcm, packets = bursts_flac
    first, second = len(packets[0]), len(packets[1])
    data = b"".join(packets)
    early = flac_frame_end(data[:first - 1], 6)
    assert early is not None and early < first - 1
    damaged = bytearray(data)
    damaged[first + 5] ^= 0xFF            # frame 1's header CRC-8: its header is no longer valid
    with pytest.raises(CodecError, match=rf"flac decoder, stream '0': {second} bytes at byte offset "
                                         rf"{first} are not a valid flac frame"):
        decode_pieces(slices(bytes(damaged), 1234))
    out, dec = decode_pieces(slices(bytes(damaged), 5000), on_error="skip")
    assert [(e.offset, e.size) for e in dec.errors] == [(first, second)]
    block = parse_flac_frame_header(packets[0], 0).block_size
    np.testing.assert_array_equal(out, np.concatenate([pcm[:, :block], pcm[:, 2 * block:]], axis=1))


def random_signal(rng: np.random.Generator, channels: int, samples: int) -> np.ndarray:
    """s16 noise, tone and silence stretches whose channel correlation changes, so every stereo coding occurs."""
    pcm = np.zeros((channels, samples))
    pos = 0
    while pos < samples:
        n = min(int(rng.integers(500, 8000)), samples - pos)
        base = rng.uniform(0, 1) * rng.standard_normal(n) * rng.choice([0.0, 0.05, 0.3])
        base += rng.uniform(0, 0.5) * np.sin(2 * np.pi * rng.uniform(50, 8000) * np.arange(n) / RATE)
        for ch in range(channels):
            mix = rng.choice([1.0, -1.0, 0.5, 0.0])   # same, inverted, scaled or independent channels
            pcm[ch, pos:pos + n] = mix * base + (1 - abs(mix)) * 0.2 * rng.standard_normal(n)
        pos += n
    return s16(np.clip(pcm, -1, 1).astype(np.float32))


@pytest.mark.parametrize("seed", range(4))
def test_flowengine_flac_random_signals_and_slicings_are_bit_exact(seed):
    rng = np.random.default_rng(seed)
    channels = int(rng.choice([1, 2, 2]))
    pcm = random_signal(rng, channels, int(rng.integers(RATE // 2, 2 * RATE)))
    data = b"".join(flowengine_flac(pcm, chunk=int(rng.integers(256, 6000))))
    for _ in range(3):
        cuts = np.sort(rng.choice(np.arange(1, len(data)), size=int(rng.integers(1, 400)), replace=False))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        out, dec = decode_pieces(pieces, chunk=int(rng.integers(100, 5000)))
        assert dec.errors == [] and out.shape == pcm.shape
        np.testing.assert_array_equal(out, pcm)


def test_a_packet_of_another_codec_is_refused_by_name(streams):
    decoder = Decoder("mp3")
    with pytest.raises(FormatError, match=r"^mp3 Decoder: got a 'aac' packet \(at byte 0\); "
                                          r"use a aac Decoder for it$"):
        decoder.put_packet(Packet(b"\xff\xf1" + bytes(20), 1, 48000, 0, 0, 1024, 1, "aac"))
    assert decoder.bytes_in == 0          # refused before anything was taken
    # FFmpeg's own names for the same codec are not judged (a reader may stamp them)
    frame = demux_packets("mp3", streams[1]["mp3"])[0].data
    decoder.put_packet(Packet(frame, 1, 44100, 0, 0, 1152, 1, "mp3float"))
