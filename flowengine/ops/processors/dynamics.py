"""Compressor / expander: a per-channel peak envelope drives a soft-knee gain curve.

Signal chain, per channel and per sample (Giannoulis, Massberg & Reiss,
"Digital Dynamic Range Compressor Design", JAES 2012):

1. Level detection, the paper's *decoupled peak detector* on |x|:
       peak[n]  = max(|x[n]|, r * peak[n-1])           r = exp(-1 / (release_time * sr))
       level[n] = a * level[n-1] + (1 - a) * peak[n]    a = exp(-1 / (attack_time * sr))
   The peak holds and decays with the release time constant; the one-pole
   smoother sets the attack. (Both stages vectorise: the first is a running
   maximum in the log domain, the second a linear filter, so the detector runs
   on whole blocks in numpy instead of a Python loop over samples.)
2. Gain computer on L = 20*log10(level) (floored at -200 dB), soft knee of
   width W around each threshold (the paper's quadratic knee):
       above the threshold T:            out = T + (L - T) / ratio
       below the expansion threshold E:  out = E + (L - E) * expansion_ratio
       otherwise:                        out = L
3. Output = x * 10**((out - L + master_gain_db) / 20).
"""

from __future__ import annotations

import math

import numpy as np
from flowengine.ops.processors._scipy import signal

from flowengine.audio.format import AudioFormat
from flowengine.ops.processors.base import BaseProcessor

__all__ = ["Compressor", "static_curve_db", "LEVEL_FLOOR_DB"]

LEVEL_FLOOR_DB = -200.0
# The log-domain running peak adds and removes n*log(release); splitting huge blocks keeps
# that sum, and so its rounding error, small.
_MAX_DETECTOR_BLOCK = 1 << 16
_LEVEL_FLOOR = 10.0 ** (LEVEL_FLOOR_DB / 20.0)


def static_curve_db(level_db: np.ndarray, threshold_db: float, knee_width_db: float,
                    ratio: float, expansion_threshold_db: float,
                    expansion_ratio: float) -> np.ndarray:
    """The output level (dB) the gain computer aims at for an input level (dB)."""
    x = np.asarray(level_db, dtype=np.float64)
    t, w, e = threshold_db, knee_width_db, expansion_threshold_db
    y = x.copy()
    y = np.where(2 * (x - t) > w, t + (x - t) / ratio, y)
    y = np.where(2 * (e - x) > w, e + (x - e) * expansion_ratio, y)
    if w > 0:
        in_knee = 2 * np.abs(x - t) <= w
        y = np.where(in_knee, x + (1 / ratio - 1) * (x - t + w / 2) ** 2 / (2 * w), y)
        in_expansion_knee = 2 * np.abs(x - e) <= w
        y = np.where(in_expansion_knee,
                     x + (1 - expansion_ratio) * (x - e - w / 2) ** 2 / (2 * w), y)
    return y


def _time_constant(seconds: float, sample_rate: int) -> float:
    """One-pole coefficient exp(-1/(t*sr)); t == 0 means instantaneous (0)."""
    return 0.0 if seconds == 0 else math.exp(-1.0 / (seconds * sample_rate))


def _running_peak(magnitude: np.ndarray, release: float, previous: np.ndarray) -> np.ndarray:
    """peak[n] = max(m[n], release * peak[n-1]) for every row, from peak[-1] = previous.

    Unrolled: peak[n] = max_k m[k] * release**(n-k), i.e. in logs
    n*log(release) + running max of (log m[k] - k*log(release)).
    """
    if release == 0.0:
        return magnitude.copy()
    log_release = math.log(release)
    ramp = np.arange(magnitude.shape[1]) * log_release
    with np.errstate(divide="ignore"):
        shifted = np.log(magnitude) - ramp
        carried = np.log(previous) + log_release
    running = np.maximum.accumulate(shifted, axis=1)
    np.maximum(running, carried[:, np.newaxis], out=running)
    return np.exp(running + ramp)


