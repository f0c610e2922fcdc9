"""numpy <-> av.AudioFrame without PyAV's per-call allocations, for the per-buffer codec paths.

`av.AudioFrame.from_ndarray` builds a new frame and a new buffer for every
block, and `AudioFrame.to_ndarray` stacks one array per plane into a fresh one
(`np.vstack`): together the largest Python-side cost of handing audio to
FFmpeg. `FrameFiller` keeps one frame per block size and copies the samples
into its planes; `planar_array` copies a planar frame's planes into one
`(channels, samples)` array.

Reusing a frame is safe because a codec or filter that still holds a reference
to its buffer makes it shared: `make_writable()` then gives the frame a new
buffer (copy on write) before it is filled again, and the plane views are taken
after that call, every time. What it saves depends on the consumer: measured
with PyAV 18, a frame built by PyAV gets a new buffer at its first
`make_writable()`, and keeps it from then on after each encode (the encoders
copy what they keep), so an encoder's refills do not allocate.
"""

from __future__ import annotations

import av
import numpy as np

__all__ = ["FrameFiller", "planar_array"]


class FrameFiller:
    """One reusable av.AudioFrame of an FFmpeg sample format, layout and rate.

    `fill(planar, pts)` copies a (channels, n) array of the format's dtype into
    it (interleaving it for a packed format) and returns the frame, valid until
    the next fill.
    """

    def __init__(self, av_format: str, layout: str, sample_rate: int, dtype: np.dtype) -> None:
        self._format = av_format
        self._layout = layout
        self._rate = sample_rate
        self._dtype = np.dtype(dtype)
        self._packed = not av.AudioFormat(av_format).is_planar
        self._channels = av.AudioLayout(layout).nb_channels
        self._frame: av.AudioFrame | None = None

    def fill(self, planar: np.ndarray, pts: int | None) -> av.AudioFrame:
        channels, samples = planar.shape
        if channels != self._channels:   # a plane left unfilled would keep stale samples
            raise ValueError(f"FrameFiller({self._layout}): {channels} channel(s) given, the "
                             f"layout has {self._channels}")
        frame = self._frame
        if frame is None or frame.samples != samples:
            frame = self._frame = av.AudioFrame(format=self._format, layout=self._layout,
                                                samples=samples)
            frame.sample_rate = self._rate
        else:
            frame.make_writable()
        planes = frame.planes
        if self._packed:
            interleaved = np.frombuffer(planes[0], self._dtype, samples * channels)
            interleaved = interleaved.reshape(samples, channels)
            for channel in range(channels):
                interleaved[:, channel] = planar[channel]
        else:
            for channel in range(channels):
                np.frombuffer(planes[channel], self._dtype, samples)[:] = planar[channel]
        frame.pts = pts
        return frame


def planar_array(frame: av.AudioFrame, dtype: np.dtype) -> np.ndarray:
    """A planar frame's samples as a new (channels, samples) array of `dtype` (the
    frame's own sample type)."""
    samples = frame.samples
    planes = frame.planes
    out = np.empty((len(planes), samples), dtype)
    for channel, plane in enumerate(planes):
        out[channel] = np.frombuffer(plane, dtype, samples)
    return out
