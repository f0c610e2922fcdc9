"""Loudness: BS.1770-4 measurement against textbook values and pyloudnorm; streaming normaliser."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import butter, resample_poly, sosfilt

from flowengine.errors import ConfigError, FormatError
from flowengine.audio.format import AudioFormat
from flowengine.ops.processors.loudness import (LoudnessNormalizer, channel_weights,
                                            k_weighting_sos, measure_loudness)
from audio_checks import process_in_chunks as run
from test_resample import random_chunks

SR = 48000


def sine(freq: float, seconds: float, amp: float, rate: int = SR) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def speech_like(seconds: float, lufs: float, seed: int = 0, channels: int = 2) -> np.ndarray:
    """Band-passed noise in 4 Hz syllables with pauses, scaled to `lufs`."""
    rng = np.random.default_rng(seed)
    n = int(SR * seconds)
    band = sosfilt(butter(4, [300, 3000], btype="band", fs=SR, output="sos"),
                   rng.standard_normal(n))
    t = np.arange(n) / SR
    x = band * np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2 * ((t % 1.5) < 1.1)
    x = np.stack([x] * channels)
    x *= 10 ** ((lufs - measure_loudness(x, SR)) / 20)
    return x.astype(np.float32)


def music_like(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    env = np.where((t % 0.7) < 0.4, 1.0, 0.01)
    return np.stack([env * (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 3300 * t)),
                     env * 0.2 * np.sin(2 * np.pi * 440 * t)])


# ---- measurement ------------------------------------------------------------------------

def test_k_weighting_matches_the_bs1770_table_at_48k():
    sos = k_weighting_sos(48000)
    np.testing.assert_allclose(sos[0], [1.53512485958697, -2.69169618940638, 1.19839281085285,
                                        1.0, -1.69065929318241, 0.73248077421585], atol=1e-12)
    np.testing.assert_allclose(sos[1], [1.0, -2.0, 1.0, 1.0, -1.99004745483398,
                                        0.99007225036621], atol=1e-12)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_textbook_sine_values(rate):
    s = sine(997, 2.0, 1.0, rate)
    # BS.1770: a 0 dBFS 1 kHz sine in one front channel reads -3.01 LKFS.
    assert measure_loudness(np.stack([s, 0 * s]), rate) == pytest.approx(-3.01, abs=0.01)
    assert measure_loudness(s, rate) == pytest.approx(-3.01, abs=0.01)          # mono
    assert measure_loudness(np.stack([s, s]), rate) == pytest.approx(0.0, abs=0.01)
    assert measure_loudness(0.1 * np.stack([s, s]), rate) == pytest.approx(-20.0, abs=0.01)
    # Surround channels weigh 1.41 (+1.49 dB): 5.0 with only Ls driven.
    five = np.zeros((5, s.size))
    five[3] = s
    assert measure_loudness(five, rate) == pytest.approx(-3.01 + 10 * np.log10(1.41), abs=0.01)


def test_gates_silence_and_short_input():
    assert measure_loudness(np.zeros((2, SR)), SR) == float("-inf")
    assert measure_loudness(sine(997, 0.39, 0.5)[None], SR) == float("-inf")   # < one block
    # Absolute gate: a -80 LUFS tone is below -70 and does not count.
    quiet = np.stack([sine(997, 2.0, 10 ** (-77 / 20))] * 2)
    assert measure_loudness(quiet, SR) == float("-inf")
    # Relative gate: 1 s at -20 then 3 s at -50 -> the quiet blocks are gated out; the
    # 7 all-loud blocks and the 3 straddling ones (3/4, 1/2, 1/4 loud) remain.
    loud = 0.1 * np.stack([sine(997, 1.0, 1.0)] * 2)
    soft = 10 ** (-50 / 20) * np.stack([sine(997, 3.0, 1.0)] * 2)
    expected = -20.0 + 10 * np.log10((7 + 0.75 + 0.5 + 0.25) / 10)
    assert measure_loudness(np.concatenate([loud, soft], axis=1), SR) == \
        pytest.approx(expected, abs=0.01)


def test_measure_rejects_integer_pcm_and_bad_weights():
    with pytest.raises(FormatError, match="expected float samples in \\[-1, 1\\], got dtype int16"):
        measure_loudness(np.zeros((2, SR), np.int16), SR)
    with pytest.raises(FormatError, match="2 channels but 3 weights"):
        measure_loudness(np.zeros((2, SR)), SR, weights=[1, 1, 1])
    with pytest.raises(FormatError, match="no standard channel weights for 9 channels"):
        channel_weights(9)
    assert list(channel_weights(6)) == [1.0, 1.0, 1.0, 0.0, 1.41, 1.41]   # LFE excluded


@pytest.mark.parametrize("rate", [48000, 44100, 22050, 16000])
def test_against_pyloudnorm(rate):
    pyln = pytest.importorskip("pyloudnorm")
    rng = np.random.default_rng(rate)
    for signal in (rng.standard_normal((2, int(rate * 2.05))) * 0.05, music_like(3.0, rate)):
        ours = measure_loudness(signal, rate)
        # "DeMan" is pyloudnorm's exact BS.1770 filter (the same analogue prototype as ours).
        exact = pyln.Meter(rate, filter_class="DeMan").integrated_loudness(signal.T)
        assert ours == pytest.approx(exact, abs=1e-6)
        # Its default K-weighting approximates the shelf (1500 Hz, 4 dB): close, not equal.
        approx = pyln.Meter(rate).integrated_loudness(signal.T)
        assert ours == pytest.approx(approx, abs=0.15 if rate < 44100 else 0.1)


# ---- normaliser ---------------------------------------------------------------------------

def test_quiet_speech_is_raised_to_target():
    x = speech_like(8.0, -35.0)
    y, _ = run(LoudnessNormalizer(AudioFormat(SR, 2), target_lufs=-23.0), x)
    assert y.shape == x.shape
    assert measure_loudness(y[:, 3 * SR:], SR) == pytest.approx(-23.0, abs=0.5)
    assert measure_loudness(y, SR) == pytest.approx(-23.0, abs=0.5)


def test_loud_signal_is_reduced_and_peaks_stay_under_the_ceiling():
    x = speech_like(8.0, -10.0)
    assert np.abs(x).max() > 1.0                     # float input beyond full scale
    y, _ = run(LoudnessNormalizer(AudioFormat(SR, 2), true_peak_db=-1.0), x)
    assert measure_loudness(y[:, 3 * SR:], SR) == pytest.approx(-23.0, abs=0.5)
    assert np.abs(y).max() <= 10 ** (-1.0 / 20)


def test_limiter_holds_sample_and_true_peaks():
    x = speech_like(6.0, -12.0)
    x[:, ::9000] = 0.99                               # sharp clicks the gain would push over
    ceiling_db = -1.0
    y, _ = run(LoudnessNormalizer(AudioFormat(SR, 2), target_lufs=-9.0,
                                  true_peak_db=ceiling_db), x)
    assert 20 * np.log10(np.abs(y).max()) <= ceiling_db
    true_peak = np.abs(resample_poly(y.astype(np.float64), 4, 1, axis=1)).max()
    assert 20 * np.log10(true_peak) <= ceiling_db + 0.1   # the 4x estimate's accuracy
    assert measure_loudness(y, SR) < -9.0 and measure_loudness(y, SR) > -13.0


def test_silence_stays_silence_and_gain_is_capped():
    silence = np.zeros((2, 3 * SR), np.float32)
    y, _ = run(LoudnessNormalizer(AudioFormat(SR, 2)), silence)
    assert y.shape == silence.shape and not y.any()
    hiss = (np.random.default_rng(5).standard_normal((2, 4 * SR)) * 10 ** (-60 / 20)) \
        .astype(np.float32)
    level = measure_loudness(hiss, SR)
    y, _ = run(LoudnessNormalizer(AudioFormat(SR, 2), max_gain_db=20.0), hiss)
    assert measure_loudness(y, SR) == pytest.approx(level + 20.0, abs=0.05)


def test_gain_moves_smoothly_across_a_level_jump():
    t = np.arange(6 * SR) / SR
    x = (np.where(t < 3, 0.01, 0.1) * np.sin(2 * np.pi * 1000 * t))[None]
    proc = LoudnessNormalizer(AudioFormat(SR, 1, "f64"))
    y, _ = run(proc, x)
    crests = np.abs(x[0]) > 0.5 * np.abs(x[0]).max() * np.where(t < 3, 0.1, 1.0)
    gain_db = np.full(t.size, np.nan)
    gain_db[crests] = 20 * np.log10(np.abs(y[0, crests]) / np.abs(x[0, crests]))
    assert np.nanmax(gain_db) - np.nanmin(gain_db) > 15     # it did follow the 20 dB jump
    # ... in ramps, never a step: between neighbouring samples the gain moves by at most
    # 20 dB per 100 ms control interval (0.0042 dB a sample).
    assert np.nanmax(np.abs(np.diff(gain_db))) < 20 / 4800 * 1.05


def test_chunking_equals_whole_and_pts_are_continuous():
    rng = np.random.default_rng(11)
    x = speech_like(5.0, -30.0, seed=3)
    whole, _ = run(LoudnessNormalizer(AudioFormat(SR, 2)), x)
    chunked, marks = run(LoudnessNormalizer(AudioFormat(SR, 2)), x,
                         random_chunks(x.shape[1], rng, high=6000), pts=96000)
    assert chunked.shape == whole.shape == x.shape
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-5)
    assert marks[0][0] == 96000
    for (pts, n), (next_pts, _) in zip(marks, marks[1:]):
        assert next_pts == pts + n
    assert sum(n for _, n in marks) == x.shape[1]


def test_output_waits_for_the_lookahead_and_everything_comes_out_on_flush():
    proc = LoudnessNormalizer(AudioFormat(SR, 2, "s16", planar=False), window_s=3.0)
    assert proc.latency_samples == (15 + 1) * 4800
    pcm = (speech_like(2.0, -30.0) * 32767).astype(np.int16).T.copy()
    proc.put_frame(pcm)
    out = proc.get_frame(layout="interleaved")
    assert out.shape == (2 * SR - proc.latency_samples, 2) and out.dtype == np.int16
    rest = proc.get_frame(force=True, layout="interleaved")
    assert out.shape[0] + rest.shape[0] == 2 * SR
    assert proc.samples_in == proc.samples_out == 2 * SR


def test_static_mode_applies_a_fixed_gain_under_the_ceiling():
    x = speech_like(2.0, -30.0, channels=1)
    y, _ = run(LoudnessNormalizer(AudioFormat(SR, 1), mode="static", gain_db=6.0), x)
    np.testing.assert_allclose(y, x * 10 ** (6 / 20), rtol=1e-6, atol=1e-7)
    loud, _ = run(LoudnessNormalizer(AudioFormat(SR, 1), mode="static", gain_db=40.0), x)
    assert np.abs(loud).max() <= 10 ** (-1.0 / 20)


def test_bad_configurations_are_config_errors():
    with pytest.raises(ConfigError, match="mode='file' .* cannot stream"):
        LoudnessNormalizer(AudioFormat(SR, 2), mode="file")
    with pytest.raises(ConfigError, match="mode='static' needs gain_db"):
        LoudnessNormalizer(AudioFormat(SR, 2), mode="static")
    with pytest.raises(ConfigError, match="window_s must be at least 0.4 s"):
        LoudnessNormalizer(AudioFormat(SR, 2), window_s=0.1)
    with pytest.raises(ConfigError, match="true_peak_db must be <= 0 dBFS, got 3"):
        LoudnessNormalizer(AudioFormat(SR, 2), true_peak_db=3)
    proc = LoudnessNormalizer(AudioFormat(SR, 2))
    proc.put_frame(np.zeros((2, 100), np.float32))
    with pytest.raises(FormatError, match="at sample 100: expected dtype float32"):
        proc.put_frame(np.zeros((2, 100), np.float64))
