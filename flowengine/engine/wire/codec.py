"""The data-plane wire format: pure encode/decode, no sockets.

Theory of operation
-------------------
A message is a list of ZeroMQ message parts. Data kinds carry two parts,
``[header, payload]``; control kinds carry the header alone::

    pcm   [header, raw samples]   one AudioFrame
    pkt   [header, packet bytes]  one Packet (codec frame)
    caps  [header]                what a stream carries (format, time base, codec, extradata)
    eos   [header]                end of one stream, with the counts sent on it
                                  (``ab: true``: the stream was aborted, not whole)
    eof   [header]                end of the run from one sender ("stage:replica")

**A data header is a fixed-shape msgpack array**, checked in one pass of
type and range comparisons, with nothing in it that its stream's caps
already said::

    pcm   [2, "pcm", stream, seq, sender, order, pts, samples]
    pkt   [2, "pkt", stream, seq, sender, order, pts, dts, duration, flags]

``seq`` numbers the messages of one (sender, stream) pair (caps and eos
included); ``sender`` is "stage:replica" (nil outside an engine); ``order``
is the message's index in a stream spread over the replicas of an ordered
stage, or in a stream whose consumer restarts losslessly (nil otherwise);
``pts`` (nil when unknown), ``dts`` and ``duration`` are in the time base
the caps give; ``flags`` are the packet's (bit 0 a key frame, bit 1 marked
corrupt). The format, time base, codec
and extradata travel once per stream in its caps, so the receiver builds a
data message's buffer from them (`buffer_from`), and checks the payload's
length against what they say there.

**A control header is a msgpack map** with short keys (``v`` version, ``k``
kind, ``s`` stream, ``q`` seq, ``src`` sender, ...; the tables ``_SCHEMAS``
below are the complete list): they are rare (once per stream or per
sender), and a map says what each value is. A stream spread over an
ordered stage's replicas ends with an eos carrying ``oe``, how many data
messages the whole stream had.

``decode`` trusts nothing: the version, kind, part count, every field and
its type, value ranges, the payload length and the total size are checked,
and msgpack itself is run with tight limits, so a hostile header cannot
allocate more than the bytes it arrived in. Every failure is a
``WireError`` naming what was wrong; no other exception escapes and no array
of the wrong size is ever built.

Copies: on receive the PCM array is ``np.frombuffer`` over the received part
(no copy) and is handed out **read-only** (``writable=True`` copies instead):
the nodes downstream treat input as immutable, and a read-only array turns an
accidental in-place write into an immediate error rather than silent
corruption of a buffer ZeroMQ owns. Samples travel little-endian in the
caps' layout (planar ``(channels, samples)`` or interleaved ``(samples,
channels)``). On send the payload is a memoryview of the contiguous array;
``send_kwargs`` says whether to let ZeroMQ copy it (cheaper below
``ZERO_COPY_MIN_BYTES``).

Batches: one ZeroMQ message may carry several wire messages back to back,
as two parts ``[batch header, body]``: the body is the parts of every
message concatenated (each header followed by its payload for data kinds)
and the batch header, a fixed-shape array ``[2, "batch", messages, [length
of each part]]``, says where they split. ZeroMQ's cost is per part: measured
here, 28 messages of 1152 stereo samples as 56 parts cost ~19 µs of the
sender's CPU and ~24 µs of the receiver's per message, as one concatenated
body ~5 and ~5 µs (one memcpy instead of a zmq_msg per part). So a worker
coalesces what it sends to one socket (``encode_batch``). ``decode_batch``
takes a batch or a single message; it checks the batch header, that the
lengths add up to the body and split it into whole messages, the count, and
every message as ``decode`` does, on read-only views of the body (no copy).
A batch of one is never built (the message goes alone).

The steady state of a live stream, one message per tick after a sleep that
left the caches cold, costs what its code touches (docs/performance.md), so
its way is short: a sender keeps one header per open stream
(``data_header``) and ``encode_data`` packs it with the message's own fields
in one call; a receiver takes ``checked_messages`` (every message checked,
a data header in one call, ``_data_header_ok``, and left an array) and builds
a buffer straight from header and payload (``data_buffer``), without a
``Message``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from operator import index
from typing import Any

import msgpack
import numpy as np

from flowengine.audio.buffers import AudioFrame, Packet, time_base_fraction
from flowengine.audio.format import SAMPLE_TYPES, AudioFormat
from flowengine.errors import WireError
from flowengine.ops.node import KINDS as BUFFER_KINDS
from flowengine.ops.node import PACKET, PCM

__all__ = [
    "WIRE_VERSION", "KINDS", "DATA_KINDS", "CONTROL_KINDS", "MAX_MESSAGE_BYTES",
    "MAX_HEADER_BYTES", "MAX_NAME_CHARS", "MAX_CAPS_PARAMS", "ZERO_COPY_MIN_BYTES", "Part",
    "Caps", "Message", "encode_frame", "encode_packet", "encode_caps", "encode_eos",
    "encode_eof", "data_header", "encode_data", "decode", "buffer_from", "data_buffer",
    "send_kwargs", "message_nbytes", "BATCH_KIND", "MAX_BATCH_MESSAGES", "encode_batch",
    "decode_batch", "checked_messages", "message_of",
]

WIRE_VERSION = 2
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
# Its header lists two part lengths per message at most, each up to 9 bytes of msgpack.
MAX_BATCH_HEADER_BYTES = 64 + 2 * MAX_BATCH_MESSAGES * 9
# pyzmq copies anything smaller itself, and measured here a zero-copy send of
# 9-32 KB blocks was 35-43 % slower than a copy.
ZERO_COPY_MIN_BYTES = 65536

Part = bytes | memoryview     # one part of a ZeroMQ message

# Little-endian on the wire, so tcp:// edges between hosts agree on samples.
_WIRE_DTYPES = {t: AudioFormat(1, 1, t).dtype.newbyteorder("<") for t in SAMPLE_TYPES}
_NATIVE_LITTLE = sys.byteorder == "little"
_SCALARS = (int, float, str, bool, type(None))


# --------------------------------------------------------------------------- types

@dataclass(frozen=True)
class Caps:
    """What a stream carries; sent before its first buffer and again when it changes.

    `kind` is "pcm" or "packet". PCM streams need `format` (their time base is
    1/sample rate unless given). Packet streams need `codec` (may be "") and
    the `time_base` of their timestamps, and may give the coded audio's
    `format`, the codec's `extradata` (e.g. an Opus header) and scalar codec
    `params` (bit_rate, ...). Data messages carry none of this: the receiver
    builds their buffers from the caps in effect.
    """

    kind: str
    format: AudioFormat | None = None
    codec: str | None = None
    time_base: Fraction | None = None
    extradata: bytes | None = field(default=None, repr=False)
    params: Mapping[str, int | float | str | bool | None] = field(default_factory=dict)
    # PCM: the wire dtype and bytes per sample of `format`, worked out once per stream.
    wire_layout: tuple[np.dtype, int] | None = field(init=False, default=None, repr=False,
                                                     compare=False)

    def __post_init__(self) -> None:
        if self.kind not in BUFFER_KINDS:
            raise WireError(f"caps kind {self.kind!r} is not one of {', '.join(BUFFER_KINDS)}")
        if self.kind == PCM and self.format is None:
            raise WireError("pcm caps need the format (sr, ch, fmt, planar)")
        if self.kind == PACKET and self.codec is None:
            raise WireError("packet caps need the codec name")
        if self.kind == PACKET and self.time_base is None:
            raise WireError("packet caps need the time base of the packets' timestamps")
        if self.codec is not None:
            _check_name("codec", self.codec, allow_empty=True)
        time_base = self.time_base
        if time_base is None:
            time_base = time_base_fraction(1, self.format.sample_rate)
        elif type(time_base) is not Fraction:
            time_base = Fraction(time_base)
        if time_base <= 0:
            raise WireError(f"caps time_base must be positive, got {time_base}")
        # The shared Fraction buffers use, so a sender compares them by identity first.
        object.__setattr__(self, "time_base",
                           time_base_fraction(time_base.numerator, time_base.denominator))
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
        if self.kind == PCM:
            object.__setattr__(self, "wire_layout", (_WIRE_DTYPES[self.format.sample_type],
                                                     self.format.bytes_per_sample))

    @classmethod
    def for_frame(cls, frame: AudioFrame) -> "Caps":
        """The caps of a PCM stream whose frames look like `frame`."""
        return cls(PCM, frame.format, time_base=frame.time_base)

    @classmethod
    def for_packet(cls, packet: Packet, fmt: AudioFormat | None = None) -> "Caps":
        """The caps of a packet stream whose packets look like `packet`."""
        return cls(PACKET, fmt, packet.codec, packet.time_base, packet.extradata)

    def describes(self, buffer: AudioFrame | Packet) -> bool:
        """True when `buffer` can travel under these caps as it is: its kind, format or
        codec, and time base are the caps'. A stream's buffers usually share the caps'
        format and time base objects, so the usual case is two identity checks."""
        if type(buffer) is AudioFrame:
            if self.kind != PCM:
                return False
            tb = buffer.time_base
            return ((buffer.format is self.format or buffer.format == self.format)
                    and (tb is self.time_base or tb == self.time_base))
        tb = self.time_base
        return (self.kind == PACKET and buffer.codec == self.codec
                and buffer.time_base_num == tb.numerator
                and buffer.time_base_den == tb.denominator)


@dataclass(slots=True)
class Message:
    """One decoded data-plane message.

    Every kind has `kind`, `sender` (None outside an engine) and `nbytes`
    (its size on the wire); caps, eos and data also `stream` and `seq`.
    A data message has its header's fields (`order`: its index in a spread
    stream, or None; `pts`; pcm: `samples`; pkt: `dts`, `duration`, `flags`)
    and its `payload`, a read-only view of the received bytes; `buffer_from`
    turns it into an AudioFrame or Packet with its stream's caps. `info`
    holds a control message's content: caps -> {"caps": Caps}; eos ->
    {"messages": int, "samples": int} (+ "order_end" when the header has
    ``oe``, + "aborted": True when it has ``ab``); eof -> {}.
    """

    kind: str
    stream: str | None = None
    seq: int | None = None
    sender: str | None = None
    order: int | None = None
    nbytes: int = 0
    pts: int | None = None
    samples: int = 0
    dts: int | None = None
    duration: int | None = None
    flags: int = 0
    payload: memoryview | None = None
    info: dict[str, Any] = field(default_factory=dict)
    buffer: AudioFrame | Packet | None = None


# ---------------------------------------------------------------------- encoding

def encode_frame(frame: AudioFrame, seq: int, *, sender: str | None = None,
                 order: int | None = None) -> list[Part]:
    """An AudioFrame as ``[header, payload]``; the payload is a view, not a copy.

    `order` is the frame's index in its whole stream when the stream is spread
    over replicas. The frame's format and time base are its stream's caps'
    (the caller sends caps first: ``protocol.StreamSender`` does)."""
    return encode_data(data_header(PCM, frame.stream, sender, order), frame, seq)


def encode_packet(packet: Packet, seq: int, *, sender: str | None = None,
                  order: int | None = None) -> list[Part]:
    """A Packet as ``[header, payload]``; its codec, time base and extradata travel in
    its stream's caps. `order` as for `encode_frame`."""
    return encode_data(data_header(PACKET, packet.stream, sender, order), packet, seq)


