"""flowengine: a streaming audio dataflow engine.

Library use (one process)::

    import flowengine as fe
    enc = fe.Encoder("mp3", fe.Mp3EncoderConfig(fe.AudioFormat(48000, 2, "f32")))

Runs described in YAML, each operator in its own worker process: `flowengine run FILE`.

`import flowengine` loads nothing but this table: each name is imported from
its module the first time it is used (PEP 562), so the command line, the
worker processes and a script that needs one codec each pay only for what
they use.
"""

from __future__ import annotations

from flowengine.lazy import lazy_names

__version__ = "0.1.0"

# name -> the module that defines it
_PUBLIC = {
    **dict.fromkeys(["AudioFrame", "Packet", "CodecPacket"], "flowengine.audio.buffers"),
    "AudioFormat": "flowengine.audio.format",
    "Encoder": "flowengine.ops.codecs.encoder",
    "Decoder": "flowengine.ops.codecs.decoder",
    **dict.fromkeys(["Mp3EncoderConfig", "AacEncoderConfig", "OpusEncoderConfig",
                     "FlacEncoderConfig", "WavEncoderConfig", "Mp3DecoderConfig",
                     "AacDecoderConfig", "OpusDecoderConfig", "FlacDecoderConfig",
                     "WavDecoderConfig"], "flowengine.ops.codecs.configs"),
    "Processor": "flowengine.ops.processors",
    **dict.fromkeys(["AudioFileReader", "AudioFileWriter", "ToneSource", "MemorySink",
                     "NullSink"], "flowengine.ops.io"),
    **dict.fromkeys(["Node", "AGAIN", "EOF", "PCM", "PACKET"], "flowengine.ops.node"),
    **dict.fromkeys(["make_identity_node", "make_processor_node", "make_encoder_node",
                     "make_decoder_node", "make_python_node", "make_tap_node",
                     "make_source_node", "make_sink_node", "make_fork_join_node"],
                    "flowengine.ops"),
    "Pipeline": "flowengine.ops.pipeline",
    "registry": "flowengine.ops.registry",
    **dict.fromkeys(["Runner", "AsyncRunner", "RunStats"], "flowengine.local.runner"),
    **dict.fromkeys(["FlowError", "FormatError", "CodecError", "UnknownCodecError",
                     "WireError", "ConfigError", "WorkerFailed"], "flowengine.errors"),
}

__all__ = list(_PUBLIC)

__getattr__ = lazy_names(__name__, _PUBLIC, globals())


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
