"""Sources and sinks on real files: every container written from generated audio and read back.

wav/flac round trips are bit-exact; lossy ones are checked by length (within the
codec's padding), dominant frequency and correlation. Headers are checked
through PyAV directly. Packet mode feeds real decoders and the writer; the
generator is checked against its whole-signal formula.
"""

from __future__ import annotations

import math
import os
import re
import time
import tracemalloc
import warnings

import av
import numpy as np
import pytest

from audio_checks import aligned_correlation, dominant_frequency

from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.errors import CodecError, ConfigError, FlowError, FormatError
from flowengine.audio.format import AudioFormat
from flowengine.ops.io import AudioFileReader, AudioFileWriter, MemorySink, NullSink, ToneSource

SR = 48000
LOSSY = (".mp3", ".m4a", ".aac", ".opus", ".ogg")
LOSSLESS = (".flac", ".wav")
ALL = LOSSY + LOSSLESS
CODEC_FRAME = {".mp3": 1152, ".m4a": 1024, ".aac": 1024, ".opus": 960, ".ogg": 960,
               ".flac": 4608, ".wav": 4096}
# Extra samples a decoder may give back: start-up delay plus end padding, at most two frames.
PADDING = {ext: 2 * frame for ext, frame in CODEC_FRAME.items()}
# How far a header's duration may be from the truth: one codec frame; ADTS has no header and no
# way to mark priming and padding, so FFmpeg's estimate counts those frames too.
HEADER_SLACK = {ext: (2 if ext == ".aac" else 1) * frame / SR for ext, frame in CODEC_FRAME.items()}
DECODERS = {"mp3": "mp3float", "aac": "aac", "opus": "opus", "flac": "flac"}


def tone(seconds=1.0, frequency=1000.0, sample_rate=SR, channels=2, sample_type="s16",
         waveform="sine", chunk_samples=1000, **kwargs) -> ToneSource:
    return ToneSource(frequency=frequency, seconds=seconds, sample_rate=sample_rate,
                      channels=channels, sample_type=sample_type, waveform=waveform,
                      chunk_samples=chunk_samples, **kwargs)


def write(path, source, **writer_args) -> AudioFileWriter:
    with AudioFileWriter(path, **writer_args) as writer:
        for frame in source:
            writer.push(frame)
    return writer


def read_all(path, **reader_args) -> np.ndarray:
    with AudioFileReader(path, **reader_args) as reader:
        return np.concatenate([frame.planar() for frame in reader], axis=1)


def av_decode(path) -> tuple[np.ndarray, av.container.InputContainer]:
    """Decode a file with PyAV alone: (planar float32, the still-open container)."""
    container = av.open(str(path))
    resampler = av.AudioResampler(format="fltp")
    chunks = [out.to_ndarray() for frame in container.decode(audio=0)
              for out in resampler.resample(frame)]
    return np.concatenate(chunks, axis=1), container




