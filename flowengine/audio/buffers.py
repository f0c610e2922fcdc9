"""The two buffers that flow through a pipeline: PCM frames and codec packets.

Each buffer carries its audio in the form the operator that made it had, and
makes the other form only when someone asks (DESIGN §1):

- an `AudioFrame` holds an `av.AudioFrame` (from a PyAV decoder or resampler),
  a numpy array (from a Python processor) or the bytes it came in (from the
  wire); `frame.av` and `frame.data` convert lazily, once. Between PyAV
  operators the samples never leave FFmpeg, and a stage that never looks at
  the samples of what it received (a probe, a relay) never touches numpy;
- a `Packet` holds an `av.Packet` (from a PyAV encoder) or bytes; `packet.av`
  is the packet a muxer can take as it is, `packet.data` the bytes (made once,
  ADTS-framed for AAC by the `framer` the encoder gave).

Timestamps are integers in `time_base` units (a Fraction). For PCM the time
base is 1/sample_rate unless given, so the next frame's pts is pts + samples.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from typing import Any

import av
import numpy as np

from flowengine.audio.avframes import planar_array
from flowengine.audio.format import AudioFormat, channel_layout, check_pcm, convert

__all__ = ["AudioFrame", "Packet", "CodecPacket", "DEFAULT_STREAM", "PACKET_FLAG_KEY",
           "PACKET_FLAG_CORRUPT", "time_base_fraction", "round_ratio", "samples_from_ticks",
           "MAX_SAMPLE_RATE"]

DEFAULT_STREAM = "0"
PACKET_FLAG_KEY = 1
PACKET_FLAG_CORRUPT = 2
# Above this a packet time base is a container clock, not a sample rate.
MAX_SAMPLE_RATE = 768_000


@lru_cache(maxsize=256, typed=True)
def time_base_fraction(num: int, den: int) -> Fraction:
    """Fraction(num, den), built once per distinct time base: a Fraction costs a gcd and
    several Python calls, and per-buffer code asks for the same few time bases all the time
    (Fractions are immutable, so sharing one is safe)."""
    return Fraction(num, den)


def round_ratio(num: int, den: int) -> int:
    """round(Fraction(num, den)) (halves to even) in integer arithmetic; den > 0."""
    whole, rest = divmod(num, den)
    return whole + 1 if 2 * rest > den or (2 * rest == den and whole & 1) else whole


def samples_from_ticks(pts: int, time_base: Fraction, sample_rate: int) -> int:
    """A timestamp in `time_base` units as a sample position at `sample_rate` (rounded,
    halves to even), without Fraction arithmetic when the time base is 1/sample_rate."""
    num, den = time_base.numerator, time_base.denominator
    if num == 1 and den == sample_rate:
        return pts
    return round_ratio(pts * num * sample_rate, den)


class AudioFrame:
    """A block of PCM samples of one stream, in a known format.

    `AudioFrame(data, format, pts, time_base, stream)` checks a numpy array against the
    format (FormatError naming expected and got; nothing is cast). `AudioFrame.from_av`
    wraps a frame PyAV made, without looking at its samples; `AudioFrame.from_bytes`
    the samples as they came over the wire.
    """

    __slots__ = ("format", "pts", "stream", "samples", "_data", "_av", "_bytes", "_time_base")

    def __init__(self, data: np.ndarray, format: AudioFormat, pts: int | None = None,
                 time_base: Fraction | None = None, stream: str = DEFAULT_STREAM) -> None:
        data = check_pcm(data, format, where=lambda: f"stream {stream!r}")
        self._data = data
        self._av: av.AudioFrame | None = None
        self._bytes: memoryview | None = None
        self.format = format
        self.pts = pts
        self.stream = stream
        self.samples = int(data.shape[1] if format.planar else data.shape[0])
        self._time_base = time_base if time_base is None or type(time_base) is Fraction \
            else Fraction(time_base)

    @classmethod
    def from_av(cls, frame: av.AudioFrame, format: AudioFormat, pts: int | None,
                stream: str = DEFAULT_STREAM) -> "AudioFrame":
        """A frame PyAV made (decoder, resampler), in `format` (which the caller knows to
        be the frame's: its sample format, layout and rate), with `pts` in samples."""
        self = cls.__new__(cls)
        self._av = frame
        self._data = self._bytes = None
        self._time_base = None
        self.format, self.pts, self.stream, self.samples = format, pts, stream, frame.samples
        return self

    @classmethod
    def from_bytes(cls, samples_bytes: memoryview, format: AudioFormat, samples: int,
                   pts: int | None, time_base: Fraction | None, stream: str) -> "AudioFrame":
        """`samples` samples in `format` as raw bytes in native byte order, whose length the
        caller (the wire decoder) has checked; `data` views them (read-only unless the bytes
        are writable). Anyone else: use the normal constructor."""
        self = cls.__new__(cls)
        self._bytes, self._data, self._av = samples_bytes, None, None
        self._time_base = time_base
        self.format, self.pts, self.stream, self.samples = format, pts, stream, samples
        return self

    # ---- the two views -----------------------------------------------------------------

    @property
    def data(self) -> np.ndarray:
        """The samples as a numpy array: (channels, samples) when planar, else (samples,
        channels). Made from the PyAV frame or the bytes at the first call, then kept."""
        data = self._data
        if data is None:
            fmt = self.format
            if self._av is not None:
                data = _array_of(self._av, fmt)
            else:   # a view of the bytes
                data = np.frombuffer(self._bytes, fmt.dtype).reshape(
                    (fmt.channels, self.samples) if fmt.planar else (self.samples, fmt.channels))
            self._data = data
        return data

    @property
    def av(self) -> av.AudioFrame:
        """The samples as an av.AudioFrame (pts and time base set), for a PyAV operator.
        Made from the array at the first call, then kept."""
        frame = self._av
        if frame is None:
            frame = self._av = _av_frame_of(self.data, self.format)
        frame.pts = self.pts
        return frame

    @property
    def nbytes(self) -> int:
        """Bytes of the samples (without making either view)."""
        return self.samples * self.format.channels * self.format.bytes_per_sample

    @property
    def has_av(self) -> bool:
        """The samples are in an av.AudioFrame already (asking for `av` costs nothing)."""
        return self._av is not None

    # ---- timing ------------------------------------------------------------------------

    @property
    def time_base(self) -> Fraction:
        return self._time_base or time_base_fraction(1, self.format.sample_rate)

    @time_base.setter
    def time_base(self, value: Fraction | None) -> None:
        self._time_base = None if value is None else Fraction(value)

    @property
    def duration(self) -> float:
        return self.samples / self.format.sample_rate

    @property
    def end_pts(self) -> int | None:
        """pts of the sample after this frame, in time_base units."""
        if self.pts is None:
            return None
        return self.pts + int(round(self.samples / self.format.sample_rate / self.time_base))

    # ---- conversions -------------------------------------------------------------------

    def to_format(self, fmt: AudioFormat) -> "AudioFrame":
        """The same audio in another sample type / layout (not rate or channels)."""
        if fmt == self.format:
            return self
        return AudioFrame(convert(self.data, self.format, fmt), fmt, self.pts, self._time_base,
                          self.stream)

    def planar(self) -> np.ndarray:
        """Samples as a (channels, samples) array, without copying when already planar."""
        return self.data if self.format.planar else self.data.T

    def __reduce__(self) -> tuple:
        """Pickled as its samples as numpy, whichever form it holds (neither PyAV's frame nor
        a view of received bytes pickles)."""
        return AudioFrame, (self.data, self.format, self.pts, self._time_base, self.stream)

    def __repr__(self) -> str:
        held = "numpy" if self._data is not None else "av" if self._av is not None else "bytes"
        return (f"AudioFrame({self.samples} samples, {self.format}, pts={self.pts}, "
                f"stream={self.stream!r}, {held})")


def _array_of(frame: av.AudioFrame, fmt: AudioFormat) -> np.ndarray:
    if fmt.planar:
        return planar_array(frame, fmt.dtype)
    samples = frame.samples
    return np.frombuffer(frame.planes[0], fmt.dtype, samples * fmt.channels) \
        .reshape(samples, fmt.channels).copy()


def _av_frame_of(data: np.ndarray, fmt: AudioFormat) -> av.AudioFrame:
    layout = channel_layout(fmt.channels)
    if fmt.planar:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt.av_format,
                                           layout=layout)
    else:   # PyAV takes a packed format as one row of interleaved samples
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data).reshape(1, -1),
                                           format=fmt.av_format, layout=layout)
    frame.sample_rate = fmt.sample_rate
    frame.time_base = time_base_fraction(1, fmt.sample_rate)
    return frame