def data_header(kind: str, stream: str, sender: str | None = None,
                order: int | None = None) -> list:
    """The header array of a data message of `stream` (`kind`: "pcm" or "packet"), with
    what its messages share checked once: a sender keeps one per open stream and
    `encode_data` fills in each message's own fields."""
    head = [WIRE_VERSION, "pcm" if kind == PCM else "pkt", _check_name("stream id", stream),
            0, _opt_name("sender", sender), _opt_uint("order", order), None]
    return head + [0] if kind == PCM else head + [None, None, 0]


def encode_data(header: list, buffer: AudioFrame | Packet, seq: int) -> list[Part]:
    """`buffer` as ``[header, payload]``: `header` (from `data_header`, for its stream)
    gets `seq` and the buffer's own fields in place and is packed in one call."""
    pts = buffer.pts
    header[3] = seq if type(seq) is int and seq >= 0 else _uint("seq", seq)
    header[6] = pts if pts is None or type(pts) is int else _opt_int("pts", pts)
    if header[1] == "pcm":
        header[7] = buffer.samples
        return [_pack(header, "pcm"), _pcm_payload(buffer.data, buffer.format.sample_type)]
    header[7] = _opt_int("dts", buffer.dts)
    header[8] = _opt_int("duration", buffer.duration)
    header[9] = _uint("flags", buffer.flags)
    return [_pack(header, "pkt"), memoryview(buffer.data)]


