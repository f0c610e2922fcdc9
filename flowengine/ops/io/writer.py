"""Write audio to a file whose container and codec follow the extension.

    .mp3 (MP3)  .m4a (AAC in MP4)  .aac (ADTS AAC)  .opus / .ogg (Opus in Ogg)  .flac (FLAC)  .wav (PCM)

PCM input (AudioFrames or arrays) is encoded with PyAV's stream encoder. The
output format (rate, channels, sample type) defaults to the first input's;
PyAV's AudioResampler converts when they differ and re-blocks to the codec's
frame size. Opus only encodes at 8/12/16/24/48 kHz: any other rate is
resampled to 48000 Hz automatically. WAV is 16-bit unless `format` (or
`codec`, e.g. "pcm_f32le") asks for another sample type; FLAC keeps 16-bit
input 16-bit and stores wider input as 24-bit.

Packet input (already encoded flowengine Packets) is written without
re-encoding: MP3 frames are muxed into .mp3 (with its Xing header), ADTS AAC
is written as is into .aac or unwrapped into .m4a, Opus needs the OpusHead in
Packet.extradata, FLAC frames are written into a native FLAC file whose
STREAMINFO is counted from the frames (see flacfile), and "wav" packets (raw
interleaved PCM) are decoded with `input_format` and written as PCM. A packet
whose codec does not fit the container is a FormatError. MP3 packets from
flowengine's encoders (first pts negative, last duration clipped) get FFmpeg's
gapless note, so the file decodes to exactly the encoded samples (see
gapless); copied MP3 packets (demuxed: pts from 0, whole-frame durations)
carry no such note, so a copy may decode up to two frames longer than its
source.

`samples_written` counts input samples per channel (PCM), or the samples the
packets' durations cover (packets; priming included).

The file is opened when the writer is built, so an unwritable path fails
before any data; headers with the length (wav, flac, mp4, mp3's Xing frame)
are completed by finalize(), which is idempotent.

Incomplete files are never left under the final name (see `partial`): the
bytes go to `PATH.part`, and only a finalize() that completes renames it to
PATH (atomically). A writer left without finalize() (its stream failed, the
process was killed) leaves PATH.part. Building a writer removes an old file at
PATH, as overwriting it would. A PATH that exists and is not a regular file
(a FIFO, /dev/null) is written directly: there is nothing to rename.

One writer per path (see `outputlock`): PATH.part is locked from open to
rename, so a second writer of PATH (another run, another stream into a sink
without `{stream}`) is refused with `OutputBusyError`; a failure to write it
(disk full...) is an `OutputError` naming the file and the cause.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from flowengine.audio.buffers import AudioFrame, Packet, time_base_fraction
from flowengine.ops.codecs.adts import parse_adts_header, parse_audio_specific_config
from flowengine.ops.codecs.mp3frames import mp3_samples_per_frame, parse_frame_header
from flowengine.errors import CodecError, FlowError, FormatError, UnknownCodecError
from flowengine.audio.format import AudioFormat, as_format, channel_layout, check_pcm
from flowengine.ops.io.flacfile import FlacFileWriter
from flowengine.ops.io.gapless import SkipSamplesMarker
from flowengine.ops.io.muxstream import packet_stream
from flowengine.ops.io.outputlock import cannot_write, open_part, rename_part
from flowengine.ops.io.partial import part_path
from flowengine.ops.io.reader import flowengine_codec_name

__all__ = ["AudioFileWriter", "WRITER_EXTENSIONS", "OPUS_SAMPLE_RATES"]

# extension -> (FFmpeg muxer, flowengine codec stored in it)
WRITER_EXTENSIONS: dict[str, tuple[str, str]] = {
    ".mp3": ("mp3", "mp3"), ".m4a": ("ipod", "aac"), ".aac": ("adts", "aac"),
    ".opus": ("opus", "opus"), ".ogg": ("ogg", "opus"), ".flac": ("flac", "flac"),
    ".wav": ("wav", "wav"),
}
OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)
_ENCODERS = {"mp3": "libmp3lame", "aac": "aac", "opus": "libopus", "flac": "flac"}
_PCM_ENCODERS = {"u8": "pcm_u8", "s16": "pcm_s16le", "s32": "pcm_s32le", "f32": "pcm_f32le",
                 "f64": "pcm_f64le"}
_PACKET_CODEC_ALIASES = {"pcm": "wav", "adts": "aac"}
# When the codec does not take the exact sample type: the first of these it takes.
_SAMPLE_FORMAT_FALLBACK = ("fltp", "flt", "s32p", "s32", "s16p", "s16")
# ADTS channel_configuration -> channels (7 means 7.1).
_ADTS_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8}


def _open_for_writing(path: str, shown_as: str | None = None) -> BinaryIO:
    """open(path, "wb") with an error naming `shown_as` (the output the user asked for)."""
    try:
        return open(path, "wb")
    except OSError as exc:
        raise cannot_write(exc, path, shown_as or path) from None


def _open_part_file(path: str) -> tuple[BinaryIO, str | None]:
    """Open where `path`'s bytes go until it is complete: (file, PATH.part), or (file, None)
    for a path that exists and is not a regular file (a FIFO, a device), written directly.
    PATH.part is locked until it is renamed (`outputlock`): a second writer of PATH is
    refused with OutputBusyError before it writes a byte."""
    if os.path.exists(path) and not os.path.isfile(path):
        return _open_for_writing(path), None        # a directory fails here, named as such
    part = part_path(path)
    file = open_part(part, shown_as=path)
    if os.path.isfile(path) or os.path.islink(path):
        os.remove(path)     # a stale output must not pass for this run's (overwriting removed it too)
    return file, part


def _check_optional_int(name: str, value, low: int, high: int | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low \
            or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise FormatError(f"AudioFileWriter: {name} must be an integer {bounds} or None, got {value!r}")


class AudioFileWriter:
    """A file sink: push AudioFrames (or write_pcm arrays) or encoded Packets, then finalize.

    >>> import os, tempfile
    >>> from flowengine.ops.io.generator import ToneSource
    >>> with AudioFileWriter(os.path.join(tempfile.mkdtemp(), "tone.flac")) as out:
    ...     for frame in ToneSource(seconds=0.1, sample_type="s16"):
    ...         out.push(frame)
    >>> out.samples_written
    4800
    """

    def __init__(self, path: str | os.PathLike, format: AudioFormat | dict | None = None,
                 input_format: AudioFormat | dict | None = None, bitrate: int | None = None,
                 compression_level: int | None = None, codec: str | None = None) -> None:
        self.path = os.fspath(path)
        extension = Path(self.path).suffix.lower()
        if extension not in WRITER_EXTENSIONS:
            raise FormatError(f"'{self.path}': unknown extension {extension or '(none)'!r}: expected "
                              f"one of {' '.join(WRITER_EXTENSIONS)}")
        self.extension = extension
        self._muxer, self.container_codec = WRITER_EXTENSIONS[extension]
        self._format = as_format(format)
        self._input_format = as_format(input_format)
        _check_optional_int("bitrate", bitrate, 1)
        _check_optional_int("compression_level", compression_level, 0, 12)
        self.bitrate = bitrate
        self.compression_level = compression_level
        self._codec_override = codec
        self.samples_written = 0
        self.packets_written = 0
        self._mode: str | None = None          # "pcm" or "packet", fixed by the first buffer
        self._finalized = False
        self._container: av.container.OutputContainer | None = None
        self._stream: av.audio.stream.AudioStream | None = None
        self._in_format: AudioFormat | None = None
        self._out_format: AudioFormat | None = None
        self._flac: FlacFileWriter | None = None
        self._next_pts: int | None = None      # for packets without pts (packet time base)
        self._packet_rate: int | None = None
        self._gapless: SkipSamplesMarker | None = None    # mp3 packets: see gapless
        self.complete = False                  # finalize() completed and renamed the file
        # push()'s shortcut for packets like the first (set once one was written).
        self._kind: type | None = None
        self._codec_seen: str | None = None
        self._write = self._write_packet
        self._file, self.part_path = _open_part_file(self.path)

    # --- public ------------------------------------------------------------------------

    @property
    def format(self) -> AudioFormat | None:
        """The output format once known (what the file holds), else the requested one."""
        return self._out_format or self._format

    @property
    def finalized(self) -> bool:
        return self._finalized

    def write_pcm(self, pcm: np.ndarray | AudioFrame) -> None:
        """Write samples in `input_format` (or `format` when input_format is None)."""
        if isinstance(pcm, AudioFrame):
            self.push(pcm)
            return
        fmt = self._input_format or self._format
        if fmt is None:
            raise FormatError(f"'{self.path}': write_pcm got a bare array but the writer has no "
                              f"input_format (or format) saying what its samples are")
        self.push(AudioFrame(check_pcm(pcm, fmt, where=f"'{self.path}'"), fmt))

    def push(self, buf: AudioFrame | Packet | None) -> None:
        """Write one buffer; None finalizes the file."""
        try:        # a failed write (disk full...) in any path below: one OutputError
            if type(buf) is self._kind and buf.codec == self._codec_seen and not self._finalized:
                self._write(buf)        # the usual case: one more of what came first
            else:
                self._push_checked(buf)
        except OSError as exc:
            raise self._file.failed(exc) from None

    def _push_checked(self, buf: AudioFrame | Packet | None) -> None:
        if buf is None:
            self.finalize()
            return
        if self._finalized:
            raise FlowError(f"'{self.path}': a buffer was pushed after finalize()")
        if isinstance(buf, Packet):
            codec = _PACKET_CODEC_ALIASES.get(buf.codec, buf.codec)
            if codec != self.container_codec:
                raise FormatError(f"'{self.path}': a {buf.codec or 'unnamed'!r} packet does not fit a "
                                  f"{self.extension} file, which holds {self.container_codec} "
                                  f"(write it to a file with the right extension, or decode it)")
            if codec == "wav":
                self._write_frame(self._wav_packet_to_frame(buf))
            else:
                self._write_packet(buf)
                self._kind, self._codec_seen = Packet, buf.codec
                self._write = self._write_encoded if buf.av is not None and \
                    self._container is not None and self._gapless is None \
                    else self._write_packet
        elif isinstance(buf, AudioFrame):
            self._write_frame(buf)
        else:
            raise FormatError(f"'{self.path}': expected an AudioFrame, a Packet or None, "
                              f"got {type(buf).__name__}")

    def finalize(self) -> None:
        """Flush the encoder, complete the headers, close the file and give it its final name
        (it was PATH.part until now; a finalize() that fails leaves it so). A second call does
        nothing."""
        if self._finalized:
            return
        self._finalized = True
        try:
            if self._mode is None:
                if self._format is None:
                    raise FormatError(f"'{self.path}': nothing was written and no format= was "
                                      f"given, so there is no header to write")
                self._start_pcm(self._format)      # a valid file with no samples
            if self._mode == "pcm":
                self._encode(None)
            if self._gapless is not None and (last := self._gapless.release()) is not None:
                self._mux(last)
            if self._flac is not None:
                self._flac.close()
            if self._container is not None:
                self._container.close()
            if self.part_path is not None:   # renamed while still locked: no writer between
                rename_part(self._file, self.part_path, self.path)
        except OSError as exc:
            raise self._file.failed(exc) from None
        finally:
            self._file.close()
        self.complete = True

    @property
    def written_path(self) -> str:
        """Where the bytes are now: the final path once complete, else PATH.part."""
        return self.part_path if self.part_path is not None and not self.complete else self.path

    def close(self) -> None:
        """Release the file. Without a finalize() first the stream did not end normally (an
        error, a stopped run), so the bytes stay in PATH.part: never a short file under the
        final name."""
        if not self._finalized:
            self._finalized = True
            self._file.close()

    def __enter__(self) -> "AudioFileWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finalize()
        else:                            # an error upstream: the file stays PATH.part
            self.close()

    def __repr__(self) -> str:
        return f"<AudioFileWriter '{self.path}' {self.container_codec} {self.format}>"

    # --- PCM input ---------------------------------------------------------------------

    def _write_frame(self, frame: AudioFrame) -> None:
        if self._mode is None:
            self._start_pcm(frame.format)
        elif self._mode != "pcm":
            raise FormatError(f"'{self.path}': got PCM after encoded packets; one file takes one kind")
        fmt, first = frame.format, self._in_format
        if (fmt.sample_rate, fmt.channels, fmt.sample_type) != \
                (first.sample_rate, first.channels, first.sample_type):
            raise FormatError(f"'{self.path}': the input format changed at sample "
                              f"{self.samples_written}: expected {first}, got {fmt}")
        if frame.samples == 0:
            return
        av_frame = frame.av         # PyAV's own frame when a PyAV operator made it
        av_frame.pts = self.samples_written
        av_frame.time_base = time_base_fraction(1, fmt.sample_rate)
        self._encode(av_frame)
        self.samples_written += frame.samples

    def _wav_packet_to_frame(self, packet: Packet) -> AudioFrame:
        fmt = self._input_format
        if fmt is None:
            raise FormatError(f"'{self.path}': 'wav' packets are raw PCM bytes that do not say "
                              f"their format: pass input_format= (e.g. the reader's source_format)")
        frame_bytes = fmt.channels * fmt.bytes_per_sample
        if len(packet.data) % frame_bytes:
            raise FormatError(f"'{self.path}': a wav packet of {len(packet.data)} bytes is not a whole "
                              f"number of {frame_bytes}-byte sample frames of {fmt}")
        pcm = np.frombuffer(packet.data, fmt.dtype).reshape(-1, fmt.channels)
        return AudioFrame(pcm, fmt.with_(planar=False), stream=packet.stream)

    def _start_pcm(self, in_fmt: AudioFormat) -> None:
        self._mode = "pcm"
        self._in_format = in_fmt
        out = self._output_format(in_fmt)
        encoder = self._encoder_name(out)
        container = self._open_container()
        try:
            stream = container.add_stream(encoder, rate=out.sample_rate)
        except (ValueError, av.FFmpegError) as exc:
            raise UnknownCodecError(f"'{self.path}': no encoder {encoder!r} in this FFmpeg: {exc}") \
                from None
        stream.layout = channel_layout(out.channels)
        cc = stream.codec_context
        cc.format = self._sample_format(cc, out)
        if self.bitrate is not None:
            cc.bit_rate = self.bitrate
        if self.compression_level is not None:
            cc.options = {"compression_level": str(self.compression_level)}
        try:
            cc.open()
        except av.FFmpegError as exc:
            raise CodecError(f"'{self.path}': cannot open the {encoder} encoder for {out} "
                             f"(bitrate={self.bitrate}, compression_level={self.compression_level}): "
                             f"{exc}") from None
        self._stream = stream
        self._out_format = AudioFormat.from_av(cc.format.name, out.channels, out.sample_rate)
        self._start_container()

    def _output_format(self, in_fmt: AudioFormat) -> AudioFormat:
        wanted = self._format
        rate = wanted.sample_rate if wanted else in_fmt.sample_rate
        channels = wanted.channels if wanted else in_fmt.channels
        if self.container_codec == "opus" and rate not in OPUS_SAMPLE_RATES:
            rate = 48000
        if wanted is not None:
            sample_type = wanted.sample_type
        elif self.container_codec == "flac":
            sample_type = "s16" if in_fmt.sample_type in ("u8", "s16") else "s32"
        elif self.container_codec == "wav":
            sample_type = "s16"
        else:
            sample_type = "f32"
        return AudioFormat(rate, channels, sample_type)

    def _encoder_name(self, out: AudioFormat) -> str:
        codec = self._codec_override
        if codec is None:
            codec = self.container_codec
        if codec == "wav":
            return _PCM_ENCODERS[out.sample_type]
        return _ENCODERS.get(codec, codec)

    @staticmethod
    def _sample_format(cc: av.CodecContext, out: AudioFormat) -> str:
        available = [f.name for f in (cc.codec.audio_formats or ())]
        exact = (out.with_(planar=True).av_format, out.with_(planar=False).av_format)
        for name in exact + _SAMPLE_FORMAT_FALLBACK:
            if name in available:
                return name
        return available[0]

    def _encode(self, frame: av.AudioFrame | None) -> None:
        where = "at the end of the stream" if frame is None else f"at sample {self.samples_written}"
        try:
            packets = self._stream.encode(frame)
        except (av.FFmpegError, ValueError) as exc:
            raise CodecError(f"'{self.path}': encoding failed {where}: {exc}") from None
        for packet in packets:
            self._mux(packet)

    # --- packet input ------------------------------------------------------------------

    def _write_packet(self, packet: Packet) -> None:
        if self._mode is None:
            self._start_packets(packet)
        elif self._mode != "packet":
            raise FormatError(f"'{self.path}': got an encoded packet after PCM; one file takes one kind")
        index = self.packets_written
        if self._flac is not None:
            self.samples_written += self._flac.write(packet.data)
            self.packets_written += 1
            return
        av_packet = packet.av     # the codec's own packet (from a PyAV encoder): muxed as is
        if av_packet is None:
            data = packet.data
            header = parse_adts_header(data) if self.container_codec == "aac" else None
            if self.container_codec == "aac" and header is None:
                raise FormatError(f"'{self.path}': aac packet {index} is not ADTS-framed (starts "
                                  f"with {data[:4].hex()}); flowengine's AAC packets carry ADTS "
                                  f"headers")
            if self._container is None:         # .aac: ADTS frames are the file
                self._file.write(data)
                self.samples_written += 1024 * header.raw_data_blocks
                self.packets_written += 1
                return
            if header is not None:      # MP4 stores the raw frame; the header became extradata
                data = data[header.header_length:header.frame_length]
            av_packet = av.Packet(data)
        av_packet = self._stamped(packet, av_packet, index)
        if self._gapless is not None:       # muxed one packet later, so the last can be marked
            av_packet = self._gapless.hold(av_packet)
        if av_packet is not None:
            self._mux(av_packet)

    def _write_encoded(self, packet: Packet) -> None:
        """The usual packet of a stream a PyAV encoder made: its av.Packet as the encoder
        made it (timestamps in 1/rate, the stream's clock), muxed as it is, in a few
        operations. Any other packet takes `_write_packet`."""
        av_packet, pts, duration = packet.av, packet.pts, packet.duration
        if av_packet is None or pts is None or pts != av_packet.pts or \
                duration != av_packet.duration or packet.dts != av_packet.dts or \
                packet.time_base_num != 1 or packet.time_base_den != self._packet_rate:
            self._write_packet(packet)
            return
        self._next_pts = pts + duration
        self.samples_written += duration
        av_packet.stream = self._stream
        self._mux(av_packet)

    def _stamped(self, packet: Packet, av_packet: av.Packet, index: int) -> av.Packet:
        """`av_packet` with the flowengine packet's timestamps (they are the truth: a restart
        may have moved them) and this writer's stream."""
        time_base = packet.time_base
        pts = packet.pts if packet.pts is not None else self._next_pts
        if pts is None:
            raise FormatError(f"'{self.path}': {packet.codec} packet {index} has no pts and no "
                              f"earlier packet's duration to count from")
        duration = packet.duration
        self._next_pts = pts + duration if duration is not None else None
        if duration is not None:
            if time_base.denominator == self._packet_rate and time_base.numerator == 1:
                self.samples_written += duration
            else:
                self.samples_written += int(round(duration * time_base * self._packet_rate))
            av_packet.duration = duration
        av_packet.pts = pts
        av_packet.dts = packet.dts if packet.dts is not None else pts
        av_packet.time_base = time_base
        av_packet.stream = self._stream
        av_packet.is_keyframe = True        # every audio packet here starts a decodable unit
        return av_packet

    def _start_packets(self, first: Packet) -> None:
        self._mode = "packet"
        codec = self.container_codec
        if codec == "flac":
            self._flac = FlacFileWriter(self._file, first.data, first.extradata)
            self._out_format = AudioFormat(self._flac.sample_rate, self._flac.channels,
                                           "s16" if self._flac.bits_per_sample <= 16 else "s32")
            return
        if codec == "aac" and self._muxer == "adts" and first.av is None:
            header = parse_adts_header(first.data)
            if header is not None:
                self._out_format = AudioFormat(header.sample_rate,
                                               _ADTS_CHANNELS.get(header.channel_config, 2))
            return                      # written as is; _write_packet checks every frame
        rate, channels, extradata = self._stream_parameters(first)
        self._packet_rate = rate
        self._out_format = AudioFormat(rate, channels)
        container = self._open_container()
        try:
            stream = packet_stream(container, self._muxer, _ENCODERS[codec], rate, channels,
                                   extradata)
        except av.FFmpegError as exc:
            raise CodecError(f"'{self.path}': cannot set up a {codec} stream for {rate} Hz "
                             f"{channels} ch: {exc}") from None
        if codec == "mp3":
            self._gapless = SkipSamplesMarker(mp3_samples_per_frame(rate), rate)
        self._stream = stream
        self._start_container()

    def _stream_parameters(self, first: Packet) -> tuple[int, int, bytes | None]:
        """(rate, channels, extradata) for muxing packets like `first`."""
        codec = self.container_codec
        if codec == "mp3":
            header = parse_frame_header(first.data)
            if header is None:
                raise FormatError(f"'{self.path}': the first mp3 packet does not start with an MPEG "
                                  f"audio frame header ({first.data[:4].hex()})")
            return header.sample_rate, header.channels, None
        if codec == "aac" and first.av is not None and first.extradata:
            asc = parse_audio_specific_config(first.extradata)    # a PyAV encoder's packets
            return asc.sample_rate, _ADTS_CHANNELS.get(asc.channel_config, 2), first.extradata
        if codec == "aac":
            header = parse_adts_header(first.data)
            if header is None:
                raise FormatError(f"'{self.path}': aac packet 0 is not ADTS-framed (starts with "
                                  f"{first.data[:4].hex()}); flowengine's AAC packets carry ADTS "
                                  f"headers")
            config = (header.object_type << 11) | (header.sample_rate_index << 7) \
                | (header.channel_config << 3)            # 2-byte AudioSpecificConfig
            return header.sample_rate, _ADTS_CHANNELS.get(header.channel_config, 2), \
                config.to_bytes(2, "big")
        head = first.extradata
        if not head or not head.startswith(b"OpusHead") or len(head) < 19:
            raise FormatError(f"'{self.path}': opus packets need their OpusHead in Packet.extradata "
                              f"to be muxed into Ogg (got {head!r:.40})")
        return 48000, head[9], head

    # --- container plumbing -------------------------------------------------------------

    def _open_container(self) -> av.container.OutputContainer:
        try:
            self._container = av.open(self._file, "w", format=self._muxer)
        except av.FFmpegError as exc:
            raise FormatError(f"'{self.path}': cannot create a {self._muxer} container: {exc}") from None
        return self._container

    def _start_container(self) -> None:
        """Write the header now, so a codec the container refuses fails before any data."""
        try:
            self._container.start_encoding()
        except (av.FFmpegError, ValueError) as exc:
            codec = flowengine_codec_name(self._stream.codec_context.codec.canonical_name)
            raise FormatError(f"'{self.path}': a {self.extension} ({self._muxer}) file cannot hold "
                              f"{codec}: {exc}") from None

    def _mux(self, packet: av.Packet) -> None:
        try:
            self._container.mux(packet)
        except (av.FFmpegError, ValueError) as exc:
            raise CodecError(f"'{self.path}': muxing packet {self.packets_written} "
                             f"(pts {packet.pts}) failed: {exc}") from None
        self.packets_written += 1
