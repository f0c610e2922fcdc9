"""Static format inference: what sample rate and channel count flow on each edge of a run.

Only what the config fixes is known: a tone's `sample_rate`/`channels`, a
PCM file's own rate and channels (probed), a resampler's target, a channel
map's output channels, an encoder's `input_format`. A decoder's output is
known only at run time (unknown), and an unknown propagates as unknown;
processors otherwise pass their input format through. Each known value keeps
the reason it is known, so `flowengine plan` and the errors can explain it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from flowengine.ops.codecs.configs import normalize_codec
from flowengine.errors import UnknownCodecError

__all__ = ["StaticFormat", "infer_output_format", "input_requirement", "codec_of", "OPUS_RATES"]

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


@dataclass(frozen=True)
class StaticFormat:
    """Sample rate and channels as far as known before the run (None = unknown), or the set
    of rates a stage accepts; `why` says where the values come from; `key` is the parameter
    that fixed them (for pointing errors at it)."""

    sample_rate: int | None = None
    channels: int | None = None
    rates: tuple[int, ...] | None = None
    why: str = "unknown until the run"
    key: str | None = None

    @classmethod
    def unknown(cls, why: str = "unknown until the run") -> "StaticFormat":
        return cls(why=why)

    @property
    def known(self) -> bool:
        return self.sample_rate is not None or self.channels is not None

    def conflict(self, other: "StaticFormat") -> str | None:
        """'sample rate' / 'channel count' when the two cannot describe the same audio."""
        rate = other.sample_rate
        if self.sample_rate is not None and rate is not None and self.sample_rate != rate:
            return "sample rate"
        if self.rates is not None and rate is not None and rate not in self.rates:
            return "sample rate"
        if self.channels is not None and other.channels is not None and \
                self.channels != other.channels:
            return "channel count"
        return None

    def intersect(self, required: "StaticFormat") -> "StaticFormat":
        """This format, with what a requirement fixes filled in where this one is unknown."""
        if self.sample_rate is not None and self.channels is not None:
            return self
        return replace(self, sample_rate=self.sample_rate or required.sample_rate,
                       channels=self.channels or required.channels,
                       why=self.why if self.known else required.why)

    def values(self) -> str:
        if self.rates is not None and self.sample_rate is None:
            rate = "/".join(str(r // 1000) for r in self.rates) + " kHz"
        else:
            rate = f"{self.sample_rate} Hz" if self.sample_rate else "? Hz"
        channels = f"{self.channels} ch" if self.channels else "? ch"
        return f"{rate}, {channels}"

    def explain(self) -> str:
        """'48000 Hz, 2 ch (resample sample_rate)'."""
        if not self.known and self.rates is None:
            return f"an unknown format ({self.why})"
        return f"{self.values()} ({self.why})"

    def blame(self, index: int) -> tuple[str | None, tuple | None]:
        """The key and YAML path of the parameter behind this requirement, if any."""
        if self.key is None:
            return None, None
        return f"params.{self.key}", ("stages", index, "params", self.key)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _rate_channels(value: Any) -> tuple[int | None, int | None] | None:
    """(rate, channels) of an AudioFormat or a dict of its fields; None for anything else."""
    if isinstance(value, dict):
        return _int(value.get("sample_rate")), _int(value.get("channels"))
    if hasattr(value, "sample_rate") and hasattr(value, "channels"):
        return _int(value.sample_rate), _int(value.channels)
    return None


def _format_param(op: str, values: dict[str, Any], *keys: str) -> StaticFormat | None:
    """The format fixed by the first of `keys` that holds one."""
    for key in keys:
        pair = _rate_channels(values.get(key))
        if pair is not None:
            return StaticFormat(*pair, why=f"{op} {key}", key=key)
    return None


def _given(op: str, values: dict[str, Any], given: set[str], *keys: str) -> str:
    """'tone sample_rate=44100, channels=2 (default)': the values and where they come from."""
    parts = [f"{k}={values.get(k)}" + ("" if k in given else " (default)") for k in keys]
    return f"{op} {', '.join(parts)}"


def probe_file(path: str) -> StaticFormat:
    """The rate and channels of a file's first audio stream (unknown when it cannot be read)."""
    import av   # imported here: only a file source needs it

    try:
        with av.open(path) as container:
            context = container.streams.audio[0].codec_context
            return StaticFormat(context.sample_rate or None, context.channels or None,
                                why=f"read from {path}")
    except (OSError, IndexError, av.error.FFmpegError):
        return StaticFormat.unknown(f"{path} could not be probed")


