"""The data-plane wire format (DESIGN §5): pure encode/decode, no sockets.

Theory of operation
-------------------
A message is a list of ZeroMQ frames. Data kinds carry two frames,
``[header, payload]``; control kinds carry the header alone::

    pcm   [header, raw samples]   one AudioFrame
    pkt   [header, packet bytes]  one Packet (codec frame)
    caps  [header]                what a stream carries (format, codec, extradata)
    eos   [header]                end of one stream, with the counts sent on it
                                  (``ab: true``: the stream was aborted, not whole)
    eof   [header]                end of the run from one sender ("stage:replica")

The header is a msgpack map with short keys (``v`` version, ``k`` kind, ``s``
stream, ``q`` per-stream sequence number, ``src`` sender id, ...; the tables
``_SCHEMAS`` below are the complete list). Data messages of a stream spread
over the replicas of an ordered stage also carry ``oq``, the message's index
in the whole stream (``q`` counts per sender, and each replica sends only a
part), and that stream's eos carries ``oe``, how many data messages the whole
stream had; the receiver after the ordered stage restores order by ``oq``
(``flowengine.engine.worker.routing``). Samples travel little-endian in
the frame's declared layout (planar ``(channels, samples)`` or interleaved
``(samples, channels)``), C-contiguous.

``decode`` trusts nothing: the version, kind, frame count, every key and its
type, value ranges, the payload length against the header and the total size
are checked, and msgpack itself is run with tight limits, so a hostile header
cannot allocate more than the bytes it arrived in. Every failure is a
``WireError`` naming what was wrong; no other exception escapes and no array
of the wrong size is ever built.

Copies: on receive the PCM array is ``np.frombuffer`` over the received frame
(no copy) and is handed out **read-only** (``writable=True`` copies instead):
the nodes downstream treat input as immutable, and a read-only array turns an
accidental in-place write into an immediate error rather than silent
corruption of a buffer ZeroMQ owns. On send the payload is a memoryview of
the contiguous array; ``send_kwargs`` says whether to let ZeroMQ copy it
(cheaper below ``ZERO_COPY_MIN_BYTES``).

Batches: one ZeroMQ message may carry several wire messages back to back,
as two frames ``[batch header, body]``: the body is the frames of every
message concatenated (each header followed by its payload for data kinds)
and the batch header ``{"v", "k": "batch", "m": messages, "l": [length of
each frame]}`` says where they split. ZeroMQ's cost is per frame: measured
here, 28 messages of 1152 stereo samples as 56 frames cost ~19 µs of the
sender's CPU and ~24 µs of the receiver's per message, as one concatenated
body ~5 and ~5 µs (one memcpy instead of a zmq_msg per frame). So a worker
coalesces what it sends to one socket (``encode_batch``). ``decode_batch``
takes a batch or a single message; it checks the batch header, that the
lengths add up to the body and split it into whole messages, the count, and
every message as ``decode`` does, on read-only views of the body (no copy).
A batch of one is never built (the message goes alone), so a single message
is exactly what it was before batches and the version stays 1: a receiver
without batches refuses one with "unknown kind 'batch'".
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from operator import index
from typing import Any

import msgpack
import numpy as np

from flowengine.audio.buffers import PACKET_FLAG_KEY, AudioFrame, Packet
from flowengine.errors import WireError
from flowengine.audio.format import SAMPLE_TYPES, AudioFormat
from flowengine.ops.node import KINDS as BUFFER_KINDS
from flowengine.ops.node import PACKET, PCM

__all__ = [
    "WIRE_VERSION", "KINDS", "DATA_KINDS", "CONTROL_KINDS", "MAX_MESSAGE_BYTES",
    "MAX_HEADER_BYTES", "MAX_NAME_CHARS", "MAX_CAPS_PARAMS", "ZERO_COPY_MIN_BYTES",
    "Caps", "Message", "encode_frame", "encode_packet", "encode_caps", "encode_eos",
    "encode_eof", "decode", "send_kwargs", "message_nbytes",
    "BATCH_KIND", "MAX_BATCH_MESSAGES", "encode_batch", "decode_batch",
]

WIRE_VERSION = 1
KINDS = ("pcm", "pkt", "caps", "eos", "eof")
DATA_KINDS = ("pcm", "pkt")
CONTROL_KINDS = ("caps", "eos", "eof")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Headers are small; the largest legitimate one is a caps with codec extradata.
MAX_HEADER_BYTES = 1024 * 1024
MAX_NAME_CHARS = 256
MAX_CAPS_PARAMS = 64
BATCH_KIND = "batch"
# Messages in one batch; a worker sends far fewer (its own limits are in outbox.py).
MAX_BATCH_MESSAGES = 1024
# Its header lists two frame lengths per message at most, each up to 9 bytes of msgpack.
MAX_BATCH_HEADER_BYTES = 64 + 2 * MAX_BATCH_MESSAGES * 9
# pyzmq copies anything smaller itself, and measured here a zero-copy send of
# 9-32 KB blocks was 35-43 % slower than a copy.
ZERO_COPY_MIN_BYTES = 65536

Frame = bytes | memoryview

# Little-endian on the wire, so tcp:// edges between hosts agree on samples.
_WIRE_DTYPES = {t: AudioFormat(1, 1, t).dtype.newbyteorder("<") for t in SAMPLE_TYPES}
_NATIVE_LITTLE = sys.byteorder == "little"
_SCALARS = (int, float, str, bool, type(None))


# --------------------------------------------------------------------------- types

@dataclass(frozen=True)
class Caps:
    """What a stream carries; sent before its first buffer and again when it changes.

    `kind` is "pcm" or "packet". PCM streams need `format`; packet streams need
    `codec` (may be "") and may give the coded audio's `format`, the codec's
    `extradata` (e.g. an Opus header) and scalar codec `params` (bit_rate, ...).
    """

    kind: str
    format: AudioFormat | None = None
    codec: str | None = None
    time_base: Fraction | None = None
    extradata: bytes | None = field(default=None, repr=False)
    params: Mapping[str, int | float | str | bool | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in BUFFER_KINDS:
            raise WireError(f"caps kind {self.kind!r} is not one of {', '.join(BUFFER_KINDS)}")
        if self.kind == PCM and self.format is None:
            raise WireError("pcm caps need the format (sr, ch, fmt, planar)")
        if self.kind == PACKET and self.codec is None:
            raise WireError("packet caps need the codec name")
        if self.codec is not None:
            _check_name("codec", self.codec, allow_empty=True)
        if self.time_base is not None:
            object.__setattr__(self, "time_base", Fraction(self.time_base))
            if self.time_base <= 0:
                raise WireError(f"caps time_base must be positive, got {self.time_base}")
        if self.extradata is not None:
            object.__setattr__(self, "extradata", bytes(self.extradata))
        params = dict(self.params)
        if len(params) > MAX_CAPS_PARAMS:
            raise WireError(f"caps has {len(params)} params, over the maximum {MAX_CAPS_PARAMS}")
        for key, value in params.items():
            _check_name("caps param name", key)
            if type(value) not in _SCALARS:
                raise WireError(f"caps param {key!r} must be int, float, str, bool or None, "
                                f"got {type(value).__name__}")
        object.__setattr__(self, "params", params)

    @classmethod
    def for_frame(cls, frame: AudioFrame) -> "Caps":
        """The caps of a PCM stream whose frames look like `frame`."""
        return cls(PCM, frame.format, time_base=frame.time_base)

    @classmethod
    def for_packet(cls, packet: Packet, fmt: AudioFormat | None = None) -> "Caps":
        """The caps of a packet stream whose packets look like `packet`."""
        return cls(PACKET, fmt, packet.codec, packet.time_base, packet.extradata)


@dataclass
class Message:
    """One decoded data-plane message.

    `buffer` is the AudioFrame or Packet of a data kind. `info` holds the
    control payload: caps -> {"caps": Caps}; eos -> {"messages": int,
    "samples": int} (+ "order_end" when the header has ``oe``, + "aborted": True
    when it has ``ab``); eof -> {}.
    `nbytes` is the size on the wire; `order` is the ``oq`` of a data message.
    """

    kind: str
    stream: str | None = None
    seq: int | None = None
    buffer: AudioFrame | Packet | None = None
    info: dict[str, Any] = field(default_factory=dict)
    sender: str | None = None
    nbytes: int = 0
    order: int | None = None     # "oq": index of a data message in its whole (spread) stream


# ---------------------------------------------------------------------- encoding

def encode_frame(frame: AudioFrame, seq: int, *, sender: str | None = None,
                 order: int | None = None) -> list[Frame]:
    """An AudioFrame as ``[header, payload]``; the payload is a view, not a copy.

    `order` is the frame's index in its whole stream when the stream is spread
    over replicas (the ``oq`` key)."""
    fmt = frame.format
    header = _base_header("pcm", frame.stream, seq, sender, order)
    header.update(pts=_opt_int("pts", frame.pts), tb=_time_base(frame.time_base.numerator, frame.time_base.denominator),
                  sr=fmt.sample_rate, ch=fmt.channels, fmt=fmt.sample_type,
                  planar=fmt.planar, n=frame.samples)
    return [_pack(header), _pcm_payload(frame.data, fmt.sample_type)]


def _pcm_payload(data: np.ndarray, sample_type: str) -> memoryview:
    if _NATIVE_LITTLE and data.flags.c_contiguous and data.size:
        return memoryview(data).cast("B")  # the usual case: a view, no numpy call
    data = np.ascontiguousarray(data, dtype=_WIRE_DTYPES[sample_type])
    return data.reshape(-1).view(np.uint8).data


def encode_packet(packet: Packet, seq: int, *, sender: str | None = None,
                  order: int | None = None) -> list[Frame]:
    """A Packet as ``[header, payload]``. Extradata travels in caps, not per packet.
    `order` as for `encode_frame`."""
    header = _base_header("pkt", packet.stream, seq, sender, order)
    flags = _uint("flags", packet.flags)
    header.update(pts=_opt_int("pts", packet.pts),
                  tb=_time_base(packet.time_base_num, packet.time_base_den),
                  codec=_check_name("codec", packet.codec, allow_empty=True),
                  dur=_opt_int("duration", packet.duration), dts=_opt_int("dts", packet.dts),
                  key=bool(flags & PACKET_FLAG_KEY))
    if flags & ~PACKET_FLAG_KEY:
        header["fl"] = _uint("flags", flags & ~PACKET_FLAG_KEY)
    return [_pack(header), memoryview(packet.data)]


def encode_caps(stream: str, seq: int, caps: Caps, *, sender: str | None = None) -> list[Frame]:
    """The caps of `stream` as ``[header]``."""
    header = _base_header("caps", stream, seq, sender)
    header["b"] = caps.kind
    if caps.format is not None:
        fmt = caps.format
        header.update(sr=fmt.sample_rate, ch=fmt.channels, fmt=fmt.sample_type, planar=fmt.planar)
    if caps.codec is not None:
        header["codec"] = caps.codec
    if caps.time_base is not None:
        header["tb"] = _time_base(caps.time_base.numerator, caps.time_base.denominator)
    if caps.extradata is not None:
        header["x"] = caps.extradata
    if caps.params:
        header["p"] = dict(caps.params)
    return [_pack(header)]


def encode_eos(stream: str, seq: int, *, messages: int, samples: int = 0,
               sender: str | None = None, order_end: int | None = None,
               aborted: bool = False) -> list[Frame]:
    """End of `stream`: `messages` data messages and `samples` PCM samples were sent on it.

    `order_end` (the ``oe`` key) is how many data messages the whole stream had
    when it was spread over replicas; `messages` counts this sender's part.
    `aborted` (the ``ab`` key, only sent when true) says the stream was cut short
    after an error: what was sent is all there is, but it is not the whole stream,
    so nothing downstream finalizes it (a file sink keeps ``NAME.part``)."""
    header = _base_header("eos", stream, seq, sender)
    header.update(m=_uint("messages", messages), n=_uint("samples", samples))
    if order_end is not None:
        header["oe"] = _uint("order end", order_end)
    if aborted:
        header["ab"] = True
    return [_pack(header)]


def encode_eof(sender: str) -> list[Frame]:
    """End of the run from `sender` (e.g. "decode:0")."""
    return [_pack({"v": WIRE_VERSION, "k": "eof", "src": _check_name("sender", sender)})]


def send_kwargs(payload: Frame) -> dict[str, bool]:
    """Keyword arguments for ``socket.send_multipart`` of a message whose last frame is `payload`."""
    return {"copy": memoryview(payload).nbytes < ZERO_COPY_MIN_BYTES}


def message_nbytes(frames: Sequence[Frame]) -> int:
    """Total size of a message's frames in bytes."""
    total = 0
    for frame in frames:   # a plain loop: a generator costs more for the usual 1 or 2 frames
        total += len(frame) if type(frame) is bytes else memoryview(frame).nbytes
    return total


