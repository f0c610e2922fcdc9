"""Decoder: compressed audio (mp3, ADTS aac, opus, flac, raw pcm) in, fixed-size PCM blocks out.

Theory of operation
-------------------
Bytes come in two ways. `put_frame(data)` takes arbitrary slices of a byte
stream (as read from a socket or file): a splitter (decoder_split) cuts them
into frames and remembers where each frame started in the stream.
`put_packet(pkt)` takes one whole frame with its timestamp and skips the
splitter. Opus has no self-delimiting framing (its packets come from a
container such as Ogg), so for Opus each `put_frame` call must be exactly
one packet, like `put_packet`.

Frames are decoded with FFmpeg (PyAV) as they arrive; samples go, as planar
float32, into a sample FIFO that hands out blocks of exactly `chunk_samples`
with a continuous pts (in samples: the first packet's pts, converted, or 0).
`get_frame(force=True)` drains everything: the splitter's held bytes, the
codec's delayed frames (EOF sent to the codec), then the remainder of the
FIFO, then None. Raw PCM ("wav"/"pcm") is interleaved bytes in the config's
`output_format`, delivered in that sample type.

Errors
------
Bad data becomes a `CodecError` naming codec, stream and byte offset in the
input (counting every byte fed). With `on_error="fail"` (or its old name
"raise") it is raised; with `"skip"` it is only recorded; `errors` lists both.

Packets (`put_packet`) go through the same damage handling as the file
reader's pcm mode (flowengine.ops.codecs.salvage), so a file gives the same
samples in both modes: under "skip" a damaged frame, or a gap in the packets'
timestamps (frames lost before them), is replaced by silence of its
duration, and `damage` reports what was replaced; the errors name the time
too. FLAC frames' CRC-16 and MP3 frames' optional CRC are checked by FFmpeg
(`err_detect=crccheck+explode`: `crccheck` alone only logs). An MP3 packet
shorter than its header announces, or an ADTS packet of another length than
its header's, is cut again at its frame headers: what decodes is kept.

Byte streams (`put_frame`) are cut by the splitter; a damaged stretch is
recorded and skipped (no silence: a byte stream has no timeline to keep), and
decoding goes on with the next good frame; samples decoded before the bad
data stay in the FIFO. Errors found while draining at `force=True` are
raised after the last samples have been returned. Bytes before the first
decodable frame (a stream joined mid-frame) are skipped and counted in
`skipped_leading_bytes`; if nothing at all decodes, draining raises "no
<codec> frame was found".

What FFmpeg does with damage (measured with PyAV 18 / FFmpeg 8): MP3 and
AAC reject a frame whose header or side information is broken
(InvalidDataError), but conceal damage inside MP3 main data: such a frame
decodes to wrong audio with no error, and nothing can detect it without the
optional CRC (LAME writes none by default). FFmpeg's parsers glue a damaged
frame onto a neighbour, and the decoder then either rejects the good frame
too or silently skips the bad bytes; the splitter cuts frames by their
header lengths instead, so exactly the damaged bytes are reported, at their
offset. Random bytes never sync: after junk a frame is only accepted when
the next frame header of the same stream follows it. Opus has no checksum
and FFmpeg's decoder accepts almost any bytes: a damaged Opus packet decodes
to noise or silence, not to an error. MP3 output is not gapless-trimmed: the
encoder delay (and the decoder's 529 samples) stay at the start, the padding
at the end.

Opus without extradata (OpusHead): FFmpeg's decoder assumes 48 kHz stereo
(mono packets are upmixed), and applies no pre-skip. With extradata it
takes channels from it and drops the pre-skip samples itself.
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction

import av
import numpy as np

from flowengine.audio.buffers import DEFAULT_STREAM, Packet
from flowengine.errors import CodecError, FormatError, UnknownCodecError
from flowengine.audio.format import AudioFormat, to_float
from flowengine.ops.codecs.configs import DECODER_CONFIGS, normalize_codec
from flowengine.ops.codecs.decoder_fifo import PlanarSampleBuffer
from flowengine.ops.codecs.decoder_headers import adts_frame_length
from flowengine.ops.codecs.decoder_split import FRAME, JUNK, LAST, MISSING, SHORT, Unit, make_splitter
from flowengine.ops.codecs.mp3frames import announced_frame_length
from flowengine.ops.codecs.salvage import DECODER_OPTIONS, DamageReport, Salvage

__all__ = ["Decoder", "LAYOUTS", "ON_ERROR"]

# What the bytes must look like, said when none of them decoded (raw AAC from an MP4
# container is the usual mistake: it has no headers to find frames by).
_EXPECTED_FRAMING = {"aac": " (the aac decoder takes ADTS-framed AAC; AudioFileReader gives "
                            "M4A/MP4 packets ADTS headers)"}

LAYOUTS = ("planar", "interleaved")
ON_ERROR = ("fail", "raise", "skip")     # "raise" is the old name of "fail"
_BYTE_TYPES = (bytes, bytearray, memoryview)
# FFmpeg decoder per codec: "mp3" alone would pick the fixed-point MP3 decoder (s16 output).
_FFMPEG_DECODERS = {"mp3": "mp3float", "aac": "aac", "opus": "opus", "flac": "flac"}
# Packed integer output (FLAC) -> float in [-1, 1), as flowengine.audio.format.to_float scales it.
_INT_SCALES = {"s16": 1.0 / 32768.0, "s32": 1.0 / 2147483648.0}
_FLOAT_SOURCES = {"u1": "u8", "i2": "s16", "i4": "s32", "f8": "f64"}


def _check_bytes(data: object, where: str) -> bytes:
    if isinstance(data, _BYTE_TYPES):
        return bytes(data)
    hint = " (for raw PCM pass array.tobytes())" if isinstance(data, np.ndarray) else ""
    raise TypeError(f"{where} expects bytes, got {type(data).__name__}{hint}")


def _planar_float(frame: av.AudioFrame) -> np.ndarray:
    """A decoded PyAV frame as planar float32 (channels, samples)."""
    pcm = frame.to_ndarray()
    if pcm.dtype == np.float32 and pcm.shape[0] == frame.layout.nb_channels:
        return pcm   # fltp, the usual case: nothing to do
    if not frame.format.is_planar:
        pcm = pcm.reshape(-1, frame.layout.nb_channels).T
    if pcm.dtype != np.float32:
        pcm = to_float(pcm, _FLOAT_SOURCES[pcm.dtype.str[1:]])
    return pcm


_FRAMED = ("mp3", "aac")     # codecs whose packets are frames with a length in their header


def _framing_off(codec: str, data: bytes) -> bool:
    """An MP3 packet shorter than its header announces (FFmpeg would conceal the missing
    bytes as silence, without an error), or an ADTS packet of another length than its
    header's (bytes that are no frame glued to it: FFmpeg decodes some, drops the rest)."""
    if codec == "mp3":
        length = announced_frame_length(data)
        return length is not None and len(data) < length
    return adts_frame_length(data[:6]) != len(data)


