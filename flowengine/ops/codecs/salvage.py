"""Damaged frames in a compressed stream: found, reported, and under ``on_error: skip``
replaced by silence of their duration, so the stream keeps its timeline.

One policy, two callers
-----------------------
The file reader decoding to PCM (``AudioFileReader``, mode "pcm") and the
``Decoder`` fed packets (packet mode, after a reader in mode "packet") meet
the same damage in the same packets: both hand it to a `Salvage` made with
the stream's policy, so a file gives the same samples in both modes. Neither
calls it while the packets are good: they compare one timestamp per packet
and catch the decoder's exceptions; everything here runs on the error path.

- ``on_error="fail"``: the first damage raises CodecError naming where it is
  (file and byte offset, or stream, and time), after every sample decoded
  before it was handed out.
- ``on_error="skip"``: a damaged frame (or a run of them) is dropped and its
  duration filled with silence in the decoder's own sample format, so every
  later sample keeps its time; a `DamageReport` counts what was replaced
  (frames, samples, the first few byte offsets and times).

What is damage, and how long was it
-----------------------------------
- A packet the decoder rejects (FFmpeg's InvalidDataError), which includes a
  FLAC frame failing its CRC-16 and an MP3 frame failing its CRC (streams
  that carry one): FFmpeg checks both with `DECODER_OPTIONS`, which every
  decoder context here gets. Its duration is the packet's.
- A packet that starts later than the one before it ended: frames the
  container's parser dropped (FLAC frames failing their CRC, an Ogg page
  failing its CRC-32). The gap is the lost duration, exactly (`gap`).
- A FLAC packet without a timestamp: FFmpeg's parser glued damaged bytes to
  good frames. It is cut again at its frame headers (CRC-8 protected and
  numbered), each frame decoded on its own, and silence put where the frame
  numbers say samples are missing (`flac_frames`).
- An MP3 or ADTS packet the decoder rejects, often larger than one frame
  (FFmpeg's MP3 parser, or the ADTS file framer, glued damage to it): cut at
  the frame headers that chain up; what decodes is kept, and bytes that are
  no frame become round(bytes / mean packet size) frames of silence, the mean
  taken over the stream's packets before it (exact at a constant bitrate, an
  estimate for VBR) (`frames_in`).

What cannot be found is what the formats do not protect: MP3 main data and
AAC payloads have no checksum unless the optional CRC is there (and FFmpeg
does not check ADTS CRCs), Opus packets have none (the Ogg page around them
has), PCM has nothing. Such damage decodes to whatever FFmpeg's decoder makes
of it. A forward timestamp jump longer than `MAX_GAP_SECONDS` is taken for a
broken timestamp, not lost audio: reported, not filled.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable

import av

from flowengine.errors import CodecError
from flowengine.ops.codecs.decoder_headers import (adts_frame_length, flac_crc_ends,
                                                   mp3_frame_length, parse_flac_frame_header,
                                                   same_stream)
from flowengine.ops.codecs.mp3frames import parse_frame_header

__all__ = ["ON_ERROR", "DECODER_OPTIONS", "MAX_SPOTS", "MAX_GAP_SECONDS", "DamageSpot",
           "DamageReport", "Salvage", "silence_frames", "check_on_error", "describe_damage"]

ON_ERROR = ("fail", "skip")
# FFmpeg decoder options that make checksum failures errors (FLAC's CRC-16, the optional
# MP3 CRC); without `explode` FFmpeg only logs them and decodes the damaged frame.
DECODER_OPTIONS = {"flac": {"err_detect": "crccheck+explode"},
                   "mp3": {"err_detect": "crccheck+explode"}}
MAX_SPOTS = 5               # places kept per stream (the counts cover all of them)
MAX_GAP_SECONDS = 60.0      # a longer forward jump is a broken timestamp, not lost audio
_SILENCE_FRAME_SECONDS = 1.0
_ENDS = "the end of the stream"

log = logging.getLogger("flowengine.salvage")


def check_on_error(value: str, what: str) -> str:
    """The policy `value` names ("raise" is an old name of "fail"); ValueError otherwise."""
    if value == "raise":
        return "fail"
    if value not in ON_ERROR:
        raise ValueError(f"{what}: on_error must be 'fail' or 'skip', got {value!r}")
    return value


@dataclass(frozen=True)
class DamageSpot:
    """One damaged place of a stream."""

    byte: int | None        # byte offset in the file (None: not known, e.g. packets fed)
    seconds: float          # stream time of the first sample replaced
    samples: int            # samples of silence put in
    what: str


class DamageReport:
    """What damage one stream had and what `on_error: skip` did about it."""

    def __init__(self) -> None:
        self.events = 0             # damaged places (each would be a CodecError under fail)
        self.frames = 0             # damaged frames replaced by silence
        self.samples = 0            # samples of silence put in their place
        self.rate = 0               # the rate `samples` are counted at (the decoder's)
        self.spots: list[DamageSpot] = []
        self.leading_bytes = 0      # bytes before the first frame that were no frame
        self.end: DamageSpot | None = None  # where the stream ended early, and why
        self.unfilled = 0           # timestamp jumps not filled (longer than MAX_GAP_SECONDS)

    def __bool__(self) -> bool:
        return bool(self.events or self.leading_bytes or self.end or self.unfilled)

    def add(self, frames: int, samples: int, spot: DamageSpot, rate: int) -> None:
        self.events += 1
        self.frames += frames
        self.samples += samples
        self.rate = self.rate or rate
        if len(self.spots) < MAX_SPOTS:
            self.spots.append(spot)

    def counts(self) -> dict[str, Any]:
        """The per-stream fields the audit reads (flowengine.core.audit); only those set."""
        counts: dict[str, Any] = {}
        if self.events:
            counts.update(replaced_events=self.events, replaced_frames=self.frames,
                          replaced_samples=self.samples, replaced_rate=self.rate,
                          replaced_at=[[s.byte, round(s.seconds, 6), s.samples]
                                       for s in self.spots])
        if self.leading_bytes:
            counts["leading_junk_bytes"] = self.leading_bytes
        if self.end is not None:
            counts["ended_at"] = [self.end.byte, round(self.end.seconds, 6), self.end.what]
        if self.unfilled:
            counts["unfilled_jumps"] = self.unfilled
        return counts

    def describe(self) -> str:
        return describe_damage(self.counts())


def describe_damage(counts: dict[str, Any]) -> str:
    """`DamageReport.counts()` fields (perhaps summed over replicas) as one line."""
    parts = []
    events = counts.get("replaced_events", 0)
    if events:
        samples, rate = counts.get("replaced_samples", 0), counts.get("replaced_rate", 0)
        seconds = f" ({samples / rate:.3f} s)" if rate else ""
        spots = counts.get("replaced_at", [])
        at = ", ".join((f"byte {byte} " if byte is not None else "") + f"({t:.3f} s)"
                       for byte, t, _ in spots)
        more = ", ..." if events > len(spots) else ""
        parts.append(f"{counts.get('replaced_frames', 0)} damaged frame(s) in {events} "
                     f"place(s) replaced by {samples} samples of silence{seconds} at "
                     f"{at}{more}")
    if counts.get("leading_junk_bytes"):
        parts.append(f"{counts['leading_junk_bytes']} bytes before the first frame skipped")
    if counts.get("ended_at"):
        byte, seconds, what = counts["ended_at"]
        where = f"byte {byte} " if byte is not None else ""
        parts.append(f"ended early at {where}({seconds:.3f} s): {what}")
    if counts.get("unfilled_jumps"):
        parts.append(f"{counts['unfilled_jumps']} timestamp jump(s) over "
                     f"{MAX_GAP_SECONDS:g} s left as they are")
    return "; ".join(parts)


def silence_frames(format_name: str, layout: str, rate: int, samples: int
                   ) -> Iterator[av.AudioFrame]:
    """`samples` of silence as PyAV frames of this format, at most a second each."""
    step = max(1, int(rate * _SILENCE_FRAME_SECONDS))
    while samples > 0:
        n = min(step, samples)
        frame = av.AudioFrame(format=format_name, layout=layout, samples=n)
        frame.sample_rate = rate
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        yield frame
        samples -= n


class Salvage:
    """Damage handling for one stream (see the module doc); every method is the error path.

    where: how messages name the stream, e.g. "'in/a.mp3': mp3 stream 0".
    file_offsets: the byte offsets given are the file's (a reader's); else they count the
    bytes of the packets fed (a Decoder's), and the report keeps none.
    """

    def __init__(self, codec: str, on_error: str, where: str, *, file_offsets: bool) -> None:
        self.codec = codec
        self.on_error = check_on_error(on_error, where)
        self.skip = self.on_error == "skip"
        self.where = where
        self.file_offsets = file_offsets
        self.report = DamageReport()
        self.errors: list[CodecError] = []
        self.extra = 0              # samples put in beyond the packets' own durations
        self._owed = 0              # silence due before the decoder's first frame
        self._format: tuple[str, str, int] | None = None
        self._reference: bytes | None = None     # the stream's first MP3 / ADTS header
        self._frame_samples: int | None = None   # samples per frame, when fixed
        self._flac_block: int | None = None      # fixed-blocksize FLAC: samples per number
        self._damage_at: int | None = None       # byte of a FLAC frame found damaged, whose
        #                                          samples the next timestamp gap gives

    # ---- accounting -------------------------------------------------------------------------

    def error(self, what: str, byte: int | None, seconds: float, hint: str = "",
              skipped: str = "replaced by silence") -> CodecError:
        """The CodecError for damage at `byte` / `seconds`; `skipped`: what on_error: skip
        does about it ("replaced by silence", "skipped", "the end of the stream"), said in
        the message under either policy."""
        at = self._at(byte, seconds)
        detail = f" ({hint})" if hint else ""
        if self.skip:
            text = f"{self.where}: {what} at {at}{detail}: {skipped} (on_error: skip)"
        elif skipped == _ENDS:
            text = (f"{self.where}: {what} at {at}{detail}; with on_error: skip the stream "
                    f"would end there, with what was decoded")
        else:
            text = (f"{self.where}: {what} at {at}{detail}; with on_error: skip it would be "
                    f"{skipped} and the stream would go on")
        error = CodecError(text)
        error.codec, error.offset, error.seconds = self.codec, byte, seconds
        return error

    def _at(self, byte: int | None, seconds: float) -> str:
        if byte is None:
            return f"{seconds:.3f} s"
        unit = "byte" if self.file_offsets else "byte of the stream's packets"
        return f"{unit} {byte} ({seconds:.3f} s)"

    def _damaged(self, what: str, byte: int | None, seconds: float, frames: int,
                 samples: int, rate: int, hint: str = "") -> None:
        """Count one damaged place, or raise in fail mode."""
        error = self.error(what, byte, seconds, hint)
        self.errors.append(error)
        if not self.skip:
            raise error
        self.report.add(frames, samples, DamageSpot(byte if self.file_offsets else None,
                                                    seconds, samples, what), rate)
        if self.report.events <= MAX_SPOTS:
            log.info("%s", error)

    def leading_junk(self, size: int) -> None:
        """`size` bytes that are no frame before the first one (no audio lost)."""
        if not self.skip:
            raise self.error(f"{size} bytes of garbage before the first {self.codec} frame",
                             0, 0.0, f"the audio starts at byte {size}", "skipped")
        self.report.leading_bytes += size

    def ended(self, what: str, byte: int | None, seconds: float, detail: str) -> None:
        """The stream ends early (a file cut short, a container that cannot be read on):
        CodecError in fail mode, else reported (the first such end only)."""
        error = self.error(what, byte, seconds, detail, _ENDS)
        if not self.skip:
            raise error
        if self.report.end is None:
            self.report.end = DamageSpot(byte if self.file_offsets else None, seconds, 0,
                                         f"{what} ({detail})")
            log.info("%s", error)

    def time(self, seconds: float, ctx: av.CodecContext) -> float:
        """A packet's time on the output's timeline (after silence put in beyond durations)."""
        rate = self.rate(ctx)
        return seconds + self.extra / rate if rate else seconds

    # ---- silence ----------------------------------------------------------------------------

    def rate(self, ctx: av.CodecContext) -> int:
        fmt = self._decoder_format(ctx)
        return fmt[2] if fmt else (ctx.sample_rate or 0)

    def _decoder_format(self, ctx: av.CodecContext) -> tuple[str, str, int] | None:
        if self._format is None and ctx.format is not None and ctx.sample_rate \
                and ctx.layout.nb_channels:
            self._format = (ctx.format.name, ctx.layout.name, ctx.sample_rate)
        return self._format

    def _silence(self, ctx: av.CodecContext, samples: int) -> Iterator[av.AudioFrame]:
        fmt = self._decoder_format(ctx)
        if fmt is None:                 # nothing decoded yet: owed before the first frame
            self._owed += samples
            return
        yield from silence_frames(*fmt, samples)

    @property
    def owed(self) -> int:
        """Samples of silence due before the decoder's next frame (found before it had a
        format to make them in): a caller decoding on its own passes its frames through
        `decoded` while this is not 0."""
        return self._owed

    def decoded(self, ctx: av.CodecContext, frames: list) -> Iterator[av.AudioFrame]:
        """Frames the decoder gave, after any silence owed from before it had a format."""
        if self._owed:
            owed, self._owed = self._owed, 0
            yield from self._silence(ctx, owed)
        yield from frames

    def gap(self, ctx: av.CodecContext, samples: int, byte: int | None, seconds: float,
            what: str = "frames missing", frame_samples: int | None = None,
            rate: int = 0) -> Iterator[av.AudioFrame]:
        """`samples` missing before a packet (a timestamp gap): silence, or CodecError.
        `frame_samples`: the stream's packet duration, when it has no fixed frame size;
        `rate`: the samples' rate when the decoder has not said yet (the packets' clock)."""
        if self._damage_at is not None:     # a damaged FLAC frame: where the gap really is
            byte, self._damage_at = self._damage_at, None
            what = "damaged frame(s)"
        rate = self.rate(ctx) or rate
        if samples <= 0:
            return
        if rate and samples > MAX_GAP_SECONDS * rate:
            if not self.skip:
                raise self.error(f"the timestamps jump forward by {samples / rate:.3f} s",
                                 byte, seconds, "a damaged timestamp")
            self.report.unfilled += 1
            return
        per_frame = self._frame_samples or frame_samples
        frames = -(-samples // per_frame) if per_frame else 1
        self._damaged(what, byte, seconds, frames, samples, rate)
        yield from self._silence(ctx, samples)

    def lost_packet(self, ctx: av.CodecContext, samples: int, byte: int | None,
                    seconds: float, reason: str) -> Iterator[av.AudioFrame]:
        """A packet of known duration the decoder rejected: silence of its duration."""
        self._damaged("damaged frame", byte, seconds, 1, samples, self.rate(ctx),
                      f"the decoder rejected it: {reason}")
        yield from self._silence(ctx, samples)

    # ---- MP3 and ADTS: packets cut again at their frame headers ------------------------------

    def note_header(self, data: bytes) -> None:
        """Take the stream's parameters from its first good MP3 / ADTS frame."""
        if self._reference is not None or len(data) < 6:
            return
        if self.codec == "mp3":
            parsed = parse_frame_header(data)
            if parsed is None:
                return
            self._frame_samples = parsed.samples_per_frame
        elif adts_frame_length(data[:6]):
            self._frame_samples = 1024
        else:
            return
        self._reference = bytes(data[:6])

    def frames_in(self, ctx: av.CodecContext, data: bytes, byte: int | None, seconds: float,
                  nominal: int, mean_bytes: float, reason: str) -> Iterator[av.AudioFrame]:
        """An MP3 / ADTS packet the decoder rejected, cut at its frame headers: the frames
        that decode, silence for the rest (module doc). `nominal`: the samples its timestamps
        give it (one frame); `mean_bytes`: the stream's bytes per packet so far."""
        length_of = mp3_frame_length if self.codec == "mp3" else adts_frame_length
        self.note_header(data)
        reference = self._reference
        frame_samples = self._frame_samples or nominal
        mean = mean_bytes or (length_of(reference) if reference else 0) or len(data)
        rate = self.rate(ctx) or 1
        emitted = 0
        pos, end = 0, len(data)
        while pos < end:
            header = data[pos:pos + 6]
            length = length_of(header)
            if length and pos + length > end and \
                    (reference is None or same_stream(self.codec, reference, header)) \
                    and _resync(data, pos + 1, length_of, reference, self.codec) == end:
                # a frame cut short (the packet, or the file, ends inside it)
                yield from self._lost_frames(ctx, 1, frame_samples, _plus(byte, pos),
                                             seconds + emitted / rate,
                                             f"it has {end - pos} of the {length} bytes its "
                                             f"header announces; {reason}")
                emitted += frame_samples
                break
            if length and pos + length <= end and \
                    (reference is None or same_stream(self.codec, reference, header)):
                try:
                    decoded = ctx.decode(av.Packet(data[pos:pos + length]))
                except av.FFmpegError as exc:
                    yield from self._lost_frames(ctx, 1, frame_samples, _plus(byte, pos),
                                                 seconds + emitted / rate,
                                                 f"the decoder rejected it: {_reason(exc)}")
                    emitted += frame_samples
                else:
                    if self._foreign(ctx, decoded):     # junk that decodes, to another format
                        yield from self._lost_frames(ctx, 1, frame_samples, _plus(byte, pos),
                                                     seconds + emitted / rate,
                                                     "it decodes to another format")
                        emitted += frame_samples
                    else:
                        for frame in self.decoded(ctx, decoded):
                            emitted += frame.samples
                            yield frame
                pos += length
                continue
            resync = _resync(data, pos + 1, length_of, reference, self.codec)
            frames = round((resync - pos) / mean)
            if frames:
                yield from self._lost_frames(ctx, frames, frame_samples, _plus(byte, pos),
                                             seconds + emitted / rate,
                                             f"{resync - pos} bytes that are no frame; {reason}")
                emitted += frames * frame_samples
            pos = resync
        if emitted < nominal:     # the packet lasted a frame, whatever its bytes make of it
            yield from self._lost_frames(ctx, 1, nominal - emitted, byte,
                                         seconds + emitted / rate, reason)
            emitted = nominal
        self.extra += emitted - nominal

    def _foreign(self, ctx: av.CodecContext, frames: list) -> bool:
        """Whether decoded frames are not of the stream's format (known once a frame was)."""
        fmt = self._decoder_format(ctx)
        return fmt is not None and any(
            (f.format.name, f.layout.name, f.sample_rate) != fmt for f in frames)

    def _lost_frames(self, ctx: av.CodecContext, frames: int, frame_samples: int,
                     byte: int | None, seconds: float, hint: str) -> Iterator[av.AudioFrame]:
        samples = frames * frame_samples
        self._damaged("damaged frame" + ("s" if frames > 1 else ""), byte, seconds, frames,
                      samples, self.rate(ctx), hint)
        yield from self._silence(ctx, samples)

    # ---- FLAC: packets cut again at their (numbered) frame headers --------------------------

    def flac_frames(self, ctx: av.CodecContext, data: bytes, byte: int | None,
                    next_sample: int | None, rate: int, holder: list,
                    end: int | None = None) -> Iterator[av.AudioFrame]:
        """A FLAC packet without a timestamp, or that the decoder rejected, cut at its frame
        headers: each frame that decodes (CRC-16 checked) after silence for the samples its
        number says are missing (module doc). `end`: the sample the packet's timestamps say
        it ends at, when it has them (a frame numbered past it is a false header in the
        damage). Sets holder[0] to the sample number the next frame must start at."""
        headers = _flac_headers(data)
        for index, (at, header) in enumerate(headers):
            first = self._flac_first_sample(header)
            if end is not None and first >= end:
                continue
            if next_sample is not None and first + header.block_size <= next_sample:
                continue            # a frame given before (a copy in the damage): once is all
            stop = headers[index + 1][0] if index + 1 < len(headers) else len(data)
            decoded = _decode_flac_frame(ctx, data[at:stop], header.length)
            if decoded is None:     # damaged: the next good frame's number says how long
                if self._damage_at is None:
                    self._damage_at = _plus(byte, at)
                continue
            if next_sample is not None and first > next_sample:
                yield from self.gap(ctx, first - next_sample, _plus(byte, at),
                                    next_sample / rate)
            samples = 0
            for frame in self.decoded(ctx, decoded):
                samples += frame.samples
                yield frame
            next_sample = max(next_sample or 0, first + samples)
        holder[0] = next_sample

    def _flac_first_sample(self, header: Any) -> int:
        if header.variable:
            return header.number
        return header.number * (self._flac_block or header.block_size)

    def note_flac_streaminfo(self, extradata: bytes | None) -> None:
        """A fixed-blocksize stream's samples per frame, from its STREAMINFO (its frames are
        numbered, not its samples: the number times this is the first sample)."""
        info = (extradata or b"")[8:] if (extradata or b"")[:4] == b"fLaC" else extradata
        if self._flac_block is None and info and len(info) >= 4:
            low, high = int.from_bytes(info[0:2], "big"), int.from_bytes(info[2:4], "big")
            if low == high and low >= 16:
                self._flac_block = self._frame_samples = low