@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One 1 s stereo 48 kHz file per extension: 1 kHz sine (lossy) or speech-like bursts (lossless)."""
    folder = tmp_path_factory.mktemp("io")
    out = {}
    for ext in ALL:
        waveform = "bursts" if ext in LOSSLESS else "sine"
        write(folder / f"src{ext}", tone(waveform=waveform))
        out[ext] = folder / f"src{ext}"
    return out


# --- ToneSource ------------------------------------------------------------------------------


@pytest.mark.parametrize("waveform", ["sine", "square", "chirp", "noise", "silence", "bursts"])
def test_tone_chunking_does_not_change_the_signal(waveform):
    whole = np.concatenate([f.data for f in tone(0.25, 440, sample_type="f64", waveform=waveform,
                                                 chunk_samples=12000)], axis=1)
    chunked = np.concatenate([f.data for f in tone(0.25, 440, sample_type="f64", waveform=waveform,
                                                   chunk_samples=97)], axis=1)
    assert whole.shape == chunked.shape == (2, 12000)
    np.testing.assert_allclose(chunked, whole, atol=1e-6, rtol=0)
    assert np.max(np.abs(whole)) <= 0.5 + 1e-12
    if waveform != "silence":
        assert np.max(np.abs(whole)) > 0.3


def test_tone_matches_its_formulas():
    n = np.arange(4800)
    sine = np.concatenate([f.data for f in tone(0.1, 440, sample_type="f64", chunk_samples=333)], axis=1)
    np.testing.assert_allclose(sine[0], 0.5 * np.sin(2 * np.pi * 440 * n / SR), atol=1e-6)
    t = n / SR
    chirp = np.concatenate([f.data for f in tone(0.1, 440, sample_type="f64", waveform="chirp",
                                                 end_frequency=2000, chunk_samples=333)], axis=1)
    expected = 0.5 * np.sin(2 * np.pi * (440 * t + 0.5 * (2000 - 440) / 0.1 * t * t))
    np.testing.assert_allclose(chirp[1], expected, atol=1e-6)
    square = np.concatenate([f.data for f in tone(0.1, 400, sample_type="f64", waveform="square")],
                            axis=1)
    assert set(np.unique(square)) == {-0.5, 0.5} and square[0, 0] == 0.5 and square[0, 60] == -0.5


def test_tone_counts_samples_and_pts_exactly():
    src = tone(0.3, chunk_samples=1024)
    frames = list(src)
    assert src.total_samples == 14400
    assert [f.samples for f in frames] == [1024] * 14 + [64]
    assert [f.pts for f in frames] == [1024 * i for i in range(15)]
    assert all(f.format == AudioFormat(SR, 2, "s16") and f.data.dtype == np.int16 for f in frames)
    assert frames[0].stream == "0"


def test_tone_noise_is_seeded():
    first = np.concatenate([f.data for f in tone(0.05, waveform="noise", seed=7)], axis=1)
    again = np.concatenate([f.data for f in tone(0.05, waveform="noise", seed=7, chunk_samples=77)],
                           axis=1)
    other = np.concatenate([f.data for f in tone(0.05, waveform="noise", seed=8)], axis=1)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first[0], first[1])      # channels are independent noise


def test_tone_realtime_is_paced_by_the_clock():
    start = time.monotonic()
    frames = list(tone(0.5, chunk_samples=4800, realtime=True))
    assert time.monotonic() - start >= 0.45
    assert sum(f.samples for f in frames) == 24000


def test_tone_endless_and_bad_parameters():
    endless = iter(tone(None, chunk_samples=100))
    assert [next(endless).pts for _ in range(3)] == [0, 100, 200]
    with pytest.raises(ConfigError, match="unknown waveform 'saw': expected one of sine, square"):
        ToneSource(waveform="saw")
    with pytest.raises(ConfigError, match="a chirp needs a finite length"):
        ToneSource(waveform="chirp", seconds=None)
    with pytest.raises(ConfigError, match="frequency 30000.0 Hz is at or above Nyquist"):
        ToneSource(frequency=30000)


# --- writing and reading every container ------------------------------------------------------


@pytest.mark.parametrize("ext", LOSSLESS)
def test_lossless_round_trip_is_bit_exact(files, ext):
    source = np.concatenate([f.data for f in tone(waveform="bursts")], axis=1)
    decoded = read_all(files[ext], format=AudioFormat(SR, 2, "s16"))
    assert decoded.dtype == np.int16
    np.testing.assert_array_equal(decoded, source)


@pytest.mark.parametrize("ext", LOSSY)
def test_lossy_round_trip_keeps_length_pitch_and_shape(files, ext):
    source = np.concatenate([f.data for f in tone(sample_type="f32")], axis=1)
    decoded = read_all(files[ext])
    assert decoded.shape[0] == 2 and decoded.dtype == np.float32
    assert SR <= decoded.shape[1] <= SR + PADDING[ext]
    assert dominant_frequency(decoded[0], SR) == pytest.approx(1000, abs=5)
    assert aligned_correlation(source[0], decoded[0], PADDING[ext]) > 0.98


@pytest.mark.parametrize("ext", ALL)
def test_header_states_duration_rate_and_channels(files, ext):
    with av.open(str(files[ext])) as container:
        stream = container.streams.audio[0]
        assert (stream.rate, stream.channels) == (SR, 2)
        assert container.duration / av.time_base == pytest.approx(1.0, abs=HEADER_SLACK[ext])
    with AudioFileReader(files[ext]) as reader:
        assert reader.duration == pytest.approx(1.0, abs=HEADER_SLACK[ext])
        assert (reader.sample_rate, reader.channels) == (SR, 2)
        assert reader.codec == {".m4a": "aac", ".ogg": "opus"}.get(ext, ext[1:])


def test_mono_wav_and_float_pcm_codec(tmp_path):
    writer = write(tmp_path / "f.wav", tone(0.1, channels=1, sample_type="f32"), codec="pcm_f32le")
    assert writer.format == AudioFormat(SR, 1, "f32", planar=False)
    source = np.concatenate([f.data for f in tone(0.1, channels=1, sample_type="f32")], axis=1)
    np.testing.assert_array_equal(read_all(tmp_path / "f.wav"), source)
    with av.open(str(tmp_path / "f.wav")) as container:
        assert container.streams.audio[0].codec_context.name == "pcm_f32le"


def test_opus_at_44100_is_resampled_to_48000(tmp_path):
    writer = write(tmp_path / "x.opus", tone(0.5, sample_rate=44100))
    assert writer.format.sample_rate == 48000 and writer.samples_written == 22050
    decoded = read_all(tmp_path / "x.opus")
    assert 24000 <= decoded.shape[1] <= 24000 + PADDING[".opus"]
    assert dominant_frequency(decoded[0], 48000) == pytest.approx(1000, abs=5)


def test_writer_converts_to_the_requested_format(tmp_path):
    write(tmp_path / "m.flac", tone(0.5, sample_rate=44100), format=AudioFormat(48000, 1, "s16"))
    with av.open(str(tmp_path / "m.flac")) as container:
        stream = container.streams.audio[0]
        assert (stream.rate, stream.channels, stream.duration) == (48000, 1, 24000)


def test_write_pcm_arrays_and_format_checks(tmp_path):
    fmt = AudioFormat(SR, 2, "s16", planar=False)
    pcm = (np.arange(2000, dtype=np.int16).reshape(1000, 2) - 1000)
    with AudioFileWriter(tmp_path / "a.wav", input_format=fmt) as writer:
        writer.write_pcm(pcm[:600])
        writer.write_pcm(pcm[600:])
        with pytest.raises(FormatError, match=r"expected dtype int16 for sample type s16, got float32"):
            writer.write_pcm(pcm.astype(np.float32))
        with pytest.raises(FormatError, match=r"the input format changed at sample 1000: expected "
                                              r"48000 Hz 2 ch s16 interleaved, got 48000 Hz 2 ch f32"):
            writer.push(AudioFrame(np.zeros((2, 10), np.float32), AudioFormat(SR, 2)))
    assert writer.samples_written == 1000
    np.testing.assert_array_equal(read_all(tmp_path / "a.wav", format=fmt, chunk_samples=64).T,
                                  pcm)
    with pytest.raises(FormatError, match="write_pcm got a bare array but the writer has no input_format"):
        AudioFileWriter(tmp_path / "b.wav").write_pcm(pcm)


# --- reader behaviour ---------------------------------------------------------------------------


def test_reader_chunks_pts_stream_and_layouts(files):
    with AudioFileReader(files[".flac"], chunk_samples=4000) as reader:
        frames = list(reader)
    assert [f.samples for f in frames] == [4000] * 12
    assert [f.pts for f in frames] == list(range(0, SR, 4000))
    assert frames[0].stream == "src" and frames[0].format == AudioFormat(SR, 2, "f32")
    fmt = AudioFormat(SR, 2, "s16", planar=False)
    with AudioFileReader(files[".wav"], format=fmt, chunk_samples=100) as reader:
        assert reader.next_frame().shape == (2, 100)
        interleaved = reader.next_frame("interleaved")
        assert interleaved.shape == (100, 2) and interleaved.dtype == np.int16
        frame = next(iter(reader))
        assert frame.format == fmt and frame.data.shape == (100, 2) and frame.pts == 200


def test_resampling_reader_gives_the_right_length(tmp_path):
    write(tmp_path / "a.wav", tone(1.0, sample_rate=44100))
    with AudioFileReader(tmp_path / "a.wav", format=AudioFormat(48000, 1), chunk_samples=1024) as reader:
        frames = list(reader)
    assert sum(f.samples for f in frames) == 48000
    assert all(f.format == AudioFormat(48000, 1) for f in frames)
    assert frames[-1].pts == 46 * 1024
    decoded = np.concatenate([f.data for f in frames], axis=1)[0]
    assert dominant_frequency(decoded, 48000) == pytest.approx(1000, abs=2)


def test_reader_streams_without_loading_the_file(tmp_path):
    path = tmp_path / "long.wav"
    write(path, tone(30.0, chunk_samples=48000))
    assert os.path.getsize(path) > 5_000_000
    tracemalloc.start()
    try:
        count = 0
        with AudioFileReader(path, chunk_samples=1024) as reader:
            for frame in reader:
                assert frame.samples == 1024 or count == math.ceil(30 * SR / 1024) - 1
                count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == math.ceil(30 * SR / 1024)
    assert peak < 2_000_000         # the decoded file would be 11.5 MB of float32


@pytest.mark.parametrize("ext", ALL)
def test_packet_mode_yields_packets_a_decoder_takes(files, ext):
    with AudioFileReader(files[ext], mode="packet") as reader:
        packets = list(reader)
        codec, source = reader.codec, reader.source_format
    assert packets and all(p.codec == codec and p.stream == "src" for p in packets)
    if codec == "aac":
        assert all(p.data[0] == 0xFF and p.data[1] & 0xF0 == 0xF0 for p in packets)
    if codec == "wav":
        assert source == AudioFormat(SR, 2, "s16", planar=False)
        assert sum(len(p.data) for p in packets) == SR * 4
        return
    cc = av.CodecContext.create(DECODERS[codec], "r")
    if packets[0].extradata:
        cc.extradata = packets[0].extradata
    samples = 0
    for packet in packets:
        for frame in cc.decode(av.Packet(packet.data)):
            samples += frame.samples
    for frame in cc.decode(None):
        samples += frame.samples
    assert SR <= samples <= SR + PADDING[ext] + 1024


@pytest.mark.parametrize("ext", ALL)
def test_writer_muxes_packets_without_reencoding(files, tmp_path, ext):
    with AudioFileReader(files[ext], mode="packet") as reader:
        packets = list(reader)
        source_format, duration = reader.source_format, reader.duration
    writer = AudioFileWriter(tmp_path / f"copy{ext}", input_format=source_format)
    for packet in packets:
        writer.push(packet)
    writer.push(None)
    copy_pcm, container = av_decode(tmp_path / f"copy{ext}")
    with container:
        stream = container.streams.audio[0]
        assert (stream.rate, stream.channels) == (SR, 2)
        # mp3 loses LAME's gapless delay/padding note (PyAV cannot attach it to new packets).
        tolerance = CODEC_FRAME[ext] * (2 if ext == ".mp3" else 1) / SR
        assert container.duration / av.time_base == pytest.approx(duration, abs=tolerance)
    source_pcm, container = av_decode(files[ext])
    container.close()
    if ext != ".mp3":
        np.testing.assert_array_equal(copy_pcm, source_pcm)      # same packets, same samples
    else:
        assert abs(copy_pcm.shape[1] - source_pcm.shape[1]) <= PADDING[ext]
        assert aligned_correlation(source_pcm[0], copy_pcm[0], PADDING[ext]) > 0.999


def test_flac_packets_without_streaminfo_get_a_counted_header(files, tmp_path):
    with AudioFileReader(files[".flac"], mode="packet") as reader:
        packets = [Packet(p.data, p.time_base_num, p.time_base_den, p.pts, p.dts, p.duration,
                          p.flags, "flac") for p in reader]          # as an Encoder hands them out
    writer = write(tmp_path / "bare.flac", packets[:5])
    assert writer.samples_written == 5 * 4608 and writer.packets_written == 5
    with av.open(str(tmp_path / "bare.flac")) as container:
        assert container.streams.audio[0].duration == 5 * 4608
    full = read_all(files[".flac"], format=AudioFormat(SR, 2, "s16"))
    np.testing.assert_array_equal(read_all(tmp_path / "bare.flac", format=AudioFormat(SR, 2, "s16")),
                                  full[:, :5 * 4608])


# --- bad input ----------------------------------------------------------------------------------


def test_missing_empty_and_non_audio_files(tmp_path):
    missing = tmp_path / "nope.mp3"
    with pytest.raises(FileNotFoundError, match=f"audio file not found: '{missing}'"):
        AudioFileReader(missing)
    (tmp_path / "empty.mp3").write_bytes(b"")
    with pytest.raises(FormatError, match=r"empty.mp3' is empty \(0 bytes\): not an audio file"):
        AudioFileReader(tmp_path / "empty.mp3")
    (tmp_path / "folder.mp3").mkdir()
    with pytest.raises(IsADirectoryError, match=r"cannot read audio file '.*folder.mp3': Is a directory"):
        AudioFileReader(tmp_path / "folder.mp3")
    (tmp_path / "text.mp3").write_text("this is a shopping list, not a song\n" * 40)
    with pytest.raises(FormatError, match=r"text.mp3' is not an audio file PyAV can read: "
                                          r"Invalid data found when processing input"):
        AudioFileReader(tmp_path / "text.mp3")


@pytest.mark.parametrize("ext", [".mp3", ".flac"])
def test_a_truncated_file_fails_after_what_decodes_or_ends_with_an_account(files, tmp_path,
                                                                           ext):
    data = files[ext].read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[:int(len(data) * 0.6)])
    handed_out = 0
    with AudioFileReader(cut) as reader:            # on_error: fail, the default
        with pytest.raises(CodecError) as failed:
            for frame in reader:
                handed_out += frame.samples
    # The partial last frame: MP3's is shorter than its header says (FFmpeg's decoder would
    # conceal the missing bytes as silence); FLAC's fails to decode (its CRC-16).
    where = r"the file is cut short" if ext == ".mp3" else r"damaged frame\(s\)"
    assert re.search(rf"cut{ext}': {ext[1:]} stream 0: {where} at byte \d+ \([\d.]+ s\)",
                     str(failed.value))
    assert 0.5 * SR < handed_out < 0.7 * SR
    with AudioFileReader(cut, on_error="skip") as reader:
        samples = sum(f.samples for f in reader)
        assert reader.truncated and reader.damage.end is not None
        assert reader.damage.end.byte > 0.5 * len(data)
    # The cut frame's duration is kept as silence: the last whole frame's end plus one frame.
    assert samples == handed_out + CODEC_FRAME[ext] or ext == ".mp3" and samples >= handed_out


def test_a_cut_mp3_gives_the_same_samples_in_packet_mode(files, tmp_path):
    """The cut last frame goes on in packet mode under skip, and flowengine's Decoder (which
    refuses a short MP3 packet) puts in what the pcm mode does: one frame of silence."""
    from flowengine.ops.codecs.decoder import Decoder

    data = files[".mp3"].read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[:int(len(data) * 0.6)])
    with pytest.raises(CodecError, match="its header says"):
        list(AudioFileReader(cut, mode="packet"))
    with AudioFileReader(cut, mode="packet", on_error="skip") as reader:
        packets = list(reader)
        assert reader.truncated
    decoder = Decoder("mp3", on_error="skip")
    for packet in packets:
        decoder.put_packet(packet)
    decoded = 0
    while (pcm := decoder.get_frame(force=True)) is not None:
        decoded += pcm.shape[1]
    assert decoded == len(packets) * 1152
    assert decoder.damage.frames == 1 and decoder.damage.samples == 1152


def test_corrupt_packet_mid_file_raises_after_the_good_samples(files, tmp_path):
    data = bytearray(files[".mp3"].read_bytes())
    middle = len(data) // 2
    data[middle:middle + 400] = np.random.default_rng(3).integers(0, 256, 400, dtype=np.uint8).tobytes()
    (tmp_path / "bad.mp3").write_bytes(bytes(data))
    delivered = 0
    with AudioFileReader(tmp_path / "bad.mp3") as reader:
        with pytest.raises(CodecError, match=r"bad.mp3': mp3 stream 0: damaged frames? at byte "
                                             r"\d+ \([\d.]+ s\) \(.*\); with on_error: skip it "
                                             r"would be replaced by silence"):
            for frame in reader:
                delivered += frame.samples
    assert 0.3 * SR < delivered < 0.7 * SR


def test_writer_rejects_bad_paths_extensions_and_packets(tmp_path, files):
    with pytest.raises(FileNotFoundError, match=r"cannot write audio file '.*/no/such/dir/x.wav': "
                                                r"directory '.*/no/such/dir' does not exist"):
        AudioFileWriter(tmp_path / "no" / "such" / "dir" / "x.wav")
    (tmp_path / "d.wav").mkdir()
    with pytest.raises(IsADirectoryError, match=r"cannot write audio file '.*d.wav': Is a directory"):
        AudioFileWriter(tmp_path / "d.wav")
    with pytest.raises(FormatError, match=r"x.xyz': unknown extension '.xyz': expected one of "
                                          r".mp3 .m4a .aac .opus .ogg .flac .wav"):
        AudioFileWriter(tmp_path / "x.xyz")
    assert not (tmp_path / "x.xyz").exists()
    with AudioFileReader(files[".mp3"], mode="packet") as reader:
        mp3_packet = next(iter(reader))
    writer = AudioFileWriter(tmp_path / "y.flac")
    with pytest.raises(FormatError, match=r"y.flac': a 'mp3' packet does not fit a .flac file, "
                                          r"which holds flac"):
        writer.push(mp3_packet)
    with pytest.raises(FormatError, match="nothing was written and no format= was given"):
        writer.finalize()
    with pytest.raises(FormatError, match=r"opus packets need their OpusHead in Packet.extradata"):
        AudioFileWriter(tmp_path / "z.opus").push(Packet(b"\xfc\x00", codec="opus"))


def test_finalize_twice_is_a_no_op(tmp_path):
    writer = AudioFileWriter(tmp_path / "t.flac")
    for frame in tone(0.1):
        writer.push(frame)
    writer.finalize()
    size = os.path.getsize(tmp_path / "t.flac")
    writer.finalize()
    writer.push(None)
    assert os.path.getsize(tmp_path / "t.flac") == size and writer.finalized
    with pytest.raises(FlowError, match=r"t.flac': a buffer was pushed after finalize\(\)"):
        writer.push(next(iter(tone(0.1))))


def test_empty_stream_with_a_format_writes_a_valid_empty_file(tmp_path):
    AudioFileWriter(tmp_path / "e.wav", format=AudioFormat(SR, 1, "s16")).finalize()
    with av.open(str(tmp_path / "e.wav")) as container:
        assert container.streams.audio[0].channels == 1
    with AudioFileReader(tmp_path / "e.wav") as reader:
        assert list(reader) == []


# --- memory and null sinks ------------------------------------------------------------------------


def test_memory_sink_collects_and_joins():
    sink = MemorySink()
    frames = list(tone(0.05, chunk_samples=1000))
    for frame in frames:
        sink.push(frame)
    sink.push(Packet(b"ab", codec="mp3"))
    sink.push(Packet(b"cd", codec="mp3"))
    sink.push(None)
    sink.finalize()
    assert sink.finalized and len(sink.frames) == 3 and sink.samples == 2400
    np.testing.assert_array_equal(sink.pcm(), np.concatenate([f.data for f in frames], axis=1))
    assert sink.pcm("interleaved").shape == (2400, 2)
    assert sink.data() == b"abcd"
    with pytest.raises(FlowError, match="pushed after the end of the stream"):
        sink.push(frames[0])
    with pytest.raises(FormatError, match="no AudioFrame was pushed"):
        MemorySink().pcm()
    mixed = MemorySink()
    mixed.push(frames[0])
    mixed.push(AudioFrame(np.zeros((2, 4), np.float32), AudioFormat(SR, 2)))
    with pytest.raises(FormatError, match="frame 1 is 48000 Hz 2 ch f32 planar, frame 0 is 48000 Hz "
                                          "2 ch s16 planar"):
        mixed.pcm()


def test_null_sink_counts():
    sink = NullSink()
    for frame in tone(0.05, chunk_samples=1000):
        sink.push(frame)
    sink.push(Packet(b"xyz"))
    with pytest.raises(FormatError, match="expected an AudioFrame or a Packet, got str"):
        sink.push("nope")
    sink.push(None)
    sink.finalize()
    assert (sink.buffers, sink.samples, sink.bytes, sink.finalized) == (4, 2400, 2400 * 4 + 3, True)


def write_short_mp3(path, samples: int) -> None:
    """A stereo 44.1 kHz chirp of `samples` samples, encoded by PyAV's libmp3lame, as .mp3."""
    from flowengine.ops.codecs.configs import ENCODER_CONFIGS
    from flowengine.ops.codecs.encoder import Encoder

    t = np.arange(samples) / 44100
    chirp = (0.5 * np.sin(2 * np.pi * (200 + 2000 * t) * t)).astype(np.float32)
    encoder = Encoder("mp3", ENCODER_CONFIGS["mp3"](backend="pyav"))
    encoder.put_frame(np.stack([chirp, 0.5 * chirp]), format=AudioFormat(44100, 2, "f32"))
    writer = AudioFileWriter(path)
    while (packet := encoder.get_packet(force=True)) is not None:
        writer.push(packet)
    writer.push(None)


