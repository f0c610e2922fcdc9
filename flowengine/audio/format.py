"""Audio formats, sample types and conversions between them.

A format is (sample_rate, channels, sample_type, planar). Planar PCM is a numpy
array shaped (channels, samples); interleaved PCM is shaped (samples, channels).
Float samples live in [-1, 1]; integer types use their full range (u8 is offset
by 128), matching FFmpeg's conventions so conversions agree with PyAV's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from flowengine.errors import FormatError

SAMPLE_TYPES = ("u8", "s16", "s32", "f32", "f64")
_ALIASES = {"i16": "s16", "i32": "s32", "flt": "f32", "dbl": "f64", "float32": "f32",
            "float64": "f64", "int16": "s16", "int32": "s32", "uint8": "u8"}
_DTYPES = {"u8": np.dtype(np.uint8), "s16": np.dtype(np.int16), "s32": np.dtype(np.int32),
           "f32": np.dtype(np.float32), "f64": np.dtype(np.float64)}
# PyAV/FFmpeg sample format names (interleaved; planar adds a "p").
_AV_NAMES = {"u8": "u8", "s16": "s16", "s32": "s32", "f32": "flt", "f64": "dbl"}
_FROM_AV = {v: k for k, v in _AV_NAMES.items()}
_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0}


def normalize_sample_type(sample_type: str) -> str:
    """Return the canonical name of a sample type ("i16" -> "s16"), or raise FormatError."""
    name = str(sample_type).lower()
    name = _ALIASES.get(name, name)
    if name not in _DTYPES:
        raise FormatError(
            f"unknown sample type {sample_type!r}: expected one of {', '.join(SAMPLE_TYPES)} "
            f"(aliases i16, i32)")
    return name


@dataclass(frozen=True)
class AudioFormat:
    """What a block of PCM is: rate, channel count, sample type and layout."""

    sample_rate: int
    channels: int
    sample_type: str = "f32"
    planar: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, (int, np.integer)) \
                or self.sample_rate <= 0:
            raise FormatError(f"sample_rate must be a positive integer, got {self.sample_rate!r}")
        if isinstance(self.channels, bool) or not isinstance(self.channels, (int, np.integer)) \
                or self.channels <= 0:
            raise FormatError(f"channels must be a positive integer, got {self.channels!r}")
        object.__setattr__(self, "sample_rate", int(self.sample_rate))
        object.__setattr__(self, "channels", int(self.channels))
        object.__setattr__(self, "sample_type", normalize_sample_type(self.sample_type))
        object.__setattr__(self, "planar", bool(self.planar))

    @property
    def dtype(self) -> np.dtype:
        return _DTYPES[self.sample_type]

    @property
    def is_float(self) -> bool:
        return self.sample_type in ("f32", "f64")

    @property
    def av_format(self) -> str:
        """The PyAV sample format name, e.g. "fltp" for planar f32."""
        return _AV_NAMES[self.sample_type] + ("p" if self.planar else "")

    @property
    def bytes_per_sample(self) -> int:
        return self.dtype.itemsize

    def shape(self, samples: int) -> tuple[int, int]:
        """The numpy shape of `samples` samples in this format."""
        return (self.channels, samples) if self.planar else (samples, self.channels)

    def with_(self, **changes) -> "AudioFormat":
        """A copy with some fields changed: fmt.with_(sample_type="s16")."""
        return replace(self, **changes)

    @classmethod
    def from_av(cls, av_format_name: str, channels: int, sample_rate: int) -> "AudioFormat":
        """Build from a PyAV frame's format name ("fltp", "s16", ...)."""
        planar = av_format_name.endswith("p")
        base = av_format_name[:-1] if planar else av_format_name
        if base not in _FROM_AV:
            raise FormatError(f"PyAV sample format {av_format_name!r} has no flowengine equivalent")
        return cls(sample_rate, channels, _FROM_AV[base], planar)

    def __str__(self) -> str:
        layout = "planar" if self.planar else "interleaved"
        return f"{self.sample_rate} Hz {self.channels} ch {self.sample_type} {layout}"