def _source_format(op: str, values: dict[str, Any], given: set[str]) -> StaticFormat:
    fixed = _format_param(op, values, "format")
    if fixed is not None:
        return fixed
    if _int(values.get("sample_rate")) and _int(values.get("channels")):
        return StaticFormat(values["sample_rate"], values["channels"],
                            why=_given(op, values, given, "sample_rate", "channels"))
    path = values.get("path")
    if isinstance(path, str) and values.get("mode", "pcm") == "pcm":
        return probe_file(path)
    return StaticFormat.unknown()


def _resample_format(op: str, values: dict[str, Any], given: set[str],
                     in_fmt: StaticFormat) -> StaticFormat:
    rate, channels = _int(values.get("sample_rate")), _int(values.get("channels"))
    why = _given(op, values, given, "sample_rate") if channels is None else \
        _given(op, values, given, "sample_rate", "channels")
    if channels is None and in_fmt.channels is not None:
        why += f"; channels as its input ({in_fmt.why})"
    return StaticFormat(rate or in_fmt.sample_rate, channels or in_fmt.channels, why=why)


def _channel_map_format(op: str, values: dict[str, Any], in_fmt: StaticFormat) -> StaticFormat:
    counts = (("out_channels", _int(values.get("out_channels"))),
              ("channels", len(values["channels"]) if isinstance(values.get("channels"), list)
               else None),
              ("matrix", len(values["matrix"]) if isinstance(values.get("matrix"), list)
               else None))
    for key, count in counts:
        if count:
            return replace(in_fmt, channels=count, key=None,
                           why=f"{in_fmt.why}; {op} {key} gives {count} ch")
    return in_fmt


def codec_of(op: str, values: dict[str, Any]) -> str:
    """The codec of a codec operator: 'opus' for opus_encoder or encoder(codec=opus)."""
    codec = values.get("codec")
    if not isinstance(codec, str):
        return op.split("_")[0]
    try:
        return normalize_codec(codec)      # its aliases too: MP3, libmp3lame, adts, pcm
    except UnknownCodecError:
        return codec.strip().lower()       # refused by the operator itself, with its message


def infer_output_format(op: str, kind: str, values: dict[str, Any], given: set[str],
                        in_fmt: StaticFormat) -> StaticFormat:
    """What a stage gives (PCM outputs only), from its parameters (`values`, defaults filled
    in; `given`: the keys the config sets) and what it takes."""
    if kind == "source":
        return _source_format(op, values, given)
    if kind == "decoder":
        fixed = _format_param(op, values, "output_format")
        return fixed or StaticFormat.unknown(f"decoded by {op}: known only at run time")
    if kind != "processor":
        return StaticFormat.unknown("packets")
    if op == "resample":
        return _resample_format(op, values, given, in_fmt)
    if op == "channel_map":
        return _channel_map_format(op, values, in_fmt)
    return in_fmt


def input_requirement(op: str, kind: str, values: dict[str, Any]) -> StaticFormat:
    """What a stage demands of its PCM input: a declared input format, Opus's rates."""
    keys = ("in_format",) if op == "resample" else ("input_format", "format")
    fixed = _format_param(op, values, *keys) if kind in ("encoder", "sink", "processor") else None
    if fixed is not None:
        return fixed
    if kind == "encoder" and codec_of(op, values) == "opus":
        return StaticFormat(rates=OPUS_RATES, why="the rates Opus supports; resample first")
    return StaticFormat.unknown("any")