def _pcm_payload(data: np.ndarray, sample_type: str) -> memoryview:
    # The layout asked of a memoryview: numpy's flags object costs a live source more.
    view = memoryview(data)
    if _NATIVE_LITTLE and view.c_contiguous and view.nbytes:
        return view.cast("B")   # the usual case: a view, no numpy call
    data = np.ascontiguousarray(data, dtype=_WIRE_DTYPES[sample_type])
    return data.reshape(-1).view(np.uint8).data


def encode_caps(stream: str, seq: int, caps: Caps, *, sender: str | None = None) -> list[Part]:
    """The caps of `stream` as ``[header]``."""
    header = _control_header("caps", stream, seq, sender)
    header["b"] = caps.kind
    if caps.format is not None:
        fmt = caps.format
        header.update(sr=fmt.sample_rate, ch=fmt.channels, fmt=fmt.sample_type, planar=fmt.planar)
    if caps.codec is not None:
        header["codec"] = caps.codec
    header["tb"] = [caps.time_base.numerator, caps.time_base.denominator]
    if caps.extradata is not None:
        header["x"] = caps.extradata
    if caps.params:
        header["p"] = dict(caps.params)
    return [_pack(header, "caps")]


def encode_eos(stream: str, seq: int, *, messages: int, samples: int = 0,
               sender: str | None = None, order_end: int | None = None,
               aborted: bool = False) -> list[Part]:
    """End of `stream`: `messages` data messages and `samples` PCM samples were sent on it.

    `order_end` (the ``oe`` key) is how many data messages the whole stream had
    when it was spread over replicas; `messages` counts this sender's part.
    `aborted` (the ``ab`` key, only sent when true) says the stream was cut short
    after an error: what was sent is all there is, but it is not the whole stream,
    so nothing downstream finalizes it (a file sink keeps ``NAME.part``)."""
    header = _control_header("eos", stream, seq, sender)
    header.update(m=_uint("messages", messages), n=_uint("samples", samples))
    if order_end is not None:
        header["oe"] = _uint("order end", order_end)
    if aborted:
        header["ab"] = True
    return [_pack(header, "eos")]


