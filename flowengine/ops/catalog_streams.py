"""Operators for many streams in one run: `files` (one stream per file) and `tones` (N streams).

Registered by name like the other built-ins (flowengine/ops/catalog.py
imports this module). `file_sink` with a field (`{stream}`, `{stem}`...) in its path hands over to
`template_file_sink` here: one output file per stream.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from flowengine.ops.io.multifile import MultiFileSource
from flowengine.ops.io.multitone import MultiToneSource
from flowengine.ops.io.template_writer import TemplateFileWriter
from flowengine.ops.node import PACKET, PCM, Node
from flowengine.ops.registry import Convert, PartialFormatParam, operator
from flowengine.ops.adapters import SinkNode
from flowengine.ops.flownode import ANY
from flowengine.ops.streams import MultiStreamSourceNode

__all__ = ["template_file_sink", "READ_COSTS"]


def _one_or_list(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


Paths = Annotated[str | list[str], Convert(_one_or_list, "before")]
Lengths = Annotated[float | list[float] | None, Convert(_one_or_list, "before")]
# A file source's cost hint, for `files` and `file_source` (catalog.py says how they were
# measured): decoding, or packets only.
READ_COSTS = {"pcm": 0.13, "packet": 0.04}


@operator("files", kind="source", inputs=None, outputs=PCM, stateful=True, shares_streams=True,
          summary="Many audio files, one stream per file (named after it): a glob, a directory "
                  "or a list",
          kinds=lambda p: (None, PACKET if p.get("mode") == "packet" else PCM),
          example={"paths": "music/**/*.flac", "on_error": "skip"},
          # measured as catalog.py's cost hints are: decoding, or packets only
          cost=lambda p: READ_COSTS[p.get("mode", "pcm")])
def files(paths: Paths, mode: Literal["pcm", "packet"] = "pcm", chunk_samples: int = 1024,
          format: PartialFormatParam | None = None, interleave: bool = True, max_open: int = 8,
          on_error: Literal["fail", "skip"] = "fail",
          on_file_error: Literal["fail", "skip"] | None = None) -> Node:
    """
    paths: a glob (** recurses), a directory (its audio files), a file, or a list of them; a glob or directory takes the files with an audio extension and logs the others it skips
    mode: pcm (decoded frames) or packet (compressed packets, no decoding)
    chunk_samples: samples per channel in each PCM frame
    format: convert every file's audio to this format (default: each file's own rate and channels, planar f32; keys left out: each file's)
    interleave: true: one chunk per open file in turn; false: one file after another
    max_open: files open at once when interleaving
    on_error: damaged frames: fail (stop that file, naming file, byte and time) or skip (replace them with silence of their duration, count them, go on)
    on_file_error: a file that cannot be read or that stops (on_error fail): fail (stop the run) or skip (its output stays .part, the other files go on); default: as on_error
    """
    source = MultiFileSource(paths, mode=mode, chunk_samples=chunk_samples, format=format,
                             interleave=interleave, max_open=max_open, on_error=on_error,
                             on_file_error=on_file_error)
    return MultiStreamSourceNode(source, PACKET if mode == "packet" else PCM, name="files")


@operator("tones", kind="source", inputs=None, outputs=PCM, stateful=True, shares_streams=True,
          summary="N generated streams tone-0..tone-{N-1}, each at its own frequency, "
                  "interleaved chunk by chunk",
          example={"streams": 4, "seconds": 10}, cost=0.13)
def tones(streams: int = 2, frequency: float = 440.0, amplitude: float = 0.5,
          seconds: Lengths = 1.0, sample_rate: int = 48000, channels: int = 2,
          chunk_samples: int = 1024, waveform: str = "sine", realtime: bool = False,
          seed: int = 0, sample_type: str = "f32", prefix: str = "tone") -> Node:
    """
    streams: how many streams
    frequency: Hz of stream 0; stream i plays frequency * (1 + i / streams)
    amplitude: peak amplitude, 0..1
    seconds: length of every stream, or a list with one length per stream
    sample_rate: samples per second
    channels: channel count of every stream
    chunk_samples: samples per channel in each frame
    waveform: sine, square, chirp, noise, silence or bursts
    realtime: pace the output at real time
    seed: random seed for noise
    sample_type: u8, s16, s32, f32 or f64
    prefix: stream ids are prefix-0, prefix-1, ...
    """
    source = MultiToneSource(streams=streams, frequency=frequency, seconds=seconds,
                             prefix=prefix, amplitude=amplitude, sample_rate=sample_rate,
                             channels=channels, chunk_samples=chunk_samples, waveform=waveform,
                             realtime=realtime, seed=seed, sample_type=sample_type)
    return MultiStreamSourceNode(source, PCM, name="tones")


def template_file_sink(path: str, stream_paths: dict[str, str] | None = None,
                       **writer_options: Any) -> Node:
    """The file sink for a path with fields ({stream}, {stem}...): each file is named at its
    stream's first buffer (from `stream_paths` when it has the stream)."""
    return SinkNode(TemplateFileWriter(path, stream_paths=stream_paths, **writer_options), ANY,
                    name="file_sink")
