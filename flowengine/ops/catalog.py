"""flowengine's built-in operators, registered by name (see flowengine/ops/registry.py).

Each factory's signature is its parameter spec (types, defaults, `name: doc`
lines; docs several operators share are constants here). Every factory
returns a Node. Formats are written as in FORMAT_FORMS ({sample_rate: 48000,
channels: 2, sample_type: f32}, '48000/2/f32' or a rate) or left None to
take them from the first buffer; in a run config, keys a format leaves out
are the stage input's. `example=` is a typical stage's params, shown by
docs/config.md and run by its test.

Codecs exist twice: per codec (mp3_encoder, flac_decoder, ...) with that
codec's parameters, and generic (encoder, decoder) with a `codec` parameter.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from flowengine.errors import ConfigError, UnknownCodecError
from flowengine.ops.codecs.configs import DECODER_CONFIGS, ENCODER_CONFIGS, normalize_codec
from flowengine.ops.node import PACKET, PCM, Node
from flowengine.ops.processors import Processor
from flowengine.ops.catalog_streams import READ_COSTS, template_file_sink  # and files, tones
from flowengine.ops.processors.resample import ResampleNode, resample_rule
from flowengine.ops.rules import delay_rule, fir_rule, same_length
from flowengine.ops.codecs.timing import decoder_out_rate, decoder_rule, encoder_rule
from flowengine.ops.registry import Convert, FormatParam, PartialFormatParam, operator
from flowengine.ops.adapters import (
    ProcessorNode, SinkNode, SourceNode, make_decoder_node, make_encoder_node,
)
from flowengine.ops.flownode import ANY, make_identity_node
from flowengine.ops.io.paths import has_template_field

__all__: list[str] = []   # nothing to import: the operators are reached through the registry


def _as_list(value: Any) -> Any:
    """numpy arrays and tuples -> lists, so taps/matrices can be given either way."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return [_as_list(v) for v in value]
    if isinstance(value, list):
        return [_as_list(v) if isinstance(v, (tuple, np.ndarray)) else v for v in value]
    return value


Floats = Annotated[list[float], Convert(_as_list, "before")]
FloatRows = Annotated[list[list[float]], Convert(_as_list, "before")]
Ints = Annotated[list[int], Convert(_as_list, "before")]
ErrorPolicy = Literal["fail", "skip"]

# Docs of parameters many operators share (param_docs=), in a user's terms.
_IN_FORMAT = "the input's format (default: the first frame's; keys left out: as the input)"
_ENCODER_IN_FORMAT = ("the input's format, to open the codec before the first frame (default: "
                      "the first frame's)")
_ENCODER_CHUNK = "samples per frame given to the codec (re-blocked to the codec's frame size)"
_DECODER_DOCS = {
    "chunk_samples": "samples per channel in each output frame",
    "packet_time_base_den": "time base 1/N of packets that carry no time base of their own",
    "on_error": "damaged frames: fail (stop, naming the stream and time) or skip (replace them "
                "with silence of their duration, count them, go on)",
}
_PROCESSOR_DOCS = {"format": _IN_FORMAT}
_ENCODER_DOCS = {"input_format": _ENCODER_IN_FORMAT, "chunk_samples": _ENCODER_CHUNK}


# Cost hints (`cost=`, OperatorSpec.cost): CPU per second of audio relative to the mp3
# encoder's at 128 kbit/s, as measured by benchmarks/bench_op_cost.py (44.1 kHz stereo chirp,
# 4096-sample blocks, in one process, least of 5 runs of 60 s; 2-core AMD EPYC VM, 2026-12;
# benchmarks/results/op_cost.json), rounded. `fuse: auto` balances worker groups with them.
_ENCODER_COSTS = {"mp3": 1.0, "aac": 1.9, "opus": 0.93, "flac": 0.26, "wav": 0.05}
_DECODER_COSTS = {"mp3": 0.16, "aac": 0.16, "opus": 0.32, "flac": 0.13, "wav": 0.05}


