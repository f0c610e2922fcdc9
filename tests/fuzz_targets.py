"""Fuzz targets and the worker that runs them, shared by tests/test_fuzz.py (a few hundred
cases per target) and benchmarks/fuzz.py (10 000+).

A target is what one case does with flowengine (`run`), the exception types a case may
raise (`allowed`: anything else is a bug) and a hypothesis strategy of cases built by
mutating valid inputs (bit flips, byte insertions and deletions, truncation, splices of
two inputs, random slicing). Cases are plain data (bytes, str, int, lists, dicts) so a
failing one is saved and replayed as msgpack.

Cases run one at a time in a `FuzzWorker` process, never in the caller's: a case that
does not answer within the deadline is a hang (the worker is killed, the hang reported,
a new worker started); the worker's address space is capped (RLIMIT_AS), so a case that
allocates without bound ends in MemoryError or a dead worker, both reported; a worker
killed by a signal (a crash in C code) is reported with the case that did it. The
worker's RSS comes back with every answer, so growth over a run can be checked.
"""

from __future__ import annotations

import base64
import multiprocessing
import os
import resource
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import av
import msgpack
import numpy as np
import yaml
from hypothesis import strategies as st

from flowengine.audio.buffers import Packet
from flowengine.ops.codecs.configs import DECODER_CONFIGS, ENCODER_CONFIGS, WavDecoderConfig
from flowengine.ops.codecs.decoder import Decoder
from flowengine.ops.codecs.encoder import Encoder
from flowengine.engine.wire.codec import decode
from flowengine.config import load_run_config, load_source, resolve_source
from flowengine.errors import CodecError, ConfigError, FormatError, WireError
from flowengine.audio.format import AudioFormat
from flowengine.ops.io.generator import ToneSource
from flowengine.ops.io.reader import AudioFileReader
from flowengine.ops.io.writer import AudioFileWriter
from flowengine.live.framing import (CLOSED, END_MARKER, NEED_DATA, FrameDecoder,
                                     encode_frame)
from flowengine.live.messages import (clock_message, control_frame_bytes, hello_message,
                                      is_control_frame, is_frame_of, parse_control, probe_frame)
from test_wire import _decode_checked, _valid_messages, mutated_messages

__all__ = ["Target", "TARGETS", "SELF_TESTS", "Outcome", "FuzzWorker", "mutated_bytes",
           "encode_case", "decode_case"]

REPO = Path(__file__).resolve().parents[1]
DECODER_CODECS = ("mp3", "aac", "opus", "flac", "wav")
READER_EXTENSIONS = (".mp3", ".aac", ".m4a", ".opus", ".flac", ".wav")
# Bounds on what one case may hand out: far above any valid input of these sizes.
_MAX_EVENTS = 1_000_000


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[Any], str | None]       # returns an outcome label, or None for "ok"
    allowed: tuple[type[BaseException], ...]
    cases: Callable[[], st.SearchStrategy]


# ------------------------------------------------------------------ mutations

_BYTE_OPS = ("flip", "set", "insert", "delete", "truncate", "splice", "duplicate", "zero")
_MAGIC_BYTES = st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0xFE, 0x01])