# FFmpeg's default channel layout for each channel count (av_channel_layout_default).
DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1",
                   8: "7.1"}


def channel_layout(channels: int) -> str:
    """FFmpeg's default layout name for a channel count (1 -> "mono", 2 -> "stereo", ...)."""
    if channels not in DEFAULT_LAYOUTS:
        raise FormatError(f"{channels} channels have no standard layout (expected 1..8)")
    return DEFAULT_LAYOUTS[channels]


FORMAT_KEYS = ("sample_rate", "channels", "sample_type", "planar")
# How a format may be written in a run config (and --set), for messages and the docs.
FORMAT_FORMS = ("a mapping {sample_rate: 48000, channels: 2, sample_type: f32, planar: true} "
                "(omitted keys: as the stage's input), a string '48000/2/f32' (rate/channels/"
                "sample type[/planar or /interleaved]; a shorter one, e.g. '48000/2', leaves "
                "the rest as the input), or a rate alone (48000)")
_LAYOUT_WORDS = {"planar": True, "interleaved": False}


def format_mapping(value: object) -> dict | None:
    """The keys a format value gives, or None when `value` is no way of writing a format:
    an AudioFormat -> all four; a mapping -> itself (keys not checked here); '48000/2/f32' ->
    {'sample_rate': 48000, 'channels': 2, 'sample_type': 'f32'}; 48000 -> {'sample_rate':
    48000}. Values are checked when the format is built (as_format)."""
    if isinstance(value, AudioFormat):
        return {key: getattr(value, key) for key in FORMAT_KEYS}
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return {"sample_rate": int(value)}
    if not isinstance(value, str) or not value.strip():
        return None
    parts = [part.strip() for part in value.strip().split("/")]
    if len(parts) > 4 or not all(parts):
        return None
    mapping: dict = {}
    for key, part in zip(FORMAT_KEYS, parts):
        if key in ("sample_rate", "channels"):
            if not part.isdigit():
                return None
            mapping[key] = int(part)
        elif key == "planar":
            if part.lower() not in _LAYOUT_WORDS:
                return None
            mapping[key] = _LAYOUT_WORDS[part.lower()]
        else:
            mapping[key] = part
    return mapping


def format_problem(value: object) -> str | None:
    """Why `value` is not a way of writing a (possibly partial) format, or None."""
    mapping = format_mapping(value)
    if mapping is None:
        return f"expected a format, got {value!r}: write it as {FORMAT_FORMS}"
    unknown = [key for key in mapping if key not in FORMAT_KEYS]
    if unknown:
        return (f"unknown format key(s) {', '.join(map(repr, unknown))}: a format has "
                f"{', '.join(FORMAT_KEYS)}")
    try:
        AudioFormat(**{"sample_rate": 48000, "channels": 2, **mapping})
    except (FormatError, TypeError) as exc:
        return str(exc)
    return None


def is_complete_format(value: object) -> bool:
    """Whether `value` gives every key of a format itself (nothing left to inherit)."""
    mapping = format_mapping(value)
    return mapping is not None and all(key in mapping for key in FORMAT_KEYS)


def as_format(fmt: "AudioFormat | dict | str | int | None",
              like: "AudioFormat | None" = None) -> "AudioFormat | None":
    """An AudioFormat from any way of writing one (see FORMAT_FORMS), or None for None.
    Keys it leaves out come from `like` when given; without `like`, a rate and a channel
    count are needed (sample_type defaults to f32, planar to True)."""
    if fmt is None or isinstance(fmt, AudioFormat):
        return fmt
    problem = format_problem(fmt)
    if problem is not None:
        raise FormatError(problem)
    mapping = format_mapping(fmt)
    if like is not None:
        mapping = {**{key: getattr(like, key) for key in FORMAT_KEYS}, **mapping}
    missing = [key for key in ("sample_rate", "channels") if key not in mapping]
    if missing:
        raise FormatError(f"the format {fmt!r} does not give {' or '.join(missing)}, and "
                          f"there is no input format here to take it from: write it as "
                          f"{FORMAT_FORMS}")
    return AudioFormat(**mapping)


