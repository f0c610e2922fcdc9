"""Loudness: ITU-R BS.1770-4 / EBU R128 measurement and streaming normalisation to a target.

Measurement (`measure_loudness`): K-weighting (BS.1770's two biquads, a high
shelf and a high pass, recomputed for any sample rate with libebur128's
analogue parameters, which give the standard's table exactly at 48 kHz),
mean square per channel over 400 ms blocks with 75 % overlap (a 100 ms step),
channel weights (1.0 for L/R/C, 1.41 for surrounds, 0 for LFE; channel order
as FFmpeg's default layouts), an absolute gate at -70 LUFS and a relative gate
10 LU below the loudness of the blocks above the absolute gate.

Streaming normalisation (`LoudnessNormalizer`), mode="window" (the default):
a true two-pass normaliser needs the whole file before its first output
sample, which a stream cannot give, so the gain is computed from a look-ahead
window instead:

* Control points every 100 ms (the BS.1770 step). The gain at control point k
  is target - L_k, where L_k is the gated integrated loudness (both gates,
  evaluated inside the window) of the 400 ms blocks lying within
  `window_s` centred on it, capped at `max_gain_db`. A window with no block
  above the gates (silence) holds the previous gain (unity at the start), so
  silence and near-silence never make the gain explode.
* The per-sample gain is the linear interpolation between control points, so
  it moves smoothly (no zipper noise).
* A look-ahead peak limiter keeps every output sample at or below
  `true_peak_db`: the peak of each sample is the larger of its sample value
  and its 4x-oversampled inter-sample peaks; the needed reduction is taken as
  the minimum over the next 5 ms, then averaged over 5 ms, so the reduction
  ramps in before a peak and never lets one through. Sample peaks are held
  strictly (a final clip guards only against float rounding); true peaks are
  held to the accuracy of the 4x estimate (about 0.1 dB). The oversampled
  signal is computed only where it can matter: an interpolated value is at
  most 2.09x the largest sample its filter reaches, so wherever the gain
  keeps that bound under the ceiling the reduction is 1 without it.
* Latency: half the window plus one 100 ms step (1.6 s for window_s=3), and
  up to one more step while the current step fills.
  Output length equals input length; the delayed tail comes out on flush, pts
  stay continuous (they are the input's, the base class keeps them).
* Everything is a function of absolute sample positions, so processing in
  chunks of any size equals processing the whole signal.

mode="static": a fixed `gain_db` (measured elsewhere, e.g. with
`measure_loudness` over a whole file: gain_db = target - measured) with the
same peak ceiling and a latency of one 100 ms step. mode="file" (two passes
over the input) is not offered: it cannot stream.
"""

from __future__ import annotations

from functools import cache
from math import log10, pi, tan

import numpy as np

from flowengine.errors import ConfigError, FormatError
from flowengine.audio.format import AudioFormat
from flowengine.ops.processors._scipy import ndimage, signal
from flowengine.ops.processors.base import BaseProcessor

__all__ = ["LoudnessNormalizer", "channel_weights", "gated_loudness", "k_weighting_sos",
           "measure_loudness",
           "ABSOLUTE_GATE_LUFS", "RELATIVE_GATE_LU"]

ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
_LOUDNESS_OFFSET = -0.691
_STEPS_PER_BLOCK = 4                   # 400 ms blocks, 100 ms step (75 % overlap)
_LIMITER_LOOKAHEAD_S = 0.005
_OVERSAMPLE = 4
_INTERP_HALF = 8                       # half-length of the interpolation filter, input samples



@cache
def _interpolation_taps() -> np.ndarray:
    """Low-pass for the 4x oversampled true-peak check (built once, on first use)."""
    return signal.firwin(2 * _INTERP_HALF * _OVERSAMPLE + 1, 1.0 / _OVERSAMPLE) * _OVERSAMPLE


@cache
def _interpolation_bound() -> float:
    """The most an interpolated value can exceed the largest |x| its filter reaches: the
    largest sum of |taps| over the four phases (2.09)."""
    taps = np.abs(_interpolation_taps())
    return float(max(taps[phase::_OVERSAMPLE].sum() for phase in range(_OVERSAMPLE)))