def _codec_cost(costs: dict[str, float]) -> Any:
    """The cost hint of a generic encoder or decoder: its codec's (validation refuses an
    unknown codec; until then, the mp3 one's)."""
    def cost(params: dict) -> float:
        try:
            return costs[normalize_codec(params.get("codec", "mp3"))]
        except UnknownCodecError:
            return costs["mp3"]
    return cost


def _processor(processor: Any) -> Node:
    return ProcessorNode(processor)


# ---- sources -------------------------------------------------------------------------------

@operator("file_source", kind="source", inputs=None, outputs=PCM, stateful=True,
          summary="Read an audio file PyAV opens, streaming: decoded PCM or undecoded packets",
          kinds=lambda p: (None, PACKET if p.get("mode") == "packet" else PCM),
          example={"path": "in/song.mp3"},
          cost=lambda p: READ_COSTS[p.get("mode", "pcm")])
def file_source(path: str, mode: Literal["pcm", "packet"] = "pcm", chunk_samples: int = 1024,
                format: PartialFormatParam | None = None, stream: str | None = None,
                on_error: ErrorPolicy = "fail") -> Node:
    """
    path: the file to read (any container and codec FFmpeg reads)
    mode: pcm (decoded frames) or packet (compressed packets, no decoding)
    chunk_samples: samples per channel in each PCM frame
    format: convert the decoded audio to this format (default: the file's rate and channels, planar f32; keys left out: the file's)
    stream: stream id of the buffers (default: the file's name without extension)
    on_error: damaged frames: fail (stop, naming the file, byte and time) or skip (replace them with silence of their duration, count them, go on; in packet mode they go on for a decoder with on_error skip)
    """
    from flowengine.ops.io import AudioFileReader
    reader = AudioFileReader(path, format=format, chunk_samples=chunk_samples, stream=stream,
                             mode=mode, on_error=on_error)
    return SourceNode(reader, PACKET if mode == "packet" else PCM, name="file_source")


@operator("tone", kind="source", inputs=None, outputs=PCM, stateful=True,
          summary="Generate a tone, noise or silence (optionally paced in real time)",
          example={"frequency": 440, "seconds": 2, "sample_rate": 48000},
          cost=0.13)
def tone(frequency: float = 440.0, amplitude: float = 0.5, seconds: float | None = 1.0,
         sample_rate: int = 48000, channels: int = 2, chunk_samples: int = 1024,
         waveform: str = "sine", realtime: bool = False, stream: str = "0", seed: int = 0,
         sample_type: str = "f32", end_frequency: float | None = None) -> Node:
    """
    frequency: Hz
    amplitude: peak amplitude, 0..1
    seconds: length of the signal (None: endless)
    sample_rate: samples per second
    channels: channel count (every channel carries the same signal)
    chunk_samples: samples per channel in each frame
    waveform: sine, square, chirp, noise, silence or bursts (speech-like)
    realtime: pace the output at real time
    stream: stream id of the frames
    seed: random seed for noise
    sample_type: u8, s16, s32, f32 or f64
    end_frequency: where a chirp ends
    """
    from flowengine.ops.io import ToneSource
    source = ToneSource(frequency=frequency, amplitude=amplitude, seconds=seconds,
                        sample_rate=sample_rate, channels=channels, chunk_samples=chunk_samples,
                        waveform=waveform, realtime=realtime, stream=stream, seed=seed,
                        sample_type=sample_type, end_frequency=end_frequency)
    return SourceNode(source, PCM, name="tone")


# ---- codecs --------------------------------------------------------------------------------

def _encoder(codec: str, **fields: Any) -> Node:
    return make_encoder_node(codec, ENCODER_CONFIGS[codec](**fields))


def _decoder(codec: str, on_error: str, **fields: Any) -> Node:
    return make_decoder_node(codec, DECODER_CONFIGS[codec](**fields), on_error=on_error)


@operator("mp3_encoder", kind="encoder", inputs=PCM, outputs=PACKET, stateful=True,
          expected_out=encoder_rule("mp3"),
          summary="Encode MP3 (fast bundled LAME when installed, else FFmpeg's libmp3lame)",
          example={"bitrate": 192000}, param_docs=_ENCODER_DOCS,
          cost=_ENCODER_COSTS["mp3"])