def encode_eof(sender: str) -> list[Part]:
    """End of the run from `sender` (e.g. "decode:0")."""
    return [_pack({"v": WIRE_VERSION, "k": "eof", "src": _check_name("sender", sender)}, "eof")]


def send_kwargs(payload: Part) -> dict[str, bool]:
    """Keyword arguments for ``socket.send_multipart`` of a message whose last part is `payload`."""
    return {"copy": memoryview(payload).nbytes < ZERO_COPY_MIN_BYTES}


def message_nbytes(parts: Sequence[Part]) -> int:
    """Total size of a message's parts in bytes."""
    total = 0
    for part in parts:   # a plain loop: a generator costs more for the usual 1 or 2 parts
        total += len(part) if type(part) is bytes else memoryview(part).nbytes
    return total


def encode_batch(messages: Sequence[Sequence[Part]]) -> list[Part]:
    """Several encoded messages as one ``[batch header, body]``; a single one goes as it is."""
    if len(messages) == 1:
        return list(messages[0])
    if not 1 < len(messages) <= MAX_BATCH_MESSAGES:
        raise WireError(f"a batch has 1 to {MAX_BATCH_MESSAGES} messages, got {len(messages)}")
    parts = [part for message in messages for part in message]
    lengths = [len(p) if type(p) is bytes else memoryview(p).nbytes for p in parts]
    header = _pack([WIRE_VERSION, BATCH_KIND, len(messages), lengths], BATCH_KIND,
                   MAX_BATCH_HEADER_BYTES)
    return [header, b"".join(parts)]


def _control_header(kind: str, stream: str, seq: int, sender: str | None) -> dict[str, Any]:
    header = {"v": WIRE_VERSION, "k": kind, "s": _check_name("stream id", stream),
              "q": _uint("seq", seq)}
    if sender is not None:
        header["src"] = _check_name("sender", sender)
    return header


# A Packer per thread: building one per message (what msgpack.packb does) was half the
# cost of packing a header, and a Packer is not safe to share between threads.
_packers = threading.local()


def _pack(header: list | dict, kind: str, limit: int = MAX_HEADER_BYTES) -> bytes:
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    try:
        packed = packer.pack(header)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"cannot encode {kind} header: {exc}") from None
    if len(packed) > limit:
        raise WireError(f"{kind} header of {len(packed)} bytes is over the maximum {limit}")
    return packed


def _check_name(what: str, value: object, allow_empty: bool = False) -> str:
    if type(value) is str and 0 < len(value) <= MAX_NAME_CHARS:
        return value  # the usual case
    if not isinstance(value, str):
        raise WireError(f"{what} must be a str, got {type(value).__name__}")
    if len(value) > MAX_NAME_CHARS or (not value and not allow_empty):
        raise WireError(f"{what} must have 1 to {MAX_NAME_CHARS} characters, got {len(value)}")
    return value


def _opt_name(what: str, value: object) -> str | None:
    return None if value is None else _check_name(what, value)


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


def _opt_uint(what: str, value: object) -> int | None:
    return None if value is None else _uint(what, value)


def _opt_int(what: str, value: object) -> int | None:
    if value is None or type(value) is int:
        return value
    try:
        return index(value)
    except TypeError:
        raise WireError(f"{what} must be an int or None, got {type(value).__name__}") from None


# ---------------------------------------------------------------------- decoding