class Packet:
    """One encoded codec frame (an MP3 frame, an ADTS AAC frame, an Opus packet, ...).

    `Packet(data, ...)` holds bytes; `Packet.from_av` wraps a packet a PyAV encoder made
    and makes the bytes only when `data` is asked for (through `framer` when the codec
    frames them, e.g. ADTS for AAC). `samples` (what it lasts, per channel, when its time
    base is 1/rate; else 0) is worked out when it is made.
    """

    __slots__ = ("_data", "_av", "_framer", "time_base_num", "time_base_den", "pts", "dts",
                 "duration", "flags", "codec", "stream", "extradata", "samples")

    def __init__(self, data: bytes, time_base_num: int = 1, time_base_den: int = 48000,
                 pts: int | None = None, dts: int | None = None, duration: int | None = None,
                 flags: int = 0, codec: str = "", stream: str = DEFAULT_STREAM,
                 extradata: bytes | None = None) -> None:
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, bytes):
            raise TypeError(f"Packet data must be bytes, got {type(data).__name__}")
        self._data = data
        self._av = self._framer = None
        self.time_base_num, self.time_base_den = time_base_num, time_base_den
        self.pts, self.dts, self.duration, self.flags = pts, dts, duration, flags
        self.codec, self.stream = codec, stream
        # Codec parameters a decoder or muxer needs that are not in the bytes (OpusHead,
        # AAC's AudioSpecificConfig).
        self.extradata = extradata
        self.samples = _clocked_samples(time_base_num, time_base_den, duration)

    @classmethod
    def from_av(cls, packet: av.Packet, codec: str, stream: str, rate: int, *,
                framer: Any = None, extradata: bytes | None = None) -> "Packet":
        """A packet a PyAV encoder made, with timestamps in 1/`rate`. `framer.frame(raw)`
        (if given) turns its payload into the bytes `data` gives (ADTS for AAC)."""
        self = cls.__new__(cls)
        self._data, self._av, self._framer = None, packet, framer
        self.time_base_num, self.time_base_den = 1, rate
        pts = packet.pts
        self.pts = pts
        dts = packet.dts
        self.dts = pts if dts is None else dts
        self.duration = duration = packet.duration
        self.samples = duration or 0
        self.flags = PACKET_FLAG_KEY if packet.is_keyframe else 0
        self.codec, self.stream, self.extradata = codec, stream, extradata
        return self

    @property
    def data(self) -> bytes:
        data = self._data
        if data is None:
            data = bytes(self._av)
            if self._framer is not None:
                data = self._framer.frame(data)
            self._data = data
        return data

    @property
    def av(self) -> av.Packet | None:
        """The codec's own packet (no container framing), for a muxer; None when the
        packet was made from bytes."""
        return self._av

    @property
    def time_base(self) -> Fraction:
        return time_base_fraction(self.time_base_num, self.time_base_den)

    @property
    def nbytes(self) -> int:
        """Bytes of the payload in the form held now (the codec's packet, or the bytes)."""
        return self._av.size if self._data is None else len(self._data)

    @property
    def is_key(self) -> bool:
        return bool(self.flags & PACKET_FLAG_KEY)

    def __len__(self) -> int:
        return len(self.data)

    def __bytes__(self) -> bytes:
        return self.data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Packet):
            return NotImplemented
        return all(getattr(self, key) == getattr(other, key) for key in _PACKET_FIELDS)

    __hash__ = None   # mutable, compared by value

    def __repr__(self) -> str:
        return (f"Packet({self.codec or 'packet'}, pts={self.pts}, duration={self.duration}, "
                f"time_base={self.time_base_num}/{self.time_base_den}, "
                f"stream={self.stream!r})")


def _clocked_samples(num: int, den: int, duration: int | None) -> int:
    """Samples per channel a packet lasts, when its time base is a sample clock (1/rate, as
    flowengine stamps every packet); 0 in a container's time base (MP3's 1/14112000 says
    nothing about samples without the rate) or without a duration."""
    return int(duration or 0) if num == 1 and den <= MAX_SAMPLE_RATE else 0


_PACKET_FIELDS = ("data", "time_base_num", "time_base_den", "pts", "dts", "duration", "flags",
                  "codec", "stream", "extradata")

CodecPacket = Packet
