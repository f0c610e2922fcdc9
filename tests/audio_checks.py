"""Measurements the tests make on decoded audio: dominant frequency, delay-aligned correlation."""

from __future__ import annotations

import numpy as np
from scipy import signal


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    """Frequency (Hz) of the strongest FFT bin of a 1-D signal (Hann window)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def best_lag(reference: np.ndarray, decoded: np.ndarray, max_lag: int = 4000) -> int:
    """Delay (samples, 0..max_lag) at which 1-D `decoded` best matches `reference`.

    Full cross-correlation: a larger lag overlaps less of the signal and so scores
    lower, which picks the true codec delay rather than a later period of a tone.
    """
    scores = signal.correlate(decoded[:len(reference) + max_lag].astype(np.float64),
                              reference.astype(np.float64), mode="full", method="fft")
    zero = len(reference) - 1
    return int(np.argmax(scores[zero:zero + max_lag + 1]))


def aligned_correlation(reference: np.ndarray, decoded: np.ndarray, max_lag: int = 4000) -> float:
    """Correlation coefficient of 1-D `decoded` with `reference` at the best codec delay."""
    lag = best_lag(reference, decoded, max_lag)
    n = min(len(reference), len(decoded) - lag)
    return float(np.corrcoef(decoded[lag:lag + n], reference[:n])[0, 1])