def mp3_encoder(bitrate: int = 128000, quality: int = 3, chunk_samples: int = 1152,
                input_format: FormatParam | None = None,
                backend: Literal["auto", "lame", "pyav"] = "auto") -> Node:
    """
    bitrate: bit/s (a rate MP3 has at the input's sample rate, e.g. 128000 at 44.1/48 kHz)
    quality: LAME quality 0 (best) .. 9 (fastest)
    backend: auto (bundled LAME if installed), lame, or pyav (FFmpeg's libmp3lame)
    """
    return _encoder("mp3", bitrate=bitrate, quality=quality, chunk_samples=chunk_samples,
                    input_format=input_format, backend=backend)


@operator("aac_encoder", kind="encoder", inputs=PCM, outputs=PACKET, stateful=True,
          expected_out=encoder_rule("aac"),
          summary="Encode AAC-LC as ADTS frames", example={"bitrate": 128000},
          param_docs=_ENCODER_DOCS,
          cost=_ENCODER_COSTS["aac"])
def aac_encoder(bitrate: int | None = None, chunk_samples: int = 1024,
                input_format: FormatParam | None = None) -> Node:
    """
    bitrate: bit/s (None: FFmpeg's default)
    """
    return _encoder("aac", bitrate=bitrate, chunk_samples=chunk_samples, input_format=input_format)


@operator("opus_encoder", kind="encoder", inputs=PCM, outputs=PACKET, stateful=True,
          expected_out=encoder_rule("opus"),
          summary="Encode Opus (input at 8/12/16/24/48 kHz; other rates are resampled to 48 kHz "
                  "by a join the plan shows)",
          example={"bitrate": 96000}, param_docs=_ENCODER_DOCS,
          cost=_ENCODER_COSTS["opus"])
def opus_encoder(bitrate: int = 96000, chunk_samples: int = 960,
                 input_format: FormatParam | None = None) -> Node:
    """
    bitrate: bit/s
    """
    return _encoder("opus", bitrate=bitrate, chunk_samples=chunk_samples,
                    input_format=input_format)


@operator("flac_encoder", kind="encoder", inputs=PCM, outputs=PACKET, stateful=True,
          expected_out=encoder_rule("flac"),
          summary="Encode FLAC (lossless)", example={"compression_level": 8},
          param_docs=_ENCODER_DOCS,
          cost=_ENCODER_COSTS["flac"])
def flac_encoder(compression_level: int | None = None, chunk_samples: int = 4608,
                 input_format: FormatParam | None = None) -> Node:
    """
    compression_level: 0..12 (None: FFmpeg's default)
    """
    return _encoder("flac", compression_level=compression_level, chunk_samples=chunk_samples,
                    input_format=input_format)


@operator("wav_encoder", kind="encoder", inputs=PCM, outputs=PACKET, stateful=True,
          expected_out=encoder_rule("wav"),
          summary="Raw interleaved PCM packets (the wav/pcm codec)", param_docs=_ENCODER_DOCS,
          cost=_ENCODER_COSTS["wav"])
def wav_encoder(chunk_samples: int = 1024, input_format: FormatParam | None = None) -> Node:
    return _encoder("wav", chunk_samples=chunk_samples, input_format=input_format)


@operator("encoder", kind="encoder", inputs=PCM, outputs=PACKET, stateful=True,
          expected_out=encoder_rule("mp3"),
          summary="Encode with any codec: mp3, aac, opus, flac, wav",
          example={"codec": "aac", "bitrate": 128000}, param_docs=_ENCODER_DOCS,
          cost=_codec_cost(_ENCODER_COSTS))