def check_pcm(pcm: object, fmt: AudioFormat, where: str | Callable[[], str] = "") -> np.ndarray:
    """Validate that `pcm` is a numpy array in `fmt`; return it (never cast silently).

    Raises FormatError (a ValueError) naming what was expected and what came, after
    `where` (or what the function `where` gives: per-buffer callers describe the place
    only when there is an error). A 1-D array is accepted for mono only.
    """
    if type(pcm) is np.ndarray and pcm.dtype is fmt.dtype and pcm.ndim == 2 \
            and pcm.shape[0 if fmt.planar else 1] == fmt.channels:
        return pcm      # the usual case, in one test (each native dtype is one object)
    if callable(where):
        where = where()
    prefix = f"{where}: " if where else ""
    if not isinstance(pcm, np.ndarray):
        raise FormatError(f"{prefix}expected a numpy array, got {type(pcm).__name__}")
    if pcm.ndim == 1 and fmt.channels == 1:
        pcm = pcm.reshape(fmt.shape(pcm.shape[0]))
    if pcm.ndim != 2:
        layout = "(channels, samples)" if fmt.planar else "(samples, channels)"
        raise FormatError(f"{prefix}expected a 2-D array {layout}, got {pcm.ndim}-D shape {pcm.shape}")
    got_channels = pcm.shape[0] if fmt.planar else pcm.shape[1]
    if got_channels != fmt.channels:
        layout = "planar (channels, samples)" if fmt.planar else "interleaved (samples, channels)"
        raise FormatError(f"{prefix}expected {fmt.channels} channel(s) in {layout} layout, "
                          f"got shape {pcm.shape}")
    if pcm.dtype != fmt.dtype:
        raise FormatError(f"{prefix}expected dtype {fmt.dtype} for sample type {fmt.sample_type}, "
                          f"got {pcm.dtype}")
    return pcm


def to_float(pcm: np.ndarray, sample_type: str, dtype=np.float32) -> np.ndarray:
    """Integer or float samples -> float in [-1, 1] (same shape)."""
    sample_type = normalize_sample_type(sample_type)
    if sample_type in ("f32", "f64"):
        return pcm.astype(dtype, copy=False)
    out = pcm.astype(dtype)
    if sample_type == "u8":
        out -= 128.0
    out *= 1.0 / _INT_SCALE[sample_type]
    return out


def from_float(pcm: np.ndarray, sample_type: str) -> np.ndarray:
    """Float samples in [-1, 1] -> `sample_type`, rounded and clipped for integer types."""
    sample_type = normalize_sample_type(sample_type)
    target = _DTYPES[sample_type]
    if sample_type in ("f32", "f64"):
        return pcm.astype(target, copy=False)
    scale = _INT_SCALE[sample_type]
    scaled = np.rint(pcm.astype(np.float64) * scale)
    if sample_type == "u8":
        scaled += 128.0
    info = np.iinfo(target)
    return np.clip(scaled, info.min, info.max).astype(target)


def convert(pcm: np.ndarray, src: AudioFormat, dst: AudioFormat) -> np.ndarray:
    """Convert sample type and layout. Rate and channel count must already agree."""
    if (src.sample_rate, src.channels) != (dst.sample_rate, dst.channels):
        raise FormatError(f"convert() changes sample type and layout only: {src} -> {dst} "
                          f"needs a resampler or channel mixer")
    if src.sample_type != dst.sample_type:
        if src.is_float and dst.is_float:
            pcm = pcm.astype(dst.dtype)
        else:
            pcm = from_float(to_float(pcm, src.sample_type, np.float64), dst.sample_type)
    if src.planar != dst.planar:
        pcm = pcm.T
    return np.ascontiguousarray(pcm)
