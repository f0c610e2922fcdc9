"""Static format inference: what sample rate, channels and sample type flow on each edge of a run.

Only what the config fixes is known: a tone's `sample_rate`/`channels`/
`sample_type`, a PCM file's own rate and channels (probed), a resampler's
target, a channel map's output channels, a declared format parameter. A
decoder's output rate is known only at run time (unknown), and an unknown
propagates as unknown; processors otherwise pass their input format through.
Each known value keeps the reason it is known, so `flowengine plan` and the
errors can explain it.

`input_requirement` says what a stage takes on a PCM input: a declared format
(a processor's `format`, an encoder's `input_format`, a file sink's written
`format`), or a set of rates a codec supports (Opus 8/12/16/24/48 kHz, MP3's
and AAC's rates; by the extension for a file sink that encodes). Where an
input disagrees, `join_target` says what conversion joins the two (see
joins.py), or None when none can.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flowengine.errors import UnknownCodecError
from flowengine.ops.codecs.adts import AAC_SAMPLE_RATES
from flowengine.ops.codecs.configs import normalize_codec
from flowengine.ops.codecs.mp3frames import MP3_SAMPLE_RATES

__all__ = ["StaticFormat", "infer_output_format", "input_requirement", "codec_of",
           "join_target", "OPUS_RATES"]

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# Rates each codec encodes, and the one a conversion picks when the input's rate is not among
# them (None: the nearest rate above the input's, else the highest).
CODEC_RATES: dict[str, tuple[tuple[int, ...], int | None]] = {
    "opus": (OPUS_RATES, 48000),
    "mp3": (tuple(sorted(MP3_SAMPLE_RATES)), None),
    "aac": (tuple(sorted(AAC_SAMPLE_RATES)), None),
}
_SINK_CODECS = {".mp3": "mp3", ".m4a": "aac", ".aac": "aac", ".opus": "opus", ".ogg": "opus"}


@dataclass(frozen=True)
class StaticFormat:
    """Sample rate, channels, sample type and layout as far as known before the run (None =
    unknown), or the set of rates a stage accepts (`prefer`: the one to convert to even when
    the input's rate is unknown); `why` says where the values come from; `key` is the
    parameter that fixed them (for pointing errors at it)."""

    sample_rate: int | None = None
    channels: int | None = None
    rates: tuple[int, ...] | None = None
    why: str = "unknown until the run"
    key: str | None = None
    sample_type: str | None = None
    planar: bool | None = None
    prefer: int | None = None

    @classmethod
    def unknown(cls, why: str = "unknown until the run") -> "StaticFormat":
        return cls(why=why)

    @property
    def known(self) -> bool:
        return self.sample_rate is not None or self.channels is not None

    def conflict(self, other: "StaticFormat", types: bool = True) -> str | None:
        """'sample rate' / 'channel count' / 'sample type' / 'layout' when the two cannot
        describe the same audio (`types`: compare sample type and layout too)."""
        rate = other.sample_rate
        if self.sample_rate is not None and rate is not None and self.sample_rate != rate:
            return "sample rate"
        if self.rates is not None and rate is not None and rate not in self.rates:
            return "sample rate"
        if self.channels is not None and other.channels is not None and \
                self.channels != other.channels:
            return "channel count"
        if types and None not in (self.sample_type, other.sample_type) and \
                self.sample_type != other.sample_type:
            return "sample type"
        if types and None not in (self.planar, other.planar) and self.planar != other.planar:
            return "layout"
        return None

    def intersect(self, required: "StaticFormat") -> "StaticFormat":
        """This format, with what a requirement fixes filled in where this one is unknown."""
        if self.sample_rate is not None and self.channels is not None:
            return self
        return replace(self, sample_rate=self.sample_rate or required.sample_rate,
                       channels=self.channels or required.channels,
                       why=self.why if self.known else required.why)

    def values(self, types: bool = False) -> str:
        """'48000 Hz, 2 ch' (with `types`: ', f32 planar' where known)."""
        if self.rates is not None and self.sample_rate is None:
            rate = "/".join(f"{r / 1000:g}" for r in self.rates) + " kHz"
        else:
            rate = f"{self.sample_rate} Hz" if self.sample_rate else "? Hz"
        channels = f"{self.channels} ch" if self.channels else "? ch"
        text = f"{rate}, {channels}"
        if types and self.sample_type is not None:
            text += f", {self.sample_type}"
            if self.planar is not None:
                text += " planar" if self.planar else " interleaved"
        return text

    def explain(self, types: bool = False) -> str:
        """'48000 Hz, 2 ch (resample sample_rate)'."""
        if not self.known and self.rates is None and not (types and self.sample_type):
            return f"an unknown format ({self.why})"
        return f"{self.values(types)} ({self.why})"

    def blame(self, index: int) -> tuple[str | None, tuple | None]:
        """The key and YAML path of the parameter behind this requirement, if any."""
        if self.key is None:
            return None, None
        return f"params.{self.key}", ("stages", index, "params", self.key)

    def as_mapping(self) -> dict[str, Any]:
        """The known keys as a format mapping ({sample_rate: 48000, channels: 2, ...})."""
        keys = {"sample_rate": self.sample_rate, "channels": self.channels,
                "sample_type": self.sample_type, "planar": self.planar}
        return {key: value for key, value in keys.items() if value is not None}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _known_format(value: Any, why: str, key: str | None) -> StaticFormat | None:
    """The StaticFormat of an AudioFormat or a mapping of its keys; None for anything else."""
    from flowengine.audio.format import format_mapping
    mapping = format_mapping(value) if value is not None else None
    if mapping is None:
        return None
    sample_type = mapping.get("sample_type")
    planar = mapping.get("planar")
    return StaticFormat(_int(mapping.get("sample_rate")), _int(mapping.get("channels")),
                        why=why, key=key,
                        sample_type=sample_type if isinstance(sample_type, str) else None,
                        planar=planar if isinstance(planar, bool) else None)


def _format_param(op: str, values: dict[str, Any], *keys: str) -> StaticFormat | None:
    """The format fixed by the first of `keys` that holds one."""
    for key in keys:
        fixed = _known_format(values.get(key), f"{op} {key}", key)
        if fixed is not None:
            return fixed
    return None


def _given(op: str, values: dict[str, Any], given: set[str], *keys: str) -> str:
    """'tone sample_rate=44100, channels=2 (default)': the values and where they come from."""
    parts = [f"{k}={values.get(k)}" + ("" if k in given else " (default)") for k in keys]
    return f"{op} {', '.join(parts)}"


def probe_file(path: str) -> StaticFormat:
    """The rate and channels of a file's first audio stream, as a file source gives them
    (planar f32); unknown when it cannot be read."""
    import av   # imported here: only a file source needs it

    try:
        with av.open(path) as container:
            context = container.streams.audio[0].codec_context
            return StaticFormat(context.sample_rate or None, context.channels or None,
                                why=f"read from {path}", sample_type="f32", planar=True)
    except (OSError, IndexError, av.error.FFmpegError):
        return StaticFormat.unknown(f"{path} could not be probed")


def _source_format(op: str, values: dict[str, Any], given: set[str],
                   files: list | None) -> StaticFormat:
    if values.get("mode", "pcm") != "pcm":
        return StaticFormat.unknown("packets")
    fixed = _format_param(op, values, "format")
    if fixed is not None:
        if fixed.sample_rate is not None and fixed.channels is not None:
            return replace(fixed, sample_type=fixed.sample_type or "f32",
                           planar=True if fixed.planar is None else fixed.planar)
        return replace(fixed, why=f"{op} format; the rest each file's")
    if _int(values.get("sample_rate")) and _int(values.get("channels")):
        sample_type = values.get("sample_type", "f32")
        return StaticFormat(values["sample_rate"], values["channels"],
                            why=_given(op, values, given, "sample_rate", "channels"),
                            sample_type=sample_type if isinstance(sample_type, str) else None,
                            planar=True)
    path = values.get("path")
    if isinstance(path, str):
        return probe_file(path)
    if files is not None and len(files) == 1:   # a files source of one file: its format
        return probe_file(str(files[0]))
    return StaticFormat(why="each file's own", sample_type="f32", planar=True)


def _resample_format(op: str, values: dict[str, Any], given: set[str],
                     in_fmt: StaticFormat) -> StaticFormat:
    rate, channels = _int(values.get("sample_rate")), _int(values.get("channels"))
    keys = [k for k, v in (("sample_rate", rate), ("channels", channels)) if v]
    why = _given(op, values, given, *keys) if keys else f"{op}"
    if channels is None and in_fmt.channels is not None:
        why += f"; channels as its input ({in_fmt.why})"
    if rate is None and in_fmt.sample_rate is not None:
        why += f"; rate as its input ({in_fmt.why})"
    sample_type = values.get("sample_type", "f32")
    planar = values.get("planar", True)
    return StaticFormat(rate or in_fmt.sample_rate, channels or in_fmt.channels, why=why,
                        sample_type=sample_type if isinstance(sample_type, str) else None,
                        planar=planar if isinstance(planar, bool) else None)


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
                        in_fmt: StaticFormat, files: list | None = None) -> StaticFormat:
    """What a stage gives (PCM outputs only), from its parameters (`values`, defaults filled
    in; `given`: the keys the config sets) and what it takes; `files`: a source's input
    files as validation listed them (StageInfo.input_files), None when it has none."""
    if kind == "source":
        return _source_format(op, values, given, files)
    if kind == "decoder":
        fixed = _format_param(op, values, "output_format")
        return fixed or StaticFormat.unknown(f"decoded by {op}: known only at run time")
    if kind != "processor":
        return StaticFormat.unknown("packets")
    if op == "resample":
        return _resample_format(op, values, given, in_fmt)
    if op == "channel_map":
        return _channel_map_format(op, values, in_fmt)
    if op == "mix":
        return replace(in_fmt, sample_type="f32", planar=True, key=None)
    return in_fmt


def _codec_rates(codec: str, why: str) -> StaticFormat:
    rates, prefer = CODEC_RATES[codec]
    return StaticFormat(rates=rates, prefer=prefer, why=why)


def input_requirement(op: str, kind: str, values: dict[str, Any]) -> StaticFormat:
    """What a stage demands of its PCM input: a declared format, a codec's rates."""
    keys = {"encoder": ("input_format",), "sink": ("format",),
            "processor": ("in_format",) if op == "resample" else ("format",)}.get(kind, ())
    fixed = _format_param(op, values, *keys)
    if fixed is not None:
        if kind == "encoder":       # an encoder converts any sample type and layout itself
            fixed = replace(fixed, sample_type=None, planar=None)
        if kind == "sink":          # what the sink writes: a sample type is the writer's choice
            fixed = replace(fixed, sample_type=None, planar=None, why=f"{op} writes {fixed.why}")
        return fixed
    codec = None
    if kind == "encoder":
        codec = codec_of(op, values)
    elif op == "file_sink" and isinstance(values.get("path"), str):
        codec = _SINK_CODECS.get(Path(values["path"]).suffix.lower())
    if codec in CODEC_RATES:
        what = f"the rates {codec} supports" if kind == "encoder" else \
            f"a {Path(values['path']).suffix.lower()} file holds {codec}, at the rates it supports"
        return _codec_rates(codec, what)
    return StaticFormat.unknown("any")


def join_target(required: StaticFormat, given: StaticFormat) -> dict[str, Any] | None:
    """What a conversion must give for input `given` to meet `required`: the `resample`
    parameters ({sample_rate, channels, sample_type, planar}, only what changes), or None when
    nothing needs changing or nothing can be worked out before the run."""
    target: dict[str, Any] = {}
    rate = given.sample_rate
    if required.sample_rate is not None and rate != required.sample_rate:
        target["sample_rate"] = required.sample_rate
    elif required.rates is not None and rate not in required.rates:
        if rate is None and required.prefer is None:
            return None            # known only at run time, and most rates will do
        above = [r for r in required.rates if rate is not None and r >= rate]
        target["sample_rate"] = required.prefer or (min(above) if above else max(required.rates))
    if required.channels is not None and given.channels != required.channels:
        if given.channels is None and not target:
            return None            # unknown until the run: the stage itself checks
        target["channels"] = required.channels
    # A conversion keeps the input's sample type and layout unless the stage wants others
    # (`resample` would give planar f32); with nothing else to change, only a known difference
    # needs one.
    sample_type = required.sample_type or given.sample_type
    planar = required.planar if required.planar is not None else given.planar
    if target:
        if sample_type not in (None, "f32"):
            target["sample_type"] = sample_type
        if planar is False:
            target["planar"] = False
        return target
    if None not in (required.sample_type, given.sample_type) and \
            required.sample_type != given.sample_type:
        target["sample_type"] = required.sample_type
    if None not in (required.planar, given.planar) and required.planar != given.planar:
        target["planar"] = required.planar
    return target or None