@st.composite
def mutated_bytes(draw, seeds: tuple[bytes, ...], max_ops: int = 4) -> bytes:
    """One of `seeds`, changed by 0..max_ops mutations (0 keeps a valid input in the mix)."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(st.sampled_from(_BYTE_OPS))
        at = draw(st.integers(0, len(data)))
        if op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif op == "splice":    # this input up to `at`, then another from anywhere
            other = draw(st.sampled_from(seeds))
            data[at:] = other[draw(st.integers(0, len(other))):]
        elif op == "truncate":
            del data[at:]
        elif not data:
            continue
        elif op == "flip":
            data[min(at, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[min(at, len(data) - 1)] = draw(_MAGIC_BYTES | st.integers(0, 255))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 512))]
        elif op == "duplicate":
            size = draw(st.integers(1, 2048))
            data[draw(st.integers(0, len(data))):0] = data[at:at + size]
        elif op == "zero":
            size = draw(st.integers(1, 256))
            data[at:at + size] = bytes(len(data[at:at + size]))
    return bytes(data)


def slices(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


CUTS = st.lists(st.integers(0, 1 << 16), max_size=12)


# ------------------------------------------------------------------ seeds

def _tone(seconds: float, rate: int, channels: int, waveform: str) -> np.ndarray:
    source = ToneSource(frequency=700, amplitude=0.4, seconds=seconds, sample_rate=rate,
                        channels=channels, waveform=waveform, chunk_samples=rate)
    return np.concatenate([frame.data for frame in source], axis=1)


@lru_cache(maxsize=None)
def encoded_packets(codec: str, rate: int, channels: int, waveform: str = "sine"
                    ) -> tuple[tuple[bytes, ...], bytes | None]:
    """0.25 s of a tone encoded by flowengine's Encoder: (packet payloads, extradata)."""
    fmt = AudioFormat(rate, channels)
    encoder = Encoder(codec, ENCODER_CONFIGS[codec](fmt))
    encoder.put_frame(_tone(0.25, rate, channels, waveform))
    packets = list(iter(lambda: encoder.get_packet(force=True), None))
    return tuple(p.data for p in packets), encoder.extradata


_STREAM_SEEDS = {
    "mp3": [(44100, 2, "sine"), (22050, 1, "bursts"), (48000, 2, "chirp")],
    "aac": [(44100, 2, "sine"), (48000, 1, "bursts")],
    "opus": [(48000, 2, "sine"), (16000, 1, "bursts")],
    "flac": [(44100, 2, "sine"), (48000, 1, "bursts")],
}
_WAV_FORMATS = [(8000, 1, "s16"), (44100, 2, "f32"), (22050, 2, "u8")]


@lru_cache(maxsize=None)
def stream_seeds(codec: str) -> tuple[bytes, ...]:
    """Whole byte streams of a self-delimiting codec (mp3, aac, flac) or raw PCM (wav)."""
    if codec == "wav":
        return tuple(_tone(0.1, 8000, 2, "sine").astype(np.float32).tobytes()[:6000 * k]
                     for k in (1, 2))
    return tuple(b"".join(encoded_packets(codec, *seed)[0]) for seed in _STREAM_SEEDS[codec])