@dataclass(frozen=True)
class _Field:
    """One header field: the msgpack types it may have and the rule on its value."""

    types: tuple[type, ...]
    type_name: str
    rule: str = ""
    valid: Callable[[Any], bool] | None = None
    required: bool = True

    def optional(self) -> "_Field":
        return _Field(self.types, self.type_name, self.rule, self.valid, required=False)

    def nullable(self) -> "_Field":
        valid = self.valid
        return _Field((*self.types, type(None)), f"{self.type_name} or nil", self.rule,
                      None if valid is None else (lambda v: v is None or valid(v)))


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

# Data headers: the fields after version and kind, in order.
_DATA_FIELDS: dict[str, tuple[tuple[str, _Field], ...]] = {
    "pcm": (("stream", _NAME), ("seq", _UINT), ("sender", _NAME.nullable()),
            ("order", _UINT.nullable()), ("pts", _OPT_INT), ("samples", _UINT)),
    "pkt": (("stream", _NAME), ("seq", _UINT), ("sender", _NAME.nullable()),
            ("order", _UINT.nullable()), ("pts", _OPT_INT), ("dts", _OPT_INT),
            ("duration", _OPT_INT), ("flags", _UINT)),
}
_DATA_LENGTHS = {kind: 2 + len(fields) for kind, fields in _DATA_FIELDS.items()}

