"""Resampler: exact lengths, fidelity against scipy, chunk invariance, channels, types, pts, errors."""

from __future__ import annotations

from fractions import Fraction
from math import gcd

import av
import numpy as np
import pytest
from scipy.signal import resample_poly

from audio_checks import dominant_frequency, process_in_chunks

from flowengine.audio.buffers import AudioFrame
from flowengine.errors import ConfigError, FormatError
from flowengine.audio.format import AudioFormat, from_float, to_float
from flowengine.ops.processors.resample import ResampleNode, Resampler, expected_output_samples

RATE_PAIRS = [(44100, 48000), (48000, 44100), (48000, 16000), (22050, 48000)]


def sines(rate: int, seconds: float, freqs=(440.0, 1000.0), amp=0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([amp * np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32)


def random_chunks(n: int, rng: np.random.Generator, high: int = 3000) -> list[int]:
    sizes = []
    while sum(sizes) < n:
        sizes.append(min(int(rng.integers(1, high)), n - sum(sizes)))
    return sizes


run = process_in_chunks   # feed in chunks, drain: -> (output, [(pts, n)])



@pytest.mark.parametrize("rin,rout", RATE_PAIRS)
def test_length_frequency_and_fidelity_against_scipy(rin, rout):
    x = sines(rin, 1.0)
    y, _ = run(Resampler(AudioFormat(rin, 2), AudioFormat(rout, 2)), x)
    assert y.shape == (2, rout)     # 1 s in, exactly 1 s out
    assert abs(dominant_frequency(y[0], rout) - 440.0) <= 1.0
    assert abs(dominant_frequency(y[1], rout) - 1000.0) <= 1.0
    g = gcd(rin, rout)
    ref = resample_poly(x.astype(np.float64), rout // g, rin // g, axis=1)
    core = slice(200, rout - 200)   # both filters treat the edges differently
    best_lag, best_corr = 0, -1.0
    for lag in range(-3, 4):
        corr = min(np.corrcoef(y[c, core], np.roll(ref[c], -lag)[core])[0, 1] for c in range(2))
        if corr > best_corr:
            best_lag, best_corr = lag, corr
    assert best_lag == 0            # no delay: libswresample's delay is compensated
    assert best_corr > 0.999


@pytest.mark.parametrize("rin,rout", RATE_PAIRS + [(8000, 48000), (48000, 8000)])
@pytest.mark.parametrize("n", [1, 5, 22, 1001, 44117])
def test_output_length_is_rounded_ratio_for_any_length(rin, rout, n):
    x = np.random.default_rng(n).uniform(-0.5, 0.5, (1, n)).astype(np.float32)
    y, _ = run(Resampler(AudioFormat(rin, 1), AudioFormat(rout, 1)), x)
    assert y.shape[1] == expected_output_samples(n, rin, rout) == round(Fraction(n * rout, rin))


def test_expected_output_samples_rounds_halves_up():
    assert expected_output_samples(1, 48000, 24000) == 1     # 0.5 -> 1
    assert expected_output_samples(3, 48000, 16000) == 1
    assert expected_output_samples(1000, 44100, 48000) == 1088   # 1088.43
    assert expected_output_samples(0, 44100, 48000) == 0


@pytest.mark.parametrize("rin,rout", RATE_PAIRS)
def test_random_chunking_equals_whole_signal(rin, rout):
    rng = np.random.default_rng(rin + rout)
    x = rng.uniform(-0.5, 0.5, (2, rin // 2 + 123)).astype(np.float32)
    whole, _ = run(Resampler(AudioFormat(rin, 2), AudioFormat(rout, 2)), x)
    chunked, marks = run(Resampler(AudioFormat(rin, 2), AudioFormat(rout, 2)), x,
                         random_chunks(x.shape[1], rng))
    assert chunked.shape == whole.shape
    # Measured bit-identical (libswresample is deterministic and streaming).
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)
    one_by_one, _ = run(Resampler(AudioFormat(rin, 2), AudioFormat(rout, 2)), x[:, :300],
                        [1] * 300)
    short_whole, _ = run(Resampler(AudioFormat(rin, 2), AudioFormat(rout, 2)), x[:, :300])
    np.testing.assert_allclose(one_by_one, short_whole, rtol=0, atol=1e-6)


def test_tail_is_flushed_not_lost():
    # A burst in the last 5 ms must come out whole: the filter delay is flushed.
    rin, rout = 44100, 48000
    x = np.zeros((1, rin // 2), np.float32)
    burst = int(0.005 * rin)
    x[0, -burst:] = 0.5 * np.sin(2 * np.pi * 2000 * np.arange(burst) / rin)
    y, _ = run(Resampler(AudioFormat(rin, 1), AudioFormat(rout, 1)), x)
    energy_in = float(np.sum(x.astype(np.float64) ** 2)) / rin
    energy_out = float(np.sum(y.astype(np.float64) ** 2)) / rout
    assert energy_out == pytest.approx(energy_in, rel=0.05)
    assert np.max(np.abs(y[0, -int(0.005 * rout):])) > 0.4


def test_mono_to_stereo_copies_and_stereo_to_mono_averages():
    mono = sines(44100, 0.5, freqs=(440.0,))
    up, _ = run(Resampler(AudioFormat(44100, 1), AudioFormat(48000, 2)), mono)
    ref, _ = run(Resampler(AudioFormat(44100, 1), AudioFormat(48000, 1)), mono)
    assert up.shape == (2, 24000)
    np.testing.assert_array_equal(up[0], ref[0])
    np.testing.assert_array_equal(up[1], ref[0])

    stereo = sines(48000, 0.5, freqs=(440.0, 1000.0))
    down, _ = run(Resampler(AudioFormat(48000, 2), AudioFormat(16000, 1)), stereo)
    mean = stereo.mean(axis=0, keepdims=True)
    ref_down, _ = run(Resampler(AudioFormat(48000, 1), AudioFormat(16000, 1)), mean)
    assert down.shape == (1, 8000)
    np.testing.assert_allclose(down, ref_down, rtol=0, atol=1e-6)
    # Identical channels survive a downmix at full level (no -3 dB matrix).
    same = np.repeat(mono, 2, axis=0)
    kept, _ = run(Resampler(AudioFormat(44100, 2), AudioFormat(44100, 1)), same)
    np.testing.assert_allclose(kept, mono, rtol=0, atol=1e-7)


def test_surround_to_stereo_uses_standard_downmix():
    x = sines(48000, 0.25, freqs=(100, 200, 300, 400, 500, 600), amp=0.1)
    y, _ = run(Resampler(AudioFormat(48000, 6), AudioFormat(44100, 2)), x)
    assert y.shape == (2, expected_output_samples(12000, 48000, 44100))
    assert np.all(np.isfinite(y)) and 0.05 < np.max(np.abs(y)) < 1.0
    with pytest.raises(FormatError, match="9 channels have no standard layout"):
        Resampler(AudioFormat(48000, 9), AudioFormat(44100, 2))


def test_sample_type_and_layout_conversion():
    x = sines(48000, 0.25)
    out_fmt = AudioFormat(48000, 2, "s16", planar=False)
    proc = Resampler(AudioFormat(48000, 2), out_fmt)
    proc.put_frame(x)
    frame = proc.get_audio_frame()     # same rate: no filter delay, all out at once
    assert frame.format == out_fmt
    assert frame.data.dtype == np.int16 and frame.data.shape == (12000, 2)
    np.testing.assert_array_equal(frame.data, from_float(x, "s16").T)
    assert proc.get_audio_frame(force=True) is None

    # s16 interleaved in, f32 planar out at another rate: same as the f32 path.
    pcm16 = from_float(x, "s16").T.copy()
    proc = Resampler(AudioFormat(48000, 2, "s16", planar=False), AudioFormat(44100, 2, "f32"))
    proc.put_frame(pcm16)
    y16 = np.concatenate([proc.get_frame(), proc.get_frame(force=True)], axis=1)
    yf, _ = run(Resampler(AudioFormat(48000, 2), AudioFormat(44100, 2)),
                to_float(from_float(x, "s16"), "s16"))
    assert y16.dtype == np.float32
    np.testing.assert_allclose(y16, yf, rtol=0, atol=1e-6)
    # f32 -> u8 at a new rate: offset binary, full signal kept.
    proc = Resampler(AudioFormat(48000, 2), AudioFormat(16000, 2, "u8"))
    y8, _ = run(proc, x)
    assert y8.dtype == np.uint8 and y8.shape == (2, 4000)
    assert abs(dominant_frequency(to_float(y8, "u8")[0], 16000) - 440.0) <= 4.0


def test_interleaved_output_layout_on_request():
    x = sines(44100, 0.1)
    proc = Resampler(AudioFormat(44100, 2), AudioFormat(48000, 2), out_chunk_samples=4800)
    proc.put_frame(x)
    inter = proc.get_frame(force=True, layout="interleaved")
    assert inter.shape == (4800, 2)
    assert proc.get_frame() is None


def test_pts_are_continuous_in_output_rate():
    rin, rout = 44100, 48000
    x = sines(rin, 0.5)
    rng = np.random.default_rng(3)
    proc = Resampler(AudioFormat(rin, 2), AudioFormat(rout, 2))
    y, marks = run(proc, x, random_chunks(x.shape[1], rng), pts=4410)   # 0.1 s
    assert marks[0][0] == 4800
    for (pts, n), (next_pts, _) in zip(marks, marks[1:]):
        assert next_pts == pts + n
    assert sum(n for _, n in marks) == y.shape[1] == 24000
    proc.reset()
    proc.put_frame(AudioFrame(x, AudioFormat(rin, 2), pts=1, time_base=Fraction(1, 10)))
    info = proc.get_frame_info()
    assert info[1] == 4800 and info[2] == (1, rout)
    tail = proc.get_frame_info(force=True)
    assert tail[1] == 4800 + info[0].shape[1]


def test_out_chunk_samples_with_and_without_padding():
    rin, rout = 44100, 48000
    x = sines(rin, 0.5)                      # -> 24000 samples
    rng = np.random.default_rng(4)
    whole, _ = run(Resampler(AudioFormat(rin, 2), AudioFormat(rout, 2)), x)
    padded, marks = run(Resampler(AudioFormat(rin, 2), AudioFormat(rout, 2),
                                  out_chunk_samples=1152), x, random_chunks(x.shape[1], rng))
    assert [n for _, n in marks] == [1152] * 21            # 24192 = 21 full chunks
    np.testing.assert_allclose(padded[:, :24000], whole, rtol=0, atol=1e-6)
    assert not padded[:, 24000:].any()
    exact, marks = run(Resampler(AudioFormat(rin, 2), AudioFormat(rout, 2),
                                 out_chunk_samples=1152, pad_final=False), x)
    assert [n for _, n in marks] == [1152] * 20 + [960]     # partial last chunk kept
    np.testing.assert_allclose(exact, whole, rtol=0, atol=1e-6)


def test_mid_stream_format_change_is_an_error_with_position():
    proc = Resampler(AudioFormat(44100, 2), AudioFormat(48000, 2))
    proc.put_frame(sines(44100, 0.1))
    other = AudioFrame(sines(48000, 0.1), AudioFormat(48000, 2))
    with pytest.raises(FormatError, match=r"at sample 4410: expected 44100 Hz 2 ch f32 planar, "
                                          r"got 48000 Hz 2 ch f32 planar"):
        proc.put_frame(other)
    with pytest.raises(FormatError, match=r"at sample 4410: expected dtype float32 for sample "
                                          r"type f32, got int16"):
        proc.put_frame(np.zeros((2, 100), np.int16))
    with pytest.raises(FormatError, match=r"at sample 4410: expected 2 channel"):
        proc.put_frame(np.zeros((1, 100), np.float32))
    # Data accepted before the error is not lost.
    kept, _ = run(proc, np.zeros((2, 0), np.float32))
    assert kept.shape == (2, 4800)
    assert proc.samples_in == 4410


def test_format_taken_from_first_frame_and_reset_restarts():
    x = sines(22050, 0.2)
    proc = Resampler(None, AudioFormat(48000, 2))
    assert proc.input_format is None
    first, _ = run(proc, x, format=AudioFormat(22050, 2))
    assert proc.input_format == AudioFormat(22050, 2)
    assert proc.samples_in == 4410 and proc.samples_out == first.shape[1] == 9600
    proc.reset()
    again, _ = run(proc, x, format=AudioFormat(22050, 2))
    np.testing.assert_array_equal(again, first)


def test_swr_options_are_validated_at_construction():
    proc = Resampler(AudioFormat(44100, 1), AudioFormat(48000, 1), options={"filter_size": 64})
    y, _ = run(proc, sines(44100, 0.2, freqs=(440.0,)))
    assert y.shape == (1, 9600)
    with pytest.raises(ConfigError, match="libswresample rejected options .*bogus"):
        Resampler(AudioFormat(44100, 1), AudioFormat(48000, 1), options={"bogus": "1"})


@pytest.mark.parametrize("rin,rout", RATE_PAIRS)
def test_f32_resample_gives_plain_pyav_fltp_samples(rin, rout):
    """Between f32 ends libswresample runs in float32, as a plain PyAV loop does: the same
    samples bit for bit, fed in chunks of any size, up to the exact-length end (the last
    filter length of samples, which the zeros fed at the end complete instead)."""
    x = sines(rin, 1.0) * np.float32(0.9)
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=rout)
    frame = av.AudioFrame.from_ndarray(x, format="fltp", layout="stereo")
    frame.sample_rate = rin
    plain = np.concatenate([f.to_ndarray() for f in resampler.resample(frame)], axis=1)
    chunks = random_chunks(x.shape[1], np.random.default_rng(rin + rout))
    ours, _ = run(Resampler(AudioFormat(rin, 2), AudioFormat(rout, 2)), x, chunks)
    assert ours.dtype == np.float32 and ours.shape == (2, rout)
    settled = plain.shape[1] - 64           # PyAV holds back its filter delay until flushed
    assert settled > 0.9 * rout
    np.testing.assert_array_equal(ours[:, :settled], plain[:, :settled])


def test_identity_resample_output_does_not_share_the_input_memory():
    x = sines(48000, 0.1)
    resampler = Resampler(AudioFormat(48000, 2), AudioFormat(48000, 2))
    resampler.put_frame(x)
    out = resampler.get_frame(force=True)
    np.testing.assert_array_equal(out, x)
    assert not np.shares_memory(out, x)


# ---- the resample operator's node: av frames end to end ------------------------------------

def _node_output(node: ResampleNode, x: np.ndarray, sizes: list[int], rate: int,
                 as_av: bool) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Feed `x` in blocks of `sizes` (each an av-backed or numpy-backed frame); the samples
    and (pts, n) of what comes out."""
    fmt = AudioFormat(rate, x.shape[0], "f32")
    outs, start = [], 0
    for size in sizes:
        block = np.ascontiguousarray(x[:, start:start + size])
        frame = AudioFrame(block, fmt, start, None, "s")
        if as_av:
            frame = AudioFrame.from_av(frame.av, fmt, start, "s")
        outs += node.process(frame)
        start += size
    outs += node.finish()
    assert all(o.stream == "s" for o in outs)
    return np.concatenate([o.data for o in outs], axis=1), [(o.pts, o.samples) for o in outs]


@pytest.mark.parametrize("rin,rout", RATE_PAIRS + [(48000, 48000)])
@pytest.mark.parametrize("chunk", [None, 1024])
def test_the_node_keeps_av_frames_and_gives_the_resamplers_samples(rin, rout, chunk):
    rng = np.random.default_rng(rin + rout)
    x = sines(rin, 0.7)
    sizes = random_chunks(x.shape[1], rng)
    out_fmt = AudioFormat(rout, 2, "f32")
    reference, _ = run(Resampler(AudioFormat(rin, 2, "f32"), out_fmt, out_chunk_samples=chunk),
                       x, sizes)
    for as_av in (True, False):
        node = ResampleNode(rout, out_chunk_samples=chunk)
        got, blocks = _node_output(node, x, sizes, rin, as_av)
        assert got.shape == reference.shape
        np.testing.assert_array_equal(got, reference)        # the same filter, bit for bit
        pts = 0
        for block_pts, n in blocks:                          # continuous timestamps
            assert block_pts == pts
            pts += n
        if chunk:
            assert all(n == chunk for _, n in blocks)        # the last one zero-padded
        else:
            assert got.shape[1] == expected_output_samples(x.shape[1], rin, rout)


def test_the_node_converts_channels_and_types_through_the_resampler():
    x = sines(44100, 0.2)
    node = ResampleNode(48000, channels=1, sample_type="s16")
    got, _ = _node_output(node, x, [1000] * 8 + [x.shape[1] - 8000], 44100, as_av=True)
    reference, _ = run(Resampler(AudioFormat(44100, 2, "f32"), AudioFormat(48000, 1, "s16")),
                       x, [x.shape[1]])
    np.testing.assert_array_equal(got, reference)
    assert got.dtype == np.int16 and got.shape[0] == 1


def test_the_node_refuses_a_format_change_mid_stream():
    node = ResampleNode(48000)
    node.process(AudioFrame(np.zeros((2, 100), np.float32), AudioFormat(44100, 2, "f32"), 0))
    with pytest.raises(FormatError, match=r"input format changed mid-stream at input sample "
                                          r"100: now 22050 Hz 2 ch f32 planar"):
        node.process(AudioFrame(np.zeros((2, 100), np.float32), AudioFormat(22050, 2, "f32"),
                                100))
