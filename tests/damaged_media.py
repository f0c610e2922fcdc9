"""Damaged audio files the salvage tests make themselves (no sox or ffmpeg needed): clean
files written by flowengine, the damage of issue #15 applied to their bytes, and the ways to
decode them (pcm mode; packet mode through a Decoder; FFmpeg's command line when present).

Each damage knows which bytes it touched, so a test can map them to the samples of the
clean file (`frame_table`) and compare what is outside with a clean decode.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from flowengine.audio.format import AudioFormat, to_float
from flowengine.ops.codecs.configs import WavDecoderConfig
from flowengine.ops.codecs.decoder import Decoder
from flowengine.ops.io.adtsfile import FRAME, AdtsFileFrames
from flowengine.ops.io.reader import AudioFileReader
from flowengine.ops.io.writer import AudioFileWriter

RATE = 44100
SECONDS = 4.0
CODECS = {"mp3": ".mp3", "aac": ".aac", "flac": ".flac", "opus": ".opus", "wav": ".wav"}
# Samples per codec frame at the decoded rate (Opus decodes at 48 kHz).
FRAME_SAMPLES = {"mp3": 1152, "aac": 1024, "flac": 4608, "opus": 960, "wav": 4096}
DECODED_RATE = {"mp3": RATE, "aac": RATE, "flac": RATE, "opus": 48000, "wav": RATE}
# The samples the reader's pcm mode trims at the start of an MP3 with a LAME tag (encoder
# delay 576 + decoder delay 529) and a Decoder fed its packets keeps.
PACKET_MODE_OFFSET = {"mp3": 1105}
DAMAGES = ("random", "zero", "truncated", "cut", "garbage")


def signal(seconds: float = SECONDS, rate: int = RATE) -> np.ndarray:
    """A stereo chirp and a tone (planar float32): every stretch differs from the others, so
    a correlation finds where a piece belongs."""
    t = np.arange(int(seconds * rate)) / rate
    left = 0.4 * np.sin(2 * np.pi * (300 * t + 60 * t ** 2))
    right = 0.3 * np.sin(2 * np.pi * 523 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t))
    return np.stack([left, right]).astype(np.float32)


def write_clean(folder: Path, codec: str) -> Path:
    """The clean file of `codec` (16-bit WAV, FLAC of 16-bit samples, lossy at 128 kb/s)."""
    path = folder / f"clean{CODECS[codec]}"
    sample_type = "s16" if codec in ("wav", "flac") else "f32"
    pcm = signal()
    if sample_type == "s16":
        pcm = np.round(pcm * 32767).astype(np.int16)
    with AudioFileWriter(path, AudioFormat(RATE, 2, sample_type)) as writer:
        writer.write_pcm(pcm)
    return path


@dataclass(frozen=True)
class Damage:
    kind: str
    start: int          # first byte of the clean file it touched
    end: int            # byte after the last one it touched (the clean file's bytes)
    shift: int = 0      # bytes removed (cut: the clean bytes after it come this much earlier)


def damage(data: bytes, kind: str, codec: str, seed: int = 15) -> tuple[bytes, Damage]:
    """`data` with one kind of damage, and where it is in the clean file's bytes."""
    rng = np.random.default_rng(seed)
    middle = len(data) // 2
    if kind == "random":
        noise = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
        return data[:middle] + noise + data[middle + 2000:], Damage(kind, middle, middle + 2000)
    if kind == "zero":
        return data[:middle] + bytes(2000) + data[middle + 2000:], \
            Damage(kind, middle, middle + 2000)
    if kind == "truncated":
        end = len(data) * 3 // 4 + 17
        return data[:end], Damage(kind, end, len(data))
    if kind == "cut":
        size = 3000 if codec != "wav" else 3000 - 3000 % 4     # whole WAV sample frames
        return data[:middle] + data[middle + size:], Damage(kind, middle, middle + size, size)
    if kind == "garbage":
        junk = rng.integers(0, 256, 1500, dtype=np.uint8).tobytes()
        return junk + data, Damage(kind, 0, 0)
    raise ValueError(kind)


@dataclass(frozen=True)
class Frame:
    pos: int
    size: int
    start: int          # first sample, at the decoded rate, on the pcm mode's timeline
    samples: int


def frame_table(path: Path, codec: str) -> list[Frame]:
    """The clean file's packets: where their bytes are and which samples they decode to (the
    pcm mode's timeline: MP3's gapless trim and Opus's pre-skip come off the start)."""
    rate = DECODED_RATE[codec]
    if codec == "aac":
        with open(path, "rb") as file:
            items = [(offset, len(data)) for kind, offset, data in AdtsFileFrames(file)
                     if kind == FRAME]
        return [Frame(pos, size, i * 1024, 1024) for i, (pos, size) in enumerate(items)]
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for packet in container.demux(stream):
            if not packet.size:
                continue
            time_base = packet.time_base or stream.time_base
            start = round(float(packet.pts * time_base) * rate)
            samples = round(float(packet.duration * time_base) * rate)
            frames.append(Frame(packet.pos, packet.size, start, samples))
    trim = {"mp3": 1105, "opus": 0}.get(codec, 0)
    return [Frame(f.pos, f.size, f.start - trim, f.samples) for f in frames]