@lru_cache(maxsize=None)
def file_seeds() -> dict[str, tuple[bytes, ...]]:
    """Small files of every container the reader is expected to open, by extension."""
    seeds: dict[str, tuple[bytes, ...]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ext in READER_EXTENSIONS:
            found = []
            for rate, channels in ((44100, 2), (48000, 1)):
                path = Path(tmp) / f"seed{rate}{ext}"
                writer = AudioFileWriter(path, AudioFormat(rate, channels))
                writer.write_pcm(_tone(0.2, rate, channels, "sine"))
                writer.finalize()
                found.append(path.read_bytes())
            seeds[ext] = tuple(found)
    return seeds


@lru_cache(maxsize=None)
def ingest_seeds() -> tuple[bytes, ...]:
    """TCP ingest byte streams: token, hello, clock-stamped MP3/ADTS frames, end markers."""
    streams = []
    for codec, (rate, channels, waveform) in (("mp3", _STREAM_SEEDS["mp3"][0]),
                                               ("aac", _STREAM_SEEDS["aac"][1])):
        frames = encoded_packets(codec, rate, channels, waveform)[0][:6]
        wire = [encode_frame(b"secret-token"),
                encode_frame(control_frame_bytes(hello_message("live", codec=codec)))]
        for seq, frame in enumerate(frames):
            wire += [encode_frame(control_frame_bytes(clock_message(1.7e9 + seq, seq))),
                     encode_frame(frame)]
        streams.append(b"".join(wire) + END_MARKER + encode_frame(frames[0]) + END_MARKER)
    return tuple(streams)


@lru_cache(maxsize=None)
def config_seeds() -> tuple[str, ...]:
    return tuple(p.read_text() for p in sorted((REPO / "configs").glob("*.yaml")))


# ------------------------------------------------------------------ targets: wire

def run_wire(parts: list[bytes]) -> str:
    """decode() gives WireError or a message whose buffers, built with any caps, match its
    payload (test_wire)."""
    decode(parts)              # WireError goes out: the allowed answer
    _decode_checked(parts)     # accepted: its buffers match its payload
    return "decoded"


def wire_cases() -> st.SearchStrategy:
    return mutated_messages() | st.lists(st.binary(max_size=200), max_size=3) \
        | st.sampled_from([[bytes(f) for f in m] for m in _valid_messages()])


# ------------------------------------------------------------------ targets: ingest framing

def run_framing(case: dict) -> str:
    """The framing cuts any byte stream, cut anywhere, into frames within the size limit,
    keeps at most one frame plus one read buffered, and stays broken after an error; control
    frames parse to a dict or WireError; audio frames probe without error."""
    limit = case["max"]
    decoder = FrameDecoder(max_frame_bytes=limit, where="fuzz")
    frames = ends = payload = 0
    try:
        for chunk in [*slices(case["data"], case["cuts"]), b""]:
            decoder.receive_data(chunk)
            assert decoder.buffered <= limit + 4 + len(chunk), "framing holds too much"
            for _ in range(_MAX_EVENTS):
                event = decoder.next_event()
                if event is NEED_DATA or event is CLOSED:
                    break
                if isinstance(event, bytes):
                    assert 0 < len(event) <= limit, f"frame of {len(event)} bytes, limit {limit}"
                    frames, payload = frames + 1, payload + len(event)
                    _check_ingest_frame(event)
                else:
                    ends += 1
            else:
                raise AssertionError("next_event never answered NEED_DATA")
    except WireError as exc:
        try:
            decoder.next_event()
        except WireError as again:
            assert str(again) == str(exc), "a broken decoder changed its error"
        else:
            raise AssertionError("the decoder went on after an error") from None
        raise
    assert (decoder.frames, decoder.ends) == (frames, ends)
    assert decoder.offset == payload + 4 * (frames + ends) == len(case["data"])
    return "closed"


def _check_ingest_frame(frame: bytes) -> None:
    if is_control_frame(frame):
        try:
            assert isinstance(parse_control(frame, "fuzz"), dict)
        except WireError:
            pass        # refused with a message: what the ingest does with it too
        return
    info = probe_frame(frame)
    if info is not None:
        assert info.sample_rate > 0 and info.channels > 0 and info.chunk_samples > 0
    is_frame_of("mp3", frame)
    is_frame_of("aac", frame)


def framing_cases() -> st.SearchStrategy:
    return st.fixed_dictionaries({
        "data": mutated_bytes(ingest_seeds()) | st.binary(max_size=300),
        "cuts": CUTS,
        "max": st.sampled_from([1, 7, 100, 1000, 1 << 16]),
    })


# ------------------------------------------------------------------ targets: YAML config

def run_config(case: dict) -> str:
    """Load and validate YAML text (from a file when `via_file`): a run or ConfigError."""
    if case["via_file"]:
        path = Path("fuzz.yaml")
        path.write_text(case["text"], encoding="utf-8", errors="surrogatepass")
        load_run_config(path, case["overrides"])
    else:
        resolve_source(load_source(case["text"], "fuzz.yaml"), case["overrides"],
                       check_paths=False)
    return "valid"


_YAML_TOKENS = ["&a ", "*a", "<<: *a", "!!python/object:os.system", "!!binary", "{", "}", "[",
                "]", "- ", ": ", "? ", "\t", "\x00", "|", ">", "'", '"', "#", "---", "...",
                "~", "null", "1e400", "-.inf", ".nan", "0x1F", "0o17", "2024-01-01", "yes",
                "\ufeff", "\ud800", "%YAML 1.1", "!", "&a [*a]", "{a: &a {b: *a}}", "\r\n"]
_TOP_KEYS = ["name", "description", "stages", "block_samples", "transport", "fuse", "security",
             "bogus"]
_STAGE_KEYS = ["name", "op", "params", "inputs", "replicas", "ordered", "hwm", "on_error",
               "max_errors", "fuse_with", "bogus"]
_OPS = ["tone", "file_source", "mp3_decoder", "mp3_encoder", "opus_encoder", "aac_encoder",
        "resample", "gain", "loudness", "mix", "file_sink", "tcp_ingest", "no_such_op"]
_PARAMS = ["path", "frequency", "seconds", "sample_rate", "channels", "bitrate", "gain_db",
           "mode", "target_lufs", "amplitude", "chunk_samples", "port", "token", "x"]
_YAML_SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
                 | st.text(max_size=30) | st.sampled_from(_OPS + _PARAMS + ["../x", "/dev/null",
                                                                          "out/{stream}.mp3"]))