class Decoder:
    """Streaming decoder for one stream of one codec. See the module docstring."""

    def __init__(self, codec: str, config=None, stream: str = DEFAULT_STREAM,
                 on_error: str = "raise") -> None:
        self.codec = normalize_codec(codec)
        config_type = DECODER_CONFIGS[self.codec]
        if config is None:
            if self.codec == "wav":
                raise FormatError("the wav/pcm decoder needs WavDecoderConfig(output_format=...): "
                                  "raw PCM bytes carry no header")
            config = config_type()
        if not isinstance(config, config_type):
            raise TypeError(f"the {self.codec} decoder needs a {config_type.__name__}, "
                            f"got {type(config).__name__}")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
        on_error = "raise" if on_error == "fail" else on_error
        self.config = config
        self.stream = str(stream)
        self.on_error = on_error
        self.reset()

    # ----------------------------------------------------------------- input
    def put_frame(self, data: bytes) -> None:
        """Feed bytes of the stream, cut anywhere (Opus: exactly one packet per call)."""
        data = _check_bytes(data, f"{self.codec} Decoder.put_frame")
        self._begin_input()
        offset = self.bytes_in
        self.bytes_in += len(data)
        self._stream_bytes += len(data)
        if self.codec == "wav":
            self._put_pcm(data, offset)
        elif self.codec == "opus":
            if data:
                self._pending.append(Unit(FRAME, offset, data))
        else:
            self._pending.extend(self._splitter.feed(data))
        self._pump()

    def put_packet(self, pkt: Packet) -> None:
        """Feed one whole packet; its pts (in its time base) sets the output timeline."""
        if not isinstance(pkt, Packet):
            raise TypeError(f"{self.codec} Decoder.put_packet expects a flowengine Packet, "
                            f"got {type(pkt).__name__} (use put_frame for raw bytes)")
        if pkt.codec and pkt.codec != self.codec:
            self._check_packet_codec(pkt.codec)
        self._begin_input()
        if pkt.pts is not None and self._first_pts is None:
            self._first_pts = Fraction(pkt.pts * pkt.time_base_num, pkt.time_base_den)
        if pkt.extradata and self._extradata is None and self._ctx is None:
            self._extradata = pkt.extradata
        offset = self.bytes_in
        self.bytes_in += len(pkt.data)
        self._stream_bytes += len(pkt.data)
        if self.codec == "wav":
            self._put_pcm(pkt.data, offset)
            return
        pts = pkt.pts
        if pts != self._next_pts:
            if self._off_timeline(pkt, offset):
                return
        elif pkt.duration:
            self._next_pts = pts + pkt.duration
        else:
            self._next_pts = None
        self._packets += 1
        if self.codec in _FRAMED and _framing_off(self.codec, pkt.data):
            # Shorter or longer than its header says (a frame cut short, or bytes that are no
            # frame glued to it): cut at its frame headers, as the reader's pcm mode does.
            self._push_all(self._salvager().frames_in(
                self._ctx or self._open_codec(), pkt.data, offset, self._packet_seconds(pkt),
                self._samples_of(pkt.duration, pkt), self._mean_packet(pkt),
                "its header announces another length"))
        elif self._pending:
            self._pending.append(Unit(FRAME, offset, pkt.data))
            self._pump()
        else:   # the common case, kept short: one packet straight to the codec
            self._decode(pkt.data, offset, FRAME, pkt)

    # ------------------------------------------------------- damaged packets
    def _salvager(self) -> Salvage:
        """Damage handling of the packets fed (flowengine.ops.codecs.salvage), made at the
        first one the stream's timeline or the decoder finds wrong."""
        if self._salvage is None:
            self._salvage = Salvage(self.codec, "skip" if self.on_error == "skip" else "fail",
                                    f"{self.codec} decoder, stream {self.stream!r}",
                                    file_offsets=False)
            self._salvage.errors = self.errors
            if self.codec == "flac":
                self._salvage.note_flac_streaminfo(self._extradata)
        return self._salvage

    @property
    def damage(self) -> DamageReport:
        """What damage the packets had, and (on_error "skip") what was replaced by silence."""
        return self._salvager().report

    def _samples_of(self, ticks: int | None, pkt: Packet) -> int:
        """A duration in the packet's time base, in samples at the decoder's rate."""
        if not ticks:
            return 0
        rate = self._salvager().rate(self._ctx) if self._ctx is not None else 0
        rate = rate or (pkt.time_base_den if pkt.time_base_num == 1 else 0)
        return round(Fraction(ticks * pkt.time_base_num * rate, pkt.time_base_den))

    def _packet_seconds(self, pkt: Packet) -> float:
        seconds = float(Fraction(pkt.pts * pkt.time_base_num, pkt.time_base_den)) \
            if pkt.pts is not None else 0.0
        return self._salvager().time(seconds, self._ctx) if self._ctx is not None else seconds

    def _off_timeline(self, pkt: Packet, offset: int) -> bool:
        """A packet that does not start where the one before ended (as in the reader's pcm
        mode): the first one, a gap (silence), a FLAC packet without a timestamp (cut again
        at its frames). True when the packet was handled here."""
        pts = pkt.pts
        previous, self._next_pts = self._next_pts, \
            (pts + pkt.duration if pts is not None and pkt.duration else None)
        if pts is None:
            if self.codec != "flac":
                return False
            self._packets += 1
            salvage = self._salvager()
            ctx = self._ctx or self._open_codec()
            first = self._samples_of(previous, pkt) if previous is not None else None
            holder = [first]
            rate = salvage.rate(ctx) or pkt.time_base_den
            self._push_all(salvage.flac_frames(ctx, pkt.data, offset, first, rate, holder))
            if holder[0] is not None:
                self._next_pts = round(Fraction(holder[0] * pkt.time_base_den,
                                                rate * pkt.time_base_num))
            return True
        if previous is not None and pts < previous:
            self._next_pts = max(previous, self._next_pts or previous)
        elif previous is not None and pts > previous:
            salvage = self._salvager()
            ctx = self._ctx or self._open_codec()
            if self._fifo is None:      # nothing decoded yet: the output starts at the gap
                self._first_pts = Fraction(previous * pkt.time_base_num, pkt.time_base_den)
            seconds = salvage.time(float(Fraction(previous * pkt.time_base_num,
                                                  pkt.time_base_den)), ctx)
            self._push_all(salvage.gap(ctx, self._samples_of(pts - previous, pkt), offset,
                                       seconds, frame_samples=self._samples_of(pkt.duration,
                                                                               pkt) or None,
                                       rate=pkt.time_base_den if pkt.time_base_num == 1 else 0))
        return False

    def _damaged_packet(self, pkt: Packet, offset: int, exc: av.error.FFmpegError) -> None:
        """A packet the decoder rejected: what of it decodes, silence for the rest (the same
        as the reader's pcm mode does with it)."""
        salvage, ctx = self._salvager(), self._ctx
        reason = getattr(exc, "strerror", None) or str(exc)
        nominal = self._samples_of(pkt.duration, pkt)
        seconds = self._packet_seconds(pkt)
        if self.codec == "flac":
            rate = salvage.rate(ctx) or pkt.time_base_den
            first = self._samples_of(pkt.pts, pkt) if pkt.pts is not None else None
            holder = [first]
            self._push_all(salvage.flac_frames(ctx, pkt.data, offset, first, rate, holder,
                                               None if first is None else first + nominal))
            if first is not None and holder[0] < first + nominal:
                self._push_all(salvage.gap(ctx, first + nominal - holder[0], offset,
                                           holder[0] / rate, "damaged frame(s)"))
        elif self.codec in _FRAMED:
            self._push_all(salvage.frames_in(ctx, pkt.data, offset, seconds, nominal,
                                             self._mean_packet(pkt), reason))
        else:
            self._push_all(salvage.lost_packet(ctx, nominal, offset, seconds, reason))

    def _mean_packet(self, pkt: Packet) -> float:
        """Bytes per packet of the stream before this one."""
        before = self._packets - 1
        return (self._stream_bytes - len(pkt.data)) / before if before > 0 else 0.0

    def _push_all(self, frames) -> None:
        for frame in frames:
            self._push(frame)

    def _check_packet_codec(self, codec: str) -> None:
        """A packet of another codec would decode to noise or a cryptic FFmpeg error. Names
        flowengine does not know (FFmpeg's: mp3float, pcm_s16le...) are not judged."""
        try:
            known = normalize_codec(codec)
        except UnknownCodecError:
            return
        if known != self.codec:
            raise FormatError(f"{self.codec} Decoder: got a {codec!r} packet (at byte "
                              f"{self.bytes_in}); use a {known} Decoder for it")

    # ---------------------------------------------------------------- output
    def get_frame(self, force: bool = False, layout: str = "planar") -> np.ndarray | None:
        """The next block of `chunk_samples` (the remainder when force=True), or None."""
        info = self.get_frame_info(force, layout)
        return None if info is None else info[0]

    def get_frame_info(self, force: bool = False, layout: str = "planar"):
        """(array, pts, (1, sample_rate)) of the next block, or None. See get_frame."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be 'planar' or 'interleaved', got {layout!r}")
        chunk = self.config.chunk_samples
        if self._fifo is None or len(self._fifo) < chunk:
            if self._pending:
                self._pump()
            if force and not self._drained:
                self._drain()
        fifo = self._fifo
        available = 0 if fifo is None else len(fifo)
        if available == 0 or (available < chunk and not force):
            if force and self._deferred:
                raise self._deferred.popleft()
            return None
        pcm, pts = fifo.pop(chunk)
        self.samples_out += pcm.shape[1]
        if layout == "interleaved":
            pcm = np.ascontiguousarray(pcm.T)
        return pcm, pts, (1, self._format.sample_rate)

    def output_format(self) -> AudioFormat | None:
        """Format of the output (planar f32; wav: the config's), None until the first frame decodes."""
        if self.codec == "wav":
            return self.config.output_format
        return self._format

    def pending_samples(self) -> int:
        """Decoded samples per channel waiting in the FIFO."""
        return 0 if self._fifo is None else len(self._fifo)

    def state(self) -> str:
        """"ready" (a full block waits), "need_more" (something is held), or "empty"."""
        held = self.pending_samples()
        if held >= self.config.chunk_samples:
            return "ready"
        buffered = (self._splitter.buffered_bytes if self._splitter else 0) + len(self._pcm_tail)
        if held or buffered or self._pending or self._deferred or (self._stream_bytes and not self._drained):
            return "need_more"
        return "empty"

    def reset(self) -> None:
        """Back to a fresh decoder: codec state, FIFO, counters and errors cleared."""
        self.errors: list[CodecError] = []
        self.samples_out = 0
        self.bytes_in = 0
        self.skipped_leading_bytes = 0
        self._fifo: PlanarSampleBuffer | None = None
        self._format: AudioFormat | None = None
        self._first_pts: Fraction | None = None
        self._deferred: deque[CodecError] = deque()
        self._start_stream()
        if self.codec == "wav":
            fmt = self.config.output_format
            self._format = fmt.with_(planar=True)
            self._fifo = PlanarSampleBuffer(fmt.channels, fmt.dtype)

    # ------------------------------------------------------------- internals
    def _start_stream(self) -> None:
        """Fresh codec context and splitter (at reset, and for new input after a drain)."""
        self._ctx = None
        self._extradata = getattr(self.config, "extradata", None)
        self._splitter = make_splitter(self.codec) if self.codec in ("mp3", "aac", "flac") else None
        self._pending: deque[Unit] = deque()
        self._pcm_tail = b""
        self._junk: list[int] | None = None      # [offset, size] of unreported undecodable bytes
        self._decoded_any = False
        self._reported = False
        self._stream_bytes = 0
        self._drained = False
        self._draining = False
        # Where the next packet must start; FLAC streams start at sample 0 (frames lost at
        # the start are a gap, as in the reader).
        self._next_pts: int | None = 0 if self.codec == "flac" else None
        self._packets = 0                       # packets fed (the mean packet size)
        self._salvage: Salvage | None = None

    def _begin_input(self) -> None:
        if self._drained:
            self._start_stream()

    def _open_codec(self) -> av.CodecContext:
        ctx = av.CodecContext.create(_FFMPEG_DECODERS[self.codec], "r")
        if self.codec in DECODER_OPTIONS:       # CRC failures are errors (salvage.py)
            ctx.options = dict(DECODER_OPTIONS[self.codec])
        if self.codec == "opus" and self._extradata:
            ctx.extradata = self._extradata
        self._ctx = ctx
        return ctx

    def _opus_pre_skip(self) -> int:
        head = self._extradata or b""
        return int.from_bytes(head[10:12], "little") if head[:8] == b"OpusHead" else 0

    def _pump(self) -> None:
        """Decode queued units in order; an error leaves the rest queued for the next call."""
        pending = self._pending
        while pending:
            unit = pending.popleft()
            if unit.kind == JUNK:
                self._add_junk(unit.offset, len(unit.data))
                continue
            if self._junk is not None and self._decoded_any:
                pending.appendleft(unit)   # report the junk first; this unit is handled next
                self._report_junk()
                continue
            self._handle(unit)

    def _handle(self, unit: Unit) -> None:
        size = len(unit.data)
        if unit.kind == SHORT:
            self._fail(f"truncated input: the frame at byte offset {unit.offset} has only {size} "
                       f"of its {unit.expected or 'announced'} bytes", unit.offset, size)
            return
        if unit.kind == MISSING:
            self._fail(f"corrupt data: {unit.expected} frame(s) missing or damaged after the frame "
                       f"at byte offset {unit.offset}", unit.offset, 0)
            return
        self._decode(unit.data, unit.offset, unit.kind)

    def _decode(self, data: bytes, offset: int, kind: str, pkt: Packet | None = None) -> None:
        """Decode one frame's bytes; a rejected frame becomes an error (or leading junk), or
        for a packet (put_packet) goes to the salvage."""
        try:
            frames = (self._ctx or self._open_codec()).decode(av.Packet(data))
        except av.error.FFmpegError as exc:
            if pkt is not None:
                self._damaged_packet(pkt, offset, exc)
                return
            size = len(data)
            reason = getattr(exc, "strerror", None) or str(exc)
            if kind == LAST:
                self._fail(f"truncated input: the last frame at byte offset {offset} "
                           f"({size} bytes) is incomplete or corrupt ({reason})", offset, size)
            elif not self._decoded_any and self._splitter is not None:
                self._add_junk(offset, size)
            else:
                self._fail(f"corrupt frame at byte offset {offset} ({size} bytes) rejected by "
                           f"the decoder: {reason}", offset, size)
            return
        if frames and self._junk is not None and not self._decoded_any:
            self._report_junk()   # bytes before the first good frame: counted, not an error
        salvage = self._salvage
        if salvage is not None and salvage.owed:    # silence found before the first frame
            frames = list(salvage.decoded(self._ctx, frames))
        for frame in frames:
            self._push(frame)

    def _push(self, frame: av.AudioFrame) -> None:
        rate, channels = frame.sample_rate, frame.layout.nb_channels
        fmt = self._format
        if fmt is None:
            fmt = self._format = AudioFormat(rate, channels, "f32")
            self._fifo = PlanarSampleBuffer(channels, np.float32)
            start = 0
            if self._first_pts is not None:
                start = round(self._first_pts * rate) + (self._opus_pre_skip() if self.codec == "opus" else 0)
            self._fifo.next_pts = start
        elif rate != fmt.sample_rate or channels != fmt.channels:
            self._fail(f"stream parameters changed mid-stream: {fmt.sample_rate} Hz "
                       f"{fmt.channels} ch, then {rate} Hz {channels} ch; "
                       f"{frame.samples} samples dropped", self.bytes_in, 0)
            return
        name = frame.format.name
        if name == "fltp":
            self._fifo.write_planes(frame)
        elif name in _INT_SCALES:
            self._fifo.write_interleaved_int(frame, _INT_SCALES[name])
        else:
            self._fifo.write(_planar_float(frame))
        self._decoded_any = True

    def _put_pcm(self, data: bytes, offset: int) -> None:
        fmt = self.config.output_format
        frame_bytes = fmt.channels * fmt.bytes_per_sample
        data = self._pcm_tail + data
        whole = len(data) - len(data) % frame_bytes
        self._pcm_tail = data[whole:]
        if whole:
            pcm = np.frombuffer(data, dtype=fmt.dtype, count=whole // fmt.bytes_per_sample)
            start = None
            if self._fifo.next_pts is None:
                start = round(self._first_pts * fmt.sample_rate) if self._first_pts is not None else 0
            self._fifo.write(pcm.reshape(-1, fmt.channels).T, start)

    def _add_junk(self, offset: int, size: int) -> None:
        if self._junk is not None and self._junk[0] + self._junk[1] == offset:
            self._junk[1] += size
        else:
            if self._junk is not None and self._decoded_any:
                self._report_junk()
            self._junk = [offset, size]

    def _report_junk(self) -> None:
        offset, size = self._junk
        self._junk = None
        if not self._decoded_any:
            self.skipped_leading_bytes += size
            return
        self._fail(f"{size} bytes at byte offset {offset} are not a valid {self.codec} frame "
                   f"(corrupt or foreign data); decoding resumes at the next frame", offset, size)

    def _drain(self) -> None:
        """Flush splitter and codec into the FIFO; errors found here wait until the FIFO is empty."""
        self._draining = True
        try:
            self._pump()
            if self._splitter is not None:
                self._pending.extend(self._splitter.flush())
                self._pump()
            if self._pcm_tail:
                fmt = self.config.output_format
                tail = len(self._pcm_tail)
                self._fail(f"truncated input: {tail} trailing bytes at byte offset "
                           f"{self.bytes_in - tail} do not make a whole sample frame "
                           f"({fmt.channels} ch x {fmt.bytes_per_sample} bytes)", self.bytes_in - tail, tail)
                self._pcm_tail = b""
            if self._ctx is not None:
                try:
                    for frame in self._ctx.decode(None):
                        self._push(frame)
                except av.error.FFmpegError as exc:
                    self._fail(f"draining the codec failed: {exc}", self.bytes_in, 0)
                if self._salvage is not None and self._salvage.owed:
                    # silence for damage after which nothing decoded (made now if the codec
                    # has told its format by now)
                    self._push_all(self._salvage.decoded(self._ctx, []))
            if self.codec != "wav" and self._stream_bytes and not self._decoded_any and not self._reported:
                self._junk = None
                self._fail(f"no {self.codec} frame was found in {self._stream_bytes} bytes of input"
                           + _EXPECTED_FRAMING.get(self.codec, ""),
                           self.bytes_in - self._stream_bytes, self._stream_bytes)
            elif self._junk is not None:
                self._report_junk()
        finally:
            self._draining = False
            self._drained = True

    def _fail(self, message: str, offset: int, size: int) -> None:
        error = CodecError(f"{self.codec} decoder, stream {self.stream!r}: {message}")
        error.codec, error.stream, error.offset, error.size = self.codec, self.stream, offset, size
        self.errors.append(error)
        self._reported = True
        if self.on_error == "raise":
            if self._draining:
                self._deferred.append(error)
            else:
                raise error