def encode_batch(messages: Sequence[Sequence[Frame]]) -> list[Frame]:
    """Several encoded messages as one ``[batch header, body]``; a single one goes as it is."""
    if len(messages) == 1:
        return list(messages[0])
    if not 1 < len(messages) <= MAX_BATCH_MESSAGES:
        raise WireError(f"a batch has 1 to {MAX_BATCH_MESSAGES} messages, got {len(messages)}")
    frames = [frame for message in messages for frame in message]
    lengths = [len(f) if type(f) is bytes else memoryview(f).nbytes for f in frames]
    header = _pack({"v": WIRE_VERSION, "k": BATCH_KIND, "m": len(messages), "l": lengths},
                   MAX_BATCH_HEADER_BYTES)
    return [header, b"".join(frames)]


def _base_header(kind: str, stream: str, seq: int, sender: str | None,
                 order: int | None = None) -> dict[str, Any]:
    header = {"v": WIRE_VERSION, "k": kind, "s": _check_name("stream id", stream),
              "q": _uint("seq", seq)}
    if sender is not None:
        header["src"] = _check_name("sender", sender)
    if order is not None:
        header["oq"] = _uint("order", order)
    return header


# A Packer per thread: building one per message (what msgpack.packb does) was half the
# cost of packing a header, and a Packer is not safe to share between threads.
_packers = threading.local()