_YAML_VALUES = _YAML_SCALARS | st.lists(_YAML_SCALARS, max_size=3) \
    | st.dictionaries(st.sampled_from(_PARAMS), _YAML_SCALARS, max_size=3)


@st.composite
def _structured_config(draw) -> str:
    """A random document shaped like a run config, dumped as YAML."""
    stages = []
    for _ in range(draw(st.integers(0, 4))):
        keys = draw(st.lists(st.sampled_from(_STAGE_KEYS), max_size=3, unique=True))
        stage = {k: draw(_YAML_VALUES) for k in keys}
        stage["op"] = draw(st.sampled_from(_OPS) | _YAML_SCALARS)
        stage["params"] = draw(st.dictionaries(st.sampled_from(_PARAMS), _YAML_SCALARS,
                                               max_size=3))
        stages.append(stage)
    doc = {k: draw(_YAML_VALUES) for k in draw(st.lists(st.sampled_from(_TOP_KEYS),
                                                        max_size=3, unique=True))}
    doc["stages"] = stages
    return yaml.safe_dump(doc, allow_unicode=draw(st.booleans()), sort_keys=False)


@st.composite
def _mutated_text(draw, seeds: tuple[str, ...] | st.SearchStrategy) -> str:
    """YAML text changed line- and character-wise, with YAML's own special tokens."""
    text = draw(seeds) if isinstance(seeds, st.SearchStrategy) else draw(st.sampled_from(seeds))
    lines = text.split("\n")
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["token", "char", "dup_line", "del_line", "indent",
                                   "swap", "cut"]))
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        line = lines[i] if lines else ""
        at = draw(st.integers(0, len(line)))
        if op == "token":
            line = line[:at] + draw(st.sampled_from(_YAML_TOKENS)) + line[at:]
        elif op == "char":
            line = line[:at] + draw(st.characters()) + line[at + 1:]
        elif op == "dup_line":
            lines.insert(i, line)
        elif op == "del_line" and lines:
            del lines[i]
            continue
        elif op == "indent":
            line = " " * draw(st.integers(0, 9)) + line.lstrip(" ")
        elif op == "swap" and lines:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            continue
        elif op == "cut":
            line = line[:at]
        if lines:
            lines[i] = line
    return "\n".join(lines)


_OVERRIDES = st.lists(
    st.builds("{}.{}={}".format, st.sampled_from(["tone", "sink", "gain", "src", "x", ""]),
              st.sampled_from(_PARAMS + _STAGE_KEYS), _YAML_SCALARS.map(str))
    | st.text(max_size=20), max_size=2)


def config_cases() -> st.SearchStrategy:
    texts = _mutated_text(config_seeds()) | _mutated_text(_structured_config()) \
        | st.text(max_size=200)
    return st.fixed_dictionaries({"text": texts, "overrides": _OVERRIDES,
                                  "via_file": st.booleans()})


