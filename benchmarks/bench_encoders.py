"""Encoder throughput: flowengine's Encoder against a plain PyAV loop, per codec, same run.

    python benchmarks/bench_encoders.py [--seconds 60] [--repeat 3] [--out benchmarks/results/encoders.json]

Both sides start from the same 48 kHz stereo source array (noise + sine; planar
f32 for the lossy codecs, planar s16 for flac and wav), cut it into codec-frame
sized chunks and encode everything including the final flush. The plain loop
is what a careful user would write by hand: one `av.AudioFrame.from_ndarray`
and one `CodecContext.encode` per frame, with the same codec settings.
"mp3" compares flowengine's default MP3 backend (lameenc) with PyAV's
libmp3lame at the same bitrate and quality; "mp3-pyav" forces flowengine onto
libmp3lame too, which measures the wrapper's own cost. Each side runs
`--repeat` times, alternating, and the best wall time counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowengine.codecs.configs import (AacEncoderConfig, FlacEncoderConfig,  # noqa: E402
                                       Mp3EncoderConfig, OpusEncoderConfig, WavEncoderConfig)
from flowengine.codecs.encoder import Encoder  # noqa: E402
from flowengine.format import AudioFormat, from_float  # noqa: E402

RATE = 48000
CHANNELS = 2
MP3_QUALITY = Mp3EncoderConfig().quality


def make_source(seconds: float) -> np.ndarray:
    """Planar f32 stereo: a 440 Hz sine under white noise (noise keeps the codecs busy)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    return np.clip(tone + rng.normal(0, 0.1, (CHANNELS, t.size)), -1, 1).astype(np.float32)


# name -> (flowengine codec, config factory, PyAV codec, PyAV sample format, frame size, options)
CASES = {
    "mp3": ("mp3", lambda fmt: Mp3EncoderConfig(fmt, chunk_samples=1152, bitrate=128000),
            "libmp3lame", "fltp", 1152, {"bit_rate": 128000, "compression_level": MP3_QUALITY}),
    "mp3-pyav": ("mp3", lambda fmt: Mp3EncoderConfig(fmt, chunk_samples=1152, bitrate=128000,
                                                     backend="pyav"),
                 "libmp3lame", "fltp", 1152, {"bit_rate": 128000, "compression_level": MP3_QUALITY}),
    "aac": ("aac", lambda fmt: AacEncoderConfig(fmt, chunk_samples=1024, bitrate=128000),
            "aac", "fltp", 1024, {"bit_rate": 128000}),
    "opus": ("opus", lambda fmt: OpusEncoderConfig(fmt, chunk_samples=960, bitrate=96000),
             "libopus", "flt", 960, {"bit_rate": 96000}),
    "flac": ("flac", lambda fmt: FlacEncoderConfig(fmt, chunk_samples=4608),
             "flac", "s16", 4608, {}),
    "wav": ("wav", lambda fmt: WavEncoderConfig(fmt, chunk_samples=1024),
            "pcm_s16le", "s16", 1024, {}),
}


def run_flowengine(name: str, source: np.ndarray) -> tuple[int, int]:
    codec, make_config, _, _, frame, _ = CASES[name]
    fmt = AudioFormat(RATE, CHANNELS, "f32" if source.dtype == np.float32 else "s16")
    enc = Encoder(codec, make_config(fmt))
    packets = size = 0
    for start in range(0, source.shape[1], frame):
        enc.put_frame(source[:, start:start + frame])
        while (data := enc.get_frame()) is not None:
            packets += 1
            size += len(data)
    while (data := enc.get_frame(force=True)) is not None:
        packets += 1
        size += len(data)
    return packets, size


def run_plain_pyav(name: str, source: np.ndarray) -> tuple[int, int]:
    _, _, av_codec, av_format, frame, settings = CASES[name]
    cc = av.CodecContext.create(av_codec, "w")
    cc.sample_rate = RATE
    cc.layout = "stereo"
    cc.format = av_format
    cc.time_base = Fraction(1, RATE)
    if "bit_rate" in settings:
        cc.bit_rate = settings["bit_rate"]
    if "compression_level" in settings:
        cc.options = {"compression_level": str(settings["compression_level"])}
    cc.open()
    packed = not av_format.endswith("p")
    packets = size = 0
    for start in range(0, source.shape[1], frame):
        block = source[:, start:start + frame]
        array = block.T.reshape(1, -1) if packed else np.ascontiguousarray(block)
        av_frame = av.AudioFrame.from_ndarray(array, format=av_format, layout="stereo")
        av_frame.sample_rate = RATE
        av_frame.pts = start
        for packet in cc.encode(av_frame):
            packets += 1
            size += packet.size
    for packet in cc.encode(None):
        if packet.size:
            packets += 1
            size += packet.size
    return packets, size


def timed(fn, *args) -> tuple[float, float, tuple[int, int]]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def bench(name: str, source: np.ndarray, repeat: int) -> dict:
    ours, plain = [], []
    for _ in range(repeat):          # alternate so load changes hit both sides alike
        ours.append(timed(run_flowengine, name, source))
        plain.append(timed(run_plain_pyav, name, source))
    seconds = source.shape[1] / RATE
    best_ours, best_plain = min(ours), min(plain)
    return {
        "codec": name,
        "audio_seconds": seconds,
        "flowengine": {"best_wall_s": best_ours[0], "best_cpu_s": min(r[1] for r in ours),
                       "x_realtime": seconds / best_ours[0], "packets": best_ours[2][0],
                       "bytes": best_ours[2][1]},
        "plain_pyav": {"best_wall_s": best_plain[0], "best_cpu_s": min(r[1] for r in plain),
                       "x_realtime": seconds / best_plain[0], "packets": best_plain[2][0],
                       "bytes": best_plain[2][1]},
        "ratio": best_plain[0] / best_ours[0],
        "ratio_cpu": min(r[1] for r in plain) / min(r[1] for r in ours),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio length to encode")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; the best counts")
    parser.add_argument("--codecs", default=",".join(CASES), help="comma-separated subset")
    parser.add_argument("--out", default="benchmarks/results/encoders.json")
    args = parser.parse_args(argv)

    source_f32 = make_source(args.seconds)
    source_s16 = from_float(source_f32, "s16")
    results = []
    print(f"{'codec':<10}{'flowengine x rt':>17}{'plain PyAV x rt':>17}{'ratio':>8}{'target':>8}")
    for name in args.codecs.split(","):
        source = source_s16 if CASES[name][3] == "s16" else source_f32
        row = bench(name, source, args.repeat)
        row["target"] = 2.0 if name == "mp3" else 0.95
        row["meets_target"] = row["ratio"] >= row["target"]
        results.append(row)
        print(f"{name:<10}{row['flowengine']['x_realtime']:>17.1f}{row['plain_pyav']['x_realtime']:>17.1f}"
              f"{row['ratio']:>8.2f}{row['target']:>8.2f}", flush=True)

    report = {
        "benchmark": "encoders",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "av": av.__version__,
                    "numpy": np.__version__},
        "settings": {"seconds": args.seconds, "repeat": args.repeat, "rate": RATE,
                     "channels": CHANNELS, "mp3_quality": MP3_QUALITY},
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
