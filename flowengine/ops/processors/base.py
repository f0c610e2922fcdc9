"""The streaming machinery every PCM -> PCM processor shares.

`BaseProcessor` owns everything that is not DSP: validating input against the
input format (never casting silently), converting to float64 planar for the
DSP (or float32, when `_configure` sets `self._dsp_dtype = np.float32`: a
subclass whose DSP runs at f32 precision anyway, such as libswresample between
f32 ends, then skips two conversions per block), converting the result to the output format, the output queue and its
optional re-blocking, pts bookkeeping, flush and reset. A subclass writes
only the signal processing:

    _configure(input_format)   (re)build DSP state once the input format is known
    _output_format(input_format) -> AudioFormat    default: the input format
                               (called after _configure, so it may use that state)
    _process(block) -> block   planar (channels, n) in, (out_channels, m) out, in float64
                               (or float32, see above)
    _tail() -> block | None    what is still inside at the end of input (flush)

A subclass validates and stores its parameters *before* calling
`super().__init__(format, ...)`, which runs `_configure` at once when the
format is already known.

Timeline: output pts start at the first input pts (0 when none was given),
converted to output samples, and advance by the samples emitted, so output
pts are continuous whatever the chunking. The output time base is
1/output sample rate.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from flowengine.audio.buffers import DEFAULT_STREAM, AudioFrame, round_ratio, samples_from_ticks, \
    time_base_fraction
from flowengine.errors import FlowError, FormatError
from flowengine.audio.fifo import SampleFifo
from flowengine.audio.format import AudioFormat, as_format, check_pcm, from_float, normalize_sample_type, to_float

__all__ = ["BaseProcessor", "LAYOUTS"]

LAYOUTS = ("planar", "interleaved")


class BaseProcessor:
    """A streaming PCM -> PCM operator: put_frame() blocks in, get_frame() blocks out.

    format: the input format, or None to take it from the first put_frame
        (format= argument or an AudioFrame).
    out_chunk_samples: re-block the output into chunks of exactly this many
        samples (the last, partial one comes out on flush). None = one output
        block per input block.
    out_sample_type / out_planar: output sample type and layout when they
        should differ from the input's.
    """

    name = "processor"

    def __init__(self, format: AudioFormat | dict | None = None, *,
                 out_chunk_samples: int | None = None,
                 out_sample_type: str | None = None,
                 out_planar: bool | None = None) -> None:
        if out_chunk_samples is not None and (isinstance(out_chunk_samples, bool)
                                              or int(out_chunk_samples) != out_chunk_samples
                                              or out_chunk_samples <= 0):
            raise ValueError(f"{self.name}: out_chunk_samples must be a positive integer or None, "
                             f"got {out_chunk_samples!r}")
        self.out_chunk_samples = None if out_chunk_samples is None else int(out_chunk_samples)
        self._out_sample_type = (None if out_sample_type is None
                                 else normalize_sample_type(out_sample_type))
        self._out_planar = out_planar
        self._initial_format = as_format(format)
        self._start_fresh()

    # ---- hooks for subclasses -------------------------------------------------------------

    def _configure(self, input_format: AudioFormat) -> None:
        """Build fresh DSP state for this input format (called again by reset())."""

    def _output_format(self, input_format: AudioFormat) -> AudioFormat:
        """The output format for this input format; override to change rate or channels."""
        return input_format

    def _process(self, block: np.ndarray) -> np.ndarray:
        """DSP on one block: planar (channels, n) -> planar (out_channels, m), both of
        `self._dsp_dtype` (float64 unless _configure chose float32)."""
        raise NotImplementedError

    def _tail(self) -> np.ndarray | None:
        """Samples still held at the end of input (delay line, filter ring-out), or None."""
        return None

    # ---- public API -----------------------------------------------------------------------

    @property
    def input_format(self) -> AudioFormat | None:
        return self._input_format

    @property
    def output_format(self) -> AudioFormat | None:
        return self._out_format

    @property
    def samples_in(self) -> int:
        """Samples per channel accepted so far."""
        return self._samples_in

    @property
    def samples_out(self) -> int:
        """Samples per channel handed out so far (by get_frame and friends)."""
        return self._samples_out

    @property
    def flushed(self) -> bool:
        return self._flushed

    def put_frame(self, pcm: np.ndarray | AudioFrame, pts: int | None = None,
                  format: AudioFormat | dict | None = None) -> None:
        """Feed one block: a numpy array in the input format, or an AudioFrame.

        `pts` is in samples of the input rate. `format` declares the input format
        when the processor was built without one; a different format later is a
        FormatError. Output is computed now and queued for get_frame().
        """
        if self._flushed:
            raise FlowError(f"{self.name}: put_frame after end of input (flush or "
                            f"get_frame(force=True)); call reset() to start a new stream")
        if isinstance(pcm, AudioFrame):
            frame = pcm
            self._accept_format(frame.format)
            pcm = frame.data
            if pts is None and frame.pts is not None:
                pts = samples_from_ticks(frame.pts, frame.time_base, frame.format.sample_rate)
            self._stream = frame.stream
        else:
            if format is not None:
                self._accept_format(as_format(format))
            elif self._input_format is None:
                raise FormatError(f"{self.name}: the input format is not known yet: pass format= "
                                  f"with the first put_frame (or build the processor with a format)")
        fmt = self._input_format
        pcm = check_pcm(pcm, fmt, where=lambda: f"{self.name} input at sample {self._samples_in}")
        if self._start_pts is None:
            self._start_pts = 0 if pts is None else int(pts)
        n = pcm.shape[1] if fmt.planar else pcm.shape[0]
        if n == 0:
            return
        block = to_float(pcm, fmt.sample_type, self._dsp_dtype)
        if not fmt.planar:
            block = block.T
        self._samples_in += n
        self._queue_output(self._process(block))

    def flush(self) -> None:
        """Mark the end of input: the tail is queued; get_frame returns the rest, then None."""
        if self._flushed:
            return
        self._flushed = True
        if self._input_format is None:
            return
        tail = self._tail()
        if tail is not None:
            self._queue_output(tail)
        if self._fifo is not None and len(self._fifo):
            block, _ = self._fifo.pop_all()
            self._ready.append(block)

    def get_frame(self, force: bool = False, layout: str | None = "planar") -> np.ndarray | None:
        """The next output block, or None. force=True ends the input first (drains tails).

        layout: "planar" (channels, samples), "interleaved" (samples, channels), or None
        for the output format's own layout. Samples are in the output sample type.
        """
        info = self.get_frame_info(force, layout)
        return None if info is None else info[0]

    def get_frame_info(self, force: bool = False, layout: str | None = "planar"
                       ) -> tuple[np.ndarray, int, tuple[int, int]] | None:
        """(array, pts, (time_base_num, time_base_den)) of the next output block, or None."""
        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"{self.name}: layout must be 'planar', 'interleaved' or None, "
                             f"got {layout!r}")
        if force:
            self.flush()
        if not self._ready:
            return None
        block = self._ready.popleft()
        pts = self._next_out_pts()
        self._samples_out += block.shape[1]
        fmt = self._out_format
        data = from_float(block, fmt.sample_type)
        planar = fmt.planar if layout is None else layout == "planar"
        if not planar:
            data = data.T
        return np.ascontiguousarray(data), pts, (1, fmt.sample_rate)

    def get_audio_frame(self, force: bool = False) -> AudioFrame | None:
        """The next output block as an AudioFrame in the output format (for the node layer)."""
        info = self.get_frame_info(force, layout=None)
        if info is None:
            return None
        data, pts, (num, den) = info
        # Checked by AudioFrame: a subclass's _process decides the channel count.
        return AudioFrame(data, self._out_format, pts, time_base_fraction(num, den), self._stream)

    def pending_samples(self) -> int:
        """Output samples per channel computed and not yet taken out."""
        queued = sum(block.shape[1] for block in self._ready)
        return queued + (len(self._fifo) if self._fifo is not None else 0)

    def reset(self) -> None:
        """Fresh state: empty queues, zeroed filters, timeline restarted, format as built."""
        self._start_fresh()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._input_format} -> {self._out_format}>"

    # ---- internals ------------------------------------------------------------------------

    def _start_fresh(self) -> None:
        self._input_format: AudioFormat | None = None
        self._out_format: AudioFormat | None = None
        self._ready: deque[np.ndarray] = deque()
        self._fifo: SampleFifo | None = None
        self._samples_in = 0
        self._samples_out = 0
        self._start_pts: int | None = None
        self._flushed = False
        self._stream = DEFAULT_STREAM
        self._dsp_dtype = np.float64     # _set_format lets _configure choose again
        if self._initial_format is not None:
            self._set_format(self._initial_format)

    def _set_format(self, fmt: AudioFormat) -> None:
        self._dsp_dtype = np.float64
        self._configure(fmt)
        out = self._output_format(fmt)
        changes = {}
        if self._out_sample_type is not None:
            changes["sample_type"] = self._out_sample_type
        if self._out_planar is not None:
            changes["planar"] = bool(self._out_planar)
        out = out.with_(**changes) if changes else out
        self._input_format = fmt
        self._out_format = out
        if self.out_chunk_samples is not None:
            self._fifo = SampleFifo(out.channels, self._dsp_dtype)

    def _accept_format(self, fmt: AudioFormat) -> None:
        if self._input_format is None:
            self._set_format(fmt)
        elif fmt != self._input_format:
            raise FormatError(f"{self.name}: input format changed mid-stream at sample "
                              f"{self._samples_in}: expected {self._input_format}, got {fmt}; "
                              f"call reset() before starting a stream in another format")

    def _queue_output(self, block: np.ndarray | None) -> None:
        if block is None or block.shape[1] == 0:
            return
        if self._fifo is None:
            self._ready.append(block)
            return
        self._fifo.push(block)
        size = self.out_chunk_samples
        while len(self._fifo) >= size:
            chunk, _ = self._fifo.pop(size)
            self._ready.append(chunk)

    def _next_out_pts(self) -> int:
        """pts of the next output sample, in output samples: first input pts + samples out."""
        start = self._start_pts or 0
        in_rate = self._input_format.sample_rate
        out_rate = self._out_format.sample_rate
        if in_rate != out_rate:
            start = round_ratio(start * out_rate, in_rate)
        return start + self._samples_out