def encoder(codec: str, bitrate: int | None = None, chunk_samples: int | None = None,
            input_format: FormatParam | None = None, quality: int | None = None,
            compression_level: int | None = None) -> Node:
    """
    codec: mp3, aac, opus, flac or wav
    bitrate: bit/s (mp3, aac, opus)
    chunk_samples: samples per frame given to the codec (None: the codec's default)
    quality: mp3 only: LAME quality 0 (best) .. 9 (fastest)
    compression_level: flac only: 0..12
    """
    codec = normalize_codec(codec)
    given = {"bitrate": bitrate, "chunk_samples": chunk_samples, "quality": quality,
             "compression_level": compression_level}
    fields = {k: v for k, v in given.items() if v is not None}
    return make_encoder_node(codec, {**fields, "input_format": input_format})


@operator("mp3_decoder", kind="decoder", inputs=PACKET, outputs=PCM, stateful=True,
          expected_out=decoder_rule("mp3"), out_rate=decoder_out_rate("mp3"),
          summary="Decode MP3 to planar f32",
          param_docs=_DECODER_DOCS,
          cost=_DECODER_COSTS["mp3"])
def mp3_decoder(chunk_samples: int = 1024, packet_time_base_den: int = 48000,
                on_error: ErrorPolicy = "fail") -> Node:
    return _decoder("mp3", on_error, chunk_samples=chunk_samples,
                    packet_time_base_den=packet_time_base_den)


@operator("aac_decoder", kind="decoder", inputs=PACKET, outputs=PCM, stateful=True,
          expected_out=decoder_rule("aac"), out_rate=decoder_out_rate("aac"),
          summary="Decode ADTS AAC to planar f32",
          param_docs=_DECODER_DOCS,
          cost=_DECODER_COSTS["aac"])
def aac_decoder(chunk_samples: int = 1024, packet_time_base_den: int = 48000,
                on_error: ErrorPolicy = "fail") -> Node:
    return _decoder("aac", on_error, chunk_samples=chunk_samples,
                    packet_time_base_den=packet_time_base_den)


@operator("opus_decoder", kind="decoder", inputs=PACKET, outputs=PCM, stateful=True,
          expected_out=decoder_rule("opus"), out_rate=decoder_out_rate("opus"),
          summary="Decode Opus packets to planar f32",
          param_docs=_DECODER_DOCS,
          cost=_DECODER_COSTS["opus"])
def opus_decoder(chunk_samples: int = 960, packet_time_base_den: int = 48000,
                 extradata: bytes | None = None, on_error: ErrorPolicy = "fail") -> Node:
    """
    extradata: the OpusHead (packets from flowengine's encoder carry it)
    """
    return _decoder("opus", on_error, chunk_samples=chunk_samples,
                    packet_time_base_den=packet_time_base_den, extradata=extradata)


@operator("flac_decoder", kind="decoder", inputs=PACKET, outputs=PCM, stateful=True,
          expected_out=decoder_rule("flac"), out_rate=decoder_out_rate("flac"),
          summary="Decode FLAC frames to planar f32",
          param_docs=_DECODER_DOCS,
          cost=_DECODER_COSTS["flac"])
def flac_decoder(chunk_samples: int = 1024, packet_time_base_den: int = 48000,
                 on_error: ErrorPolicy = "fail") -> Node:
    return _decoder("flac", on_error, chunk_samples=chunk_samples,
                    packet_time_base_den=packet_time_base_den)


@operator("wav_decoder", kind="decoder", inputs=PACKET, outputs=PCM, stateful=True,
          expected_out=decoder_rule("wav"), out_rate=decoder_out_rate("wav"),
          summary="Raw interleaved PCM packets to planar frames",
          example={"output_format": "44100/2/s16/interleaved"}, param_docs=_DECODER_DOCS,
          cost=_DECODER_COSTS["wav"])
def wav_decoder(output_format: FormatParam, chunk_samples: int = 1024,
                on_error: ErrorPolicy = "fail") -> Node:
    """
    output_format: the format of the raw bytes (they carry no header)
    """
    return _decoder("wav", on_error, output_format=output_format, chunk_samples=chunk_samples)


@operator("decoder", kind="decoder", inputs=PACKET, outputs=PCM, stateful=True,
          expected_out=decoder_rule("mp3"), out_rate=decoder_out_rate("mp3"),
          summary="Decode any codec: mp3, aac, opus, flac, wav", example={"codec": "mp3"},
          param_docs=_DECODER_DOCS,
          cost=_codec_cost(_DECODER_COSTS))
