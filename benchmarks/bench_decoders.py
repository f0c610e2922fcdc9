"""Decoder throughput per codec: flowengine's Decoder vs a plain PyAV loop, same run.

    python benchmarks/bench_decoders.py [--seconds 60] [--out benchmarks/results/decoders.json]

Each codec's stream (48 kHz stereo sine + noise, encoded once with PyAV) is
decoded by (a) flowengine: put_packet of each packet, get_frame until None,
chunk_samples 1024, force at the end; (b) plain PyAV: CodecContext.decode of
each packet, frame.to_ndarray() as float32 (what the Decoder gives), flush. Best of 3 each; prints x real time
and the ratio (target >= 0.95).
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

from flowengine.audio.buffers import Packet  # noqa: E402
from flowengine.ops.codecs.configs import DECODER_CONFIGS, WavDecoderConfig  # noqa: E402
from flowengine.ops.codecs.decoder import Decoder  # noqa: E402
from flowengine.audio.format import AudioFormat  # noqa: E402

RATE = 48000
CHUNK = 1024
REPEATS = 3
CODECS = ("mp3", "aac", "opus", "flac", "wav")
# The same FFmpeg decoders flowengine uses (mp3float: float output, like ours).
FFMPEG_DECODERS = {"mp3": "mp3float", "aac": "aac", "opus": "opus", "flac": "flac"}
_ENCODERS = {"mp3": ("libmp3lame", "fltp"), "aac": ("aac", "fltp"), "opus": ("libopus", "flt"),
             "flac": ("flac", "s16")}


def test_signal(seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    rng = np.random.default_rng(0)
    tone = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    return np.stack([tone, np.roll(tone, 100)]).astype(np.float32)


def encode(codec: str, pcm: np.ndarray) -> tuple[list[bytes], bytes | None]:
    """Packets of `codec` (and the codec's extradata) from PyAV's encoder."""
    if codec == "wav":
        raw = (np.clip(pcm, -1, 1) * 32767).astype(np.int16).T.tobytes()
        step = CHUNK * 4
        return [raw[i:i + step] for i in range(0, len(raw), step)], None
    name, sample_fmt = _ENCODERS[codec]
    ctx = av.CodecContext.create(name, "w")
    ctx.sample_rate, ctx.layout, ctx.format = RATE, "stereo", sample_fmt
    ctx.time_base = Fraction(1, RATE)
    if codec != "flac":
        ctx.bit_rate = 128000
    size = ctx.frame_size or 4608 if codec != "opus" else 960
    packets = []
    for start in range(0, pcm.shape[1], size):
        block = pcm[:, start:start + size]
        if sample_fmt == "s16":
            block = (block * 32767).astype(np.int16)
        if not sample_fmt.endswith("p"):
            block = block.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format=sample_fmt, layout="stereo")
        frame.sample_rate, frame.pts = RATE, start
        packets += [bytes(p) for p in ctx.encode(frame)]
    packets += [bytes(p) for p in ctx.encode(None)]
    packets = [p for p in packets if p]
    if codec == "aac":   # our AAC input is ADTS: give each raw frame its 7-byte header
        packets = [adts_header(len(p)) + p for p in packets]
    return packets, (bytes(ctx.extradata) if ctx.extradata else None)


def adts_header(payload: int) -> bytes:
    """ADTS header for an AAC-LC, 48 kHz (index 3), stereo frame of `payload` bytes."""
    length = payload + 7
    return bytes((0xFF, 0xF1, (1 << 6) | (3 << 2), (2 << 6) | (length >> 11),
                  (length >> 3) & 0xFF, ((length & 7) << 5) | 0x1F, 0xFC))


def run_flowengine(codec: str, packets: list[Packet], extradata: bytes | None) -> int:
    if codec == "wav":
        config = WavDecoderConfig(AudioFormat(RATE, 2, "s16"), chunk_samples=CHUNK)
    elif codec == "opus":
        config = DECODER_CONFIGS[codec](chunk_samples=CHUNK, extradata=extradata)
    else:
        config = DECODER_CONFIGS[codec](chunk_samples=CHUNK)
    dec = Decoder(codec, config)
    samples = 0
    for packet in packets:
        dec.put_packet(packet)
        while (pcm := dec.get_frame()) is not None:
            samples += pcm.shape[1]
    while (pcm := dec.get_frame(force=True)) is not None:
        samples += pcm.shape[1]
    return samples


def run_pyav(codec: str, packets: list[bytes], extradata: bytes | None) -> int:
    if codec == "wav":   # the plain equivalent of raw PCM decoding: bytes -> planar int16 arrays
        return sum(np.frombuffer(p, np.int16).reshape(-1, 2).T.copy().shape[1] for p in packets)
    ctx = av.CodecContext.create(FFMPEG_DECODERS[codec], "r")
    if extradata and codec == "opus":
        ctx.extradata = extradata
    samples = 0
    for data in packets:
        for frame in ctx.decode(av.Packet(data)):
            as_float(frame)
            samples += frame.samples
    for frame in ctx.decode(None):
        as_float(frame)
        samples += frame.samples
    return samples


def as_float(frame: av.AudioFrame) -> np.ndarray:
    """The samples as float32 numpy, which is what flowengine's Decoder delivers for every
    codec (FLAC decodes to s16 in FFmpeg, so the baseline converts it too: same work)."""
    pcm = frame.to_ndarray()
    if pcm.dtype == np.int16:
        return pcm.astype(np.float32) * np.float32(1 / 32768)
    return pcm


def best_of(fn, *args) -> tuple[float, int, list[float]]:
    """(best wall seconds, samples decoded, every repetition's wall seconds)."""
    walls, samples = [], 0
    for _ in range(REPEATS):
        start = time.perf_counter()
        samples = fn(*args)
        walls.append(time.perf_counter() - start)
    return min(walls), samples, walls


def machine_info() -> dict:
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "pyav": av.__version__, "numpy": np.__version__}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", default="benchmarks/results/decoders.json")
    parser.add_argument("--codecs", default=",".join(CODECS))
    args = parser.parse_args(argv)
    pcm = test_signal(args.seconds)
    results = []
    print(f"{'codec':6s} {'flowengine':>12s} {'plain PyAV':>12s} {'ratio':>7s}")
    for codec in args.codecs.split(","):
        raw, extradata = encode(codec, pcm)
        packets = [Packet(p, 1, RATE) for p in raw]
        fe_time, fe_samples, fe_walls = best_of(run_flowengine, codec, packets, extradata)
        av_time, av_samples, av_walls = best_of(run_pyav, codec, raw, extradata)
        row = {"codec": codec, "seconds": args.seconds, "packets": len(raw),
               "flowengine_s": fe_time, "pyav_s": av_time,
               "flowengine_walls_s": fe_walls, "pyav_walls_s": av_walls,
               "flowengine_x_realtime": args.seconds / fe_time, "pyav_x_realtime": args.seconds / av_time,
               "ratio": av_time / fe_time, "flowengine_samples": fe_samples, "pyav_samples": av_samples}
        results.append(row)
        print(f"{codec:6s} {row['flowengine_x_realtime']:11.0f}x {row['pyav_x_realtime']:11.0f}x "
              f"{row['ratio']:7.3f}" + ("" if fe_samples == av_samples else
                                         f"  (samples {fe_samples} vs {av_samples})"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "decoders", "chunk_samples": CHUNK, "repeats": REPEATS,
              "machine": machine_info(), "results": results}
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
