"""flowengine against the `ffmpeg` executable on the same transcode: throughput and output SNR.

The transcode is the pipeline benchmark's ``transcode`` chain (mp3 -> resample
48 kHz -> gain -3 dB -> mp3 128 kbit/s), run in one process by flowengine
and as one ``ffmpeg`` command with the same settings. Both outputs are decoded
(PyAV), aligned by cross-correlation (the encoders' delays differ) and
compared: the SNR of flowengine's output with ffmpeg's as the reference.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

__all__ = ["compare", "decode_mono", "aligned_snr_db"]

_MAX_LAG = 8192  # samples; encoder delays (priming, padding) are well below this


def decode_mono(path: Path) -> np.ndarray:
    """The file's first audio stream as float64 mono (channel mean)."""
    blocks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            pcm = frame.to_ndarray().astype(np.float64)
            if not frame.format.is_planar:
                pcm = pcm.reshape(-1, len(frame.layout.channels)).T
            blocks.append(pcm.mean(axis=0))
    return np.concatenate(blocks) if blocks else np.zeros(0)


def aligned_snr_db(reference: np.ndarray, test: np.ndarray) -> tuple[float, int]:
    """(SNR of `test` against `reference` in dB, lag in samples) after the best alignment."""
    n = min(reference.size, test.size)
    if n <= 2 * _MAX_LAG:
        raise ValueError(f"too short to align: {n} samples, need more than {2 * _MAX_LAG}")
    size = 1 << int(np.ceil(np.log2(2 * n)))
    corr = np.fft.irfft(np.fft.rfft(reference[:n], size) * np.conj(np.fft.rfft(test[:n], size)),
                        size)
    lags = np.concatenate([corr[:_MAX_LAG + 1], corr[-_MAX_LAG:]])
    index = int(np.argmax(lags))
    lag = index if index <= _MAX_LAG else index - lags.size
    ref, cmp = (reference[lag:], test) if lag >= 0 else (reference, test[-lag:])
    m = min(ref.size, cmp.size)
    noise = np.sum((ref[:m] - cmp[:m]) ** 2)
    return float(10 * np.log10(np.sum(ref[:m] ** 2) / max(noise, 1e-20))), lag


def compare(executable: str, seconds: float, make_input: Callable[[Path, float], None],
            chain: Callable[[str, Path, Path], dict], run_inprocess: Callable[[dict], Any],
            repeat: int = 3) -> dict[str, Any]:
    """Time both transcodes `repeat` times (interleaved) and compare their outputs."""
    version = subprocess.run([executable, "-version"], capture_output=True, text=True,
                             timeout=30).stdout.splitlines()[0]
    with tempfile.TemporaryDirectory(prefix="bench-ffmpeg-") as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "input.mp3"
        make_input(source, seconds)
        ours, theirs = tmp / "flowengine.mp3", tmp / "ffmpeg.mp3"
        command = [executable, "-v", "error", "-y", "-i", str(source), "-af", "volume=-3dB",
                   "-ar", "48000", "-c:a", "libmp3lame", "-b:a", "128k", str(theirs)]
        ffmpeg_runs, flowengine_runs = [], []
        for _ in range(repeat):
            begin = time.perf_counter()
            subprocess.run(command, check=True, timeout=600, capture_output=True)
            ffmpeg_runs.append(seconds / (time.perf_counter() - begin))
            begin = time.perf_counter()
            run_inprocess(chain("transcode", source, ours))
            flowengine_runs.append(seconds / (time.perf_counter() - begin))
        snr, lag = aligned_snr_db(decode_mono(theirs), decode_mono(ours))
    return {"command": " ".join(["ffmpeg", *command[1:5], "INPUT", *command[6:-1], "OUT"]),
            "version": version, "audio_seconds": seconds, "ffmpeg_runs": ffmpeg_runs,
            "flowengine_runs": flowengine_runs,
            "ffmpeg_x_realtime": float(np.median(ffmpeg_runs)),
            "flowengine_x_realtime": float(np.median(flowengine_runs)),
            "snr_db": snr, "lag_samples": lag}