def decoder(codec: str, chunk_samples: int | None = None, output_format: FormatParam | None = None,
            extradata: bytes | None = None, on_error: ErrorPolicy = "fail") -> Node:
    """
    codec: mp3, aac, opus, flac or wav
    output_format: wav only: the format of the raw bytes
    extradata: opus only: the OpusHead
    """
    codec = normalize_codec(codec)
    given = {"chunk_samples": chunk_samples, "output_format": output_format,
             "extradata": extradata}
    fields = {k: v for k, v in given.items() if v is not None}
    return make_decoder_node(codec, fields, on_error=on_error)


# ---- processors ----------------------------------------------------------------------------

@operator("identity", kind="processor", inputs=PCM, outputs=PCM, stateful=False,
          expected_out=same_length,
          summary="Pass PCM through unchanged",
          cost=0.002)
def identity() -> Node:
    return make_identity_node(PCM)


@operator("gain", kind="processor", inputs=PCM, outputs=PCM, stateful=False,
          expected_out=same_length,
          summary="Multiply every sample by a linear gain or a gain in dB",
          example={"gain_db": -6}, param_docs=_PROCESSOR_DOCS,
          cost=0.04)
def gain(gain: float = 1.0, gain_db: float | None = None,
         format: FormatParam | None = None) -> Node:
    """
    gain: linear factor
    gain_db: gain in dB (instead of gain)
    """
    return _processor(Processor.gain(format, gain=gain, gain_db=gain_db))


@operator("resample", kind="processor", inputs=PCM, outputs=PCM, stateful=True,
          expected_out=resample_rule,
          out_rate=lambda params, rate: int(params["sample_rate"]),
          summary="Change sample rate, channels and sample type (libswresample)",
          example={"sample_rate": 48000},
          cost=0.06)
def resample(sample_rate: int | None = None, channels: int | None = None,
             sample_type: str = "f32", planar: bool = True, in_format: FormatParam | None = None,
             out_chunk_samples: int | None = None) -> Node:
    """
    sample_rate: output rate in Hz (None: as the input)
    channels: output channels (None: as the input)
    sample_type: output sample type: u8, s16, s32, f32 or f64
    planar: output layout: true planar (channel after channel), false interleaved
    in_format: the input's format (None: the first frame's)
    out_chunk_samples: re-block the output into chunks of this size
    """
    return ResampleNode(sample_rate, channels, sample_type, planar, in_format, out_chunk_samples)


@operator("channel_map", kind="processor", inputs=PCM, outputs=PCM, stateful=False,
          expected_out=same_length,
          summary="Pick, reorder or mix channels (mono<->stereo, a mixing matrix)",
          example={"out_channels": 1}, param_docs=_PROCESSOR_DOCS,
          cost=0.04)
def channel_map(matrix: FloatRows | None = None, channels: Ints | None = None,
                out_channels: int | None = None, format: FormatParam | None = None) -> Node:
    """
    matrix: rows = output channels, columns = input channels
    channels: input channel index for each output channel
    out_channels: output channel count with the default mix
    """
    return _processor(Processor.channel_map(format, matrix=matrix, channels=channels,
                                            out_channels=out_channels))


@operator("delay", kind="processor", inputs=PCM, outputs=PCM, stateful=True,
          expected_out=delay_rule,
          summary="Delay by delay_ms (zeros in front; the tail comes out at the end)",
          example={"delay_ms": 20}, param_docs=_PROCESSOR_DOCS,
          cost=0.04)
def delay(delay_ms: float, format: FormatParam | None = None) -> Node:
    """
    delay_ms: milliseconds of silence in front (the output is this much longer)
    """
    return _processor(Processor.delay(delay_ms, format))


@operator("fir", kind="processor", inputs=PCM, outputs=PCM, stateful=True, expected_out=fir_rule,
          summary="FIR filter (equals np.convolve(x, taps)[:n])",
          example={"taps": [0.25, 0.5, 0.25]}, param_docs=_PROCESSOR_DOCS,
          cost=0.3)
