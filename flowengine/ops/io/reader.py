"""Read any audio file PyAV opens, packet by packet, as PCM frames or as undecoded packets.

Theory of operation. The container is demuxed one packet at a time, so memory
stays bounded by a packet plus one chunk whatever the file's length. In "pcm"
mode each packet is decoded, converted by an `av.AudioResampler` to the
output format (planar, in the requested rate / channels / sample type) and
re-blocked by a SampleFifo into frames of exactly `chunk_samples` (the last
one shorter), with pts counted in samples from 0. In "packet" mode packets
are handed out undecoded as flowengine Packets with flowengine's codec names;
AAC stored raw (MP4/M4A) is given ADTS headers so every packet describes
itself, as everywhere else in flowengine.

FFmpeg probes the container from the file's first bytes; when that finds no
audio stream and the extension names an audio format (a short MP3 can pass for
H.263 video), the file is opened again as that format.

Errors: a missing file is FileNotFoundError; an empty file, a file that is
not audio, or a file without an audio stream is FormatError; a packet that
does not decode in the middle of the file is CodecError naming the stream,
byte position and pts, raised after every sample decoded before it has been
handed out. So is a native FLAC packet that is not a whole frame or does not
start where the one before it ended: FFmpeg's parser hands damaged frames
(failed CRC) out that way, or drops them, without an error of its own. A
packet that fails at the very end of the file is a truncated tail: the
reader warns (RuntimeWarning), sets `truncated` and ends normally; so does
an MP3 whose last frame is shorter than its header says (FFmpeg would conceal
the missing bytes as silence), in both modes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from flowengine.audio.buffers import PACKET_FLAG_KEY, AudioFrame, Packet, round_ratio
from flowengine.ops.codecs.adts import AdtsFramer, parse_adts_header
from flowengine.ops.codecs.mp3frames import announced_frame_length
from flowengine.errors import CodecError, ConfigError, FlowError, FormatError
from flowengine.audio.format import AudioFormat, as_format, channel_layout

__all__ = ["AudioFileReader", "READER_MODES", "flowengine_codec_name"]

READER_MODES = ("pcm", "packet")

# FFmpeg codec names (canonical) -> flowengine's; anything else keeps FFmpeg's name.
_CODEC_NAMES = {"mp3": "mp3", "aac": "aac", "opus": "opus", "flac": "flac"}
# Extension -> FFmpeg demuxer, tried when probing the content finds no audio stream.
_EXTENSION_DEMUXERS = {".mp3": "mp3", ".aac": "aac", ".flac": "flac", ".wav": "wav",
                       ".ogg": "ogg", ".opus": "ogg", ".oga": "ogg", ".m4a": "mov"}
# Codecs whose Packets carry the container's extradata (a decoder cannot start without it).
_EXTRADATA_CODECS = ("opus", "flac")


def flowengine_codec_name(ffmpeg_name: str) -> str:
    """flowengine's name for an FFmpeg codec: mp3, aac, opus, flac, wav (raw PCM) or FFmpeg's own."""
    if ffmpeg_name.startswith("pcm_"):
        return "wav"
    return _CODEC_NAMES.get(ffmpeg_name, ffmpeg_name)



def _open_container(path: str) -> av.container.InputContainer:
    """The file's container, probed by content; a probe that finds no audio stream in a
    file whose extension names an audio format is tried again as that format (FFmpeg
    guesses from a few KB: a short MP3 can score higher as H.263 video)."""
    hint = _EXTENSION_DEMUXERS.get(Path(path).suffix.lower())
    try:
        container = _open_probed(path, None)
    except FormatError:
        hinted = _open_hinted(path, hint)   # a short MP3 can fail the probe outright too
        if hinted is None:
            raise
        return hinted
    if container.streams.audio or container.format.name == hint:
        return container
    hinted = _open_hinted(path, hint)
    if hinted is None:
        return container        # not that format either: the probe's answer stands
    container.close()
    return hinted


def _open_hinted(path: str, hint: str | None) -> av.container.InputContainer | None:
    """The file opened as the format its extension names, if that finds an audio stream."""
    if hint is None:
        return None
    try:
        container = _open_probed(path, hint)
    except FormatError:
        return None
    if not container.streams.audio:
        container.close()
        return None
    return container


def _open_probed(path: str, format: str | None) -> av.container.InputContainer:
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"audio file not found: '{path}'")  # names the path once
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise FormatError(f"'{path}' is empty (0 bytes): not an audio file")
    try:
        # Tags are text of any encoding: one bad byte must not make the audio unreadable.
        return av.open(path, "r", format=format, metadata_errors="replace")
    except (PermissionError, IsADirectoryError) as exc:     # PyAV's subclasses of these
        builtin = PermissionError if isinstance(exc, PermissionError) else IsADirectoryError
        raise builtin(f"cannot read audio file '{path}': {exc.strerror}") from None
    except av.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise FormatError(f"'{path}' is not an audio file PyAV can read: {reason}") from None


def _format_of(frame: av.AudioFrame) -> tuple[str, str, int]:
    return frame.format.name, frame.layout.name, frame.sample_rate


class AudioFileReader:
    """Streams one audio file as AudioFrames (mode="pcm") or Packets (mode="packet").

    format=None keeps the file's rate and channels, as planar f32; an
    AudioFormat converts to it (rate, channels, sample type, layout).
    stream=None names the stream after the file stem.

    >>> with AudioFileReader("speech.flac", chunk_samples=1024) as reader:   # doctest: +SKIP
    ...     for frame in reader:
    ...         print(frame.pts, frame.samples)
    """

    def __init__(self, path: str | os.PathLike, format: AudioFormat | dict | None = None,
                 chunk_samples: int = 1024, stream: str | None = None, mode: str = "pcm") -> None:
        if mode not in READER_MODES:
            raise ConfigError(f"AudioFileReader: mode must be 'pcm' or 'packet', got {mode!r}")
        if isinstance(chunk_samples, bool) or not isinstance(chunk_samples, int) or chunk_samples <= 0:
            raise ConfigError(f"AudioFileReader: chunk_samples must be a positive integer, got "
                              f"{chunk_samples!r}")
        self.path = os.fspath(path)
        self.mode = mode
        self.chunk_samples = chunk_samples
        self.stream = stream if stream is not None else Path(self.path).stem
        self.truncated = False
        self._container = _open_container(self.path)
        try:
            self._stream = self._audio_stream()
            self.source_format = self._source_format()
            own = AudioFormat(self.source_format.sample_rate, self.source_format.channels, "f32")
            self.format = as_format(format, like=own) or own    # omitted keys: the file's
        except Exception:
            self._container.close()
            raise
        self.codec = flowengine_codec_name(self._stream.codec.canonical_name)
        self._iterator: Iterator | None = None
        self._closed = False

    def _audio_stream(self) -> av.audio.stream.AudioStream:
        streams = self._container.streams
        if not streams.audio:
            kinds = ", ".join(s.type for s in streams) or "none"
            raise FormatError(f"'{self.path}' has no audio stream (streams found: {kinds})")
        stream = streams.audio[0]
        cc = stream.codec_context
        if cc is None:      # a codec id FFmpeg has no decoder for (damaged or exotic header)
            raise FormatError(f"'{self.path}': audio stream 0 has no decoder in this FFmpeg "
                              f"(unknown or damaged codec id)")
        if not cc.sample_rate or not cc.channels:
            raise FormatError(f"'{self.path}': audio stream 0 ({stream.codec.name}) has no sample "
                              f"rate or channel count (rate {cc.sample_rate}, channels {cc.channels})")
        return stream

    def _source_format(self) -> AudioFormat:
        """The file's own format as its decoder produces it (f32 if the decoder's type is unknown)."""
        cc = self._stream.codec_context
        try:
            return AudioFormat.from_av(cc.format.name, cc.channels, cc.sample_rate)
        except (AttributeError, FormatError):
            return AudioFormat(cc.sample_rate, cc.channels, "f32")

    # --- properties --------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        """Output rate in pcm mode; the file's rate in packet mode."""
        return (self.format if self.mode == "pcm" else self.source_format).sample_rate

    @property
    def channels(self) -> int:
        return (self.format if self.mode == "pcm" else self.source_format).channels

    @property
    def duration(self) -> float | None:
        """The length in seconds the container states (stream duration, else container's)."""
        stream = self._stream
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if self._container.duration is not None:
            return self._container.duration / av.time_base
        return None

    # --- iteration ---------------------------------------------------------------------

    def frames(self) -> Iterator[AudioFrame]:
        """Decoded AudioFrames of chunk_samples (pcm mode). One pass: iterating again continues."""
        return self._iter("pcm")

    def packets(self) -> Iterator[Packet]:
        """The container's packets as flowengine Packets (packet mode). One pass."""
        return self._iter("packet")

    def __iter__(self):
        return self._iter(self.mode)

    def next_frame(self, layout: str = "planar") -> np.ndarray | None:
        """The next chunk's samples as (channels, n) or (n, channels), or None at the end."""
        if layout not in ("planar", "interleaved"):
            raise FormatError(f"next_frame: layout must be 'planar' or 'interleaved', got {layout!r}")
        frame = next(self._iter("pcm"), None)
        if frame is None:
            return None
        planar = frame.planar()
        return planar if layout == "planar" else np.ascontiguousarray(planar.T)

    def _iter(self, mode: str) -> Iterator:
        if mode != self.mode:
            raise FlowError(f"AudioFileReader('{self.path}') was opened in {self.mode!r} mode; "
                            f"{mode!r} output needs mode={mode!r}")
        if self._closed:
            raise FlowError(f"AudioFileReader('{self.path}') is closed")
        if self._iterator is None:
            self._iterator = self._pcm_frames() if mode == "pcm" else self._packets()
        return self._iterator

    # --- pcm mode ----------------------------------------------------------------------

    def _pcm_frames(self) -> Iterator[AudioFrame]:
        """Decoded frames, converted to the output format and cut into chunks of exactly
        `chunk_samples` (the last one shorter) by one libswresample filter graph: the
        samples stay in FFmpeg, no Python per sample (DESIGN §1)."""
        fmt, stream = self.format, self.stream
        convert = av.AudioResampler(format=fmt.av_format, layout=channel_layout(fmt.channels),
                                    rate=fmt.sample_rate, frame_size=self.chunk_samples)
        pts = 0
        first = None
        error: CodecError | None = None
        size = self._file_size()
        try:
            for packet in self._demuxed():     # ends with an empty packet: drains
                try:
                    decoded = packet.decode()
                except av.FFmpegError as exc:
                    if self._is_truncated_tail(packet, size):
                        break
                    raise CodecError(f"'{self.path}': {self.codec} stream "
                                     f"{self._stream.index}: packet at {self._where(packet)} "
                                     f"does not decode: {exc}") from None
                for frame in decoded:
                    try:
                        converted = convert.resample(frame)
                    except ValueError:  # PyAV checks each frame against the first's format
                        raise self._format_changed(first, frame) from None
                    first = first or frame
                    for out in converted:
                        yield AudioFrame.from_av(out, fmt, pts, stream)
                        pts += out.samples
        except CodecError as exc:
            error = exc         # hand out what was decoded before the bad packet, then raise
        for out in convert.resample(None):
            yield AudioFrame.from_av(out, fmt, pts, stream)
            pts += out.samples
        if error is not None:
            raise error

    def _format_changed(self, first: av.AudioFrame, frame: av.AudioFrame) -> CodecError:
        was, got = (_format_of(f) for f in (first, frame))
        return CodecError(f"'{self.path}': {self.codec} stream {self._stream.index}: decoded "
                          f"audio changed format mid-stream at pts {frame.pts}: {was} then {got}")

    def _demuxed(self) -> Iterator[av.Packet]:
        """The audio stream's packets; a container the demuxer cannot go on reading is a
        CodecError naming the last good packet, and so is a FLAC packet that does not start
        where the one before it ended (see _check_flac_frame)."""
        stream, last = self._stream, None
        size = self._file_size()
        packets = self._container.demux(stream)
        next_sample: int | None = None      # FLAC: where the next packet must start
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as exc:
                after = f"after the packet at {self._where(last)}" if last is not None else \
                    "before the first packet"
                raise CodecError(f"'{self.path}': {self.codec} stream {stream.index}: the "
                                 f"container cannot be read {after}: {exc}") from None
            if packet.size and self._container.format.name == "flac":
                next_sample = self._check_flac_frame(packet, next_sample)
            if packet.size and self.codec == "mp3" and size is not None \
                    and (packet.pos or 0) + packet.size >= size \
                    and self._is_cut_mp3_frame(packet, size):
                continue        # then the demuxer's empty packet: the decoder still drains
            last = packet
            yield packet

    def _check_flac_frame(self, packet: av.Packet, expected: int | None) -> int:
        """Where the packet after this native FLAC packet must start.

        FFmpeg's FLAC parser drops frames that fail their CRC without a word, or hands
        damaged bytes out as one packet with no pts, so a damaged file decoded short
        (measured: 1152 to 3456 samples of 32000 gone, no error). A FLAC packet's pts is
        its first sample's number: a packet without one, or that does not start where the
        one before it ended, is damage."""
        where = f"'{self.path}': flac stream {self._stream.index}: the packet at " \
                f"{self._where(packet)}"
        if packet.pts is None or not packet.duration:
            raise CodecError(f"{where} is not a whole FLAC frame ({packet.size} bytes the "
                             f"parser could not frame): the file is damaged there")
        if expected is not None and packet.pts != expected:
            raise CodecError(f"{where} starts at sample {packet.pts}, where sample {expected} "
                             f"was next: damaged frames (failed CRC) were skipped before it")
        return packet.pts + packet.duration

    def _file_size(self) -> int | None:
        return os.path.getsize(self.path) if os.path.isfile(self.path) else None

    @staticmethod
    def _ends_file(packet: av.Packet, size: int | None) -> bool:
        """Whether the packet's bytes reach the end of a file of `size` bytes."""
        return size is not None and packet.pos is not None and packet.pos >= 0 \
            and packet.pos + packet.size >= size

    def _is_truncated_tail(self, packet: av.Packet, size: int | None,
                           what: str = "does not decode") -> bool:
        """A packet cut off by the end of the file: warn, remember, and let the stream end."""
        if not self._ends_file(packet, size):
            return False
        self.truncated = True
        warnings.warn(f"'{self.path}': the last packet ({self._where(packet)}) {what}: "
                      f"the file is truncated; ending the stream before it", RuntimeWarning,
                      stacklevel=4)
        return True

    def _is_cut_mp3_frame(self, packet: av.Packet, size: int | None) -> bool:
        """The last MP3 frame of a cut file, shorter than its header says: a truncated tail,
        left out in both modes (FFmpeg's decoder would conceal the missing bytes as silence
        without a word, and flowengine's Decoder refuses the packet)."""
        if not self._ends_file(packet, size):       # every packet but the last: no copy
            return False
        length = announced_frame_length(memoryview(packet))
        if length is None or packet.size >= length:
            return False
        return self._is_truncated_tail(packet, size, f"has {packet.size} of the {length} "
                                                     f"bytes its header says")

    @staticmethod
    def _where(packet: av.Packet) -> str:
        where = f"byte {packet.pos}" if packet.pos is not None and packet.pos >= 0 else "unknown byte"
        if packet.pts is not None and packet.time_base is not None:
            where += f", pts {packet.pts} ({float(packet.pts * packet.time_base):.3f} s)"
        return where

    # --- packet mode -------------------------------------------------------------------

    def _packets(self) -> Iterator[Packet]:
        """The demuxed packets, timestamps in samples (time base 1/rate, as every packet in
        flowengine: exact for the containers' clocks, e.g. MP3's 1/14112000)."""
        stream = self._stream
        rate = self.source_format.sample_rate
        extradata = stream.codec_context.extradata or None
        keep_extradata = extradata if self.codec in _EXTRADATA_CODECS else None
        framer: AdtsFramer | None = None
        raw_aac: bool | None = None          # AAC without ADTS headers (MP4): framed here
        for packet in self._demuxed():
            if packet.size == 0:        # the demuxer's end-of-stream marker
                continue
            data = bytes(packet)
            if self.codec == "aac":
                if raw_aac is None:
                    raw_aac = parse_adts_header(data) is None
                    framer = self._adts_framer(extradata) if raw_aac else None
                if raw_aac:
                    data = framer.frame(data)
            time_base = packet.time_base or stream.time_base
            num, den = time_base.numerator * rate, time_base.denominator
            pts, dts, duration = packet.pts, packet.dts, packet.duration
            yield Packet(data, 1, rate, None if pts is None else round_ratio(pts * num, den),
                         None if dts is None else round_ratio(dts * num, den),
                         None if duration is None else round_ratio(duration * num, den),
                         PACKET_FLAG_KEY if packet.is_keyframe else 0, self.codec, self.stream,
                         keep_extradata)

    def _adts_framer(self, extradata: bytes | None) -> AdtsFramer:
        if not extradata:
            raise FormatError(f"'{self.path}': raw AAC packets without an AudioSpecificConfig "
                              f"(extradata): cannot give them ADTS headers")
        try:
            return AdtsFramer(extradata)
        except CodecError as exc:
            raise FormatError(f"'{self.path}': {exc}") from None

    # --- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the file. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._container.close()

    def __enter__(self) -> "AudioFileReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AudioFileReader '{self.path}' {self.codec} {self.mode} -> {self.format}>"
