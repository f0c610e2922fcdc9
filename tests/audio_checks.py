"""Measurements the tests make on decoded audio (dominant frequency, delay-aligned correlation),
and real encoded frames to feed the live tests."""

from __future__ import annotations

import numpy as np
from scipy import signal

from flowengine.ops.codecs.encoder import Encoder


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


def process_in_chunks(proc, x: np.ndarray, chunks: list[int] | None = None, pts: int | None = None,
                      **put_kwargs):
    """Feed planar `x` to a processor in `chunks` (pulling as it goes), then drain it.

    Returns (output planar, [(pts, samples) per output block]). `pts` goes with the first chunk.
    """
    chunks = chunks or [x.shape[1]]
    outs, marks, pos = [], [], 0
    for i, size in enumerate(chunks):
        proc.put_frame(x[:, pos:pos + size], pts=pts if i == 0 else None, **put_kwargs)
        pos += size
        while (info := proc.get_frame_info()) is not None:
            outs.append(info[0])
            marks.append((info[1], info[0].shape[1]))
    while (info := proc.get_frame_info(force=True)) is not None:
        outs.append(info[0])
        marks.append((info[1], info[0].shape[1]))
    assert pos == x.shape[1], "chunks must cover the signal"
    assert proc.get_frame(force=True) is None and proc.get_frame() is None, "drained twice"
    if not outs:
        return np.zeros((proc.output_format.channels, 0), np.float32), marks
    return np.concatenate(outs, axis=1), marks


def encoded_chirp_frames(codec: str, seconds: float, rate: int = 48000,
                         channels: int = 2) -> list[bytes]:
    """Real encoded frames (bytes) of a 300-700 Hz chirp: no two frames alike."""
    n = int(rate * seconds)
    t = np.arange(n) / rate
    pcm = np.tile(0.4 * np.sin(2 * np.pi * (300 + 400 * t) * t), (channels, 1)).astype(np.float32)
    encoder = Encoder(codec, None)
    encoder.put_frame(pcm, format={"sample_rate": rate, "channels": channels,
                                   "sample_type": "f32", "planar": True})
    frames = []
    while (frame := encoder.get_frame(force=True)) is not None:
        frames.append(frame)
    return frames
