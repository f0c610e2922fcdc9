"""Nodes around flowengine's operators: processors, Encoder, Decoder, sources and sinks.

Each adapter maps the node protocol onto the operator's own API:

| node          | push(buf)                 | push(None)            | pull()                          |
|---------------|---------------------------|-----------------------|---------------------------------|
| ProcessorNode | put_frame(frame)          | flush()               | get_audio_frame()               |
| EncoderNode   | put_frame(frame)          | (end of input)        | get_packet(force=ended)         |
| DecoderNode   | put_packet(pkt)           | (end of input)        | get_frame_info(force=ended)     |
| SourceNode    | refused (no input)        | stop reading early    | next item of the iterable       |
| SinkNode      | sink.push(buf)            | sink.finalize()       | AGAIN, then EOF once finalized  |

A decoder node's error policy is "fail" (a bad packet raises CodecError) or
"skip" (the damaged frames are replaced by silence of their duration, counted in
`damage` and stats()["errors"], and decoding goes on: flowengine.ops.codecs.salvage).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any, Iterable

from flowengine.audio.buffers import DEFAULT_STREAM, AudioFrame, Packet
from flowengine.ops.codecs.configs import DECODER_CONFIGS, ENCODER_CONFIGS, normalize_codec
from flowengine.ops.codecs.decoder import Decoder
from flowengine.ops.codecs.encoder import Encoder, FrameEncoder
from flowengine.errors import ConfigError
from flowengine.audio.format import AudioFormat
from flowengine.ops.node import AGAIN, KINDS, PACKET, PCM, Node
from flowengine.ops.flownode import ANY, BatchNode, FlowNode, SinkHandle, check_buffer, check_kind

__all__ = [
    "ProcessorNode", "EncoderNode", "DecoderNode", "SourceNode", "SinkNode", "ERROR_POLICIES",
    "make_processor_node", "make_encoder_node", "make_decoder_node", "make_source_node",
    "make_sink_node",
]

ERROR_POLICIES = ("fail", "skip")


class ProcessorNode(FlowNode):
    """A PCM -> PCM processor (anything with put_frame/get_audio_frame/flush/reset)."""

    def __init__(self, processor: Any, name: str | None = None) -> None:
        super().__init__(name or getattr(processor, "name", "processor"), PCM, PCM)
        self.processor = processor

    @property
    def input_format(self) -> AudioFormat | None:
        return self.processor.input_format

    @property
    def output_format(self) -> AudioFormat | None:
        return self.processor.output_format

    def _accept(self, buf: AudioFrame) -> None:
        self.processor.put_frame(buf)

    def _finish(self) -> None:
        self.processor.flush()

    def _produce(self) -> AudioFrame | None:
        return self.processor.get_audio_frame()

    def _restart(self) -> None:
        self.processor.reset()


class EncoderNode(BatchNode):
    """PCM frames in, one Packet per codec frame out; the end drains the codec.

    Where the codec is an FFmpeg encoder that takes f32 (aac, opus, mp3 through PyAV), the
    frames go to it as av.AudioFrames (`FrameEncoder`: no numpy, PyAV re-blocks them); the
    other codecs take them through `Encoder`'s numpy path."""

    def __init__(self, encoder: Encoder, name: str | None = None) -> None:
        super().__init__(name or f"{encoder.codec}_encoder", PCM, PACKET)
        self.encoder = encoder
        self._frames: FrameEncoder | None | bool = None   # decided at the first frame

    @property
    def input_format(self) -> AudioFormat | None:
        return self.encoder.input_format

    @property
    def codec(self) -> str:
        return self.encoder.codec

    @property
    def extradata(self) -> bytes | None:
        return self.encoder.extradata

    def _outputs(self, buf: AudioFrame) -> list:
        frames = self._frames
        if frames is None:
            frames = self._frames = self.encoder.frame_encoder(buf.format, buf.stream) or False
        if frames:
            return frames.encode(buf)
        self.encoder.put_frame(buf)
        return self._packets(force=False)

    def _flush(self) -> list:
        if self._frames:
            return self._frames.encode(None)
        return self._packets(force=True)

    def _packets(self, force: bool) -> list:
        packets = []
        while (packet := self.encoder.get_packet(force=force)) is not None:
            packets.append(packet)
        return packets

    def _reset(self) -> None:
        self.encoder.reset()
        self._frames = None