class Compressor(BaseProcessor):
    """Downward compressor above threshold_db plus downward expander below
    expansion_threshold_db, with soft knee, attack/release (seconds) and makeup gain.

    ratio and expansion_ratio are >= 1 (1 = off). The static curve's numbers:
    a steady -6 dB peak over a -20 dB threshold at ratio 4 comes out at
    -20 + 14/4 = -16.5 dB (+ master_gain_db).
    """

    name = "compressor"

    def __init__(self, format: AudioFormat | dict | None = None, sample_rate: int | None = None,
                 threshold_db: float = -20.0, knee_width_db: float = 0.0, ratio: float = 4.0,
                 expansion_ratio: float = 1.0, expansion_threshold_db: float = -60.0,
                 attack_time: float = 0.005, release_time: float = 0.05,
                 master_gain_db: float = 0.0, **options) -> None:
        values = dict(threshold_db=threshold_db, knee_width_db=knee_width_db, ratio=ratio,
                      expansion_ratio=expansion_ratio,
                      expansion_threshold_db=expansion_threshold_db, attack_time=attack_time,
                      release_time=release_time, master_gain_db=master_gain_db)
        for key, value in values.items():
            if not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
                raise ValueError(f"compressor: {key} must be a finite number, got {value!r}")
        if ratio < 1 or expansion_ratio < 1:
            raise ValueError(f"compressor: ratio and expansion_ratio must be >= 1 (1 = off), "
                             f"got ratio={ratio!r}, expansion_ratio={expansion_ratio!r}")
        if knee_width_db < 0 or attack_time < 0 or release_time < 0:
            raise ValueError(f"compressor: knee_width_db, attack_time and release_time must be "
                             f">= 0, got {knee_width_db!r}, {attack_time!r}, {release_time!r}")
        if expansion_ratio != 1 and expansion_threshold_db + knee_width_db > threshold_db:
            raise ValueError(f"compressor: the expander's knee must end below the compressor's: "
                             f"expansion_threshold_db + knee_width_db "
                             f"({expansion_threshold_db + knee_width_db:g}) > threshold_db "
                             f"({threshold_db:g})")
        self.sample_rate = None if sample_rate is None else int(sample_rate)
        self.curve = dict(threshold_db=float(threshold_db), knee_width_db=float(knee_width_db),
                          ratio=float(ratio), expansion_threshold_db=float(expansion_threshold_db),
                          expansion_ratio=float(expansion_ratio))
        self.attack_time, self.release_time = float(attack_time), float(release_time)
        self.master_gain_db = float(master_gain_db)
        super().__init__(format, **options)

    def _configure(self, input_format: AudioFormat) -> None:
        if self.sample_rate is not None and self.sample_rate != input_format.sample_rate:
            raise ValueError(f"compressor: sample_rate={self.sample_rate} but the input format is "
                             f"{input_format}")
        rate = input_format.sample_rate
        self._attack = _time_constant(self.attack_time, rate)
        self._release = _time_constant(self.release_time, rate)
        self._peak = np.zeros(input_format.channels)
        self._smoother_state = np.zeros((input_format.channels, 1))

    def _process(self, block: np.ndarray) -> np.ndarray:
        if block.shape[1] > _MAX_DETECTOR_BLOCK:
            return np.concatenate([self._process(block[:, start:start + _MAX_DETECTOR_BLOCK])
                                   for start in range(0, block.shape[1], _MAX_DETECTOR_BLOCK)],
                                  axis=1)
        peak = _running_peak(np.abs(block), self._release, self._peak)
        self._peak = peak[:, -1].copy()
        a = self._attack
        level, self._smoother_state = signal.lfilter(
            [1.0 - a], [1.0, -a], peak, axis=-1, zi=self._smoother_state)
        level_db = 20.0 * np.log10(np.maximum(level, _LEVEL_FLOOR))
        gain_db = static_curve_db(level_db, **self.curve) - level_db + self.master_gain_db
        return block * 10.0 ** (gain_db / 20.0)