# ------------------------------------------------------------------ targets: decoders

def run_decoder(case: dict) -> str:
    """Feed a (damaged) stream, cut anywhere or as packets, and drain: blocks of the chunk
    size with continuous pts and one channel count; CodecError only in "raise" mode."""
    codec, chunk = case["codec"], case["chunk"]
    if codec == "wav":
        config = WavDecoderConfig(AudioFormat(*case["fmt"]), chunk_samples=chunk)
    elif codec == "opus":
        config = DECODER_CONFIGS[codec](chunk_samples=chunk, extradata=case["extradata"])
    else:
        config = DECODER_CONFIGS[codec](chunk_samples=chunk)
    decoder = Decoder(codec, config, on_error=case["on_error"])
    state = {"pts": None, "channels": None, "errors": 0}

    def collect(force: bool) -> None:
        for _ in range(_MAX_EVENTS):
            try:
                info = decoder.get_frame_info(force=force)
            except CodecError:
                _count_error(state, case)
                continue
            if info is None:
                return
            _check_block(state, *info, chunk, force)
        raise AssertionError("get_frame_info never answered None")

    frame = _PACKET_SAMPLES.get(codec, 960)
    jumps = case.get("jumps") or {}
    pts = 0
    for n, data in enumerate(case["chunks"]):
        pts += jumps.get(n, 0)          # lost packets, or a broken timestamp (salvage.py)
        try:
            if case["packets"]:
                decoder.put_packet(Packet(data, 1, 48000, pts, pts, frame, 1, codec, "fz"))
            else:
                decoder.put_frame(data)
        except CodecError:
            _count_error(state, case)
        pts += frame
        collect(force=False)
    collect(force=True)
    assert decoder.state() == "empty", f"decoder holds data after draining: {decoder.state()}"
    return "errors" if state["errors"] else "clean"


def _count_error(state: dict, case: dict) -> None:
    assert case["on_error"] == "raise", "CodecError raised with on_error='skip'"
    state["errors"] += 1


def _check_block(state: dict, pcm: np.ndarray, pts: int, time_base, chunk: int,
                 force: bool) -> None:
    assert pcm.ndim == 2 and 0 < pcm.shape[1] <= chunk, f"block shape {pcm.shape}"
    assert force or pcm.shape[1] == chunk, f"short block {pcm.shape} without force"
    assert state["channels"] in (None, pcm.shape[0]), "channel count changed between blocks"
    assert state["pts"] in (None, pts), f"pts {pts}, expected {state['pts']}"
    state["channels"], state["pts"] = pcm.shape[0], pts + pcm.shape[1]


_PACKET_SAMPLES = {"mp3": 1152, "aac": 1024, "flac": 4608, "opus": 960}


def _decoder_cases(codec: str) -> st.SearchStrategy:
    common = {"codec": st.just(codec), "chunk": st.sampled_from([1, 100, 1024, 4096]),
              "on_error": st.sampled_from(["raise", "skip"])}
    if codec == "opus":
        seeds = [encoded_packets("opus", *seed) for seed in _STREAM_SEEDS["opus"]]
        all_packets = tuple(p for packets, _ in seeds for p in packets)
        heads = tuple(head for _, head in seeds)
        packet_lists = st.lists(mutated_bytes(all_packets, max_ops=2), max_size=20) \
            | st.sampled_from([list(packets) for packets, _ in seeds])
        return st.fixed_dictionaries({**common, "chunks": packet_lists, "packets": st.booleans(),
                                      "extradata": st.none() | mutated_bytes(heads, 2)})
    stream = mutated_bytes(stream_seeds(codec))
    extra = {"fmt": st.sampled_from(_WAV_FORMATS)} if codec == "wav" else {}
    as_bytes = st.fixed_dictionaries({**common, **extra, "packets": st.just(False),
                                      "chunks": st.builds(slices, stream, CUTS)})
    if codec == "wav":
        return as_bytes
    # Whole packets, some damaged, with timestamps that jump (packets lost before them, or
    # a broken timestamp): the Decoder's salvage of put_packet.
    packets = tuple(p for seed in _STREAM_SEEDS[codec] for p in encoded_packets(codec, *seed)[0])
    jumps = st.dictionaries(st.integers(0, 20), st.sampled_from([-960, 1, 960, 4608, 10 ** 7]),
                            max_size=3)
    as_packets = st.fixed_dictionaries({
        **common, "packets": st.just(True), "jumps": jumps,
        "chunks": st.lists(mutated_bytes(packets, max_ops=2), max_size=20)})
    return as_bytes | as_packets


