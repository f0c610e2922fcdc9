"""Read any audio file PyAV opens, packet by packet, as PCM frames or as undecoded packets.

Theory of operation. The container is demuxed one packet at a time, so memory
stays bounded by a packet plus one chunk whatever the file's length. In "pcm"
mode each packet is decoded, converted by an `av.AudioResampler` to the
output format (planar, in the requested rate / channels / sample type) and
re-blocked into frames of exactly `chunk_samples` (the last one shorter),
with pts counted in samples from 0. In "packet" mode packets are handed out
undecoded as flowengine Packets with flowengine's codec names; AAC stored
raw (MP4/M4A) is given ADTS headers so every packet describes itself, as
everywhere else in flowengine. Raw ADTS files (.aac) are cut into frames by
flowengine (ops/io/adtsfile.py), not by FFmpeg's demuxer, which skips
damaged bytes without saying how many.

FFmpeg probes the container from the file's first bytes; when that finds no
audio stream and the extension names an audio format (a short MP3 can pass for
H.263 video), the file is opened again as that format. Garbage before a WAV,
FLAC, Ogg or MP3 stream is found when the file is opened (ops/io/filestart.py)
and the file is read from where its audio starts.

Errors: a missing file is FileNotFoundError; an empty file, a file that is
not audio, or a file without an audio stream is FormatError. Damage is
handled by `on_error` (flowengine.ops.codecs.salvage):

- "fail" (the default): CodecError naming the file, the byte offset and the
  time, raised after every sample decoded before it was handed out;
- "skip": in pcm mode damaged frames are replaced by silence of their
  duration (the stream keeps its timeline) and counted in `damage`; in packet
  mode the packets go on as they are (a Decoder with on_error "skip" fills
  them in: the same samples as pcm mode).

What counts as damage here: a packet the decoder rejects (with FLAC's CRC-16
and MP3's optional CRC checked), a packet that starts later than the one
before it ended (frames the container's parser dropped), a FLAC packet the
parser could not frame (no timestamp), bytes of an ADTS file that are no
frame, garbage before the first frame, and a file that ends inside a frame or
short of the length its header states (FLAC, WAV). A stream that ends early
stays short under "skip": only what the file holds is decoded, and `damage`
says where it ended.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from flowengine.audio.buffers import PACKET_FLAG_KEY, AudioFrame, Packet, round_ratio
from flowengine.ops.codecs.adts import AdtsFramer, parse_adts_header
from flowengine.ops.codecs.mp3frames import announced_frame_length
from flowengine.ops.codecs.salvage import DECODER_OPTIONS, DamageReport, Salvage, check_on_error
from flowengine.errors import CodecError, ConfigError, FlowError, FormatError
from flowengine.audio.format import AudioFormat, as_format, channel_layout
from flowengine.ops.io.adtsfile import FRAME, GLUED, LEADING, SHORT, AdtsFileFrames
from flowengine.ops.io.filestart import audio_start, cut_mp3_frame, cut_ogg_page, wav_data_frames

__all__ = ["AudioFileReader", "READER_MODES", "flowengine_codec_name"]

READER_MODES = ("pcm", "packet")

# FFmpeg codec names (canonical) -> flowengine's; anything else keeps FFmpeg's name.
_CODEC_NAMES = {"mp3": "mp3", "aac": "aac", "opus": "opus", "flac": "flac"}
# Extension -> FFmpeg demuxer, tried when probing the content finds no audio stream.
_EXTENSION_DEMUXERS = {".mp3": "mp3", ".aac": "aac", ".flac": "flac", ".wav": "wav",
                       ".ogg": "ogg", ".opus": "ogg", ".oga": "ogg", ".m4a": "mov"}
# Codecs whose Packets carry the container's extradata (a decoder cannot start without it).
_EXTRADATA_CODECS = ("opus", "flac")
# Containers whose header states the stream's length exactly: a file ending short of it
# was cut (at a frame boundary, where nothing else shows it).
_STATED_LENGTH = ("flac", "wav")
_NO_POSITION = -2           # a packet position no packet has (packet.pos is None or >= 0)


def flowengine_codec_name(ffmpeg_name: str) -> str:
    """flowengine's name for an FFmpeg codec: mp3, aac, opus, flac, wav (raw PCM) or FFmpeg's own."""
    if ffmpeg_name.startswith("pcm_"):
        return "wav"
    return _CODEC_NAMES.get(ffmpeg_name, ffmpeg_name)


def _open_container(path: str) -> tuple[av.container.InputContainer, int]:
    """The file's container, probed by content, and the byte its audio starts at (after
    garbage, if any: the container is then opened there). A probe that finds no audio
    stream in a file whose extension names an audio format is tried again as that format
    (FFmpeg guesses from a few KB: a short MP3 can score higher as H.263 video)."""
    hint = _EXTENSION_DEMUXERS.get(Path(path).suffix.lower())
    try:
        container = _open_probed(path, None)
    except FormatError:
        start = audio_start(path, hint) if hint else 0
        hinted = _open_hinted(path, hint, start)   # a short MP3 can fail the probe outright
        if hinted is None:
            raise
        return hinted, start
    name = container.format.name
    if container.streams.audio and name in ("mp3", "flac", "ogg", "wav"):
        start = audio_start(path, name)
        if start:
            container.close()
            return _open_probed(path, name, start), start
    if container.streams.audio or name == hint:
        return container, 0
    start = audio_start(path, hint) if hint else 0
    hinted = _open_hinted(path, hint, start)
    if hinted is None:
        return container, 0     # not that format either: the probe's answer stands
    container.close()
    return hinted, start


def _open_hinted(path: str, hint: str | None, start: int = 0
                 ) -> av.container.InputContainer | None:
    """The file opened as the format its extension names, if that finds an audio stream."""
    if hint is None:
        return None
    try:
        container = _open_probed(path, hint, start)
    except FormatError:
        return None
    if not container.streams.audio:
        container.close()
        return None
    return container


def _open_probed(path: str, format: str | None, start: int = 0) -> av.container.InputContainer:
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"audio file not found: '{path}'")  # names the path once
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise FormatError(f"'{path}' is empty (0 bytes): not an audio file")
    options = {"skip_initial_bytes": str(start)} if start else None
    try:
        # Tags are text of any encoding: one bad byte must not make the audio unreadable.
        return av.open(path, "r", format=format, metadata_errors="replace", options=options)
    except (PermissionError, IsADirectoryError) as exc:     # PyAV's subclasses of these
        builtin = PermissionError if isinstance(exc, PermissionError) else IsADirectoryError
        raise builtin(f"cannot read audio file '{path}': {exc.strerror}") from None
    except av.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise FormatError(f"'{path}' is not an audio file PyAV can read: {reason}") from None


def _format_of(frame: av.AudioFrame) -> tuple[str, str, int]:
    return frame.format.name, frame.layout.name, frame.sample_rate


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


class AudioFileReader:
    """Streams one audio file as AudioFrames (mode="pcm") or Packets (mode="packet").

    format=None keeps the file's rate and channels, as planar f32; an
    AudioFormat converts to it (rate, channels, sample type, layout).
    stream=None names the stream after the file stem.
    on_error: "fail" or "skip" (see the module doc); `damage` reports what was found.

    >>> with AudioFileReader("speech.flac", chunk_samples=1024) as reader:   # doctest: +SKIP
    ...     for frame in reader:
    ...         print(frame.pts, frame.samples)
    """

    def __init__(self, path: str | os.PathLike, format: AudioFormat | dict | None = None,
                 chunk_samples: int = 1024, stream: str | None = None, mode: str = "pcm",
                 on_error: str = "fail") -> None:
        if mode not in READER_MODES:
            raise ConfigError(f"AudioFileReader: mode must be 'pcm' or 'packet', got {mode!r}")
        if isinstance(chunk_samples, bool) or not isinstance(chunk_samples, int) or chunk_samples <= 0:
            raise ConfigError(f"AudioFileReader: chunk_samples must be a positive integer, got "
                              f"{chunk_samples!r}")
        try:
            self.on_error = check_on_error(on_error, "AudioFileReader")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.path = os.fspath(path)
        self.mode = mode
        self.chunk_samples = chunk_samples
        self.stream = stream if stream is not None else Path(self.path).stem
        self._container, self._start = _open_container(self.path)
        try:
            self._stream = self._audio_stream()
            self.source_format = self._source_format()
            own = AudioFormat(self.source_format.sample_rate, self.source_format.channels, "f32")
            self.format = as_format(format, like=own) or own    # omitted keys: the file's
            self.codec = flowengine_codec_name(self._stream.codec.canonical_name)
            self._salvage = Salvage(self.codec, self.on_error,
                                    f"'{self.path}': {self.codec} stream {self._stream.index}",
                                    file_offsets=True)
            self._adts = self._container.format.name == "aac"
            if self.codec == "flac":
                self._salvage.note_flac_streaminfo(self._stream.codec_context.extradata)
        except Exception:
            self._container.close()
            raise
        options = DECODER_OPTIONS.get(self.codec)
        if options:
            self._stream.codec_context.options = dict(options)
        self._iterator: Iterator | None = None
        self._closed = False
        self._first: tuple[int | None, int] | None = None     # position, pts of packet one

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

    @property
    def damage(self) -> DamageReport:
        """What damage was found so far, and (on_error "skip") what was replaced."""
        return self._salvage.report

    @property
    def truncated(self) -> bool:
        """Whether the stream ended early (a file cut short: see `damage`)."""
        return self._salvage.report.end is not None

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
            if self._start and not self._adts:   # garbage before the audio: fail, or count
                self._salvage.leading_junk(self._start)
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
        try:
            for frames in self._decoded_adts() if self._adts else self._decoded():
                for frame in frames:
                    try:
                        converted = convert.resample(frame)
                    except ValueError:  # PyAV checks each frame against the first's format
                        raise self._format_changed(first, frame, pts) from None
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

    def _decoded(self) -> Iterator[Iterable[av.AudioFrame]]:
        """The decoded frames of each packet in order, damage handled as `on_error` says
        (module doc). Per good packet: one timestamp compared, one position compared, one
        decode, one yield."""
        cut_at = self._cut_frame_at()
        expected = 0 if self.codec == "flac" else None   # where the next packet must start
        last = None
        try:
            for packet in self._container.demux(self._stream):
                pts = packet.pts
                if pts != expected:
                    if pts is None and self.codec == "flac" and packet.size:
                        # a packet the parser could not frame: cut again at its frames
                        holder = [expected]
                        yield self._salvage.flac_frames(
                            self._stream.codec_context, bytes(packet), packet.pos, expected,
                            self._stream.codec_context.sample_rate, holder)
                        expected = holder[0]
                        continue
                    expected, gap = self._off_timeline(packet, expected)
                    if gap is not None:
                        yield gap
                else:
                    duration = packet.duration
                    expected = pts + duration if duration else None
                if packet.pos == cut_at:   # reported, then salvaged as any damaged frame
                    self._cut_frame(packet)
                    yield self._salvage.frames_in(
                        self._stream.codec_context, bytes(packet), packet.pos,
                        self._seconds(packet), self._nominal(packet),
                        self._mean_mp3_packet(packet), "the file ends inside it")
                    continue
                try:
                    yield packet.decode()
                except av.FFmpegError as exc:
                    yield self._damaged(packet, exc)
                last = packet
        except av.FFmpegError as exc:      # the demuxer cannot read on
            self._unreadable(last, exc)
            yield self._stream_end().decode()
        self._check_end(expected)

    def _off_timeline(self, packet: av.Packet, expected: int | None
                      ) -> tuple[int | None, Iterator[av.AudioFrame] | None]:
        """A packet that does not start where the one before it ended: the first one, the
        end-of-stream marker (decoded as it is: it drains the codec), or one after a gap
        (frames the parser dropped): (where the next packet must start, the silence to put
        in before it, or None)."""
        pts = packet.pts
        if pts is None or packet.size == 0:
            return expected, None
        end = pts + packet.duration if packet.duration else None
        if expected is None:
            if self._first is None:
                self._first = (packet.pos, pts)
            return end, None
        if pts > expected:
            salvage, ctx = self._salvage, self._stream.codec_context
            time_base = packet.time_base or self._stream.time_base
            rate = salvage.rate(ctx)
            samples = round(Fraction(pts - expected) * time_base * rate)
            seconds = salvage.time(float(expected * time_base), ctx)
            per_packet = round(Fraction(packet.duration or 0) * time_base * rate)
            return end, salvage.gap(ctx, samples, packet.pos, seconds,
                                    frame_samples=per_packet or None)
        # overlaps what came before (or has no duration): decoded as it is
        return (None if end is None else max(expected, end)), None

    def _damaged(self, packet: av.Packet, exc: av.FFmpegError) -> Iterator[av.AudioFrame]:
        """A packet the decoder rejected: what of it decodes, and silence for the rest
        (flowengine.ops.codecs.salvage); a Decoder in packet mode does the same with it."""
        salvage, ctx = self._salvage, self._stream.codec_context
        time_base = packet.time_base or self._stream.time_base
        rate = salvage.rate(ctx)
        nominal = round(Fraction(packet.duration or 0) * time_base * rate)
        reason = _reason(exc)
        if self.codec == "wav":     # a last packet cut inside a sample: its whole samples
            return self._whole_samples(packet)
        if self.codec == "flac":
            return self._flac_damaged(packet, nominal, rate)
        if self.codec == "mp3":
            return salvage.frames_in(ctx, bytes(packet), packet.pos, self._seconds(packet),
                                     nominal, self._mean_mp3_packet(packet), reason)
        return salvage.lost_packet(ctx, nominal, packet.pos, self._seconds(packet), reason)

    def _flac_damaged(self, packet: av.Packet, nominal: int, rate: int
                      ) -> Iterator[av.AudioFrame]:
        salvage, ctx = self._salvage, self._stream.codec_context
        time_base = packet.time_base or self._stream.time_base
        first = round(Fraction(packet.pts) * time_base * rate)
        holder = [first]
        yield from salvage.flac_frames(ctx, bytes(packet), packet.pos, first, rate, holder,
                                       first + nominal)
        if holder[0] < first + nominal:
            yield from salvage.gap(ctx, first + nominal - holder[0], packet.pos,
                                   holder[0] / rate, "damaged frame(s)")

    def _whole_samples(self, packet: av.Packet) -> list:
        ctx = self._stream.codec_context
        frame_bytes = self.source_format.channels * self.source_format.bytes_per_sample
        data = bytes(packet)
        whole = len(data) - len(data) % frame_bytes
        try:
            return ctx.decode(av.Packet(data[:whole])) if whole else []
        except av.FFmpegError:
            return []

    def _nominal(self, packet: av.Packet) -> int:
        """A packet's duration in samples at the decoder's rate."""
        time_base = packet.time_base or self._stream.time_base
        rate = self._salvage.rate(self._stream.codec_context)
        return round(Fraction(packet.duration or 0) * time_base * rate)

    def _mean_mp3_packet(self, packet: av.Packet) -> float:
        """Bytes per packet before this one (the MP3 demuxer's packets are contiguous and
        one frame long: from positions and timestamps, without a count per packet)."""
        if self._first is None or self._first[0] is None or not packet.duration \
                or packet.pts is None:
            return 0.0
        first_pos, first_pts = self._first
        packets = (packet.pts - first_pts) // packet.duration
        return (packet.pos - first_pos) / packets if packets > 0 else 0.0

    def _seconds(self, packet: av.Packet) -> float:
        """Where a packet starts on the output's timeline, in seconds."""
        ctx = self._stream.codec_context
        if packet.pts is None:
            return self._salvage.time(0.0, ctx)
        time_base = packet.time_base or self._stream.time_base
        return self._salvage.time(float(packet.pts * time_base), ctx)

    def _decoded_adts(self) -> Iterator[Iterable[av.AudioFrame]]:
        """A raw ADTS file's frames (ops/io/adtsfile.py) decoded, damage as `on_error` says."""
        salvage, ctx = self._salvage, self._stream.codec_context
        rate = ctx.sample_rate
        with open(self.path, "rb") as file:
            frames = AdtsFileFrames(file, self._start)
            for kind, offset, data in frames:
                if kind == FRAME:
                    try:
                        yield ctx.decode(av.Packet(data))
                    except av.FFmpegError as exc:
                        yield self._adts_damaged(frames, offset, data, _reason(exc))
                elif kind == GLUED:
                    yield self._adts_damaged(frames, offset, data,
                                             "the frames around them do not chain up")
                elif kind == LEADING:
                    salvage.leading_junk(len(data))
                else:
                    salvage.ended("the file is cut short", offset,
                                  salvage.time(frames.packets * 1024 / rate, ctx),
                                  f"its last frame has {len(data)} of its bytes")
                    frames.packets, frames.bytes = frames.packets + 1, frames.bytes + len(data)
                    yield self._adts_damaged(frames, offset, data, "the file ends inside it")
        yield ctx.decode(None)

    def _adts_damaged(self, frames: AdtsFileFrames, offset: int, data: bytes, reason: str
                      ) -> Iterator[av.AudioFrame]:
        salvage, ctx = self._salvage, self._stream.codec_context
        before = frames.packets - 1
        mean = (frames.bytes - len(data)) / before if before > 0 else 0.0
        seconds = salvage.time(before * 1024 / ctx.sample_rate, ctx)
        return salvage.frames_in(ctx, data, offset, seconds, 1024, mean, reason)

    def _format_changed(self, first: av.AudioFrame, frame: av.AudioFrame, pts: int
                        ) -> CodecError:
        was, got = (_format_of(f) for f in (first, frame))
        return CodecError(f"'{self.path}': {self.codec} stream {self._stream.index}: decoded "
                          f"audio changed format mid-stream at {pts / self.format.sample_rate:.3f}"
                          f" s: {was} then {got}")

    # --- what both modes check --------------------------------------------------------------

    def _demuxed(self) -> Iterator[av.Packet]:
        """The audio stream's packets (packet mode); a container the demuxer cannot go on
        reading ends the stream early (CodecError under on_error "fail")."""
        last = None
        try:
            for packet in self._container.demux(self._stream):
                yield packet
                last = packet
        except av.FFmpegError as exc:
            self._unreadable(last, exc)

    def _unreadable(self, last: av.Packet | None, exc: av.FFmpegError) -> None:
        after = f"after the packet at {self._where(last)}" if last is not None else \
            "before the first packet"
        self._salvage.ended("the container cannot be read on",
                            None if last is None else last.pos,
                            0.0 if last is None else self._seconds(last),
                            f"{after}: {_reason(exc)}")

    def _stream_end(self) -> av.Packet:
        """The demuxer's end-of-stream marker (an empty packet: decoding it drains)."""
        packet = av.Packet()
        packet.stream = self._stream
        return packet

    def _cut_frame_at(self) -> int:
        """Byte of an MP3 file's last frame when the file ends inside it (FFmpeg would conceal
        the missing bytes as silence, without a word); a position no packet has otherwise."""
        if self.codec != "mp3" or not os.path.isfile(self.path):
            return _NO_POSITION
        cut = cut_mp3_frame(self.path, self._start)
        return _NO_POSITION if cut is None else cut

    def _cut_frame(self, packet: av.Packet) -> None:
        length = announced_frame_length(memoryview(packet))
        self._salvage.ended("the file is cut short", packet.pos, self._seconds(packet),
                            f"its last frame has {packet.size} of the {length} bytes its "
                            f"header says")

    def _ends_file(self, packet: av.Packet) -> bool:
        """Whether the packet's bytes reach the end of the file."""
        size = os.path.getsize(self.path) if os.path.isfile(self.path) else None
        return size is not None and packet.pos is not None and packet.pos >= 0 \
            and packet.pos + packet.size >= size

    def _check_end(self, expected: int | None) -> None:
        """After the last packet: an Ogg file whose last page is cut short, or a FLAC / WAV
        file shorter than its header says, ended early."""
        if not os.path.isfile(self.path) or self.truncated:
            return
        stream, name = self._stream, self._container.format.name
        time_base = stream.time_base
        seconds = float(expected * time_base) if expected is not None and time_base else 0.0
        if name == "ogg":
            cut = cut_ogg_page(self.path)
            if cut is not None:
                self._salvage.ended("the file is cut short", cut, seconds,
                                    "its last Ogg page is incomplete")
        elif name in _STATED_LENGTH and expected is not None:
            stated = self._stated_length()
            if stated is None or expected >= stated:
                return
            missing = round(Fraction(stated - expected) * time_base
                            * stream.codec_context.sample_rate)
            self._salvage.ended("the file ends early", os.path.getsize(self.path), seconds,
                                f"it holds {missing} samples fewer than its header announces: "
                                f"cut short, or bytes lost inside it")

    def _stated_length(self) -> int | None:
        """The stream's length in its time base as the file's header states it: FLAC's
        STREAMINFO (FFmpeg's duration), WAV's data chunk (read here: FFmpeg's duration is
        what the file holds)."""
        stream = self._stream
        if self._container.format.name != "wav":
            return stream.duration or None
        frames = wav_data_frames(self.path, self._start)
        if frames is None or not stream.time_base:
            return None
        return round(Fraction(frames, stream.codec_context.sample_rate) / stream.time_base)

    @staticmethod
    def _where(packet: av.Packet) -> str:
        where = f"byte {packet.pos}" if packet.pos is not None and packet.pos >= 0 else "unknown byte"
        if packet.pts is not None and packet.time_base is not None:
            where += f", pts {packet.pts} ({float(packet.pts * packet.time_base):.3f} s)"
        return where

    # --- packet mode -------------------------------------------------------------------

    def _packets(self) -> Iterator[Packet]:
        """The demuxed packets, timestamps in samples (time base 1/rate, as every packet in
        flowengine: exact for the containers' clocks, e.g. MP3's 1/14112000). What the
        container shows of damage (a gap, a packet its parser could not frame, a cut end)
        raises under on_error "fail"; under "skip" the packets go on as they are, for a
        Decoder to fill in."""
        if self._adts:
            yield from self._adts_packets()
            return
        stream = self._stream
        rate = self.source_format.sample_rate
        extradata = stream.codec_context.extradata or None
        keep_extradata = extradata if self.codec in _EXTRADATA_CODECS else None
        framer: AdtsFramer | None = None
        raw_aac: bool | None = None          # AAC without ADTS headers (MP4): framed here
        cut_at = self._cut_frame_at()
        expected = 0 if self.codec == "flac" else None
        for packet in self._demuxed():
            if packet.size == 0:        # the demuxer's end-of-stream marker
                continue
            pts, dts, duration = packet.pts, packet.dts, packet.duration
            if pts != expected:
                expected = self._judge_gap(packet, expected)
            else:
                expected = pts + duration if duration else None
            if packet.pos == cut_at:
                self._cut_frame(packet)     # raises under "fail"; the Decoder fills it in
            data = bytes(packet)
            if self.codec == "aac":
                if raw_aac is None:
                    raw_aac = parse_adts_header(data) is None
                    framer = self._adts_framer(extradata) if raw_aac else None
                if raw_aac:
                    data = framer.frame(data)
            time_base = packet.time_base or stream.time_base
            num, den = time_base.numerator * rate, time_base.denominator
            yield Packet(data, 1, rate, None if pts is None else round_ratio(pts * num, den),
                         None if dts is None else round_ratio(dts * num, den),
                         None if duration is None else round_ratio(duration * num, den),
                         PACKET_FLAG_KEY if packet.is_keyframe else 0, self.codec, self.stream,
                         keep_extradata)
        self._check_end(expected)

    def _judge_gap(self, packet: av.Packet, expected: int | None) -> int | None:
        """Packet mode's look at a packet off the timeline: under on_error "fail" a gap or a
        FLAC packet without a timestamp is an error; under "skip" it goes on (the Decoder
        fills it in). Returns where the next packet must start."""
        pts = packet.pts
        if pts is None:
            if self.codec == "flac" and not self._salvage.skip:
                raise self._salvage.error("FLAC frames the parser could not frame", packet.pos,
                                          self._seconds_at(expected),
                                          f"{packet.size} bytes: damaged frames")
            return None if self.codec == "flac" else expected
        end = pts + packet.duration if packet.duration else None
        if expected is not None and pts > expected and not self._salvage.skip:
            time_base = packet.time_base or self._stream.time_base
            ended, starts = float(expected * time_base), float(pts * time_base)
            raise self._salvage.error("frames missing", packet.pos, ended,
                                      f"the packet before ended at {ended:.3f} s, this one "
                                      f"starts at {starts:.3f} s")
        return end if expected is None or end is None else max(expected, end)

    def _seconds_at(self, pts: int | None) -> float:
        time_base = self._stream.time_base
        return float(pts * time_base) if pts is not None and time_base else 0.0

    def _adts_packets(self) -> Iterator[Packet]:
        """A raw ADTS file's frames as Packets; bytes that are no frame go on as one packet
        under "skip" (the Decoder cuts them again), raise under "fail"."""
        salvage, rate = self._salvage, self.source_format.sample_rate
        with open(self.path, "rb") as file:
            frames = AdtsFileFrames(file, self._start)
            for kind, offset, data in frames:
                pts = (frames.packets - 1) * 1024
                if kind == LEADING:
                    salvage.leading_junk(len(data))
                    continue
                if kind == SHORT:       # raises under "fail"; the Decoder fills it in
                    salvage.ended("the file is cut short", offset, pts / rate,
                                  f"its last frame has {len(data)} of its bytes")
                    frames.packets, frames.bytes = frames.packets + 1, frames.bytes + len(data)
                    pts = (frames.packets - 1) * 1024
                elif kind == GLUED and not salvage.skip:
                    raise salvage.error(f"{len(data)} bytes that are no whole frame", offset,
                                        pts / rate, "damaged frames")
                yield Packet(data, 1, rate, pts, pts, 1024, PACKET_FLAG_KEY, "aac",
                             self.stream)

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