# Channel weights by count, in FFmpeg's default layout order (see resample.py).
_WEIGHTS = {1: (1.0,), 2: (1.0, 1.0), 3: (1.0, 1.0, 0.0), 4: (1.0, 1.0, 1.0, 1.41),
            5: (1.0, 1.0, 1.0, 1.41, 1.41), 6: (1.0, 1.0, 1.0, 0.0, 1.41, 1.41),
            7: (1.0, 1.0, 1.0, 0.0, 1.41, 1.41, 1.41),
            8: (1.0, 1.0, 1.0, 0.0, 1.41, 1.41, 1.41, 1.41)}


def k_weighting_sos(sample_rate: int) -> np.ndarray:
    """The K-weighting filter (pre-filter shelf, then RLB high pass) as second-order sections."""
    k = tan(pi * 1681.974450955533 / sample_rate)
    q = 0.7071752369554196
    vh = 10.0 ** (3.999843853973347 / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf = [(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0,
             (vh - vb * k / q + k * k) / a0, 1.0, 2.0 * (k * k - 1.0) / a0,
             (1.0 - k / q + k * k) / a0]
    k = tan(pi * 38.13547087602444 / sample_rate)
    q = 0.5003270373238773
    a0 = 1.0 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    return np.array([shelf, highpass])


def channel_weights(channels: int) -> np.ndarray:
    """BS.1770 weights for `channels` channels in FFmpeg's default layout order."""
    if channels not in _WEIGHTS:
        raise FormatError(f"loudness: no standard channel weights for {channels} channels "
                          f"(1 to 8 supported); pass channel_weights=")
    return np.array(_WEIGHTS[channels])


def _step_samples(sample_rate: int) -> int:
    return (sample_rate + 5) // 10       # 100 ms, as libebur128 rounds it


def _block_loudness(block_powers: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return _LOUDNESS_OFFSET + 10.0 * np.log10(block_powers)


def gated_loudness(block_powers: np.ndarray) -> float | None:
    """Integrated loudness of weighted block mean squares after both gates; None if none pass."""
    loudness = _block_loudness(block_powers)
    passed = loudness > ABSOLUTE_GATE_LUFS
    above_abs = block_powers[passed]
    if above_abs.size == 0:
        return None
    # The means are positive (every block above the absolute gate is): a scalar log10.
    relative_gate = _LOUDNESS_OFFSET + 10.0 * log10(above_abs.mean()) + RELATIVE_GATE_LU
    gated = above_abs[loudness[passed] > relative_gate]
    return _LOUDNESS_OFFSET + 10.0 * log10(gated.mean())


def _blocks_from_steps(step_energy: np.ndarray, step: int) -> np.ndarray:
    """Weighted mean square of each 400 ms block from the energies of its four 100 ms steps."""
    if step_energy.size < _STEPS_PER_BLOCK:
        return np.zeros(0)
    sums = np.convolve(step_energy, np.ones(_STEPS_PER_BLOCK), mode="valid")
    return sums / (_STEPS_PER_BLOCK * step)


def measure_loudness(pcm: np.ndarray, sample_rate: int,
                     weights: np.ndarray | None = None) -> float:
    """Integrated loudness in LUFS (BS.1770-4) of float PCM, planar (channels, samples) or 1-D mono.

    Returns -inf when no 400 ms block passes the gates (silence, or shorter than 400 ms).
    """
    pcm = np.asarray(pcm)
    if pcm.dtype.kind != "f":
        raise FormatError(f"measure_loudness: expected float samples in [-1, 1], got dtype "
                          f"{pcm.dtype}; convert integer PCM with flowengine.audio.format.to_float")
    if pcm.ndim == 1:
        pcm = pcm[np.newaxis, :]
    if pcm.ndim != 2:
        raise FormatError(f"measure_loudness: expected planar (channels, samples) or 1-D, got "
                          f"shape {pcm.shape}")
    weights = channel_weights(pcm.shape[0]) if weights is None else np.asarray(weights, float)
    if weights.shape != (pcm.shape[0],):
        raise FormatError(f"measure_loudness: {pcm.shape[0]} channels but {weights.size} weights")
    filtered = signal.sosfilt(k_weighting_sos(sample_rate), pcm.astype(np.float64), axis=1)
    power = weights @ (filtered * filtered)
    step = _step_samples(sample_rate)
    steps = power.size // step
    step_energy = power[:steps * step].reshape(steps, step).sum(axis=1)
    loudness = gated_loudness(_blocks_from_steps(step_energy, step))
    return float("-inf") if loudness is None else loudness


class LoudnessNormalizer(BaseProcessor):
    """Streaming normalisation to `target_lufs` with a look-ahead window and a peak ceiling.

    format: input format (None: from the first put_frame); output has the same format.
    target_lufs: loudness to reach. window_s: length of the centred measuring window
        (>= 0.4 s). max_gain_db: the most the gain may raise the level.
    true_peak_db: ceiling for output peaks, dBFS. mode: "window" or "static".
    gain_db: the fixed gain of mode="static". weights: channel weights (default BS.1770's).
    See the module docstring for the design.
    """

    name = "loudness"

    def __init__(self, format: AudioFormat | dict | None = None, target_lufs: float = -23.0,
                 window_s: float = 3.0, max_gain_db: float = 20.0, true_peak_db: float = -1.0,
                 mode: str = "window", gain_db: float | None = None,
                 weights: list[float] | None = None,
                 out_chunk_samples: int | None = None) -> None:
        if mode == "file":
            raise ConfigError("loudness: mode='file' (two passes over the input) cannot stream; "
                              "measure the file with measure_loudness() and use mode='static' "
                              "with gain_db = target - measured, or mode='window'")
        if mode not in ("window", "static"):
            raise ConfigError(f"loudness: mode must be 'window' or 'static', got {mode!r}")
        if mode == "static" and gain_db is None:
            raise ConfigError("loudness: mode='static' needs gain_db")
        if mode == "window" and not window_s >= 0.4:
            raise ConfigError(f"loudness: window_s must be at least 0.4 s (one 400 ms block), "
                              f"got {window_s!r}")
        if true_peak_db > 0:
            raise ConfigError(f"loudness: true_peak_db must be <= 0 dBFS, got {true_peak_db!r}")
        self.mode = mode
        self.target_lufs = float(target_lufs)
        self.window_s = float(window_s)
        self.max_gain_db = float(max_gain_db)
        self.true_peak_db = float(true_peak_db)
        self.gain_db = None if gain_db is None else float(gain_db)
        self._weights = None if weights is None else np.asarray(weights, dtype=float)
        super().__init__(format, out_chunk_samples=out_chunk_samples)

    @property
    def latency_samples(self) -> int | None:
        """How far output lags input at a step boundary while streaming (flush drains it)."""
        if self.input_format is None:
            return None
        return (self._half_window + 1) * self._step

    # ---- BaseProcessor hooks --------------------------------------------------------------

    def _configure(self, input_format: AudioFormat) -> None:
        rate, channels = input_format.sample_rate, input_format.channels
        weights = channel_weights(channels) if self._weights is None else self._weights
        if weights.shape != (channels,):
            raise FormatError(f"loudness: {channels} channels but {weights.size} weights")
        self._channel_weights = weights
        self._sos = k_weighting_sos(rate)
        self._zi = np.zeros((self._sos.shape[0], channels, 2))
        self._step = _step_samples(rate)
        self._ramp = np.arange(self._step) / self._step   # position within a step, 0 to 1
        self._half_window = (0 if self.mode == "static"
                             else max(_STEPS_PER_BLOCK // 2, round(self.window_s * 5)))
        self._lookahead = max(1, round(_LIMITER_LOOKAHEAD_S * rate))
        self._ceiling = 10.0 ** (self.true_peak_db / 20.0)
        self._step_energy: list[float] = []      # energy of each complete 100 ms step
        self._partial_energy = 0.0               # of the step being filled
        self._gains: list[float] = []            # linear gain at each control point
        self._fed = 0                            # input samples received
        self._done = 0                           # output samples produced
        # Input kept from _done - context onwards: the limiter and interpolator look back.
        self._context = self._lookahead + _INTERP_HALF + 1
        # The input held, _buffer, is a view of _store, which has room to append to: the
        # look-ahead (1.6 s) copied into a new array with every block cost more than the DSP.
        self._store = np.zeros((channels, 2 * self._context))
        self._buffer = self._store[:, :self._context]
        self._offset = 0                         # of _buffer[:, 0] in _store
        self._buffer_start = -self._context      # absolute position of _buffer[:, 0]

    def _process(self, block: np.ndarray) -> np.ndarray:
        self._measure(block)
        self._fed += block.shape[1]
        self._append(block)
        complete_steps = len(self._step_energy)
        # Control point k is final once every block of its window is complete.
        while len(self._gains) + self._half_window <= complete_steps:
            self._gains.append(self._gain_at(len(self._gains)))
        # Samples of step k need control points k+1 (interpolation) and k+2 (limiter look-ahead).
        ready_until = min((len(self._gains) - 2) * self._step,
                          self._fed - self._lookahead - _INTERP_HALF - 1)
        return self._render(ready_until)

    def _append(self, block: np.ndarray) -> None:
        """Add `block` to the input held: into _store's free room, after moving what is held
        to its front (into a store twice the size needed, when it does not fit)."""
        held, n, offset = self._buffer.shape[1], block.shape[1], self._offset
        if offset + held + n > self._store.shape[1]:
            store = self._store if 2 * (held + n) <= self._store.shape[1] else \
                np.empty((self._store.shape[0], 2 * (held + n)))
            store[:, :held] = self._buffer      # numpy copies overlapping ranges correctly
            self._store, offset = store, 0
        self._store[:, offset + held:offset + held + n] = block
        self._buffer = self._store[:, offset:offset + held + n]
        self._offset = offset

    def _tail(self) -> np.ndarray | None:
        last_point = -(-self._fed // self._step) + 2
        while len(self._gains) <= last_point:
            self._gains.append(self._gain_at(len(self._gains)))
        return self._render(self._fed)

    # ---- measurement and gain -------------------------------------------------------------

    def _measure(self, block: np.ndarray) -> None:
        """K-weight the block and add its weighted energy to the 100 ms steps."""
        filtered, self._zi = signal.sosfilt(self._sos, block, axis=1, zi=self._zi)
        power = self._channel_weights @ (filtered * filtered)
        pos = self._fed
        while power.size:
            room = self._step - pos % self._step
            self._partial_energy += float(power[:room].sum())
            pos += min(room, power.size)
            if pos % self._step == 0:
                self._step_energy.append(self._partial_energy)
                self._partial_energy = 0.0
            power = power[room:]

    def _gain_at(self, point: int) -> float:
        if self.mode == "static":
            return 10.0 ** (self.gain_db / 20.0)
        first = max(0, point - self._half_window)
        last_step = min(len(self._step_energy), point + self._half_window)
        powers = _blocks_from_steps(np.array(self._step_energy[first:last_step]), self._step)
        loudness = gated_loudness(powers) if powers.size else None
        if loudness is None:     # silence: hold the gain, never boost the noise floor
            return self._gains[-1] if self._gains else 1.0
        return 10.0 ** (min(self.target_lufs - loudness, self.max_gain_db) / 20.0)

    def _gain_curve(self, start: int, stop: int) -> np.ndarray:
        """Per-sample gain on [start, stop): linear between control points (the first
        point's gain before position 0, the last point's after it)."""
        step, gains = self._step, self._gains
        last = len(gains) - 1
        if stop <= 0:
            return np.full(stop - start, gains[0])
        first_point, last_point = max(start, 0) // step, (stop - 1) // step
        g = np.array([gains[min(k, last)] for k in range(first_point, last_point + 2)])
        # Each step's ramp from its point's gain to the next's, the steps back to back.
        ramps = (g[:-1, np.newaxis] + (g[1:] - g[:-1])[:, np.newaxis] * self._ramp).ravel()
        origin = first_point * step
        curve = ramps[max(start, 0) - origin:stop - origin]
        if start < 0:
            curve = np.concatenate([np.full(-start, gains[0]), curve])
        return curve

    # ---- output ---------------------------------------------------------------------------

    def _render(self, until: int) -> np.ndarray:
        """Gain and limit input samples [_done, until); drop input no longer needed."""
        start, count = self._done, until - self._done
        if count <= 0:
            return np.zeros((self._buffer.shape[0], 0))
        la = self._lookahead
        # Reduction needed on [start - la, until + la], from gain x peak.
        lo, hi = start - la, until + la + 1
        gain = self._gain_curve(lo, hi)
        out_gain = gain[la:la + count]
        peaks = self._peaks(lo, hi, gain)
        if peaks is not None:    # else no sample needs a reduction: it would be 1 throughout
            with np.errstate(divide="ignore"):
                reduction = np.minimum(1.0, self._ceiling / (gain * peaks))
            # Min over the next `la` samples, then mean over the previous `la`: ramps in
            # before each peak and never exceeds the reduction needed at it. Both in
            # O(samples), not O(samples x la): a running minimum (its centred windows,
            # shifted) and a running sum.
            size = la + 1
            ahead = ndimage.minimum_filter1d(reduction, size)[size // 2:
                                                              size // 2 + len(reduction) - la]
            sums = np.concatenate(([0.0], np.cumsum(ahead)))
            out_gain = out_gain * ((sums[la:] - sums[:-la]) / la)[1:count + 1]
        out = self._slice(start, until) * out_gain
        np.clip(out, -self._ceiling, self._ceiling, out=out)   # float rounding only
        self._done = until
        drop = self._done - self._context - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[:, drop:]
            self._offset += drop
            self._buffer_start += drop
        return out

    def _slice(self, start: int, stop: int) -> np.ndarray:
        """Input samples [start, stop) by absolute position; zeros past the end of input."""
        rel = start - self._buffer_start
        have = self._buffer[:, rel:stop - self._buffer_start]
        missing = (stop - start) - have.shape[1]
        if missing:
            have = np.concatenate([have, np.zeros((have.shape[0], missing))], axis=1)
        return have

    def _peaks(self, start: int, stop: int, gain: np.ndarray) -> np.ndarray | None:
        """Per-sample peak over channels on [start, stop): |x| and its 4x inter-sample values;
        None when `gain` keeps every one under the ceiling.

        An interpolated value is at most _interpolation_bound() x the largest |x| its filter
        reaches (the 17 samples around it), so only where gain x that bound can pass the
        ceiling is the oversampled signal computed; elsewhere the bound stands in for the
        peak (the reduction is 1 either way).
        """
        half = _INTERP_HALF
        x = self._slice(start - half, stop + half)
        n = stop - start
        reach = ndimage.maximum_filter1d(np.abs(x).max(axis=0), 2 * half + 1)
        bound = reach[half:half + n] * _interpolation_bound()
        # The margin covers float rounding between the bound and the computed peaks.
        over = np.flatnonzero(gain * bound > self._ceiling * (1.0 - 1e-9))
        if over.size == 0:
            return None
        first, last = int(over[0]), int(over[-1]) + 1
        bound[first:last] = self._true_peaks(x[:, first:last + 2 * half])
        return bound

    @staticmethod
    def _true_peaks(x: np.ndarray) -> np.ndarray:
        """The peak over channels of x[:, half:-half] and its 4x oversampled values."""
        half = _INTERP_HALF
        n = x.shape[1] - 2 * half
        sample_peak = np.abs(x[:, half:half + n]).max(axis=0)
        up = signal.upfirdn(_interpolation_taps(), x, up=_OVERSAMPLE, axis=1)
        # The filter delays by half its length (4 * half upsampled samples).
        first = 2 * half * _OVERSAMPLE
        up = np.abs(up[:, first:first + n * _OVERSAMPLE])
        # Over channels, then over each sample's four values: elementwise on strided views,
        # which numpy does much faster than a reduction over a short inner axis.
        between = up.max(axis=0)
        for phase in range(_OVERSAMPLE):
            np.maximum(sample_peak, between[phase::_OVERSAMPLE], out=sample_peak)
        return sample_peak
