"""Sinks that keep nothing on disk: MemorySink collects buffers, NullSink only counts them.

Both follow the sink contract: `push(buffer)` takes an AudioFrame or a Packet,
`push(None)` (or `finalize()`) ends the stream; finalizing twice is a no-op,
pushing data after the end is an error.
"""

from __future__ import annotations

import numpy as np

from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.errors import FlowError, FormatError

__all__ = ["MemorySink", "NullSink"]


def _check_buffer(sink: str, buf: object, finalized: bool) -> None:
    if finalized:
        raise FlowError(f"{sink}: a buffer was pushed after the end of the stream (finalize)")
    if not isinstance(buf, (AudioFrame, Packet)):
        raise FormatError(f"{sink}: expected an AudioFrame or a Packet, got {type(buf).__name__}")


class MemorySink:
    """Keeps every frame and packet pushed into it, for tests and library users.

    >>> from flowengine.audio.format import AudioFormat
    >>> sink = MemorySink()
    >>> sink.push(AudioFrame(np.zeros((1, 3), np.float32), AudioFormat(8000, 1)))
    >>> sink.push(None)
    >>> sink.pcm().shape, sink.finalized
    ((1, 3), True)
    """

    def __init__(self) -> None:
        self.frames: list[AudioFrame] = []
        self.packets: list[Packet] = []
        self.finalized = False

    def push(self, buf: AudioFrame | Packet | None) -> None:
        if buf is None:
            self.finalize()
            return
        _check_buffer("MemorySink", buf, self.finalized)
        (self.frames if isinstance(buf, AudioFrame) else self.packets).append(buf)

    def finalize(self) -> None:
        """Mark the end of the stream; a second call does nothing."""
        self.finalized = True

    def pcm(self, layout: str = "planar") -> np.ndarray:
        """All frames' samples concatenated: (channels, n) planar or (n, channels) interleaved.

        Frames must share rate, channel count and sample type (the layout may differ).
        """
        if layout not in ("planar", "interleaved"):
            raise FormatError(f"MemorySink.pcm: layout must be 'planar' or 'interleaved', got {layout!r}")
        if not self.frames:
            raise FormatError("MemorySink.pcm: no AudioFrame was pushed, so there is no PCM "
                              "(not even a channel count) to return")
        first = self.frames[0].format
        for index, frame in enumerate(self.frames):
            fmt = frame.format
            if (fmt.sample_rate, fmt.channels, fmt.sample_type) != \
                    (first.sample_rate, first.channels, first.sample_type):
                raise FormatError(f"MemorySink.pcm: frame {index} is {fmt}, frame 0 is {first}; "
                                  f"cannot concatenate different formats")
        planar = np.concatenate([frame.planar() for frame in self.frames], axis=1)
        return planar if layout == "planar" else np.ascontiguousarray(planar.T)

    def data(self) -> bytes:
        """The packets' bytes joined in order (a playable stream for self-framed codecs)."""
        return b"".join(packet.data for packet in self.packets)

    @property
    def samples(self) -> int:
        """Samples per channel in the collected frames."""
        return sum(frame.samples for frame in self.frames)

    def __repr__(self) -> str:
        return (f"<MemorySink {len(self.frames)} frame(s), {len(self.packets)} packet(s)"
                f"{', finalized' if self.finalized else ''}>")


class NullSink:
    """Discards everything, counting buffers, PCM samples (per channel) and bytes.

    `samples` counts AudioFrame samples only; `bytes` counts packet bytes and
    the size of PCM arrays.
    """

    def __init__(self) -> None:
        self.buffers = 0
        self.samples = 0
        self.bytes = 0
        self.finalized = False

    def push(self, buf: AudioFrame | Packet | None) -> None:
        if buf is None:
            self.finalize()
            return
        _check_buffer("NullSink", buf, self.finalized)
        self.buffers += 1
        if isinstance(buf, AudioFrame):
            self.samples += buf.samples
            self.bytes += buf.data.nbytes
        else:
            self.bytes += len(buf.data)

    def finalize(self) -> None:
        """Mark the end of the stream; a second call does nothing."""
        self.finalized = True

    def __repr__(self) -> str:
        return f"<NullSink {self.buffers} buffer(s), {self.samples} sample(s), {self.bytes} byte(s)>"
