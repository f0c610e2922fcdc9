"""Encoder: PCM in, one encoded packet per codec frame out (mp3, aac/ADTS, opus, flac, wav).

Theory of operation. `put_frame` checks the samples, copies them and cuts
them into full `chunk_samples` blocks (a SampleFifo keeps the remainder); it
never runs the codec. `get_frame`/`get_packet` hand those blocks to a codec
backend, which re-blocks them to the codec's own frame size (so any chunk size
works) and returns packets. `force=True` also encodes
the short tail, sends end-of-stream to the codec and drains it; after that the
encoder is spent until `reset()`, which opens a fresh codec context.

Backends share one small interface: `name`, `frame_size`, `sample_types` (the
input types taken as they are; other input is converted to the first),
`extradata`, `pending_samples`, `takes_any_length` (encode takes any number of
samples and frames them itself: every chunk waiting goes in one call),
`encode(planar_pcm, pts)` and `flush()`, both returning (bytes, pts, dts,
duration, is_key) tuples:
- `_PyAVBackend`: FFmpeg through PyAV (libmp3lame, aac, libopus, flac);
- `lame.LameMp3Encoder`: the fast LAME of the `lameenc` package (mp3 default);
- `_WavBackend`: raw interleaved PCM bytes, one packet per chunk.

Timestamps are in samples (time base 1/sample_rate). Codecs with a start-up
delay (mp3, aac, opus) begin at a negative pts and clip the last packet's
duration, as FFmpeg does, so that pts + duration of the last packet is the end
of the input and next pts = pts + duration throughout.
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction

import av
import numpy as np

from flowengine.audio.buffers import DEFAULT_STREAM, PACKET_FLAG_KEY, AudioFrame, Packet, samples_from_ticks
from flowengine.errors import CodecError, FormatError
from flowengine.audio.fifo import SampleFifo
from flowengine.audio.format import AudioFormat, as_format, check_pcm, convert
from flowengine.ops.codecs.adts import AAC_SAMPLE_RATES, AdtsFramer
from flowengine.audio.avframes import FrameFiller
from flowengine.ops.codecs.configs import ENCODER_CONFIGS, normalize_codec
from flowengine.ops.codecs.lame import LAME_AVAILABLE, LameMp3Encoder, check_mp3_params

__all__ = ["Encoder", "FrameEncoder", "OPUS_SAMPLE_RATES", "MP3_BACKENDS", "interleave"]

OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)
MP3_BACKENDS = ("auto", "lame", "pyav")

# Channel count -> an FFmpeg layout every codec here accepts for that count.
_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
# Sample formats the FFmpeg encoders take (flowengine type, planar).
_AV_INPUT = {"mp3": ("f32", True), "aac": ("f32", True), "opus": ("f32", False)}
_AV_NAMES = {"mp3": "libmp3lame", "aac": "aac", "opus": "libopus", "flac": "flac"}

EncodedTuple = tuple[bytes, int, int, int, bool]


def interleave(pcm: np.ndarray) -> np.ndarray:
    """Planar (channels, n) -> contiguous interleaved (n, channels).

    One strided copy per channel is ~3x faster than `pcm.T.copy()` for codec-frame sizes.
    """
    out = np.empty((pcm.shape[1], pcm.shape[0]), dtype=pcm.dtype)
    for channel, samples in enumerate(pcm):
        out[:, channel] = samples
    return out


def _layout(codec: str, channels: int) -> str:
    if channels not in _LAYOUTS:
        raise CodecError(f"{codec}: channels must be 1..8, got {channels}")
    return _LAYOUTS[channels]


def _check_opus(fmt: AudioFormat, bitrate: int) -> None:
    if fmt.sample_rate not in OPUS_SAMPLE_RATES:
        raise FormatError(f"opus encodes at 8000, 12000, 16000, 24000 or 48000 Hz, got "
                          f"{fmt.sample_rate} Hz: resample to 48000 Hz first (Processor.resample)")
    if isinstance(bitrate, bool) or not isinstance(bitrate, int) \
            or not 500 <= bitrate <= 256000 * fmt.channels:
        raise CodecError(f"opus: bitrate must be 500..{256000 * fmt.channels} bit/s for "
                         f"{fmt.channels} channel(s), got {bitrate!r}")


def _check_aac(fmt: AudioFormat, bitrate: int | None) -> None:
    if fmt.sample_rate not in AAC_SAMPLE_RATES:
        raise CodecError(f"aac: sample_rate {fmt.sample_rate} Hz is not an AAC rate; expected one of "
                         f"{', '.join(map(str, AAC_SAMPLE_RATES))} Hz (resample first)")
    if bitrate is not None and (isinstance(bitrate, bool) or not isinstance(bitrate, int) or bitrate <= 0):
        raise CodecError(f"aac: bitrate must be a positive integer (bit/s) or None, got {bitrate!r}")


def _check_flac(level: int | None) -> None:
    if level is not None and (isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 12):
        raise CodecError(f"flac: compression_level must be 0..12 or None, got {level!r}")


class _PyAVBackend:
    """An FFmpeg encoder through PyAV, fed exactly `frame_size` samples per frame."""

    takes_any_length = False

    def __init__(self, codec: str, fmt: AudioFormat, sample_type: str, planar: bool,
                 bit_rate: int | None = None, options: dict[str, str] | None = None) -> None:
        self.name = _AV_NAMES[codec]
        self.sample_types = (sample_type,)
        self._codec = codec
        self._planar = planar
        self._av_format = AudioFormat(fmt.sample_rate, fmt.channels, sample_type, planar).av_format
        self._layout = _layout(codec, fmt.channels)
        self._time_base = Fraction(1, fmt.sample_rate)
        cc = av.CodecContext.create(self.name, "w")
        cc.sample_rate = fmt.sample_rate
        cc.layout = self._layout
        cc.format = self._av_format
        cc.time_base = self._time_base
        if bit_rate is not None:
            cc.bit_rate = bit_rate
        if options:
            cc.options = options
        try:
            cc.open()
        except av.FFmpegError as exc:
            raise CodecError(f"{codec}: cannot open the {self.name} encoder for {fmt} "
                             f"(bit_rate={bit_rate}, options={options or {}}): {exc}") from None
        self._cc = cc
        self.frame_size = cc.frame_size
        self._framer = AdtsFramer(cc.extradata) if codec == "aac" else None
        # OpusHead for opus, STREAMINFO for flac (made final by flush); None for ADTS AAC.
        self.extradata = None if self._framer is not None else cc.extradata
        dtype = fmt.with_(sample_type=sample_type).dtype
        self._fifo = SampleFifo(fmt.channels, dtype)
        self._filler = FrameFiller(self._av_format, self._layout, fmt.sample_rate, dtype)
        self._next_pts = 0

    @property
    def pending_samples(self) -> int:
        return len(self._fifo)

    def encode(self, pcm: np.ndarray, pts: int) -> list[EncodedTuple]:
        """Planar samples in `sample_type` -> packets of every complete codec frame."""
        size = self.frame_size
        if not len(self._fifo) and pcm.shape[1] == size:     # chunk == frame: no re-blocking
            return self._encode_frame(pcm, pts)
        self._fifo.push(pcm, pts)
        out: list[EncodedTuple] = []
        while len(self._fifo) >= size:
            out += self._encode_frame(*self._fifo.pop(size, view=True))
        return out

    def flush(self) -> list[EncodedTuple]:
        """Encode the short last frame, send end of stream, return everything the codec held."""
        out = self._encode_frame(*self._fifo.pop_all()) if len(self._fifo) else []
        out += self._encode(None, None)
        if self._framer is None:
            self.extradata = self._cc.extradata
        return out

    def _encode_frame(self, pcm: np.ndarray, pts: int) -> list[EncodedTuple]:
        # pts in the context's time base, 1/sample_rate
        return self._encode(self._filler.fill(pcm, pts), pts)

    def _encode(self, frame: av.AudioFrame | None, pts: int | None) -> list[EncodedTuple]:
        try:
            packets = self._cc.encode(frame)
        except av.FFmpegError as exc:
            where = "at end of stream" if frame is None else f"at sample pts {pts}"
            raise CodecError(f"{self._codec} ({self.name}): encoding failed {where}: {exc}") from None
        out = []
        for packet in packets:
            if packet.size == 0:        # FLAC's end packet only carries the final STREAMINFO
                continue
            data = bytes(packet)
            if self._framer is not None:
                data = self._framer.frame(data)
            duration = packet.duration if packet.duration is not None else self.frame_size
            pts = packet.pts if packet.pts is not None else self._next_pts
            dts = packet.dts if packet.dts is not None else pts
            self._next_pts = pts + duration
            out.append((data, pts, dts, duration, packet.is_keyframe))
        return out


class _WavBackend:
    """Raw PCM: each chunk becomes one packet of interleaved samples in the input sample type."""

    name = "pcm"
    takes_any_length = False    # one packet per chunk
    extradata = None
    pending_samples = 0

    def __init__(self, fmt: AudioFormat, chunk_samples: int) -> None:
        self.sample_types = (fmt.sample_type,)
        self.frame_size = chunk_samples

    def encode(self, pcm: np.ndarray, pts: int) -> list[EncodedTuple]:
        return [(interleave(pcm).tobytes(), pts, pts, pcm.shape[1], True)]

    def flush(self) -> list[EncodedTuple]:
        return []


def _open_backend(codec: str, fmt: AudioFormat, config) -> "_PyAVBackend | LameMp3Encoder | _WavBackend":
    """Validate the parameters for `fmt` and open the codec."""
    if codec == "wav":
        return _WavBackend(fmt, config.chunk_samples)
    if codec == "mp3":
        check_mp3_params(fmt.sample_rate, fmt.channels, config.bitrate, config.quality)
        if config.backend not in MP3_BACKENDS:
            raise CodecError(f"mp3: backend must be one of {', '.join(MP3_BACKENDS)}, "
                             f"got {config.backend!r}")
        if config.backend == "lame" or (config.backend == "auto" and LAME_AVAILABLE):
            return LameMp3Encoder(fmt.sample_rate, fmt.channels, config.bitrate, config.quality)
        # FFmpeg maps compression_level to LAME's quality.
        return _PyAVBackend(codec, fmt, "f32", True, config.bitrate,
                            {"compression_level": str(config.quality)})
    if codec == "aac":
        _check_aac(fmt, config.bitrate)
        return _PyAVBackend(codec, fmt, *_AV_INPUT[codec], config.bitrate)
    if codec == "opus":
        _check_opus(fmt, config.bitrate)
        return _PyAVBackend(codec, fmt, *_AV_INPUT[codec], config.bitrate)
    _check_flac(config.compression_level)
    # 16-bit sources stay 16-bit (bit-exact); anything wider is encoded as 24-bit from s32.
    sample_type = "s16" if fmt.sample_type in ("u8", "s16") else "s32"
    options = None if config.compression_level is None \
        else {"compression_level": str(config.compression_level)}
    return _PyAVBackend(codec, fmt, sample_type, False, None, options)


class FrameEncoder:
    """Encodes `AudioFrame`s through a PyAV codec context without leaving FFmpeg: the frame's
    own av.AudioFrame goes to `encode`, and PyAV re-blocks it to the codec's frame size (and
    interleaves it for Opus) in C. Packets and bytes are those of Encoder (tested); packets
    keep the codec's av.Packet (a muxer takes it as it is) and make their bytes only when
    asked (ADTS-framed for AAC)."""

    def __init__(self, backend: "_PyAVBackend", codec: str, fmt: AudioFormat, stream: str) -> None:
        self._cc = backend._cc
        self._codec = codec
        self._format = fmt
        self._rate = fmt.sample_rate
        self._time_base = backend._time_base
        self._framer = backend._framer
        # What a decoder or muxer needs beside the packets: the OpusHead, AAC's
        # AudioSpecificConfig.
        self._extradata = self._cc.extradata if codec in ("opus", "aac") else None
        self._stream = stream
        self.samples_in = 0

    def encode(self, frame: AudioFrame | None) -> list[Packet]:
        """The packets `frame` completes; None: the end of the stream (the short last frame
        and what the codec held)."""
        if frame is None:
            av_frame = None
        else:
            if frame.format is not self._format and frame.format != self._format:
                raise FormatError(f"{self._codec} encoder, stream {self._stream!r}: input format "
                                  f"changed at sample {self.samples_in}: expected "
                                  f"{self._format}, got {frame.format} (use a new Encoder, or "
                                  f"reset() first)")
            av_frame = frame.av
            av_frame.time_base = self._time_base
            self.samples_in += frame.samples
        try:
            packets = self._cc.encode(av_frame)
        except (av.FFmpegError, ValueError) as exc:
            where = "at end of stream" if frame is None else f"at sample pts {frame.pts}"
            raise CodecError(f"{self._codec} ({self._cc.name}): encoding failed {where}: "
                             f"{exc}") from None
        codec, stream, rate = self._codec, self._stream, self._rate
        framer, extradata = self._framer, self._extradata
        return [Packet.from_av(packet, codec, stream, rate, framer=framer, extradata=extradata)
                for packet in packets if packet.size]


class Encoder:
    """Streaming encoder with the original library's API: put PCM, get packets.

    >>> import numpy as np
    >>> from flowengine.audio.format import AudioFormat
    >>> from flowengine.ops.codecs.configs import WavEncoderConfig
    >>> enc = Encoder("wav", WavEncoderConfig(AudioFormat(8000, 1, "s16"), chunk_samples=4))
    >>> enc.put_frame(np.arange(6, dtype=np.int16).reshape(1, 6))
    >>> enc.get_frame(), enc.get_frame(), enc.get_frame(force=True), enc.get_frame(force=True)
    (b'\\x00\\x00\\x01\\x00\\x02\\x00\\x03\\x00', None, b'\\x04\\x00\\x05\\x00', None)
    """

    def __init__(self, codec: str, config=None, stream: str = DEFAULT_STREAM) -> None:
        self._codec = normalize_codec(codec)
        config_type = ENCODER_CONFIGS[self._codec]
        if config is None:
            config = config_type()
        elif not isinstance(config, config_type):
            raise FormatError(f"{self._codec} encoder needs a {config_type.__name__}, "
                              f"got {type(config).__name__}")
        self._config = config
        self._stream = stream
        self._format: AudioFormat | None = None
        self._backend = None
        self._fifo: SampleFifo | None = None        # input not yet a full chunk
        self._chunks: deque[tuple[np.ndarray, int]] = deque()   # full chunks, not yet encoded
        self._next_pts = 0                           # pts of the next sample put
        self._queue: deque[Packet] = deque()
        self._samples_in = 0
        self._fed = False          # the codec got samples since it was opened
        self._flushed = False
        if config.input_format is not None:
            self._open(config.input_format)

    # --- properties --------------------------------------------------------------------

    @property
    def codec(self) -> str:
        return self._codec

    @property
    def config(self):
        return self._config

    @property
    def stream(self) -> str:
        return self._stream

    @property
    def input_format(self) -> AudioFormat | None:
        return self._format

    @property
    def sample_rate(self) -> int | None:
        return None if self._format is None else self._format.sample_rate

    @property
    def frame_size(self) -> int | None:
        """Samples per packet the codec produces (None until the input format is known)."""
        return None if self._backend is None else self._backend.frame_size

    @property
    def extradata(self) -> bytes | None:
        """Codec parameters a decoder needs beside the packets (OpusHead, FLAC STREAMINFO)."""
        return None if self._backend is None else self._backend.extradata

    @property
    def backend(self) -> str | None:
        """Which implementation encodes: "lameenc", "libmp3lame", "aac", "libopus", "flac", "pcm"."""
        return None if self._backend is None else self._backend.name

    # --- input -------------------------------------------------------------------------

    def put_frame(self, pcm, pts: int | None = None, format: AudioFormat | dict | None = None) -> None:
        """Buffer PCM: a numpy array in the input format, or an AudioFrame (format/pts/stream from it)."""
        if isinstance(pcm, AudioFrame):
            pcm, pts, format = self._unpack_frame(pcm, pts, format)
        fmt = self._format
        if format is not None and as_format(format) != fmt:
            self._switch_format(as_format(format))
        elif fmt is None:
            raise FormatError(f"{self._where()}: no input format: pass format= to the first "
                              f"put_frame (or set input_format in the config)")
        if self._flushed:
            raise CodecError(f"{self._where()}: put_frame after the end of stream "
                             f"(get_frame(force=True) flushed the codec): call reset() to encode "
                             f"a new stream")
        fmt = self._format
        pcm = check_pcm(pcm, fmt, where=lambda: f"{self._where()}, sample {self._samples_in}")
        # Copy: the caller may reuse its buffer before the samples are encoded.
        self._buffer(np.array(pcm if fmt.planar else pcm.T, order="C", copy=True), pts)

    def _where(self) -> str:
        return f"{self._codec} encoder, stream {self._stream!r}"

    def _switch_format(self, fmt: AudioFormat) -> None:
        """A format for a new stream opens the codec for it; mid-stream it is an error."""
        if self._samples_in:
            raise FormatError(f"{self._where()}: input format changed at sample {self._samples_in}: "
                              f"expected {self._format}, got {fmt} (use a new Encoder, or reset() "
                              f"first)")
        self._open(fmt)

    def _buffer(self, planar: np.ndarray, pts: int | None) -> None:
        """Cut the input into full chunks now (cheap), so get_frame only has to encode them."""
        samples = planar.shape[1]
        chunk = self._config.chunk_samples
        fifo = self._fifo
        if not len(fifo) and pts is not None:    # a timestamp restarts the timeline between chunks
            self._next_pts = pts
        if not len(fifo) and samples % chunk == 0:  # the common case: no re-blocking, no copy
            pts = self._next_pts
            for start in range(0, samples, chunk):  # views of the encoder's own copy
                self._chunks.append((planar[:, start:start + chunk], pts + start))
        else:
            fifo.push(planar, self._next_pts if not len(fifo) else None)
            while len(fifo) >= chunk:
                self._chunks.append(fifo.pop(chunk, view=True))
        self._next_pts += samples
        self._samples_in += samples

    def _unpack_frame(self, frame: AudioFrame, pts, format):
        if format is not None and as_format(format) != frame.format:
            raise FormatError(f"{self._where()}: format= {format} disagrees with the AudioFrame's "
                              f"format {frame.format}")
        if frame.stream != self._stream:
            if self._samples_in:
                raise FormatError(f"{self._where()}: got a frame of stream {frame.stream!r} at "
                                  f"sample {self._samples_in}")
            self._stream = frame.stream
        if pts is None and frame.pts is not None:
            pts = samples_from_ticks(frame.pts, frame.time_base, frame.format.sample_rate)
        return frame.data, pts, frame.format

    def _open(self, fmt: AudioFormat) -> None:
        self._backend = _open_backend(self._codec, fmt, self._config)
        self._format = fmt
        self._fifo = SampleFifo(fmt.channels, fmt.dtype)
        self._chunks.clear()
        self._next_pts = 0
        planar_in = fmt.with_(planar=True)
        accepted = self._backend.sample_types
        self._convert = None if fmt.sample_type in accepted \
            else (planar_in, planar_in.with_(sample_type=accepted[0]))
        self._fed = False

    def frame_encoder(self, fmt: AudioFormat, stream: str) -> FrameEncoder | None:
        """A FrameEncoder for a stream of `fmt`, when this codec's FFmpeg encoder takes f32
        (aac, opus, mp3 through PyAV) and nothing is buffered yet; None otherwise (the LAME,
        FLAC and wav backends take numpy). Opens the codec for `fmt`."""
        if self._samples_in or fmt.sample_type != "f32" or self._codec not in _AV_INPUT:
            return None
        if self._format != fmt or self._backend is None:
            self._open(fmt)
        if not isinstance(self._backend, _PyAVBackend):
            return None
        self._stream = stream
        return FrameEncoder(self._backend, self._codec, fmt, stream)

    # --- output ------------------------------------------------------------------------

    def get_frame(self, force: bool = False) -> bytes | None:
        """The next encoded packet's bytes, or None (see get_packet)."""
        packet = self.get_packet(force)
        return None if packet is None else packet.data

    def get_packet(self, force: bool = False) -> Packet | None:
        """The next packet, or None when a full chunk is not yet buffered.

        With force=True the short tail is encoded and the codec flushed; once
        everything is returned, None marks the end of the stream.
        """
        if not self._queue and self._backend is not None:
            self._encode_buffered(force)
        return self._queue.popleft() if self._queue else None

    def _encode_buffered(self, force: bool) -> None:
        chunks = self._chunks
        if len(chunks) > 1 and self._backend.takes_any_length:
            # One codec call for every chunk waiting, not one each (a call's own cost was
            # ~3 % of LAME's encoding at 1152-sample chunks).
            pcm, pts = chunks.popleft()
            self._feed(np.concatenate([pcm] + [more for more, _ in chunks], axis=1), pts)
            chunks.clear()
        while not self._queue and chunks:
            self._feed(*chunks.popleft())
        if force and not self._queue and not self._flushed:
            if len(self._fifo):
                self._feed(*self._fifo.pop_all())
            self._flushed = True
            self._emit(self._backend.flush())

    def _feed(self, pcm: np.ndarray, pts: int) -> None:
        if self._convert is not None:
            pcm = convert(pcm, *self._convert)
        self._fed = True
        self._emit(self._backend.encode(pcm, pts))

    def _emit(self, encoded: list[EncodedTuple]) -> None:
        rate = self._format.sample_rate
        # Only Opus packets need parameters from outside the bytes (the OpusHead).
        extradata = self._backend.extradata if self._codec == "opus" else None
        for data, pts, dts, duration, key in encoded:
            self._queue.append(Packet(data, 1, rate, pts, dts, duration,
                                      PACKET_FLAG_KEY if key else 0, self._codec, self._stream,
                                      extradata))

    # --- state -------------------------------------------------------------------------

    def pending_samples(self) -> int:
        """Samples buffered and not yet given to the codec (the codec's own look-ahead excluded)."""
        if self._backend is None:
            return 0
        return (len(self._chunks) * self._config.chunk_samples + len(self._fifo)
                + self._backend.pending_samples)

    def state(self) -> str:
        """Where the encoder stands.

        "ready": get_frame() returns a packet now; "need_more": samples or codec look-ahead
        are held (more input, or a forced flush, brings them out); "empty": nothing is held.
        """
        if not self._queue and self._chunks:
            # A full chunk does not always make a packet (codec look-ahead): encode to find out.
            self._encode_buffered(force=False)
        if self._queue:
            return "ready"
        if self.pending_samples() or (self._fed and not self._flushed):
            return "need_more"
        return "empty"

    def reset(self) -> None:
        """Drop everything buffered and open a new codec context (same input format)."""
        self._queue.clear()
        self._samples_in = 0
        self._flushed = False
        if self._format is not None:
            self._open(self._format)

    def __repr__(self) -> str:
        # Not state(): that may run the codec, and a repr must not change anything.
        return (f"Encoder({self._codec!r}, stream={self._stream!r}, format={self._format}, "
                f"backend={self.backend}, pending_samples={self.pending_samples()}, "
                f"packets_ready={len(self._queue)})")