# ------------------------------------------------------------------ targets: file reader

def run_reader(case: dict) -> str:
    """Open a (damaged) file and read it to the end with either policy: AudioFrames of the
    chunk size with continuous pts (pcm mode) or Packets (packet mode), FormatError or
    CodecError; under "skip" what was replaced adds up (frames and samples, places kept)."""
    path = Path(f"case{case['ext']}")
    path.write_bytes(case["data"])
    on_error = case.get("on_error", "fail")
    with AudioFileReader(path, chunk_samples=case["chunk"], mode=case["mode"],
                         on_error=on_error) as reader:
        pts = 0
        for n, item in enumerate(reader):
            assert n < _MAX_EVENTS, "the reader never ended"
            if case["mode"] == "pcm":
                assert item.pts == pts and 0 < item.samples <= case["chunk"]
                assert item.data.shape == item.format.shape(item.samples)
                pts += item.samples
            else:
                assert isinstance(item.data, bytes)
        damage = reader.damage
        assert on_error == "skip" or not damage.events
        assert damage.samples >= 0 and damage.frames >= damage.events >= len(damage.spots)
        if damage.events:
            return "salvaged"
        return "truncated" if reader.truncated else "read"


def reader_cases() -> st.SearchStrategy:
    seeds = file_seeds()
    every = tuple(b for found in seeds.values() for b in found)

    @st.composite
    def one(draw) -> dict:
        ext = draw(st.sampled_from(READER_EXTENSIONS))
        data = draw(mutated_bytes(seeds[ext]) | mutated_bytes(every, max_ops=2))
        return {"ext": ext, "data": data, "mode": draw(st.sampled_from(["pcm", "packet"])),
                "chunk": draw(st.sampled_from([1, 333, 1024])),
                "on_error": draw(st.sampled_from(["fail", "skip"]))}
    return one()


# Containers whose two modes decode to the same samples from the start (MP3's LAME tag and
# MP4's edit list trim the start in pcm mode only; Opus's end trim is on the last packet).
_SAME_IN_BOTH_MODES = (".flac", ".aac", ".opus", ".wav")


def run_salvage(case: dict) -> str:
    """A damaged file read with on_error "skip" by the reader (pcm mode) and by a Decoder fed
    the reader's packets: typed errors only, a continuous timeline, and, when both modes read
    it to the end, the same samples (flowengine.ops.codecs.salvage)."""
    from damaged_media import read_packets, read_pcm

    path = Path(f"case{case['ext']}")
    path.write_bytes(case["data"])
    pcm, report = read_pcm(path, on_error="skip", chunk=case["chunk"])
    assert pcm.ndim == 2 and report.samples >= 0
    try:
        packets, packet_report = read_packets(path, on_error="skip", chunk=case["chunk"])
    except CodecError:          # a Decoder's own refusal (no frame of its codec at all)
        return "pcm only"
    # Compared when both decode at the rate the container states (a damaged header may state
    # another: pcm mode then resamples to it, as to any format asked for).
    if case["ext"] in _SAME_IN_BOTH_MODES and pcm.shape[0] == packets.shape[0] \
            and report.output_rate == packet_report.output_rate and _consistent_clock(path):
        same = packets[:, :pcm.shape[1]]
        assert same.shape == pcm.shape and np.array_equal(same, pcm, equal_nan=True), \
            f"the modes differ: pcm {pcm.shape}, packet {packets.shape}"
    return "salvaged" if report.events else "read"