def damaged_samples(frames: list[Frame], hurt: Damage) -> tuple[int, int]:
    """The samples of the clean file whose frames (for Ogg: pages) the damage touched."""
    touched = [f for f in frames if f.pos < hurt.end and f.pos + f.size > hurt.start]
    if not touched:
        return 0, 0
    return min(f.start for f in touched), max(f.start + f.samples for f in touched)


def read_pcm(path: Path, on_error: str = "fail", chunk: int = 1024):
    """(planar float32 samples, DamageReport) of the reader in pcm mode (the report gets an
    `output_rate`: the rate of the samples)."""
    with AudioFileReader(path, chunk_samples=chunk, on_error=on_error) as reader:
        blocks = [frame.planar() for frame in reader]
        report = reader.damage
        report.output_rate = reader.format.sample_rate
    pcm = np.concatenate(blocks, axis=1) if blocks else np.zeros((2, 0), np.float32)
    return pcm.astype(np.float32, copy=False), report


def read_packets(path: Path, on_error: str = "fail", chunk: int = 1024):
    """(planar float32 samples, the Decoder's DamageReport, with `output_rate`) of the reader
    in packet mode feeding a Decoder with the same policy."""
    with AudioFileReader(path, mode="packet", on_error=on_error) as reader:
        packets = list(reader)
        codec, source = reader.codec, reader.source_format
    config = WavDecoderConfig(source, chunk_samples=chunk) if codec == "wav" else None
    decoder = Decoder(codec, config, on_error=on_error)
    blocks = []
    for packet in packets:
        decoder.put_packet(packet)
        while (block := decoder.get_frame()) is not None:
            blocks.append(block)
    while (block := decoder.get_frame(force=True)) is not None:
        blocks.append(block)
    pcm = np.concatenate(blocks, axis=1) if blocks else np.zeros((2, 0), np.float32)
    if pcm.dtype != np.float32:     # raw PCM comes in its own sample type: as float, as the
        pcm = to_float(pcm, source.sample_type).astype(np.float32)    # reader gives it
    report = decoder.damage
    fmt = decoder.output_format()
    report.output_rate = fmt.sample_rate if fmt is not None else None
    return pcm, report


def ffmpeg_samples(path: Path) -> int | None:
    """Samples per channel `ffmpeg -i path out.wav` decodes (f32), None without ffmpeg."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    done = subprocess.run([ffmpeg, "-v", "quiet", "-i", str(path), "-f", "f32le", "-ac", "2",
                           "-"], capture_output=True, timeout=60)
    return len(done.stdout) // 8


def lame_library():
    """libmp3lame through ctypes (the system's, or the one PyAV's wheel bundles), or None."""
    import ctypes
    import ctypes.util
    import glob
    import os

    candidates = [ctypes.util.find_library("mp3lame")]
    candidates += glob.glob(os.path.join(os.path.dirname(av.__file__), "..", "av.libs",
                                         "libmp3lame*"))
    for candidate in candidates:
        if candidate:
            try:
                return ctypes.CDLL(candidate)
            except OSError:
                continue
    return None


def mp3_with_crc(lame, pcm: np.ndarray, rate: int = RATE) -> bytes:
    """An MP3 stream whose frames carry a CRC (LAME's error protection; FFmpeg's libmp3lame
    wrapper cannot ask for it): header, CRC-16, side info, main data."""
    import ctypes

    lame.lame_init.restype = ctypes.c_void_p
    flags = ctypes.c_void_p(lame.lame_init())
    try:
        lame.lame_set_num_channels(flags, pcm.shape[0])
        lame.lame_set_in_samplerate(flags, rate)
        lame.lame_set_out_samplerate(flags, rate)
        lame.lame_set_brate(flags, 128)
        lame.lame_set_error_protection(flags, 1)
        lame.lame_set_bWriteVbrTag(flags, 0)
        if lame.lame_init_params(flags) != 0:
            raise RuntimeError("lame_init_params failed")
        interleaved = np.ascontiguousarray(np.round(pcm.T * 32767).astype(np.int16))
        out = ctypes.create_string_buffer(interleaved.shape[0] * 2 + 7200)
        size = lame.lame_encode_buffer_interleaved(
            flags, interleaved.ctypes.data_as(ctypes.c_void_p), interleaved.shape[0], out,
            len(out))
        data = out.raw[:size]
        size = lame.lame_encode_flush(flags, out, len(out))
        return data + out.raw[:size]
    finally:
        lame.lame_close(flags)
