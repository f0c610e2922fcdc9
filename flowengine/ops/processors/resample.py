"""Sample-rate and channel conversion over libswresample (PyAV's `av.AudioResampler`).

Any rate / channel count / sample type / layout in, any out. The DSP runs in
float64 planar (the base class converts sample types and layouts on the way in
and out), so libswresample only changes the rate and the channels. Between f32
input and f32 output it runs in float32 (`fltp`) instead, as FFmpeg and PyAV do
for f32 audio: no conversions per block, and the same samples as a plain PyAV
f32 resample (up to the exact-length end below). Float64 would buy nothing the
f32 output keeps, and it changes the samples by about 1e-7, which is enough to
change how much work a downstream AAC encoder's rate loop does (measured: up to
20% more on some files, never much less).

Length promise: a stream of `n` input samples gives exactly
`round(n * out_rate / in_rate)` output samples (halves round up), however the
input was chunked. The end is computed, not cut: at flush the filter is fed
zeros past the end of input (so the last output samples are complete, the
resampler's delay is flushed and no tail is lost), then the output is trimmed
to that length. libswresample's own end-of-stream flush is not relied upon: it
extrapolates the signal past the end and emits nothing at all for inputs
shorter than its filter.

Chunking invariance: libswresample is deterministic and streaming, so feeding
the input in blocks of any sizes gives the same samples as one block (bit
identical in float64 and float32, measured).

Channels: 1 -> N copies the mono signal to every channel, N -> 1 takes the mean
of the channels (so identical channels survive unchanged, unlike
libswresample's -3 dB matrix). Any other change (e.g. 5.1 -> stereo) uses
libswresample's standard rematrixing between FFmpeg's default layouts.

`out_chunk_samples` re-blocks the output into chunks of exactly that size. The
last chunk is zero-padded to a full chunk when `pad_final=True` (what a
fixed-frame encoder downstream wants); with `pad_final=False` it is short and
the total length is exactly the promise above. Without `out_chunk_samples`,
`pad_final` has no effect.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import av
import numpy as np

from flowengine.audio.avframes import FrameFiller, planar_array
from flowengine.audio.buffers import AudioFrame, round_ratio
from flowengine.errors import ConfigError, FormatError
from flowengine.audio.format import DEFAULT_LAYOUTS, AudioFormat, as_format
from flowengine.ops.flownode import BatchNode
from flowengine.ops.node import PCM
from flowengine.ops.processors.base import BaseProcessor

__all__ = ["Resampler", "ResampleNode", "expected_output_samples", "resample_rule"]

# Filter half-length of libswresample's default filter (filter_size=32) in output samples,
# with a wide margin: how many zeros past the end make the last output samples complete.
_TAIL_MARGIN = 256


def expected_output_samples(samples_in: int, in_rate: int, out_rate: int) -> int:
    """round(samples_in * out_rate / in_rate), halves rounded up, in exact arithmetic."""
    return (2 * samples_in * out_rate + in_rate) // (2 * in_rate)     # floor(x + 1/2)


def resample_rule(n: int, params: Mapping[str, Any], in_rate: int, out_rate: int
                  ) -> tuple[int, int]:
    """The `resample` operator's sample rule: the exact length promise; re-blocked with
    `out_chunk_samples` and `pad_final` (the default), the last chunk is zero-padded to a
    whole chunk."""
    expected = expected_output_samples(n, in_rate, out_rate) if in_rate else n
    chunk = params.get("out_chunk_samples")
    if chunk and params.get("pad_final", True):
        expected = -(-expected // int(chunk)) * int(chunk)
    return expected, expected


def _layout(channels: int) -> str:
    if channels not in DEFAULT_LAYOUTS:
        raise FormatError(f"resample: {channels} channels have no standard layout to convert "
                          f"from or to (supported: 1 to 8); use a channel-mix processor first")
    return DEFAULT_LAYOUTS[channels]


def _check_options(options: dict[str, str]) -> None:
    """Fail at construction, not at the first block, when libswresample rejects an option."""
    probe = av.AudioResampler(format="dblp", layout="mono", rate=44100, options=options)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 64)), format="dblp", layout="mono")
    frame.sample_rate = 48000
    try:
        probe.resample(frame)
    except ValueError as exc:   # av.error.FFmpegError and PyAV's "unused config" are ValueErrors
        raise ConfigError(f"resample: libswresample rejected options {options}: {exc}") from exc


class Resampler(BaseProcessor):
    """Streaming rate / channel / sample-type conversion with an exact output length.

    in_format: the input format, or None to take it from the first put_frame.
    out_format: the output format (rate, channels, sample type, layout).
    out_chunk_samples: re-block the output into chunks of this many samples (None: as produced).
    pad_final: zero-pad the last chunk to a full `out_chunk_samples` chunk.
    options: libswresample options for the underlying aresample filter,
        e.g. {"filter_size": "64"} for a longer, sharper filter.
    """

    name = "resample"

    def __init__(self, in_format: AudioFormat | dict | None, out_format: AudioFormat | dict,
                 out_chunk_samples: int | None = None, pad_final: bool = True,
                 options: dict | None = None) -> None:
        out_format = as_format(out_format)
        if out_format is None:
            raise FormatError("resample: out_format is required (rate, channels, sample type)")
        self._target = out_format
        self.pad_final = bool(pad_final)
        self.options = {str(k): str(v) for k, v in (options or {}).items()}
        if self.options:
            _check_options(self.options)
        super().__init__(in_format, out_chunk_samples=out_chunk_samples,
                         out_sample_type=out_format.sample_type, out_planar=out_format.planar)

    # ---- BaseProcessor hooks --------------------------------------------------------------

    def _output_format(self, input_format: AudioFormat) -> AudioFormat:
        return self._target

    def _configure(self, input_format: AudioFormat) -> None:
        in_ch, out_ch = input_format.channels, self._target.channels
        self._in_rate = input_format.sample_rate
        self._out_rate = self._target.sample_rate
        # Mono up/down-mixes are done here (see module docstring); libswresample
        # then only sees equal channel counts, or a multichannel-to-multichannel change.
        self._mix_in = in_ch > 1 and out_ch == 1
        self._mix_out = in_ch == 1 and out_ch > 1
        swr_channels_in = 1 if self._mix_in else in_ch
        swr_channels_out = swr_channels_in if (self._mix_in or self._mix_out) else out_ch
        self._swr_channels_in = swr_channels_in
        self._swr_layout_in = _layout(swr_channels_in)
        self._swr_layout_out = _layout(swr_channels_out)
        self._identity = (self._in_rate == self._out_rate
                          and swr_channels_in == swr_channels_out)
        f32_ends = input_format.sample_type == "f32" and self._target.sample_type == "f32"
        self._dsp_dtype = np.float32 if f32_ends else np.float64
        swr_format = "fltp" if f32_ends else "dblp"
        self._swr = None if self._identity else av.AudioResampler(
            format=swr_format, layout=self._swr_layout_out, rate=self._out_rate,
            options=self.options or None)
        self._filler = FrameFiller(swr_format, self._swr_layout_in, self._in_rate,
                                   self._dsp_dtype)
        self._tick = Fraction(1, self._in_rate)
        self._fed = 0           # input samples given to libswresample
        self._emitted = 0       # output samples handed to the base class
        # produced but not yet allowed out
        self._held = np.zeros((swr_channels_out, 0), self._dsp_dtype)

    def _process(self, block: np.ndarray) -> np.ndarray:
        if self._mix_in:
            block = block.mean(axis=0, keepdims=True)
        produced = self._run_swr(block)
        # Never hand out more than the final length can be: hold back anything
        # beyond round(n_so_far * ratio), which only grows with more input.
        allowed = expected_output_samples(self._fed, self._in_rate, self._out_rate) - self._emitted
        return self._emit(produced, allowed)

    def _tail(self) -> np.ndarray | None:
        total = expected_output_samples(self._fed, self._in_rate, self._out_rate)
        produced = self._held
        self._held = produced[:, :0]
        if self._swr is not None and self._fed > 0:
            ratio_up = -(-self._in_rate // self._out_rate)
            zeros = np.zeros((self._swr_channels_in, _TAIL_MARGIN * max(1, ratio_up)),
                             self._dsp_dtype)
            fed = self._fed
            produced = np.concatenate([produced, self._run_swr(zeros), self._drain_swr()], axis=1)
            self._fed = fed     # the zeros are not input
        missing = total - self._emitted - produced.shape[1]
        if missing > 0:
            padding = np.zeros((produced.shape[0], missing), self._dsp_dtype)
            produced = np.concatenate([produced, padding], axis=1)
        tail = self._emit(produced, total - self._emitted)
        if self.pad_final and self.out_chunk_samples is not None:
            short = (-self._emitted) % self.out_chunk_samples
            tail = np.concatenate([tail, np.zeros((tail.shape[0], short), tail.dtype)], axis=1)
        return tail

    # ---- internals ------------------------------------------------------------------------

    def _emit(self, produced: np.ndarray, allowed: int) -> np.ndarray:
        """Pass out at most `allowed` samples of held + produced, keep the rest held."""
        if self._held.shape[1]:
            produced = np.concatenate([self._held, produced], axis=1)
        allowed = max(0, allowed)
        out, self._held = produced[:, :allowed], produced[:, allowed:]
        self._emitted += out.shape[1]
        if self._mix_out:
            out = np.repeat(out, self._target.channels, axis=0)
        return out

    def _run_swr(self, block: np.ndarray) -> np.ndarray:
        self._fed += block.shape[1]
        if self._swr is None:       # a copy: output never shares memory with the caller's input
            return block.copy()
        frame = self._filler.fill(block, self._fed - block.shape[1])
        frame.time_base = self._tick
        return self._collect(self._swr.resample(frame))

    def _drain_swr(self) -> np.ndarray:
        return self._collect(self._swr.resample(None))

    def _collect(self, frames: list) -> np.ndarray:
        arrays = [planar_array(f, self._dsp_dtype) for f in frames if f is not None]
        if not arrays:
            return self._held[:, :0]
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=1)


class ResampleNode(BatchNode):
    """The `resample` operator as a node. Between f32 planar ends with the channel count
    kept (the usual case: a rate change) the frames stay `av.AudioFrame`s from end to end:
    libswresample re-blocks them too (`out_chunk_samples`), and the only Python per block is
    the length bookkeeping; the samples are those of `Resampler` (the same filter, fltp). Any
    other conversion (channels, sample types) runs through `Resampler`'s numpy path.

    `sample_rate` and `channels` None keep the input's (known at the first frame).
    """

    def __init__(self, sample_rate: int | None, channels: int | None = None, sample_type: str = "f32",
                 planar: bool = True, in_format: AudioFormat | None = None,
                 out_chunk_samples: int | None = None, pad_final: bool = True,
                 options: dict | None = None) -> None:
        super().__init__("resample", PCM, PCM)
        self._args = (sample_rate, channels, sample_type, planar, out_chunk_samples, pad_final,
                      options)
        self._given_format = self._in_format = as_format(in_format)
        self._path: _AvResample | Resampler | None = None
        if self._in_format is not None:
            self._path = self._choose(self._in_format)

    @property
    def input_format(self) -> AudioFormat | None:
        return self._in_format

    @property
    def output_format(self) -> AudioFormat | None:
        if self._path is None:
            return None
        return self._path.target if isinstance(self._path, _AvResample) \
            else self._path.output_format

    def _choose(self, in_fmt: AudioFormat) -> "_AvResample | Resampler":
        rate, channels, sample_type, planar, chunk, pad_final, options = self._args
        out = AudioFormat(rate or in_fmt.sample_rate, channels or in_fmt.channels, sample_type,
                          planar)
        if out.channels == in_fmt.channels and in_fmt.sample_type == out.sample_type == "f32" \
                and in_fmt.planar and out.planar:
            return _AvResample(in_fmt, out, chunk, pad_final, options)
        return Resampler(in_fmt, out, out_chunk_samples=chunk, pad_final=pad_final,
                         options=options)

    def _outputs(self, buf: AudioFrame) -> list:
        path = self._path
        if path is None:
            path = self._path = self._choose(buf.format)
            self._in_format = buf.format
        if type(path) is _AvResample:
            return path.process(buf)
        path.put_frame(buf)
        return self._numpy_outputs()

    def _flush(self) -> list:
        path = self._path
        if path is None:
            return []
        if type(path) is _AvResample:
            return path.finish()
        path.flush()
        return self._numpy_outputs()

    def _numpy_outputs(self) -> list:
        outs = []
        while (out := self._path.get_audio_frame()) is not None:
            outs.append(out)
        return outs

    def _reset(self) -> None:
        self._in_format = self._given_format
        self._path = None if self._in_format is None else self._choose(self._in_format)


class _AvResample:
    """libswresample on av.AudioFrames (fltp in and out, the channel count kept), with
    Resampler's exact length promise: never more out than round(n_in * ratio) so far, and at
    the end exactly that (zeros fed past the end, then cut)."""

    def __init__(self, in_fmt: AudioFormat, out: AudioFormat, chunk: int | None,
                 pad_final: bool, options: dict | None) -> None:
        options = {str(k): str(v) for k, v in (options or {}).items()}
        if options:
            _check_options(options)
        self.target = out
        self._in_rate, self._out_rate = in_fmt.sample_rate, out.sample_rate
        self._layout = _layout(out.channels)
        self._chunk = chunk
        self._pad_final = pad_final
        self._swr = av.AudioResampler(format="fltp", layout=self._layout, rate=self._out_rate,
                                      frame_size=chunk, options=options or None)
        self._tick = Fraction(1, self._in_rate)
        self._fed = 0           # input samples given to libswresample
        self._emitted = 0       # output samples handed out
        self._start: int | None = None      # output pts of the first sample
        self._held: list[np.ndarray] = []   # produced beyond what may go out yet
        self._stream = ""

    def process(self, buf: AudioFrame) -> list:
        if self._start is None:
            self._stream = buf.stream
            first = buf.pts if buf.pts is not None else 0
            self._start = first if self._in_rate == self._out_rate \
                else round_ratio(first * self._out_rate, self._in_rate)
        frame = buf.av
        frame.pts = self._fed
        frame.time_base = self._tick
        self._fed += buf.samples
        try:
            produced = self._swr.resample(frame)
        except ValueError as exc:   # PyAV: "Frame does not match AudioResampler setup."
            raise FormatError(f"resample: the input format changed mid-stream at input sample "
                              f"{self._fed - buf.samples}: now {buf.format}") from exc
        return self._emit(produced, expected_output_samples(self._fed, self._in_rate,
                                                            self._out_rate), buf.stream)

    def _emit(self, produced: list, allowed: int, stream: str) -> list:
        outs = []
        for frame in produced:
            if self._held or self._emitted + frame.samples > allowed:
                self._held.append(planar_array(frame, np.float32))
                continue
            outs.append(AudioFrame.from_av(frame, self.target, self._start + self._emitted,
                                           stream))
            self._emitted += frame.samples
        if self._held:       # rare: libswresample ran ahead of the length promise
            count = allowed - self._emitted
            if self._chunk:     # whole chunks only, until the end
                count -= count % self._chunk
            outs += self._release(count, stream)
        return outs

    def _release(self, count: int, stream: str, pad_to: int = 0) -> list:
        """Up to `count` held samples as numpy frames (chunked as configured); the rest stays
        held. `pad_to`: zero-pad the released samples to this many."""
        held = np.concatenate(self._held, axis=1) if self._held else \
            np.zeros((self.target.channels, 0), np.float32)
        out, rest = held[:, :max(0, count)], held[:, max(0, count):]
        self._held = [rest] if rest.shape[1] else []
        if out.shape[1] < pad_to:
            out = np.concatenate([out, np.zeros((out.shape[0], pad_to - out.shape[1]),
                                                np.float32)], axis=1)
        chunk = self._chunk or out.shape[1] or 1
        frames = []
        for start in range(0, out.shape[1], chunk):
            block = np.ascontiguousarray(out[:, start:start + chunk])
            frames.append(AudioFrame(block, self.target, self._start + self._emitted, None,
                                     stream))
            self._emitted += block.shape[1]
        return frames

    def finish(self) -> list:
        if self._start is None:     # no input at all: no output
            return []
        total = expected_output_samples(self._fed, self._in_rate, self._out_rate)
        ratio_up = -(-self._in_rate // self._out_rate)
        zeros = av.AudioFrame.from_ndarray(
            np.zeros((self.target.channels, _TAIL_MARGIN * max(1, ratio_up)), np.float32),
            format="fltp", layout=self._layout)
        zeros.sample_rate, zeros.pts, zeros.time_base = self._in_rate, self._fed, self._tick
        tail = self._swr.resample(zeros) + self._swr.resample(None)
        self._held += [planar_array(frame, np.float32) for frame in tail]
        need = total - self._emitted
        if self._pad_final and self._chunk is not None:
            need += (-total) % self._chunk       # the last chunk padded to a whole one
        return self._release(total - self._emitted, self._stream, pad_to=need)
