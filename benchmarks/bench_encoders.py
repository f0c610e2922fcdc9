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
`--repeat` times, alternating, and the best wall time counts ("ratio" =
plain time / flowengine time, higher is better for flowengine). On a shared
machine whole-run times swing, so "lockstep" also runs both sides frame by
frame in alternation and compares the summed times (best of `--repeat`).
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

from flowengine.ops.codecs.configs import (AacEncoderConfig, FlacEncoderConfig,  # noqa: E402
                                       Mp3EncoderConfig, OpusEncoderConfig, WavEncoderConfig)
from flowengine.ops.codecs.encoder import Encoder  # noqa: E402
from flowengine.audio.format import AudioFormat, from_float  # noqa: E402

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


class FlowengineSide:
    """flowengine's Encoder, fed one codec frame of the source per step."""

    def __init__(self, name: str, source: np.ndarray) -> None:
        codec, make_config, _, _, self.frame, _ = CASES[name]
        fmt = AudioFormat(RATE, CHANNELS, "f32" if source.dtype == np.float32 else "s16")
        self.source = source
        self.enc = Encoder(codec, make_config(fmt))
        self.packets = self.bytes = 0

    def step(self, start: int) -> None:
        enc = self.enc
        enc.put_frame(self.source[:, start:start + self.frame])
        while (data := enc.get_frame()) is not None:
            self.packets += 1
            self.bytes += len(data)

    def finish(self) -> None:
        while (data := self.enc.get_frame(force=True)) is not None:
            self.packets += 1
            self.bytes += len(data)


class PlainPyAVSide:
    """The hand-written loop: AudioFrame.from_ndarray + CodecContext.encode per frame."""

    def __init__(self, name: str, source: np.ndarray) -> None:
        _, _, av_codec, self.av_format, self.frame, settings = CASES[name]
        cc = av.CodecContext.create(av_codec, "w")
        cc.sample_rate = RATE
        cc.layout = "stereo"
        cc.format = self.av_format
        cc.time_base = Fraction(1, RATE)
        if "bit_rate" in settings:
            cc.bit_rate = settings["bit_rate"]
        if "compression_level" in settings:
            cc.options = {"compression_level": str(settings["compression_level"])}
        cc.open()
        self.cc = cc
        self.packed = not self.av_format.endswith("p")
        self.source = source
        self.packets = self.bytes = 0

    def step(self, start: int) -> None:
        block = self.source[:, start:start + self.frame]
        array = block.T.reshape(1, -1) if self.packed else np.ascontiguousarray(block)
        frame = av.AudioFrame.from_ndarray(array, format=self.av_format, layout="stereo")
        frame.sample_rate = RATE
        frame.pts = start
        self._take(self.cc.encode(frame))

    def finish(self) -> None:
        self._take(self.cc.encode(None))

    def _take(self, packets) -> None:
        for packet in packets:
            if packet.size:
                self.packets += 1
                self.bytes += len(bytes(packet))     # a user needs the bytes, as Encoder gives


def run_whole(side_type, name: str, source: np.ndarray) -> tuple[float, int, int]:
    """Open, encode everything, flush: (wall seconds, packets, bytes)."""
    begin = time.perf_counter()
    side = side_type(name, source)
    for start in range(0, source.shape[1], side.frame):
        side.step(start)
    side.finish()
    return time.perf_counter() - begin, side.packets, side.bytes


def run_lockstep(name: str, source: np.ndarray) -> tuple[float, float]:
    """Both sides advance one frame at a time, alternating who goes first.

    Whatever else loads the machine then hits both sides alike, so the ratio of
    the summed times is stable even when whole-run times swing by 20 %.
    """
    sides = [FlowengineSide(name, source), PlainPyAVSide(name, source)]
    spent = [0.0, 0.0]
    for index, start in enumerate(range(0, source.shape[1], sides[0].frame)):
        order = (0, 1) if index % 2 == 0 else (1, 0)
        for which in order:
            begin = time.perf_counter()
            sides[which].step(start)
            spent[which] += time.perf_counter() - begin
    for which in (0, 1):
        begin = time.perf_counter()
        sides[which].finish()
        spent[which] += time.perf_counter() - begin
    return spent[0], spent[1]


def bench(name: str, source: np.ndarray, repeat: int) -> dict:
    ours, plain = [], []
    for _ in range(repeat):          # alternate so load changes hit both sides alike
        ours.append(run_whole(FlowengineSide, name, source))
        plain.append(run_whole(PlainPyAVSide, name, source))
    lockstep = min(run_lockstep(name, source) for _ in range(repeat))
    seconds = source.shape[1] / RATE
    best_ours, best_plain = min(ours), min(plain)
    return {
        "codec": name,
        "walls_s": {"flowengine": [r[0] for r in ours], "plain_pyav": [r[0] for r in plain]},
        "audio_seconds": seconds,
        "flowengine": {"best_wall_s": best_ours[0], "x_realtime": seconds / best_ours[0],
                       "packets": best_ours[1], "bytes": best_ours[2]},
        "plain_pyav": {"best_wall_s": best_plain[0], "x_realtime": seconds / best_plain[0],
                       "packets": best_plain[1], "bytes": best_plain[2]},
        "ratio": best_plain[0] / best_ours[0],
        "ratio_lockstep": lockstep[1] / lockstep[0],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio length to encode")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; the best counts")
    parser.add_argument("--codecs", default=",".join(CASES), help="comma-separated subset")
    parser.add_argument("--out", default="benchmarks/results/encoders.json")
    args = parser.parse_args(argv)

    source_f32 = make_source(args.seconds)
    source_s16 = from_float(source_f32, "s16")
    results = []
    print(f"{'codec':<10}{'flowengine x rt':>17}{'plain PyAV x rt':>17}{'ratio':>8}"
          f"{'lockstep':>10}{'target':>8}")
    for name in args.codecs.split(","):
        source = source_s16 if CASES[name][3] == "s16" else source_f32
        row = bench(name, source, args.repeat)
        row["target"] = 2.0 if name == "mp3" else 0.95
        row["meets_target"] = row["ratio"] >= row["target"]
        results.append(row)
        print(f"{name:<10}{row['flowengine']['x_realtime']:>17.1f}{row['plain_pyav']['x_realtime']:>17.1f}"
              f"{row['ratio']:>8.2f}{row['ratio_lockstep']:>10.2f}{row['target']:>8.2f}", flush=True)

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
    return report


if __name__ == "__main__":
    main()