class DecoderNode(FlowNode):
    """Packets in, planar PCM frames of `chunk_samples` out (the remainder at the end)."""

    def __init__(self, decoder: Decoder, name: str | None = None) -> None:
        super().__init__(name or f"{decoder.codec}_decoder", PACKET, PCM)
        self.decoder = decoder

    @property
    def on_error(self) -> str:
        return "skip" if self.decoder.on_error == "skip" else "fail"

    @property
    def output_format(self) -> AudioFormat | None:
        fmt = self.decoder.output_format()
        return None if fmt is None else fmt.with_(planar=True)

    def _accept(self, buf: Packet) -> None:
        if self.decoder.bytes_in == 0:
            self.decoder.stream = buf.stream     # output frames carry the input's stream id
        self.decoder.put_packet(buf)

    def _produce(self) -> AudioFrame | None:
        info = self.decoder.get_frame_info(force=self._ended, layout="planar")
        if info is None:
            return None
        pcm, pts, (num, den) = info
        return AudioFrame(pcm, self.output_format, pts, Fraction(num, den), self.decoder.stream)

    def _restart(self) -> None:
        self.decoder.reset()

    @property
    def damage(self):
        """The stream's DamageReport (flowengine.ops.codecs.salvage): what was replaced."""
        return self.decoder.damage

    def stats(self) -> dict[str, int | float]:
        """Node counters; `errors` counts the damaged places skipped under on_error="skip"."""
        self._stats.errors = len(self.decoder.errors)
        return super().stats()


class SourceNode(FlowNode):
    """Buffers from an iterable (a list, ToneSource, AudioFileReader, a generator) as a node.

    A reader with `mode == "packet"` and a packets() method yields packets;
    otherwise frames() is used when present, else plain iteration. The
    iterable is opened at the first pull. push(None) stops reading early.
    """

    def __init__(self, source: Any, kind: str | None = None, name: str | None = None) -> None:
        if kind is None:
            kind = getattr(source, "output_kind", None) or \
                (PACKET if getattr(source, "mode", PCM) == PACKET else PCM)
        check_kind(kind, "source node")
        if not (hasattr(source, "__iter__") or hasattr(source, "frames")
                or hasattr(source, "packets")):
            raise TypeError(f"a source must be iterable (or a reader with frames()/packets()), "
                            f"got {type(source).__name__}")
        super().__init__(name or getattr(source, "name", None) or type(source).__name__.lower(),
                         None, kind)
        self.source = source
        self._iter = None

    @property
    def output_format(self) -> AudioFormat | None:
        fmt = getattr(self.source, "format", None)
        return fmt if self.output_kind == PCM and isinstance(fmt, AudioFormat) else None

    @property
    def damage(self):
        """What the source found damaged (a file reader's DamageReport), or None."""
        return getattr(self.source, "damage", None)

    def _open(self):
        if self.output_kind == PACKET and callable(getattr(self.source, "packets", None)):
            return iter(self.source.packets())
        if self.output_kind == PCM and callable(getattr(self.source, "frames", None)):
            return iter(self.source.frames())
        return iter(self.source)

    def _produce(self) -> AudioFrame | Packet | None:
        if self._ended:
            return None
        if self._iter is None:
            self._iter = self._open()
        try:
            item = self._next_item()
        except StopIteration:
            self._ended = True          # exhausted: the next pull answers EOF
            return None
        if item is AGAIN:               # nothing to give now (a choosing source, streams.py)
            return None
        check_buffer(item, self.output_kind, f"source {self.name!r} output")
        return item

    def _next_item(self) -> Any:
        return next(self._iter)

    def _restart(self) -> None:
        if self._iter is not None and iter(self.source) is self.source:
            raise NotImplementedError(f"source {self.name!r}: {type(self.source).__name__} is a "
                                      f"one-shot iterator and cannot be read again")
        self._iter = None

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if callable(close):
            close()