# Control headers: maps.
_COMMON = {"v": _UINT, "k": _NAME, "src": _NAME.optional()}
_STREAM = {**_COMMON, "s": _NAME, "q": _UINT}
_FORMAT_KEYS = ("sr", "ch", "fmt", "planar")
_SCHEMAS: dict[str, dict[str, _Field]] = {
    "caps": {**_STREAM, "b": _BUFFER_KIND, "sr": _POSITIVE.optional(),
             "ch": _POSITIVE.optional(), "fmt": _SAMPLE_TYPE.optional(),
             "planar": _BOOL.optional(), "codec": _CODEC.optional(), "tb": _TB,
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


_unpack = partial(msgpack.unpackb, ext_hook=_reject_ext, **_UNPACK_LIMITS)
_unpack_batch = partial(msgpack.unpackb, ext_hook=_reject_ext, **_BATCH_UNPACK_LIMITS)


def decode(parts: Sequence[Any], *, caps: Caps | None = None,
           max_message_bytes: int = MAX_MESSAGE_BYTES, writable: bool = False) -> Message:
    """Validate and decode one multipart message (bytes, memoryviews or zmq.Frames).

    A data message's `buffer` is built when `caps` (its stream's) are given
    (see `buffer_from`; `writable` copies the samples). Raises WireError for
    anything malformed.
    """
    views = _as_views(parts)
    nbytes = sum(v.nbytes for v in views)
    if nbytes > max_message_bytes:
        raise WireError(f"message of {nbytes} bytes over the maximum {max_message_bytes}")
    message = message_of(*_checked_single(_unpack_header(views[0]), views, nbytes))
    if caps is not None and message.kind in DATA_KINDS:
        message.buffer = buffer_from(message, caps, writable=writable)
    return message


def _checked_single(header: Any, views: list[memoryview], nbytes: int) -> tuple:
    kind = _check_version_and_kind(header)
    expected = 2 if kind in DATA_KINDS else 1
    if len(views) != expected:
        layout = "header, payload" if expected == 2 else "header"
        raise WireError(f"{kind} message has {len(views)} parts (expected {expected}: "
                        f"{layout})")
    return _checked(kind, header, views[1] if expected == 2 else None, nbytes)


def decode_batch(parts: Sequence[Any], *, max_messages: int = MAX_BATCH_MESSAGES,
                 max_bytes: int = MAX_MESSAGE_BYTES) -> list[Message]:
    """Validate and decode a batch (or one plain message): its messages, in order.

    The batch header's lengths must add up to the body and split it into
    `messages` whole messages, each checked as by `decode`; at most
    `max_messages` messages and `max_bytes` bytes in all. Raises WireError for
    anything malformed.
    """
    return [message_of(*item) for item in checked_messages(parts, max_messages=max_messages,
                                                           max_bytes=max_bytes)]


def checked_messages(parts: Sequence[Any], *, max_messages: int = MAX_BATCH_MESSAGES,
                     max_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple]:
    """The messages of a batch (or of one plain message), in order, each checked as
    `decode_batch` checks it, as ``(header, payload, nbytes)``: a data message's header is
    its checked array and `payload` its view (no Message is built: `message_of` builds
    one, a receiver's fast path needs none); a control message's is its decoded
    `Message` (payload None)."""
    views = _as_views(parts)
    nbytes = 0
    for view in views:    # a plain loop: a generator costs more for the usual 1 or 2 parts
        nbytes += view.nbytes
    if nbytes > max_bytes:
        raise WireError(f"message of {nbytes} bytes over the maximum {max_bytes}")
    # A batch header's list of lengths is longer than any array a message header has.
    header = _unpack_header(views[0], _unpack_batch)
    if len(views) == 2 and _data_header_ok(header):
        return [(header, views[1], nbytes)]     # the usual case, checked in one call
    if type(header) is not list or len(header) < 2 or header[1] != BATCH_KIND:
        return [_checked_single(header, views, nbytes)]
    lengths = _check_batch_header(header, views, max_messages)
    body, count = views[1], header[2]
    items: list[tuple] = []
    at = index = 0
    while index < len(lengths):
        try:
            length = lengths[index]
            head = body[at:at + length]
            at += length
            header = _unpack_header(head)
            data = _data_header_ok(header)
            kind = header[1] if data else _check_version_and_kind(header)
            payload = None
            if kind in DATA_KINDS:
                if index + 1 == len(lengths):
                    raise WireError(f"{kind} message has no payload (the batch ends)")
                index += 1
                payload = body[at:at + lengths[index]]
                at += lengths[index]
                length += lengths[index]
            items.append((header, payload, length) if data else
                         _checked(kind, header, payload, length))
        except WireError as exc:
            raise WireError(f"message {len(items) + 1} of a batch of {count}: {exc}") from None
        index += 1
    if len(items) != count:
        raise WireError(f"batch header says {count} messages, its parts hold {len(items)}")
    return items


def _check_batch_header(header: list, views: list[memoryview], max_messages: int) -> list[int]:
    """The part lengths of a valid batch header, checked against the body they split."""
    version = header[0]
    if type(version) is not int or version != WIRE_VERSION:
        raise WireError(f"batch header: unknown wire version {_short(version)} "
                        f"(expected {WIRE_VERSION})")
    if len(header) != 4:
        raise WireError(f"batch header has {len(header)} fields (expected 4: version, kind, "
                        f"messages, lengths)")
    count, lengths = header[2], header[3]
    if type(count) is not int or not 1 < count <= max_messages:
        raise WireError(f"batch header: bad value for messages: {_short(count)} (expected 2 "
                        f"to {max_messages})")
    if type(lengths) is not list or not count <= len(lengths) <= 2 * count or \
            not all(type(n) is int and n >= 0 for n in lengths):
        raise WireError(f"batch header: bad value for lengths: {_short(lengths)} (expected "
                        f"{count} to {2 * count} part lengths, ints >= 0)")
    if len(views) != 2:
        raise WireError(f"batch has {len(views)} parts (expected 2: batch header, body)")
    if sum(lengths) != views[1].nbytes:
        raise WireError(f"batch header's part lengths add up to {sum(lengths)} bytes, the "
                        f"body has {views[1].nbytes}")
    return lengths


def _checked(kind: str, header: Any, payload: memoryview | None, nbytes: int) -> tuple:
    """``(header, payload, nbytes)`` of one message whose version, kind and part count were
    checked (see `checked_messages`): a data header's fields checked, a control one decoded."""
    if kind in DATA_KINDS:
        if not _data_header_ok(header):
            _check_data_fields(kind, header)  # the general check, with the precise error
        return header, payload, nbytes
    _check_control_fields(kind, header)
    message = Message(kind, header.get("s"), header.get("q"), header.get("src"), nbytes=nbytes)
    if kind == "caps":
        message.info["caps"] = _decode_caps(header)
    elif kind == "eos":
        message.info.update(messages=header["m"], samples=header["n"])
        if "oe" in header:
            message.info["order_end"] = header["oe"]
        if "ab" in header:
            message.info["aborted"] = True
    return message, None, nbytes


def message_of(header: list | Message, payload: memoryview | None, nbytes: int) -> Message:
    """The Message of an item of `checked_messages`."""
    if type(header) is Message:
        return header
    if header[1] == "pcm":
        return Message("pcm", header[2], header[3], header[4], header[5], nbytes, header[6],
                       header[7], payload=payload)
    return Message("pkt", header[2], header[3], header[4], header[5], nbytes, header[6],
                   0, header[7], header[8], header[9], payload)


def _as_views(parts: Sequence[Any]) -> list[memoryview]:
    if type(parts) is list and 0 < len(parts) <= 2:   # the usual case, checked in one pass
        try:
            views = list(map(memoryview, parts))
        except TypeError:
            views = None
        if views is not None:
            for view in views:   # a plain loop: a generator costs more for 1 or 2 parts
                if view.format != "B" or view.ndim != 1:
                    break
            else:
                return views
    if not isinstance(parts, (list, tuple)):
        raise WireError(f"a message is a list of parts, got {type(parts).__name__}")
    if not parts:
        raise WireError("empty message (no parts)")
    if len(parts) > 2:
        raise WireError(f"message has {len(parts)} parts (expected 1 or 2): extra parts")
    views = []
    for i, part in enumerate(parts):
        try:
            view = memoryview(part)
        except TypeError:
            raise WireError(f"part {i} is not a bytes-like buffer (got "
                            f"{type(part).__name__})") from None
        if view.format != "B" or view.ndim != 1:
            if not view.c_contiguous:
                raise WireError(f"part {i} is not a contiguous buffer")
            # memoryview cannot cast a view with a zero in its shape
            view = view.cast("B") if view.nbytes else memoryview(b"")
        views.append(view)
    return views


def _unpack_header(view: memoryview, unpack: Callable[[memoryview], Any] = _unpack
                   ) -> list | dict:
    if view.nbytes > MAX_HEADER_BYTES:
        raise WireError(f"header of {view.nbytes} bytes over the maximum {MAX_HEADER_BYTES}")
    try:
        header = unpack(view)
    except WireError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure on untrusted bytes is a bad header
        raise WireError(f"header is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if type(header) is not list and type(header) is not dict:
        raise WireError(f"header is not an array or a map (got {_type_name(header)})")
    return header


def _check_version_and_kind(header: list | dict) -> str:
    """The kind of a header whose version is this one's, with the shape its kind has
    (a data kind: an array of its length; a control kind: a map)."""
    if type(header) is list:
        if len(header) >= 2:
            version, kind = header[0], header[1]
            if (type(version) is int and version == WIRE_VERSION and type(kind) is str
                    and _DATA_LENGTHS.get(kind) == len(header)):
                return kind      # the usual case; anything else gets its precise error
        if len(header) < 2:
            raise WireError(f"header array has {len(header)} fields (expected version, kind, "
                            f"...)")
        version, kind = header[0], header[1]
    else:
        for key in ("v", "k"):
            if key not in header:
                raise WireError(f"header: missing key {key!r}")
        version, kind = header["v"], header["k"]
    if type(version) is not int:
        raise WireError(f"header: wrong type for version (expected int, got "
                        f"{_type_name(version)})")
    if version != WIRE_VERSION:
        raise WireError(f"unknown wire version {version} (expected {WIRE_VERSION})")
    if kind not in KINDS:
        raise WireError(f"unknown kind {_short(kind)} (expected one of {', '.join(KINDS)})")
    if type(header) is list and kind in CONTROL_KINDS:
        raise WireError(f"{kind} header is an array (expected a map)")
    if type(header) is dict and kind in DATA_KINDS:
        raise WireError(f"{kind} header is a map (expected an array)")
    if type(header) is list and len(header) != _DATA_LENGTHS[kind]:
        names = ", ".join(name for name, _ in _DATA_FIELDS[kind])
        raise WireError(f"{kind} header has {len(header)} fields (expected "
                        f"{_DATA_LENGTHS[kind]}: version, kind, {names})")
    return kind


def _check_data_fields(kind: str, header: list) -> None:
    for position, (name, spec) in enumerate(_DATA_FIELDS[kind], start=2):
        _check_field(kind, name, spec, header[position])


def _check_control_fields(kind: str, header: dict) -> None:
    schema = _SCHEMAS[kind]
    if not header.keys() <= schema.keys():
        unknown = next(key for key in header if key not in schema)
        raise WireError(f"{kind} message: unknown key {_short(unknown)}")
    if not _REQUIRED[kind] <= header.keys():
        missing = next(key for key in schema if key in _REQUIRED[kind] and key not in header)
        raise WireError(f"{kind} message: missing key {missing!r}")
    for key, value in header.items():
        _check_field(kind, repr(key), schema[key], value)


def _check_field(kind: str, name: str, spec: _Field, value: Any) -> None:
    if type(value) not in spec.types:
        raise WireError(f"{kind} message: wrong type for {name} (expected {spec.type_name}, "
                        f"got {_type_name(value)})")
    if spec.valid is not None and not spec.valid(value):
        raise WireError(f"{kind} message: bad value for {name}: {_short(value)} "
                        f"(expected {spec.rule})")


def _data_header_ok(header: Any) -> bool:
    """True when `header` is a pcm or pkt header array that passes every check of
    ``_check_version_and_kind`` and ``_check_data_fields``; False sends it there for the
    precise error (or for what it is). The same rules written out, for the message every
    buffer is: the generic loop costs several times more."""
    if type(header) is not list:
        return False
    if len(header) == 8:
        version, kind, stream, seq, sender, order, pts, samples = header
        if kind != "pcm" or type(samples) is not int or samples < 0:
            return False
    elif len(header) == 10:
        version, kind, stream, seq, sender, order, pts, dts, duration, flags = header
        if (kind != "pkt" or type(flags) is not int or flags < 0
                or (dts is not None and type(dts) is not int)
                or (duration is not None and type(duration) is not int)):
            return False
    else:
        return False
    return (type(version) is int and version == WIRE_VERSION
            and type(stream) is str and 0 < len(stream) <= MAX_NAME_CHARS
            and type(seq) is int and seq >= 0
            and (sender is None or (type(sender) is str and 0 < len(sender) <= MAX_NAME_CHARS))
            and (order is None or (type(order) is int and order >= 0))
            and (pts is None or type(pts) is int))


def buffer_from(message: Message, caps: Caps, *, writable: bool = False) -> AudioFrame | Packet:
    """The AudioFrame or Packet of data `message` of a stream with `caps` (`data_buffer`)."""
    if message.kind == "pcm":
        header = (WIRE_VERSION, "pcm", message.stream, message.seq, message.sender,
                  message.order, message.pts, message.samples)
    else:
        header = (WIRE_VERSION, "pkt", message.stream, message.seq, message.sender,
                  message.order, message.pts, message.dts, message.duration, message.flags)
    return data_buffer(header, message.payload, caps, writable=writable)


def data_buffer(header: Sequence[Any], payload: memoryview, caps: Caps, *,
                writable: bool = False) -> AudioFrame | Packet:
    """The AudioFrame or Packet of a data message from its checked header (`checked_messages`)
    and payload, for a stream with `caps`.

    PCM samples stay the received payload, read-only (`writable` copies them),
    until the frame's `data` or `av` is asked for; a payload whose length is not
    what the caps' format and the header's sample count say is a WireError
    naming both.
    """
    stream = header[2]
    if header[1] == "pcm":
        if caps.kind != PCM:
            raise WireError(f"pcm message for stream {stream!r}, whose caps say {caps.kind}")
        fmt = caps.format
        dtype, width = caps.wire_layout
        samples, channels = header[7], fmt.channels
        expected = channels * samples * width
        if payload.nbytes != expected:
            raise WireError(f"pcm message for stream {stream!r}: payload is "
                            f"{payload.nbytes} bytes but its caps and header say {channels} "
                            f"ch × {samples} samples × {width} bytes = {expected}")
        if not _NATIVE_LITTLE and width > 1:   # a big-endian host: one conversion
            payload = memoryview(np.frombuffer(payload, dtype).astype(fmt.dtype)).cast("B")
        elif writable:
            payload = memoryview(bytearray(payload))
        # No numpy until the stage looks at the samples: in a live stage, just woken up with
        # cold caches, the first calls into numpy cost tens of µs (docs/performance.md,
        # session 8). Read-only through the view, not numpy's flags (session 7).
        return AudioFrame.from_bytes(payload if writable else payload.toreadonly(), fmt,
                                     samples, header[6], caps.time_base, stream)
    if caps.kind != PACKET:
        raise WireError(f"pkt message for stream {stream!r}, whose caps say {caps.kind}")
    tb = caps.time_base
    return Packet(bytes(payload), tb.numerator, tb.denominator, header[6], header[7],
                  header[8], header[9], caps.codec, stream, caps.extradata)


def _decode_caps(header: dict) -> Caps:
    present = [k for k in _FORMAT_KEYS if k in header]
    fmt = None
    if present:
        if len(present) != len(_FORMAT_KEYS):
            missing = ", ".join(repr(k) for k in _FORMAT_KEYS if k not in header)
            raise WireError(f"caps message for stream {header['s']!r}: format keys incomplete, "
                            f"missing {missing}")
        fmt = _format(header["sr"], header["ch"], header["fmt"], header["planar"])
    try:
        return Caps(header["b"], fmt, header.get("codec"), Fraction(*header["tb"]),
                    header.get("x"), header.get("p", {}))
    except WireError as exc:
        raise WireError(f"caps message for stream {header['s']!r}: {exc}") from None


# A stream's caps are decoded once, but a hostile peer could cycle formats: the
# shared AudioFormats are bounded.
_CACHE_SIZE = 256
_formats: dict[tuple, AudioFormat] = {}


def _format(sample_rate: int, channels: int, sample_type: str, planar: bool) -> AudioFormat:
    key = (sample_rate, channels, sample_type, planar)
    fmt = _formats.get(key)
    if fmt is None:
        if len(_formats) >= _CACHE_SIZE:
            _formats.clear()
        fmt = _formats[key] = AudioFormat(sample_rate, channels, sample_type, planar)
    return fmt


def _type_name(value: object) -> str:
    return {type(None): "nil", dict: "map", list: "array", bytes: "bin"}.get(
        type(value), type(value).__name__)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