def fir(taps: Floats, full_tail: bool = False, format: FormatParam | None = None) -> Node:
    """
    taps: filter coefficients
    full_tail: also output the len(taps)-1 samples of ring-out at the end
    """
    return _processor(Processor.fir(taps, format, full_tail=full_tail))


@operator("iir", kind="processor", inputs=PCM, outputs=PCM, stateful=True,
          expected_out=same_length,
          summary="IIR filter from b/a or second-order sections (equals scipy lfilter)",
          example={"b": [0.5, 0.5], "a": [1.0]}, param_docs=_PROCESSOR_DOCS,
          cost=0.11)
def iir(b: Floats | None = None, a: Floats | None = None, sos: FloatRows | None = None,
        format: FormatParam | None = None) -> Node:
    """
    b: numerator coefficients
    a: denominator coefficients
    sos: second-order sections, rows of [b0, b1, b2, a0, a1, a2]
    """
    return _processor(Processor.iir(b, a, format, sos=sos))


_FILTER_DOCS = {"order": "filter order (steepness: 6 dB per octave per order)", **_PROCESSOR_DOCS}


@operator("lowpass", kind="processor", inputs=PCM, outputs=PCM, stateful=True,
          expected_out=same_length,
          summary="Butterworth low-pass filter", example={"cutoff_hz": 4000},
          param_docs={"cutoff_hz": "frequencies above this (Hz) are attenuated", **_FILTER_DOCS},
          cost=0.2)
def lowpass(cutoff_hz: float, order: int = 4, format: FormatParam | None = None) -> Node:
    return _processor(Processor.lowpass(cutoff_hz, order, format))


@operator("highpass", kind="processor", inputs=PCM, outputs=PCM, stateful=True,
          expected_out=same_length,
          summary="Butterworth high-pass filter", example={"cutoff_hz": 80},
          param_docs={"cutoff_hz": "frequencies below this (Hz) are attenuated", **_FILTER_DOCS},
          cost=0.2)
def highpass(cutoff_hz: float, order: int = 4, format: FormatParam | None = None) -> Node:
    return _processor(Processor.highpass(cutoff_hz, order, format))


@operator("compressor", kind="processor", inputs=PCM, outputs=PCM, stateful=True,
          expected_out=same_length,
          summary="Compressor / expander with soft knee, attack/release and makeup gain",
          example={"threshold_db": -18, "ratio": 3}, param_docs=_PROCESSOR_DOCS,
          cost=0.45)
def compressor(threshold_db: float = -20.0, knee_width_db: float = 0.0, ratio: float = 4.0,
               expansion_ratio: float = 1.0, expansion_threshold_db: float = -60.0,
               attack_time: float = 0.005, release_time: float = 0.05,
               master_gain_db: float = 0.0, format: FormatParam | None = None) -> Node:
    """
    threshold_db: level (dBFS) above which the gain is reduced
    knee_width_db: width of the soft knee around the threshold (0: hard knee)
    ratio: input dB over the threshold per output dB (4: 4 dB in, 1 dB out)
    expansion_ratio: below expansion_threshold_db, output dB per input dB (1: no expansion)
    expansion_threshold_db: level (dBFS) below which the expander works
    attack_time: seconds the gain takes to fall
    release_time: seconds the gain takes to recover
    master_gain_db: make-up gain applied after compression
    """
    return _processor(Processor.compressor(
        format, None, threshold_db=threshold_db, knee_width_db=knee_width_db, ratio=ratio,
        expansion_ratio=expansion_ratio, expansion_threshold_db=expansion_threshold_db,
        attack_time=attack_time, release_time=release_time, master_gain_db=master_gain_db))


@operator("loudness", kind="processor", inputs=PCM, outputs=PCM, stateful=True,
          expected_out=same_length,
          summary="Normalise loudness to a target LUFS (BS.1770 / EBU R128, look-ahead window)",
          example={"target_lufs": -16}, param_docs=_PROCESSOR_DOCS,
          cost=0.5)