class SinkNode(FlowNode):
    """A sink object (push(buf), finalize()) as a node: no output, EOF once finalized."""

    def __init__(self, sink: Any, kind: str | None = None, name: str | None = None) -> None:
        kind = kind or getattr(sink, "input_kind", None) or ANY
        check_kind(kind, "sink node", KINDS + (ANY,))
        super().__init__(name or getattr(sink, "name", None) or type(sink).__name__.lower(),
                         kind, None)
        self.sink = sink
        self._handle = SinkHandle(sink, self.name)
        # An object sink takes each buffer with one call; a Node sink is driven as a node.
        self._write = self._handle.deliver if self._handle.is_node else sink.push

    @property
    def input_format(self) -> AudioFormat | None:
        fmt = getattr(self.sink, "input_format", None)
        return fmt if isinstance(fmt, AudioFormat) else None

    def process(self, buf: AudioFrame | Packet) -> list:
        self._write(buf)
        return []

    def _accept(self, buf: AudioFrame | Packet) -> None:
        self._handle.deliver(buf)

    def _finish(self) -> None:
        self._handle.finish()

    def _produce(self) -> None:
        return None

    def close(self) -> None:
        close = getattr(self.sink, "close", None)
        if callable(close):
            close()


def _build_config(config_type: type, params: dict, what: str):
    """A codec config dataclass from a dict, with a ConfigError naming unknown fields."""
    valid = [f.name for f in dataclasses.fields(config_type)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(f"{what}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
                          f"valid parameters: {', '.join(valid)}")
    return config_type(**params)


def make_processor_node(kind: str, config: Any = None, name: str | None = None) -> ProcessorNode:
    """A processor as a node.

    kind: the processor operator's name ("gain", "resample", ...), with
        `config` a dict of its parameters (resolved through the registry); or
        "pcm" with `config` a processor instance or a dict {"op": name, ...}.
    A processor instance is also accepted with its own name as kind.
    """
    if config is not None and not isinstance(config, dict):
        if not callable(getattr(config, "get_audio_frame", None)):
            raise ConfigError(f"processor node {kind!r}: config must be a dict of parameters or "
                              f"a processor, got {type(config).__name__}")
        return ProcessorNode(config, name)
    params = dict(config or {})
    op = params.pop("op", None) if kind == PCM else kind
    if op is None:
        raise ConfigError("processor node of kind 'pcm': the config dict needs an 'op' key "
                          "naming the processor (e.g. {'op': 'gain', 'gain_db': -6})")
    from flowengine.ops.registry import registry   # the registry's built-in operators import this module
    spec = registry.get(op)
    if spec.kind != "processor":
        raise ConfigError(f"operator {op!r} is a {spec.kind}, not a processor")
    node = registry.create(op, **params)
    if name is not None:
        node.name = name
    return node


def make_encoder_node(codec: str, config: Any = None, stream: str = DEFAULT_STREAM,
                      name: str | None = None) -> EncoderNode:
    """An Encoder as a node. config: None (defaults), the codec's config object, a dict of
    its fields ({"bitrate": 128000, "input_format": {...}}), or an Encoder."""
    if isinstance(config, Encoder):
        encoder = config
    else:
        codec = normalize_codec(codec)
        if isinstance(config, dict):
            config = _build_config(ENCODER_CONFIGS[codec], config, f"{codec} encoder")
        encoder = Encoder(codec, config, stream)
    return EncoderNode(encoder, name)


def make_decoder_node(codec: str, config: Any = None, on_error: str = "fail",
                      stream: str = DEFAULT_STREAM, name: str | None = None) -> DecoderNode:
    """A Decoder as a node. config as for make_encoder_node (or a Decoder);
    on_error: "fail" raises CodecError on a bad packet, "skip" counts it and goes on."""
    if on_error not in ERROR_POLICIES:
        raise ConfigError(f"decoder node: on_error must be 'fail' or 'skip', got {on_error!r}")
    if isinstance(config, Decoder):
        decoder = config
        decoder.on_error = "skip" if on_error == "skip" else "raise"
    else:
        codec = normalize_codec(codec)
        if isinstance(config, dict):
            config = _build_config(DECODER_CONFIGS[codec], config, f"{codec} decoder")
        decoder = Decoder(codec, config, stream, on_error="skip" if on_error == "skip" else "raise")
    return DecoderNode(decoder, name)


def make_source_node(source: Iterable | Any, kind: str | None = None,
                     name: str | None = None) -> Node:
    """A source as a node (a Node is returned as it is)."""
    if isinstance(source, Node):
        return source
    return SourceNode(source, kind, name)


def make_sink_node(sink: Any, kind: str | None = None, name: str | None = None) -> Node:
    """A sink object as a node (a Node is returned as it is). kind: "pcm", "packet" or "any"
    (default: the sink's `input_kind` attribute, else "any")."""
    if isinstance(sink, Node):
        return sink
    return SinkNode(sink, kind, name)