def _plus(byte: int | None, pos: int) -> int | None:
    return None if byte is None else byte + pos


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _resync(data: bytes, start: int, length_of: Callable[[bytes], int | None],
            reference: bytes | None, codec: str) -> int:
    """Where in data[start:] the next frame header of the stream starts that another one
    follows (or that ends exactly at the end of `data`); len(data) when none does."""
    end = len(data)
    pos = data.find(b"\xff", start)
    while 0 <= pos < end:
        header = data[pos:pos + 6]
        length = length_of(header)
        if length and (reference is None or same_stream(codec, reference, header)):
            after = pos + length
            if after == end or (after < end and length_of(data[after:after + 6])):
                return pos
        pos = data.find(b"\xff", pos + 1)
    return end


# Where a FLAC frame header may start: its 14-bit sync code, the reserved bit (0) and the
# blocking strategy bit. Searched in C: a packet of compressed audio holds a 0xFF every ~256
# bytes, each of which would otherwise cost a header parse (~48 per 4608-sample packet).
_FLAC_SYNC = re.compile(b"\xff[\xf8\xf9]")


def _flac_headers(data: bytes) -> list[tuple[int, Any]]:
    """(position, header) of each FLAC frame header in `data` (CRC-8 valid, each numbered
    after the one before it)."""
    found: list[tuple[int, Any]] = []
    sync = _FLAC_SYNC.search(data)
    while sync is not None:
        pos = sync.start()
        header = parse_flac_frame_header(data, pos)
        if header and (not found or header.follows(found[-1][1]) >= 0):
            found.append((pos, header))
            sync = _FLAC_SYNC.search(data, pos + header.length)
        else:
            sync = _FLAC_SYNC.search(data, pos + 1)
    return found


def _decode_flac_frame(ctx: av.CodecContext, data: bytes, header_length: int) -> list | None:
    """The frames of one FLAC frame's bytes, None if it is damaged. When damage follows the
    frame before the next header, FFmpeg decodes the frame, fails on the bytes after it, and
    PyAV drops the frame with the error: then the frame is tried again cut where its CRC-16
    says it may end."""
    try:
        return ctx.decode(av.Packet(data))
    except av.FFmpegError:
        pass
    for end in flac_crc_ends(data, header_length):
        if end == len(data):
            break
        try:
            return ctx.decode(av.Packet(data[:end]))
        except av.FFmpegError:
            continue
    return None