def loudness(target_lufs: float = -23.0, window_s: float = 3.0, max_gain_db: float = 20.0,
             true_peak_db: float = -1.0, mode: Literal["window", "static"] = "window",
             gain_db: float | None = None, format: FormatParam | None = None) -> Node:
    """
    target_lufs: loudness to reach, in LUFS (-23: EBU R128 broadcast, -16: podcasts, -14: streaming)
    window_s: window mode: seconds of look-ahead the gain follows (at least 0.4)
    max_gain_db: largest boost applied (window mode)
    true_peak_db: ceiling for output peaks, dBFS (a limiter holds them under it)
    mode: window (the gain follows the loudness of a sliding window) or static (one fixed gain_db for the whole stream, e.g. target minus a loudness measured beforehand)
    gain_db: static mode: the gain in dB (required there; ignored in window mode)
    """
    if mode == "static" and gain_db is None:
        raise ConfigError("mode: static applies one fixed gain: give gain_db (e.g. the target "
                          "minus the file's measured loudness), or use mode: window")
    if mode == "window" and gain_db is not None:
        raise ConfigError(f"gain_db {gain_db:g} applies only with mode: static (mode window "
                          f"works the gain out itself)")
    options = {"gain_db": gain_db} if mode == "static" else {}
    return _processor(Processor.loudness(format, target_lufs=target_lufs, window_s=window_s,
                                         max_gain_db=max_gain_db, true_peak_db=true_peak_db,
                                         mode=mode, **options))


# ---- sinks ---------------------------------------------------------------------------------

@operator("file_sink", kind="sink", inputs=ANY, outputs=None, stateful=True,
          summary="Write a file (container by extension: .mp3 .m4a .aac .opus .ogg .flac .wav); "
                  "PCM is encoded by the extension's codec",
          example={"path": "out/{stem}.m4a", "bitrate": 128000},
          cost=0.06)
def file_sink(path: str, format: FormatParam | None = None,
              input_format: FormatParam | None = None, bitrate: int | None = None,
              compression_level: int | None = None, codec: str | None = None,
              stream_paths: dict[str, str] | None = None) -> Node:
    """
    path: output file; the extension picks the container and codec; fields {stream}, {stem}, {ext}, {index} in it: a file per stream (see docs/config.md)
    format: the format written when the sink encodes PCM (default: the input's; keys left out: the input's; a different rate or channel count is a conversion the plan shows)
    input_format: the format of raw wav packets (they carry none), written as PCM
    bitrate: bit/s when the sink encodes PCM
    compression_level: flac only: 0..12
    codec: FFmpeg encoder when the sink encodes PCM (e.g. pcm_f32le for a float .wav)
    stream_paths: the output of each stream, worked out by validation from a files source before it (you need not write it; `flowengine plan` shows it)
    """
    options = dict(format=format, input_format=input_format, bitrate=bitrate,
                   compression_level=compression_level, codec=codec)
    if has_template_field(path):    # out/{stem}.mp3: one file per stream, named at its start
        return template_file_sink(path, stream_paths=stream_paths, **options)
    from flowengine.ops.io import AudioFileWriter
    return SinkNode(AudioFileWriter(path, **options), ANY, name="file_sink")


@operator("null_sink", kind="sink", inputs=ANY, outputs=None, stateful=False,
          summary="Discard everything (counts it)",
          cost=0.01)
def null_sink() -> Node:
    from flowengine.ops.io import NullSink
    return SinkNode(NullSink(), ANY, name="null_sink")


@operator("memory_sink", kind="sink", inputs=ANY, outputs=None, stateful=False,
          summary="Keep every buffer in memory (tests, library use)",
          cost=0.002)
def memory_sink() -> Node:
    from flowengine.ops.io import MemorySink
    return SinkNode(MemorySink(), ANY, name="memory_sink")



# ---- operators in modules of their own (imported for their registration) ----------------------

from flowengine.ops import mixer as _mixer  # noqa: E402,F401  - registers `mix`
