"""flowengine: a streaming audio dataflow engine.

Library use (one process)::

    import flowengine as fe
    enc = fe.Encoder("mp3", fe.Mp3EncoderConfig(fe.AudioFormat(48000, 2, "f32")))

Runs described in YAML, each operator in its own worker process: `flowengine run FILE`.
"""

from flowengine.audio.buffers import AudioFrame, CodecPacket, Packet
from flowengine.ops.codecs.configs import (
    AacDecoderConfig, AacEncoderConfig, FlacDecoderConfig, FlacEncoderConfig, Mp3DecoderConfig,
    Mp3EncoderConfig, OpusDecoderConfig, OpusEncoderConfig, WavDecoderConfig, WavEncoderConfig,
)
from flowengine.ops.codecs.decoder import Decoder
from flowengine.ops.codecs.encoder import Encoder
from flowengine.errors import (
    CodecError, ConfigError, FlowError, FormatError, UnknownCodecError, WireError, WorkerFailed,
)
from flowengine.audio.format import AudioFormat
from flowengine.ops.io import AudioFileReader, AudioFileWriter, MemorySink, NullSink, ToneSource
from flowengine.ops.node import AGAIN, EOF, PACKET, PCM, Node
from flowengine.ops import (
    make_decoder_node, make_encoder_node, make_fork_join_node, make_identity_node,
    make_processor_node, make_python_node, make_sink_node, make_source_node, make_tap_node,
)
from flowengine.ops.pipeline import Pipeline
from flowengine.ops.processors import Processor
from flowengine.ops.registry import registry
from flowengine.local.runner import AsyncRunner, Runner, RunStats

__version__ = "0.1.0"

__all__ = [
    "AudioFormat", "AudioFrame", "Packet", "CodecPacket",
    "Encoder", "Decoder",
    "Mp3EncoderConfig", "AacEncoderConfig", "OpusEncoderConfig", "FlacEncoderConfig", "WavEncoderConfig",
    "Mp3DecoderConfig", "AacDecoderConfig", "OpusDecoderConfig", "FlacDecoderConfig", "WavDecoderConfig",
    "Processor",
    "AudioFileReader", "AudioFileWriter", "ToneSource", "MemorySink", "NullSink",
    "Node", "AGAIN", "EOF", "PCM", "PACKET",
    "make_identity_node", "make_processor_node", "make_encoder_node", "make_decoder_node",
    "make_python_node", "make_tap_node", "make_source_node", "make_sink_node", "make_fork_join_node",
    "Pipeline", "Runner", "AsyncRunner", "RunStats", "registry",
    "FlowError", "FormatError", "CodecError", "UnknownCodecError", "WireError", "ConfigError",
    "WorkerFailed",
]