def _consistent_clock(path: Path) -> bool:
    """Whether the container counts time in samples of the rate it states (a mutated FLAC
    STREAMINFO may say 48 kHz over frames of 44.1 kHz: the modes then round the timeline
    at different rates, a sample apart)."""
    if path.suffix != ".flac":
        return True
    try:
        with av.open(str(path), format="flac", metadata_errors="replace") as container:
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            return not rate or stream.time_base is None \
                or stream.time_base.denominator % rate == 0
    except (av.FFmpegError, IndexError):    # opened behind garbage by the reader only
        return True


def salvage_cases() -> st.SearchStrategy:
    seeds = file_seeds()

    @st.composite
    def one(draw) -> dict:
        ext = draw(st.sampled_from(_SAME_IN_BOTH_MODES + (".mp3",)))
        return {"ext": ext, "data": draw(mutated_bytes(seeds[ext])),
                "chunk": draw(st.sampled_from([333, 1024]))}
    return one()


TARGETS: dict[str, Target] = {
    "wire": Target("wire", run_wire, (WireError,), wire_cases),
    "framing": Target("framing", run_framing, (WireError,), framing_cases),
    "config": Target("config", run_config, (ConfigError,), config_cases),
    **{f"decoder-{codec}": Target(f"decoder-{codec}", run_decoder, (CodecError,),
                                  lambda codec=codec: _decoder_cases(codec))
       for codec in DECODER_CODECS},
    "reader": Target("reader", run_reader, (FormatError, CodecError), reader_cases),
    "salvage": Target("salvage", run_salvage, (FormatError, CodecError), salvage_cases),
}


# ------------------------------------------------------------------ self tests of the harness

def _hang(_case) -> None:
    time.sleep(3600)


def _allocate(_case) -> None:
    hoard = []
    while True:
        hoard.append(np.empty(1 << 27, np.uint8))   # 128 MB of address space at a time


def _segfault(_case) -> None:
    import ctypes
    ctypes.string_at(0)


def _wrong_error(_case) -> None:
    raise KeyError("not a typed error")


SELF_TESTS: dict[str, Target] = {
    name: Target(name, run, (ValueError,), lambda: st.none())
    for name, run in (("hang", _hang), ("memory", _allocate), ("segfault", _segfault),
                      ("wrong_error", _wrong_error))}


# ------------------------------------------------------------------ case files

def encode_case(case: Any) -> str:
    """A case as base64 msgpack (how failures are saved)."""
    return base64.b64encode(msgpack.packb(case, use_bin_type=True,
                                                  unicode_errors="surrogatepass")).decode("ascii")


def decode_case(text: str) -> Any:
    return msgpack.unpackb(base64.b64decode(text), raw=False, strict_map_key=False,
                           unicode_errors="surrogatepass")


# ------------------------------------------------------------------ the worker

