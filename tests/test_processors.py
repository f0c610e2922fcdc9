"""Processors (identity, gain, delay, FIR, IIR, Butterworth, channel map, compressor).

Every processor is checked against a whole-signal reference (numpy / scipy /
a plain per-sample loop for the compressor) with the signal fed whole and in
many chunkings; plus counts, pts continuity, flush/EOF, sample types and
layouts, re-blocking, reset, and every documented bad-input error.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np
import pytest
import scipy.signal

from audio_checks import process_in_chunks

from flowengine.audio.buffers import AudioFrame
from flowengine.errors import FlowError, FormatError
from flowengine.audio.format import AudioFormat, from_float, to_float
from flowengine.ops.processors import (BaseProcessor, ButterworthFilter, ChannelMixer, Compressor,
                                   DelayProcessor, FirFilter, GainProcessor, IdentityProcessor,
                                   IirFilter, Processor, static_curve_db)

RATE = 48000
STEREO = AudioFormat(RATE, 2, "f32")
MONO = AudioFormat(RATE, 1, "f32")
START_PTS = 1000
COMPRESSOR_PARAMS = dict(threshold_db=-20.0, knee_width_db=6.0, ratio=4.0, expansion_ratio=2.0,
                         expansion_threshold_db=-45.0, attack_time=0.003, release_time=0.08,
                         master_gain_db=3.0)


@lru_cache(maxsize=None)
def test_signal(channels: int = 2, seconds: float = 1.0) -> np.ndarray:
    """Sine + chirp + noise under a level ramp from -70 dB to 0 dB (every compressor region)."""
    n = int(RATE * seconds)
    t = np.arange(n) / RATE
    rng = np.random.default_rng(1234)
    rows = []
    for ch in range(channels):
        tone = 0.45 * np.sin(2 * np.pi * (440 + 110 * ch) * t)
        chirp = 0.35 * scipy.signal.chirp(t, 100, seconds, 8000)
        noise = 0.1 * rng.standard_normal(n)
        rows.append((tone + chirp + noise) * 10 ** ((-70 + 70 * t / seconds) / 20))
    return np.stack(rows).astype(np.float32)


test_signal.__test__ = False  # a helper, not a test


def chunkings(n: int) -> dict[str, list[int]]:
    """Chunk size lists covering n samples: 7, 333, 4096 and a seeded random mix."""
    rng = np.random.default_rng(99)
    mixed = []
    while sum(mixed) < n:
        mixed.append(int(rng.choice([1, 2, 7, 64, 333, 1000, 4096, 5000])))
    mixed[-1] -= sum(mixed) - n
    fixed = {size: [size] * (n // size) + ([n % size] if n % size else []) for size in (7, 333, 4096)}
    return {"whole": [n], "7": fixed[7], "333": fixed[333], "4096": fixed[4096], "mixed": mixed}


def run(proc: BaseProcessor, x: np.ndarray, chunks: list[int], first_pts: int | None = START_PTS):
    """Feed planar x in chunks (pulling as we go), then drain. -> (output, [(pts, n)])."""
    return process_in_chunks(proc, x, chunks, pts=first_pts)


def assert_pts_continuous(marks, first_pts: int = START_PTS) -> None:
    expected = first_pts
    for pts, n in marks:
        assert pts == expected
        expected += n


# ---- whole-signal references --------------------------------------------------------------

def compressor_reference(x: np.ndarray, threshold_db, knee_width_db, ratio, expansion_ratio,
                         expansion_threshold_db, attack_time, release_time, master_gain_db):
    """A plain per-sample loop: decoupled peak detector, quadratic soft knee, expander, makeup."""
    att = math.exp(-1 / (attack_time * RATE))
    rel = math.exp(-1 / (release_time * RATE))
    t, w, e = threshold_db, knee_width_db, expansion_threshold_db
    out = np.zeros_like(x, dtype=np.float64)
    for ch in range(x.shape[0]):
        peak = level = 0.0
        for n, sample in enumerate(x[ch].astype(np.float64).tolist()):
            peak = max(abs(sample), rel * peak)
            level = att * level + (1 - att) * peak
            level_db = 20 * math.log10(max(level, 1e-10))
            if 2 * (level_db - t) > w:
                target = t + (level_db - t) / ratio
            elif 2 * abs(level_db - t) <= w and w > 0:
                target = level_db + (1 / ratio - 1) * (level_db - t + w / 2) ** 2 / (2 * w)
            elif 2 * (e - level_db) > w:
                target = e + (level_db - e) * expansion_ratio
            elif 2 * abs(level_db - e) <= w and w > 0:
                target = level_db + (1 - expansion_ratio) * (level_db - e - w / 2) ** 2 / (2 * w)
            else:
                target = level_db
            out[ch, n] = sample * 10 ** ((target - level_db + master_gain_db) / 20)
    return out


def convolve_rows(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    return np.stack([np.convolve(row.astype(np.float64), taps) for row in x])


LOWPASS_TAPS = scipy.signal.firwin(31, 3000, fs=RATE)
LONG_TAPS = scipy.signal.firwin(1025, 1500, fs=RATE)   # FFT path on big blocks
BA = scipy.signal.butter(3, 2500, fs=RATE)
SOS = scipy.signal.butter(6, [300, 5000], btype="bandpass", fs=RATE, output="sos")
MIX_3x2 = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, -0.5]])

# (id, factory, input channels, reference on float64 planar x, extra output samples)
CASES = [
    ("identity", lambda: Processor.identity(STEREO), 2, lambda x: x, 0),
    ("gain", lambda: Processor.gain(STEREO, gain=0.5), 2, lambda x: 0.5 * x, 0),
    ("gain_db", lambda: Processor.gain(STEREO, gain_db=-6.0), 2,
     lambda x: x * 10 ** (-6 / 20), 0),
    ("delay", lambda: Processor.delay(10.0, STEREO), 2,
     lambda x: np.concatenate([np.zeros((2, 480)), x], axis=1), 480),
    ("fir_short", lambda: Processor.fir(LOWPASS_TAPS, STEREO), 2,
     lambda x: convolve_rows(x, LOWPASS_TAPS)[:, :x.shape[1]], 0),
    ("fir_long_full_tail", lambda: Processor.fir(LONG_TAPS, STEREO, full_tail=True), 2,
     lambda x: convolve_rows(x, LONG_TAPS), 1024),
    ("iir_ba", lambda: Processor.iir(BA[0], BA[1], STEREO), 2,
     lambda x: scipy.signal.lfilter(BA[0], BA[1], x, axis=-1), 0),
    ("iir_sos", lambda: Processor.iir(sos=SOS, format=STEREO), 2,
     lambda x: scipy.signal.sosfilt(SOS, x, axis=-1), 0),
    ("lowpass", lambda: Processor.lowpass(2000, format=STEREO), 2,
     lambda x: scipy.signal.sosfilt(scipy.signal.butter(4, 2000, fs=RATE, output="sos"), x), 0),
    ("highpass", lambda: Processor.highpass(500, order=2, format=STEREO), 2,
     lambda x: scipy.signal.sosfilt(
         scipy.signal.butter(2, 500, "highpass", fs=RATE, output="sos"), x), 0),
    ("stereo_to_mono", lambda: Processor.channel_map(STEREO, out_channels=1), 2,
     lambda x: x.mean(axis=0, keepdims=True), 0),
    ("mono_to_stereo", lambda: Processor.channel_map(MONO, out_channels=2), 1,
     lambda x: np.vstack([x, x]), 0),
    ("swap", lambda: Processor.channel_map(STEREO, channels=[1, 0]), 2, lambda x: x[::-1], 0),
    ("matrix_3x2", lambda: Processor.channel_map(STEREO, matrix=MIX_3x2), 2,
     lambda x: MIX_3x2 @ x, 0),
    ("compressor", lambda: Processor.compressor(STEREO, RATE, **COMPRESSOR_PARAMS), 2,
     lambda x: compressor_reference(x, **COMPRESSOR_PARAMS), 0),
]


@lru_cache(maxsize=None)
def reference_output(case_id: str) -> np.ndarray:
    _, _, channels, reference, _ = next(case for case in CASES if case[0] == case_id)
    return reference(test_signal(channels).astype(np.float64))


@pytest.mark.parametrize("case_id,factory,channels,reference,extra", CASES,
                         ids=[case[0] for case in CASES])
def test_chunking_equals_whole_signal_reference(case_id, factory, channels, reference, extra):
    x = test_signal(channels)
    expected = reference_output(case_id)
    n = x.shape[1]
    assert expected.shape[1] == n + extra
    for name, chunks in chunkings(n).items():
        proc = factory()
        y, marks = run(proc, x, chunks)
        assert y.dtype == np.float32 and y.shape == expected.shape, name
        np.testing.assert_allclose(y, expected, atol=1e-5, rtol=0, err_msg=name)
        assert_pts_continuous(marks)
        assert proc.samples_in == n and proc.samples_out == n + extra
        if extra == 0 and name != "mixed":
            # one output block per input block, same size
            assert [m[1] for m in marks] == chunks, name


@pytest.mark.parametrize("case_id,factory,channels,reference,extra", CASES,
                         ids=[case[0] for case in CASES])
def test_one_sample_chunks(case_id, factory, channels, reference, extra):
    n = 1500   # a 31 ms prefix: a prefix of the input gives a prefix of the output
    x = test_signal(channels)[:, -n:]   # the loud end, where the compressor works hardest
    expected = reference(x.astype(np.float64))
    y, marks = run(factory(), x, [1] * n)
    np.testing.assert_allclose(y, expected, atol=1e-5, rtol=0)
    assert y.shape[1] == n + extra
    assert_pts_continuous(marks)


# ---- flush, re-blocking, formats --------------------------------------------------------

def test_delay_tail_comes_out_on_flush_only():
    proc = DelayProcessor(5.0, STEREO)      # 240 samples
    x = test_signal()[:, :1000]
    proc.put_frame(x)
    first = proc.get_frame()
    assert first.shape == (2, 1000)
    np.testing.assert_array_equal(first[:, :240], 0)
    np.testing.assert_array_equal(first[:, 240:], x[:, :760])
    assert proc.get_frame() is None                  # nothing more until the end of input
    tail = proc.get_frame(force=True)
    np.testing.assert_array_equal(tail, x[:, 760:])
    assert proc.get_frame(force=True) is None


def test_delay_rounds_milliseconds_to_samples():
    assert DelayProcessor(10.01, AudioFormat(44100, 1)).delay_samples == round(10.01 * 44.1)
    assert DelayProcessor(0, STEREO).delay_samples == 0


def test_fir_without_full_tail_keeps_input_length_and_flush_adds_nothing():
    proc = FirFilter(LONG_TAPS, STEREO)
    x = test_signal()[:, :5000]
    y, _ = run(proc, x, [5000])
    assert y.shape == (2, 5000)


def test_out_chunk_samples_reblocks_and_keeps_the_partial_last_block():
    x = test_signal()
    proc = Processor.delay(1.0, STEREO, out_chunk_samples=1000)     # 48 samples of delay
    y, marks = run(proc, x, chunkings(x.shape[1])["mixed"])
    sizes = [m[1] for m in marks]
    assert sizes == [1000] * 48 + [48]
    np.testing.assert_array_equal(y[:, 48:], x)
    assert_pts_continuous(marks)


def test_s16_interleaved_input_gives_s16_interleaved_output():
    fmt = AudioFormat(RATE, 2, "s16", planar=False)
    x16 = from_float(test_signal().T, "s16")                  # (samples, channels)
    proc = GainProcessor(fmt, gain=0.5)
    assert proc.output_format == fmt
    proc.put_frame(x16[:3000])
    frame = proc.get_audio_frame()
    assert frame.format == fmt and frame.data.shape == (3000, 2) and frame.data.dtype == np.int16
    assert frame.pts == 0
    expected = np.rint(x16[:3000].astype(np.float64) * 0.5)
    assert np.abs(frame.data - expected).max() <= 1
    proc.put_frame(x16[3000:])
    planar = proc.get_frame()                                  # default layout: planar
    assert planar.shape == (2, x16.shape[0] - 3000) and planar.dtype == np.int16
    assert np.abs(planar.T - np.rint(x16[3000:] * 0.5)).max() <= 1


def test_s16_input_converted_to_f32_output_matches_float_reference():
    fmt = AudioFormat(RATE, 2, "s16")
    x16 = from_float(test_signal(), "s16")
    proc = FirFilter(LOWPASS_TAPS, fmt, out_sample_type="f32")
    assert proc.output_format == AudioFormat(RATE, 2, "f32")
    y, _ = run(proc, x16, chunkings(x16.shape[1])["mixed"])
    expected = convolve_rows(to_float(x16, "s16", np.float64), LOWPASS_TAPS)[:, :x16.shape[1]]
    np.testing.assert_allclose(y, expected, atol=1e-6, rtol=0)


def test_interleaved_layout_on_request_and_mono_1d_input():
    proc = IdentityProcessor(MONO)
    x = test_signal(1)[0, :100]
    proc.put_frame(x)                                         # 1-D is fine for mono
    out = proc.get_frame(layout="interleaved")
    assert out.shape == (100, 1)
    np.testing.assert_array_equal(out[:, 0], x)


def test_audio_frame_input_carries_format_pts_and_stream():
    proc = IdentityProcessor()                                # format from the first frame
    x = test_signal()[:, :480]
    proc.put_frame(AudioFrame(x, STEREO, pts=10, time_base=0.001, stream="s7"))   # 10 ms
    frame = proc.get_audio_frame()
    assert proc.input_format == STEREO and frame.stream == "s7"
    assert frame.pts == 480 and frame.time_base == Fraction(1, RATE)  # 10 ms = 480 samples
    np.testing.assert_array_equal(frame.data, x)


def test_reset_gives_fresh_state_and_allows_a_new_format():
    x = test_signal()[:, :4000]
    proc = Processor.iir(BA[0], BA[1])
    proc.put_frame(x, format=STEREO)
    first = proc.get_frame(force=True)
    proc.reset()
    assert proc.input_format is None and proc.samples_in == 0
    proc.put_frame(x, format=STEREO)
    np.testing.assert_array_equal(proc.get_frame(force=True), first)
    proc.reset()
    mono = AudioFormat(44100, 1, "f64")
    proc.put_frame(x[0].astype(np.float64), format=mono)
    assert proc.output_format == mono


def test_several_puts_in_a_row_then_pull_everything():
    proc = Processor.gain(STEREO, gain=2.0)
    x = test_signal()[:, :900]
    for i in range(3):
        proc.put_frame(x[:, i * 300:(i + 1) * 300])
    assert proc.pending_samples() == 900
    blocks = [proc.get_frame() for _ in range(3)]
    assert proc.get_frame() is None
    np.testing.assert_allclose(np.concatenate(blocks, axis=1), 2 * x, rtol=1e-7)


def test_channel_map_formats():
    assert Processor.channel_map(STEREO, out_channels=1).output_format == MONO
    assert Processor.channel_map(MONO, out_channels=6).output_format.channels == 6
    assert Processor.channel_map(STEREO, matrix=MIX_3x2).output_format.channels == 3
    assert Processor.channel_map(STEREO, channels=[0, 0, 1, 1]).output_format.channels == 4


def test_resample_constructor_builds_the_resampler():
    proc = Processor.resample(STEREO, AudioFormat(16000, 2, "f32"), out_chunk_samples=160)
    assert proc.output_format == AudioFormat(16000, 2, "f32")
    assert proc.out_chunk_samples == 160


def test_loudness_constructor_builds_the_normalizer():
    pytest.importorskip("flowengine.ops.processors.loudness")
    proc = Processor.loudness(STEREO, target_lufs=-20.0)
    assert proc.output_format.channels == 2 and proc.output_format.sample_rate == RATE


# ---- compressor static curve ------------------------------------------------------------

def square(level_db: float, seconds: float = 0.5, freq: float = 1000.0) -> np.ndarray:
    """A square wave: |x| is constant, so a peak detector settles exactly on it."""
    n = int(RATE * seconds)
    wave = np.where((np.arange(n) * 2 * freq // RATE) % 2 == 0, 1.0, -1.0)
    return np.tile(10 ** (level_db / 20) * wave, (2, 1)).astype(np.float32)


def settled_level_db(y: np.ndarray) -> float:
    return 20 * math.log10(float(np.abs(y[:, -RATE // 10:]).max()))


@pytest.mark.parametrize("level_db,knee,master,expected_db", [
    (-6.0, 0.0, 0.0, -16.5),       # -20 + (-6 + 20) / 4
    (-6.0, 10.0, 0.0, -16.5),      # far above the knee: same line
    (-6.0, 0.0, 4.0, -12.5),       # + makeup
    (-20.0, 10.0, 0.0, -20.9375),  # at the threshold, knee 10: -20 - 0.75 * 5**2 / 20
    (-30.0, 0.0, 0.0, -30.0),      # between thresholds: unchanged
    (-60.0, 0.0, 0.0, -80.0),      # expander: -40 + (-60 + 40) * 2
])
def test_compressor_static_curve_on_a_settled_tone(level_db, knee, master, expected_db):
    proc = Compressor(STEREO, RATE, threshold_db=-20, knee_width_db=knee, ratio=4,
                      expansion_ratio=2, expansion_threshold_db=-40, attack_time=0.002,
                      release_time=0.1, master_gain_db=master)
    y, _ = run(proc, square(level_db), [24000])
    assert settled_level_db(y) == pytest.approx(expected_db, abs=0.01)
    assert static_curve_db(np.array([level_db]), -20, knee, 4, -40, 2)[0] + master == \
        pytest.approx(expected_db, abs=1e-9)


def test_compressor_on_a_sine_tone_with_slow_release_follows_the_curve():
    t = np.arange(RATE // 2) / RATE
    x = np.tile(10 ** (-6 / 20) * np.sin(2 * np.pi * 1000 * t), (2, 1)).astype(np.float32)
    proc = Compressor(STEREO, RATE, threshold_db=-20, ratio=4, attack_time=0.001,
                      release_time=1.0)
    y, _ = run(proc, x, [x.shape[1]])
    assert settled_level_db(y) == pytest.approx(-16.5, abs=0.2)


def test_compressor_attack_takes_time():
    proc = Compressor(STEREO, RATE, threshold_db=-20, ratio=4, attack_time=0.01, release_time=0.1)
    y, _ = run(proc, square(-6.0), [24000])
    onset = 20 * math.log10(float(np.abs(y[:, :48]).max()))      # first millisecond
    assert onset > -8.0                                          # barely reduced yet
    assert settled_level_db(y) == pytest.approx(-16.5, abs=0.01)


# ---- bad input ----------------------------------------------------------------------------

def test_wrong_dtype_is_refused_not_cast():
    proc = Processor.gain(STEREO, gain=2.0)
    with pytest.raises(FormatError, match=r"^gain input at sample 0: expected dtype float32 "
                                          r"for sample type f32, got int16$"):
        proc.put_frame(np.zeros((2, 10), np.int16))


def test_wrong_channel_count_and_ndim():
    proc = Processor.fir(LOWPASS_TAPS, STEREO)
    proc.put_frame(np.zeros((2, 50), np.float32))
    with pytest.raises(FormatError, match=r"^fir input at sample 50: expected 2 channel\(s\) in "
                                          r"planar \(channels, samples\) layout, got shape \(3, 10\)$"):
        proc.put_frame(np.zeros((3, 10), np.float32))
    with pytest.raises(FormatError, match=r"expected a 2-D array \(channels, samples\), "
                                          r"got 3-D shape \(1, 2, 10\)"):
        proc.put_frame(np.zeros((1, 2, 10), np.float32))


def test_format_changed_mid_stream_names_the_sample_position():
    proc = Processor.identity()
    proc.put_frame(np.zeros((2, 100), np.float32), format=STEREO)
    with pytest.raises(FormatError, match=r"^identity: input format changed mid-stream at sample "
                                          r"100: expected 48000 Hz 2 ch f32 planar, got 44100 Hz "
                                          r"2 ch f32 planar"):
        proc.put_frame(np.zeros((2, 100), np.float32), format=AudioFormat(44100, 2))
    with pytest.raises(FormatError, match=r"changed mid-stream at sample 100: .* got 48000 Hz 2 ch "
                                          r"s16 planar"):
        proc.put_frame(AudioFrame(np.zeros((2, 5), np.int16), AudioFormat(RATE, 2, "s16")))


def test_format_must_be_known_and_no_put_after_flush():
    with pytest.raises(FormatError, match=r"^delay: the input format is not known yet: pass "
                                          r"format="):
        Processor.delay(5).put_frame(np.zeros((2, 10), np.float32))
    proc = Processor.identity(STEREO)
    proc.flush()
    with pytest.raises(FlowError, match=r"put_frame after end of input .* call reset\(\)"):
        proc.put_frame(np.zeros((2, 10), np.float32))


def test_bad_filter_coefficients():
    with pytest.raises(ValueError, match=r"^iir: a\[0\] == 0: a\[0\] normalises the filter and "
                                         r"must be nonzero \(got a = \[0.0, 1.0\]\)$"):
        IirFilter([1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match=r"^iir: unstable filter: largest pole magnitude 1.1 >= 1"):
        IirFilter([1.0], [1.0, -1.1])
    with pytest.raises(ValueError, match=r"^iir sos section 1: unstable filter"):
        IirFilter(sos=[[1, 0, 0, 1, -0.5, 0], [1, 0, 0, 1, -2.5, 1.5]])
    with pytest.raises(ValueError, match=r"^iir: sos section 0 has a0 == 0"):
        IirFilter(sos=[[1, 0, 0, 0, 0.5, 0]])
    with pytest.raises(ValueError, match=r"^iir: give b/a or sos, not both$"):
        IirFilter([1.0], [1.0], sos=SOS)
    with pytest.raises(ValueError, match=r"^fir: taps must be 1-D, got shape \(2, 3\)$"):
        FirFilter(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"^fir: taps has non-finite values"):
        FirFilter([1.0, np.nan])
    with pytest.raises(ValueError, match=r"^lowpass: cutoff_hz 30000 must be below half the "
                                         r"sample rate \(24000 Hz at 48000 Hz\)$"):
        ButterworthFilter("lowpass", 30000, format=STEREO)


def test_gain_and_gain_db_together_is_an_error():
    with pytest.raises(ValueError, match=r"^gain: give gain or gain_db, not both "
                                         r"\(got gain=2.0, gain_db=-6.0\)$"):
        Processor.gain(STEREO, gain=2.0, gain_db=-6.0)
    assert Processor.gain(STEREO, gain_db=6.0).gain == pytest.approx(10 ** (6 / 20))


def test_bad_channel_maps():
    with pytest.raises(ValueError, match=r"^channel_map: no default mix from 3 to 2 channels"):
        ChannelMixer(AudioFormat(RATE, 3), out_channels=2)
    with pytest.raises(ValueError, match=r"^channel_map: matrix has 3 column\(s\) \(input channels\) "
                                         r"but the input has 2 channel\(s\)$"):
        ChannelMixer(STEREO, matrix=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"^channel_map: channel index 2 out of range for 2 input"):
        ChannelMixer(STEREO, channels=[0, 2])
    with pytest.raises(ValueError, match=r"^channel_map: give exactly one of matrix, channels, "
                                         r"out_channels \(got matrix, out_channels\)$"):
        ChannelMixer(STEREO, matrix=np.ones((1, 2)), out_channels=1)


def test_bad_compressor_and_delay_parameters():
    with pytest.raises(ValueError, match=r"^compressor: sample_rate=44100 but the input format is "
                                         r"48000 Hz 2 ch f32 planar$"):
        Compressor(STEREO, 44100)
    with pytest.raises(ValueError, match=r"^compressor: ratio and expansion_ratio must be >= 1"):
        Compressor(STEREO, ratio=0.5)
    with pytest.raises(ValueError, match=r"^compressor: attack_time must be a finite number"):
        Compressor(STEREO, attack_time=float("nan"))
    with pytest.raises(ValueError, match=r"^delay: delay_ms must be a finite number >= 0, got -1.0$"):
        DelayProcessor(-1, STEREO)
    with pytest.raises(ValueError, match=r"^identity: out_chunk_samples must be a positive integer"):
        IdentityProcessor(STEREO, out_chunk_samples=0)