def test_a_short_mp3_that_ffmpeg_probes_as_video_is_read_as_mp3(tmp_path):
    """FFmpeg's probe guesses from the first bytes: this 23 ms MP3 scores higher as H.263
    video. The reader tries again as the format its extension names."""
    path = tmp_path / "short.mp3"
    write_short_mp3(path, 1000)
    with av.open(str(path)) as container:       # the probe's guess, without the hint
        assert [s.type for s in container.streams] == ["video"]
    with AudioFileReader(path) as reader:
        assert reader.codec == "mp3" and reader.source_format == AudioFormat(44100, 2, "f32")
        assert sum(frame.samples for frame in reader) == 1000      # gapless: exactly the input


def test_a_short_mp3_whose_probe_fails_outright_is_read_as_mp3(tmp_path):
    """A 26 ms MP3 that FFmpeg's probe refuses as invalid data: read as the format the
    extension names, to exactly its samples."""
    path = tmp_path / "short.mp3"
    write_short_mp3(path, 1153)
    with pytest.raises(av.FFmpegError):         # the probe's answer, without the hint
        av.open(str(path))
    with AudioFileReader(path) as reader:
        assert reader.codec == "mp3" and sum(frame.samples for frame in reader) == 1153


def test_a_file_that_is_no_audio_under_an_audio_extension_still_says_so(tmp_path):
    path = tmp_path / "video.mp3"
    with av.open(str(path), "w", format="h263") as container:
        stream = container.add_stream("h263", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        frame = av.VideoFrame(128, 96, "yuv420p")
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            container.mux(packet)
    with pytest.raises(FormatError, match=re.escape(f"'{path}' has no audio stream (streams "
                                                    f"found: video)")):
        AudioFileReader(path)


def test_a_flac_whose_middle_frames_are_damaged_is_an_error_not_silently_short(tmp_path):
    """FFmpeg's FLAC parser hands damaged frames out as one packet without a pts, with the
    good frames it buffered before them (or drops them); decoded as they were, 1152 to 3456
    samples of 32000 vanished without a word. Now: an error naming the damaged frame's byte,
    after an exact prefix of the audio (pcm mode); packet mode names the packet the parser
    could not frame, which holds it."""
    noise = (np.random.default_rng(1).standard_normal((1, 32000)) * 3000).astype(np.int16)
    good = tmp_path / "good.flac"
    with AudioFileWriter(good) as out:
        out.push(AudioFrame(noise, AudioFormat(16000, 1, "s16")))
    with av.open(str(good)) as container:
        frames = [(p.pos, p.pts) for p in container.demux(audio=0) if p.size]
    damaged = bytearray(good.read_bytes())
    start = frames[8][0] + 100                      # inside frame 8 (samples 9216..10367)
    damaged[start:start + 200] = bytes(b ^ 0x5A for b in damaged[start:start + 200])
    bad = tmp_path / "bad.flac"
    bad.write_bytes(bytes(damaged))

    handed_out = []
    with AudioFileReader(bad, format=AudioFormat(16000, 1, "s16")) as reader:
        with pytest.raises(CodecError, match=re.escape(f"'{bad}': flac stream 0: damaged "
                                                       f"frame(s) at byte {frames[8][0]} "
                                                       f"(0.576 s)")):
            for buf in reader:
                handed_out.append(buf)
    pcm = np.concatenate([f.data for f in handed_out], axis=1)
    np.testing.assert_array_equal(pcm, noise[:, :9216])       # every sample before frame 8

    message = re.escape(f"'{bad}': flac stream 0: FLAC frames the parser could not frame at "
                        f"byte ") + r"(\d+) \(([\d.]+) s\) \(\d+ bytes: damaged frames\)"
    handed_out = []
    with AudioFileReader(bad, mode="packet") as reader:
        with pytest.raises(CodecError, match=message) as error:
            for buf in reader:
                handed_out.append(buf)
    at = int(re.search(message, str(error.value)).group(1))
    before = [pts for pos, pts in frames if pos < at]
    assert 0 < len(before) <= 8 and at in [pos for pos, _ in frames]
    assert [p.pts for p in handed_out] == before

    # on_error: skip, either mode: frame 8 is silence, every other sample as written
    for mode in ("pcm", "packet"):
        with AudioFileReader(bad, mode=mode, on_error="skip",
                             format=AudioFormat(16000, 1, "s16")) as reader:
            bufs = list(reader)
        if mode == "packet":
            from flowengine.ops.codecs.decoder import Decoder
            decoder = Decoder("flac", on_error="skip")
            for packet in bufs:
                decoder.put_packet(packet)
            blocks = []
            while (block := decoder.get_frame(force=True)) is not None:
                blocks.append(block)
            pcm = np.round(np.concatenate(blocks, axis=1) * 32768).astype(np.int16)
            assert decoder.damage.samples == 1152
        else:
            pcm = np.concatenate([f.data for f in bufs], axis=1)
            assert reader.damage.samples == 1152 and reader.damage.spots[0].byte == frames[8][0]
        expected = noise.copy()
        expected[:, 9216:10368] = 0
        np.testing.assert_array_equal(pcm, expected)