@dataclass
class Outcome:
    """What one case did. status: ok (returned or raised an allowed error), error (another
    exception or a failed check), hang, memory, crash (the worker died)."""
    status: str
    label: str = ""
    detail: str = ""
    seconds: float = 0.0
    rss_bytes: int = 0

    @property
    def failed(self) -> bool:
        return self.status != "ok"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _worker_main(conn, memory_mb: int, workdir: str) -> None:
    """Run cases sent over `conn` until None: (target, case) -> (status, label, detail, rss)."""
    os.chdir(workdir)                       # config paths and reader files land here
    av_threads_warmup()
    # The cap is on address space: what the process maps once warm, plus memory_mb.
    cap = _vm_bytes() + (memory_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    targets = {**TARGETS, **SELF_TESTS}
    conn.send("ready")
    while (message := conn.recv()) is not None:
        name, case = message
        target = targets[name]
        try:
            reply = ("ok", target.run(case) or "ok", "")
        except MemoryError:
            reply = ("memory", "MemoryError", traceback.format_exc(limit=-8))
        except target.allowed as exc:
            reply = ("ok", type(exc).__name__, "")
        except BaseException as exc:           # anything else is what the fuzzer looks for
            reply = ("error", type(exc).__name__, traceback.format_exc(limit=-8))
        conn.send((*reply, _rss_bytes()))


def av_threads_warmup() -> None:
    """Decode one packet of each codec so FFmpeg's lazily made threads and pools exist
    before the address-space cap is measured."""
    for codec in ("mp3", "aac", "flac"):
        decoder = Decoder(codec, DECODER_CONFIGS[codec]())
        decoder.put_frame(b"\xff" * 16)
        try:
            decoder.get_frame(force=True)
        except CodecError:
            pass


@dataclass
class FuzzWorker:
    """One worker process running cases under a deadline and a memory cap (restarted after a
    hang or a crash). Use as a context manager."""
    timeout_s: float = 20.0
    memory_mb: int = 1536
    restarts: int = 0
    _process: Any = field(default=None, repr=False)
    _conn: Any = field(default=None, repr=False)
    _workdir: Any = field(default=None, repr=False)

    def __enter__(self) -> "FuzzWorker":
        self._workdir = tempfile.TemporaryDirectory(prefix="flowengine-fuzz-")
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _start(self) -> None:
        context = multiprocessing.get_context("forkserver")
        parent, child = context.Pipe()
        # Few malloc arenas: each thread's arena reserves 64 MB of address space, which
        # would eat the RLIMIT_AS headroom without using memory.
        saved = os.environ.get("MALLOC_ARENA_MAX")
        os.environ["MALLOC_ARENA_MAX"] = "2"
        try:
            self._process = context.Process(target=_worker_main, daemon=True,
                                            args=(child, self.memory_mb, self._workdir.name))
            self._process.start()
        finally:
            if saved is None:
                del os.environ["MALLOC_ARENA_MAX"]
            else:
                os.environ["MALLOC_ARENA_MAX"] = saved
        child.close()
        self._conn = parent
        # Started (imports, warm-up) before the first case's deadline begins.
        try:
            ready = parent.poll(120) and parent.recv() == "ready"
        except (EOFError, OSError):     # it died while starting
            ready = False
        if not ready:
            exitcode = self._process.exitcode
            self._stop()
            raise RuntimeError(f"the fuzz worker did not start within 120 s "
                               f"(exit code {exitcode})")

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(5)
            self._conn.close()
            self._process = self._conn = None

    def close(self) -> None:
        if self._process is not None:
            try:
                self._conn.send(None)
                self._process.join(5)
            except OSError:
                pass
        self._stop()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def run(self, target: str, case: Any) -> Outcome:
        """Run one case; the worker is (re)started as needed."""
        if self._process is None:
            self._start()
        start = time.perf_counter()
        try:
            self._conn.send((target, case))
            answered = self._conn.poll(self.timeout_s)
            reply = self._conn.recv() if answered else None
        except (EOFError, OSError):
            answered, reply = True, None
        seconds = time.perf_counter() - start
        if reply is not None:
            status, label, detail, rss = reply
            return Outcome(status, label, detail, seconds, rss)
        # No answer: a hang (killed here) or a dead worker (a signal, the kernel's OOM killer).
        if answered:
            self._process.join(5)
        exitcode = self._process.exitcode
        self._stop()
        self.restarts += 1
        if not answered:
            return Outcome("hang", "timeout", f"no answer within {self.timeout_s} s", seconds)
        return Outcome("crash", f"exit code {exitcode}",
                       f"the worker died (exit code {exitcode}; negative = signal)", seconds)