def _pack(header: dict[str, Any], limit: int = MAX_HEADER_BYTES) -> bytes:
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    try:
        packed = packer.pack(header)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"cannot encode {header.get('k')} header: {exc}") from None
    if len(packed) > limit:
        raise WireError(f"{header.get('k')} header of {len(packed)} bytes is over the maximum "
                        f"{limit}")
    return packed


def _check_name(what: str, value: object, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise WireError(f"{what} must be a str, got {type(value).__name__}")
    if len(value) > MAX_NAME_CHARS or (not value and not allow_empty):
        raise WireError(f"{what} must have 1 to {MAX_NAME_CHARS} characters, got {len(value)}")
    return value


def _uint(what: str, value: object) -> int:
    if type(value) is int and value >= 0:
        return value  # the usual case, without the generic conversion below
    try:
        number = index(value)  # ints and numpy ints, never a silently truncated float
    except TypeError:
        raise WireError(f"{what} must be an int, got {type(value).__name__}") from None
    if number < 0:
        raise WireError(f"{what} must be >= 0, got {number}")
    return number


def _opt_int(what: str, value: object) -> int | None:
    if value is None or type(value) is int:
        return value
    try:
        return index(value)
    except TypeError:
        raise WireError(f"{what} must be an int or None, got {type(value).__name__}") from None


def _time_base(num: object, den: object) -> list[int]:
    if type(num) is int and type(den) is int and num > 0 and den > 0:
        return [num, den]
    num, den = _opt_int("time base numerator", num), _opt_int("time base denominator", den)
    if num is None or den is None or num <= 0 or den <= 0:
        raise WireError(f"time base must be two positive ints, got {num}/{den}")
    return [num, den]


# ---------------------------------------------------------------------- decoding

@dataclass(frozen=True)
class _Field:
    """One header key: the msgpack types it may have and the rule on its value."""

    types: tuple[type, ...]
    type_name: str
    rule: str = ""
    valid: Callable[[Any], bool] | None = None
    required: bool = True

    def optional(self) -> "_Field":
        return _Field(self.types, self.type_name, self.rule, self.valid, required=False)


def _is_name(value: str) -> bool:
    return 0 < len(value) <= MAX_NAME_CHARS


def _is_tb(value: list) -> bool:
    if len(value) != 2:
        return False
    num, den = value
    return type(num) is int and type(den) is int and num > 0 and den > 0


def _is_params(value: dict) -> bool:
    return len(value) <= MAX_CAPS_PARAMS and all(
        type(k) is str and _is_name(k) and type(v) in _SCALARS for k, v in value.items())


_NAME = _Field((str,), "str", f"1 to {MAX_NAME_CHARS} characters", _is_name)
_CODEC = _Field((str,), "str", f"at most {MAX_NAME_CHARS} characters",
                lambda v: len(v) <= MAX_NAME_CHARS)
_UINT = _Field((int,), "int", ">= 0", lambda v: v >= 0)
_POSITIVE = _Field((int,), "int", "> 0", lambda v: v > 0)
_OPT_INT = _Field((int, type(None)), "int or nil")
_BOOL = _Field((bool,), "bool")
_TRUE = _Field((bool,), "bool", "true (the key is left out when false)", lambda v: v is True)
_TB = _Field((list,), "array", "[num, den] of positive ints", _is_tb)
_SAMPLE_TYPE = _Field((str,), "str", f"one of {', '.join(SAMPLE_TYPES)}",
                      lambda v: v in SAMPLE_TYPES)
_BUFFER_KIND = _Field((str,), "str", f"one of {', '.join(BUFFER_KINDS)}",
                      lambda v: v in BUFFER_KINDS)
_BIN = _Field((bytes,), "bin")
_PARAMS = _Field((dict,), "map", f"at most {MAX_CAPS_PARAMS} names to scalars", _is_params)

_COMMON = {"v": _UINT, "k": _NAME, "src": _NAME.optional()}
_STREAM = {**_COMMON, "s": _NAME, "q": _UINT}
_FORMAT_KEYS = ("sr", "ch", "fmt", "planar")
_SCHEMAS: dict[str, dict[str, _Field]] = {
    "pcm": {**_STREAM, "oq": _UINT.optional(), "pts": _OPT_INT, "tb": _TB, "sr": _POSITIVE, "ch": _POSITIVE,
            "fmt": _SAMPLE_TYPE, "planar": _BOOL, "n": _UINT},
    "pkt": {**_STREAM, "oq": _UINT.optional(), "pts": _OPT_INT, "tb": _TB, "codec": _CODEC, "dur": _OPT_INT,
            "dts": _OPT_INT, "key": _BOOL, "fl": _UINT.optional()},
    "caps": {**_STREAM, "b": _BUFFER_KIND, "sr": _POSITIVE.optional(),
             "ch": _POSITIVE.optional(), "fmt": _SAMPLE_TYPE.optional(),
             "planar": _BOOL.optional(), "codec": _CODEC.optional(), "tb": _TB.optional(),
             "x": _BIN.optional(), "p": _PARAMS.optional()},
    "eos": {**_STREAM, "m": _UINT, "n": _UINT, "oe": _UINT.optional(), "ab": _TRUE.optional()},
    "eof": {"v": _UINT, "k": _NAME, "src": _NAME},
}

_REQUIRED = {kind: frozenset(k for k, spec in schema.items() if spec.required)
             for kind, schema in _SCHEMAS.items()}

# raw=False, strict_map_key=True and use_list=True are msgpack's defaults.
_UNPACK_LIMITS = dict(max_str_len=4 * MAX_NAME_CHARS, max_bin_len=MAX_HEADER_BYTES,
                      max_array_len=2 * MAX_CAPS_PARAMS, max_map_len=2 * MAX_CAPS_PARAMS,
                      max_ext_len=16)
_BATCH_UNPACK_LIMITS = {**_UNPACK_LIMITS, "max_array_len": 2 * MAX_BATCH_MESSAGES}


def _reject_ext(code: int, data: bytes) -> Any:
    raise WireError(f"msgpack extension type {code} is not allowed in a header")


def decode(frames: Sequence[Any], *, max_message_bytes: int = MAX_MESSAGE_BYTES,
           writable: bool = False) -> Message:
    """Validate and decode one multipart message (bytes, memoryviews or zmq.Frames).

    PCM arrays are views of the received frame, read-only unless `writable`
    (which copies). Raises WireError for anything malformed.
    """
    views = _as_views(frames)
    nbytes = sum(v.nbytes for v in views)
    if nbytes > max_message_bytes:
        raise WireError(f"message of {nbytes} bytes over the maximum {max_message_bytes}")
    header = _unpack_header(views[0])
    return _decode_single(header, views, nbytes, writable)


def _decode_single(header: dict, views: list[memoryview], nbytes: int,
                   writable: bool) -> Message:
    kind = _check_version_and_kind(header)
    expected_frames = 2 if kind in DATA_KINDS else 1
    if len(views) != expected_frames:
        layout = "header, payload" if expected_frames == 2 else "header"
        raise WireError(f"{kind} message has {len(views)} frames (expected {expected_frames}: "
                        f"{layout})")
    return _decode_message(kind, header, views, nbytes, writable)


def decode_batch(frames: Sequence[Any], *, max_messages: int = MAX_BATCH_MESSAGES,
                 max_bytes: int = MAX_MESSAGE_BYTES, writable: bool = False) -> list[Message]:
    """Validate and decode a batch (or one plain message): its messages, in order.

    The batch header's lengths must add up to the body and split it into
    `m` whole messages, each checked as by `decode`; at most `max_messages`
    messages and `max_bytes` bytes in all. Raises WireError for anything malformed.
    """
    views = _as_views(frames)
    nbytes = sum(v.nbytes for v in views)
    if nbytes > max_bytes:
        raise WireError(f"message of {nbytes} bytes over the maximum {max_bytes}")
    # A batch header's list of lengths is longer than any array a message header has.
    header = _unpack_header(views[0], limits=_BATCH_UNPACK_LIMITS)
    if header.get("k") != BATCH_KIND:
        return [_decode_single(header, views, nbytes, writable)]
    lengths = _check_batch_header(header, views, max_messages)
    body, at = views[1], 0
    parts = []
    for length in lengths:
        parts.append(body[at:at + length])
        at += length
    count = header["m"]
    messages: list[Message] = []
    index = 0
    while index < len(parts):
        try:
            header = _unpack_header(parts[index])
            kind = _check_version_and_kind(header)
            end = index + (2 if kind in DATA_KINDS else 1)
            if end > len(parts):
                raise WireError(f"{kind} message has no payload (the batch ends)")
            views = parts[index:end]
            nbytes = lengths[index] + lengths[index + 1] if end - index == 2 else lengths[index]
            messages.append(_decode_message(kind, header, views, nbytes, writable))
        except WireError as exc:
            raise WireError(f"message {len(messages) + 1} of a batch of {count}: {exc}") from None
        index = end
    if len(messages) != count:
        raise WireError(f"batch header says {count} messages, its frames hold {len(messages)}")
    return messages


def _check_batch_header(header: dict, views: list[memoryview], max_messages: int) -> list[int]:
    """The frame lengths of a valid batch header, checked against the body they split."""
    if header.get("v") != WIRE_VERSION or type(header.get("v")) is not int:
        raise WireError(f"batch header: unknown wire version {_short(header.get('v'))} "
                        f"(expected {WIRE_VERSION})")
    if header.keys() != {"v", "k", "m", "l"}:
        odd = sorted(map(str, header.keys() ^ {"v", "k", "m", "l"}))
        raise WireError(f"batch header: keys must be v, k, m, l (wrong: {', '.join(odd)})")
    count, lengths = header["m"], header["l"]
    if type(count) is not int or not 1 < count <= max_messages:
        raise WireError(f"batch header: bad value for 'm': {_short(count)} (expected 2 to "
                        f"{max_messages} messages)")
    if type(lengths) is not list or not count <= len(lengths) <= 2 * count or \
            not all(type(n) is int and n >= 0 for n in lengths):
        raise WireError(f"batch header: bad value for 'l': {_short(lengths)} (expected "
                        f"{count} to {2 * count} frame lengths, ints >= 0)")
    if len(views) != 2:
        raise WireError(f"batch has {len(views)} frames (expected 2: batch header, body)")
    if sum(lengths) != views[1].nbytes:
        raise WireError(f"batch header's frame lengths add up to {sum(lengths)} bytes, the "
                        f"body has {views[1].nbytes}")
    return lengths


def _decode_message(kind: str, header: dict, views: list[memoryview], nbytes: int,
                    writable: bool) -> Message:
    """One message whose version, kind and frame count were checked."""
    if not (kind == "pcm" and _pcm_header_ok(header)):
        _check_fields(kind, header)  # the general check, with the precise error
    message = Message(kind, header.get("s"), header.get("q"), sender=header.get("src"),
                      nbytes=nbytes, order=header.get("oq"))
    if kind == "pcm":
        message.buffer = _decode_pcm(header, views[1], writable)
    elif kind == "pkt":
        message.buffer = _decode_packet(header, views[1])
    elif kind == "caps":
        message.info["caps"] = _decode_caps(header)
    elif kind == "eos":
        message.info.update(messages=header["m"], samples=header["n"])
        if "oe" in header:
            message.info["order_end"] = header["oe"]
        if "ab" in header:
            message.info["aborted"] = True
    return message


def _as_views(frames: Sequence[Any]) -> list[memoryview]:
    if type(frames) is list and 0 < len(frames) <= 2:   # the usual case, checked in one pass
        try:
            views = [memoryview(frame) for frame in frames]
        except TypeError:
            views = None
        if views is not None and all(v.format == "B" and v.ndim == 1 for v in views):
            return views
    if not isinstance(frames, (list, tuple)):
        raise WireError(f"a message is a list of frames, got {type(frames).__name__}")
    if not frames:
        raise WireError("empty message (no frames)")
    if len(frames) > 2:
        raise WireError(f"message has {len(frames)} frames (expected 1 or 2): extra frames")
    views = []
    for i, frame in enumerate(frames):
        try:
            view = memoryview(frame)
        except TypeError:
            raise WireError(f"frame {i} is not a bytes-like buffer (got "
                            f"{type(frame).__name__})") from None
        if view.format != "B" or view.ndim != 1:
            if not view.c_contiguous:
                raise WireError(f"frame {i} is not a contiguous buffer")
            # memoryview cannot cast a view with a zero in its shape
            view = view.cast("B") if view.nbytes else memoryview(b"")
        views.append(view)
    return views


def _unpack_header(view: memoryview, limit: int = MAX_HEADER_BYTES,
                   limits: dict[str, int] | None = None) -> dict:
    if view.nbytes > limit:
        raise WireError(f"header of {view.nbytes} bytes over the maximum {limit}")
    try:
        header = msgpack.unpackb(view, ext_hook=_reject_ext, **(limits or _UNPACK_LIMITS))
    except WireError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure on untrusted bytes is a bad header
        raise WireError(f"header is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise WireError(f"header is not a map (got {_type_name(header)})")
    return header


def _check_version_and_kind(header: dict) -> str:
    version, kind = header.get("v"), header.get("k")
    if type(version) is int and version == WIRE_VERSION and type(kind) is str and kind in KINDS:
        return kind                  # the usual case; anything else gets its precise error
    for key in ("v", "k"):
        if key not in header:
            raise WireError(f"header: missing key {key!r}")
    version, kind = header["v"], header["k"]
    if type(version) is not int:
        raise WireError(f"header: wrong type for 'v' (expected int, got {_type_name(version)})")
    if version != WIRE_VERSION:
        raise WireError(f"unknown wire version {version} (expected {WIRE_VERSION})")
    if kind not in KINDS:
        raise WireError(f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    return kind


def _check_fields(kind: str, header: dict) -> None:
    schema = _SCHEMAS[kind]
    if not header.keys() <= schema.keys():
        unknown = next(key for key in header if key not in schema)
        raise WireError(f"{kind} message: unknown key {unknown!r}")
    if not _REQUIRED[kind] <= header.keys():
        missing = next(key for key in schema if key in _REQUIRED[kind] and key not in header)
        raise WireError(f"{kind} message: missing key {missing!r}")
    for key, value in header.items():
        spec = schema[key]
        if type(value) not in spec.types:
            raise WireError(f"{kind} message: wrong type for {key!r} (expected {spec.type_name}, "
                            f"got {_type_name(value)})")
        if spec.valid is not None and not spec.valid(value):
            raise WireError(f"{kind} message: bad value for {key!r}: {_short(value)} "
                            f"(expected {spec.rule})")


# The keys _pcm_header_ok knows; if the pcm schema ever differs, it steps aside.
_PCM_FAST_KEYS = frozenset(("v", "k", "src", "s", "q", "oq", "pts", "tb", "sr", "ch", "fmt",
                            "planar", "n"))
_PCM_FAST = _PCM_FAST_KEYS == _SCHEMAS["pcm"].keys() and _REQUIRED["pcm"] == _PCM_FAST_KEYS - {
    "src", "oq"}


_PCM_FAST_TYPES = (str, str, int, int, list, int, int, str, bool, int)


def _pcm_header_ok(header: dict) -> bool:
    """True when a pcm header passes every check of ``_check_fields``; False sends it there.

    The same rules as the "pcm" schema, written out: the generic loop over the
    schema was most of a decode's cost, and every PCM message goes through here.
    The version and kind were checked already.
    """
    if not _PCM_FAST or not header.keys() <= _PCM_FAST_KEYS:
        return False
    try:
        stream, seq, pts, tb = header["s"], header["q"], header["pts"], header["tb"]
        rate, channels, planar, samples = header["sr"], header["ch"], header["planar"], header["n"]
        sample_type = header["fmt"]
    except KeyError:
        return False
    src, order = header.get("src", "-"), header.get("oq", 0)
    # The types in one C-level comparison, then the values (every one an int or str now).
    return (tuple(map(type, (stream, src, seq, order, tb, rate, channels, sample_type, planar,
                             samples))) == _PCM_FAST_TYPES
            and 0 < len(stream) <= MAX_NAME_CHARS and 0 < len(src) <= MAX_NAME_CHARS
            and seq >= 0 and order >= 0 and samples >= 0 and rate > 0 and channels > 0
            and (pts is None or type(pts) is int) and sample_type in SAMPLE_TYPES
            and _is_tb(tb))


def _decode_pcm(header: dict, payload: memoryview, writable: bool) -> AudioFrame:
    fmt, dtype, width = _layout(header["sr"], header["ch"], header["fmt"], header["planar"])
    samples, channels = header["n"], fmt.channels
    expected = channels * samples * width
    if payload.nbytes != expected:
        raise WireError(f"pcm message for stream {header['s']!r}: payload is {payload.nbytes} "
                        f"bytes but header says {channels} ch × {samples} samples × "
                        f"{width} bytes = {expected}")
    data = np.frombuffer(payload, dtype=dtype).reshape(
        (channels, samples) if fmt.planar else (samples, channels))
    if not _NATIVE_LITTLE and width > 1:
        data = data.astype(fmt.dtype)  # a big-endian host: one conversion, then a native array
    elif writable:
        data = data.copy()
    if not writable:
        data.flags.writeable = False
    # data has fmt's dtype and shape by construction and the fraction is built: no re-check
    return AudioFrame.from_checked(data, fmt, header["pts"], _fraction(*header["tb"]),
                                   header["s"])


def _decode_packet(header: dict, payload: memoryview) -> Packet:
    num, den = header["tb"]
    flags = header.get("fl", 0)
    if flags & PACKET_FLAG_KEY:
        raise WireError(f"pkt message: bad value for 'fl': {flags} (the key flag travels in 'key')")
    if header["key"]:
        flags |= PACKET_FLAG_KEY
    return Packet(bytes(payload), num, den, header["pts"], header["dts"], header["dur"], flags,
                  header["codec"], header["s"])


def _decode_caps(header: dict) -> Caps:
    present = [k for k in _FORMAT_KEYS if k in header]
    fmt = None
    if present:
        if len(present) != len(_FORMAT_KEYS):
            missing = ", ".join(repr(k) for k in _FORMAT_KEYS if k not in header)
            raise WireError(f"caps message for stream {header['s']!r}: format keys incomplete, "
                            f"missing {missing}")
        fmt = _format(header["sr"], header["ch"], header["fmt"], header["planar"])
    tb = _fraction(*header["tb"]) if "tb" in header else None
    try:
        return Caps(header["b"], fmt, header.get("codec"), tb, header.get("x"),
                    header.get("p", {}))
    except WireError as exc:
        raise WireError(f"caps message for stream {header['s']!r}: {exc}") from None


# Every message of a stream repeats its format and time base; building them
# costs more than the rest of a decode. Both are immutable, so share them.
_CACHE_SIZE = 256
_formats: dict[tuple, AudioFormat] = {}
_fractions: dict[tuple[int, int], Fraction] = {}


_layouts: dict[tuple, tuple[AudioFormat, np.dtype, int]] = {}


def _layout(sample_rate: int, channels: int, sample_type: str, planar: bool
            ) -> tuple[AudioFormat, np.dtype, int]:
    """The shared AudioFormat, wire dtype and bytes per sample of a pcm header's format."""
    key = (sample_rate, channels, sample_type, planar)
    layout = _layouts.get(key)
    if layout is None:
        if len(_layouts) >= _CACHE_SIZE:
            _layouts.clear()
        fmt = _format(sample_rate, channels, sample_type, planar)
        layout = _layouts[key] = (fmt, _WIRE_DTYPES[sample_type], fmt.bytes_per_sample)
    return layout


def _format(sample_rate: int, channels: int, sample_type: str, planar: bool) -> AudioFormat:
    key = (sample_rate, channels, sample_type, planar)
    fmt = _formats.get(key)
    if fmt is None:
        if len(_formats) >= _CACHE_SIZE:
            _formats.clear()  # bounded: a hostile peer cycling formats cannot grow it
        fmt = _formats[key] = AudioFormat(sample_rate, channels, sample_type, planar)
    return fmt


def _fraction(num: int, den: int) -> Fraction:
    fraction = _fractions.get((num, den))
    if fraction is None:
        if len(_fractions) >= _CACHE_SIZE:
            _fractions.clear()
        fraction = _fractions[(num, den)] = Fraction(num, den)
    return fraction


def _type_name(value: object) -> str:
    return {type(None): "nil", dict: "map", list: "array", bytes: "bin"}.get(
        type(value), type(value).__name__)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
