"""Many audio files as one source: each file is one stream, named after the file.

    source = MultiFileSource("music/*.flac", chunk_samples=4096, max_open=8)
    for frame in source:                 # frames of every file, one chunk per file per turn
        ...
    source.take_ended()                  # [SourceEnd('intro'), ...]: streams finished so far

`paths` is a glob ("in/**/*.wav", recursive), a directory (not recursive), a
file, or a list of those. A glob and a directory contribute the same files:
those with an audio extension (AUDIO_EXTENSIONS); the others they hold are
skipped, and `skipped` lists them (a run config logs them in one line). A
file named by itself is read whatever its extension. Everything is expanded
and checked when the source is built, so a glob that matches no audio file is
an error before anything runs. Stream ids are the file stems; two
files with one stem get "-2", "-3", ... in the order of their paths.
Each file is read by an AudioFileReader (PCM frames or undecoded packets),
opened only when its turn comes (at most `max_open` at once), with the
source's `on_error` for damaged frames; what a file that cannot be read (or
that stops on damage) does to the others is `on_file_error` (default: the
same). The damage each file had ends with it (`SourceEnd.damage`).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flowengine.errors import ConfigError
from flowengine.audio.format import AudioFormat, as_format
from flowengine.ops.io.multistream import InterleavedSource, StreamInterleaver
from flowengine.ops.io.paths import resolve_in
from flowengine.ops.io.reader import READER_MODES, AudioFileReader

__all__ = ["MultiFileSource", "expand_inputs", "expand_inputs_skipping", "unique_stream_ids",
           "first_free", "AUDIO_EXTENSIONS"]

# What a directory or a glob given as input contributes (a file named by itself: any).
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".mp3", ".m4a", ".aac", ".flac", ".opus", ".ogg", ".oga", ".mp4", ".webm", ".mka",
    ".aif", ".aiff", ".caf", ".wv", ".ac3", ".amr", ".au", ".w64",
})


def _audio_only(found: list[Path], skipped: list[Path]) -> list[Path]:
    """The files of `found` with an audio extension; the others are added to `skipped`."""
    audio = [p for p in found if p.suffix.lower() in AUDIO_EXTENSIONS]
    skipped += [p for p in found if p.suffix.lower() not in AUDIO_EXTENSIONS]
    return audio


def _none_audio(what: str, others: list[Path]) -> str:
    shown = ", ".join(str(p) for p in others[:3]) + (", ..." if len(others) > 3 else "")
    also = f" (only {len(others)} other file(s): {shown}; name such a file by itself to read " \
           f"it anyway)" if others else ""
    return f"{what} no audio file{also}"


def _expand_one(entry: str, name: str, skipped: list[Path]) -> list[Path]:
    if glob.has_magic(entry):
        matches = sorted(Path(p) for p in glob.glob(entry, recursive=True) if os.path.isfile(p))
        before = len(skipped)
        files = _audio_only(matches, skipped)
        if not files:
            what = _none_audio(f"the glob {entry!r} matches", skipped[before:]) if matches \
                else f"the glob {entry!r} matches no file"
            raise ConfigError(f"{name}: {what} (relative paths start at {os.getcwd()})")
        return files
    path = Path(entry)
    if path.is_dir():
        before = len(skipped)
        files = _audio_only(sorted(p for p in path.iterdir() if p.is_file()), skipped)
        if not files:
            raise ConfigError(f"{name}: " + _none_audio(f"directory {entry!r} holds",
                                                        skipped[before:])
                              + f" (looked for {' '.join(sorted(AUDIO_EXTENSIONS))})")
        return files
    if path.is_file():
        return [path]
    raise ConfigError(f"{name}: input file {entry!r} does not exist (relative paths start at "
                      f"{os.getcwd()})")


def expand_inputs_skipping(paths: str | os.PathLike | list, name: str = "files"
                           ) -> tuple[list[Path], list[Path]]:
    """(the files named by a glob, a directory, a file, or a list of them, in order, each
    once; the files a glob or directory held that are not audio, skipped). ConfigError names
    the entry that gives nothing."""
    if isinstance(paths, (str, os.PathLike)):
        entries = [paths]
    elif isinstance(paths, (list, tuple)):
        entries = list(paths)
    else:
        raise ConfigError(f"{name}: paths must be a path, a glob or a list of them, got "
                          f"{paths!r} ({type(paths).__name__})")
    if not entries:
        raise ConfigError(f"{name}: paths is an empty list: give a glob, a directory or files")
    files: list[Path] = []
    skipped: list[Path] = []
    seen: set[Path] = set()
    real_dirs: dict[Path, Path] = {}    # a folder's files share their directory's resolution
    for entry in entries:
        if not isinstance(entry, (str, os.PathLike)):
            raise ConfigError(f"{name}: each entry of paths must be a path or a glob, got "
                              f"{entry!r} ({type(entry).__name__})")
        for path in _expand_one(os.fspath(entry), name, skipped):
            key = resolve_in(path, real_dirs)
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files, [p for p in dict.fromkeys(skipped) if resolve_in(p, real_dirs) not in seen]


def expand_inputs(paths: str | os.PathLike | list, name: str = "files") -> list[Path]:
    """The files named by a glob, a directory, a file, or a list of them, in order, each once
    (see expand_inputs_skipping)."""
    return expand_inputs_skipping(paths, name)[0]


def unique_stream_ids(files: list[Path]) -> list[str]:
    """File stems as stream ids; a stem seen before gets "-2", "-3", ... (never an id taken)."""
    taken: set[str] = set()
    return [first_free(path.stem or path.name, taken) for path in files]


def first_free(name: str, taken: set[str]) -> str:
    """`name`, else the first of `name`-2, `name`-3, ... not in `taken`; added to `taken`."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    taken.add(candidate)
    return candidate


class MultiFileSource(InterleavedSource):
    """Every file of `paths` as its own stream (see module doc); iterate it once.

    mode: "pcm" (decoded, converted to `format` when given; keys it leaves out: each file's)
        or "packet".
    on_error: what each file's reader does with damaged frames (AudioFileReader: "fail" or
        "skip").
    on_file_error: what a file that cannot be read, or that stopped on damage, does to the
        others (StreamInterleaver's on_error); None: as on_error.
    interleave / max_open: as StreamInterleaver.
    """

    def __init__(self, paths: str | os.PathLike | list, mode: str = "pcm",
                 chunk_samples: int = 1024, format: AudioFormat | dict | None = None,
                 interleave: bool = True, max_open: int = 8, on_error: str = "fail",
                 name: str = "files", on_file_error: str | None = None) -> None:
        if mode not in READER_MODES:
            raise ConfigError(f"{name}: mode must be 'pcm' or 'packet', got {mode!r}")
        if isinstance(chunk_samples, bool) or not isinstance(chunk_samples, int) \
                or chunk_samples <= 0:
            raise ConfigError(f"{name}: chunk_samples must be a positive integer, got "
                              f"{chunk_samples!r}")
        if on_error not in ("fail", "skip"):
            raise ConfigError(f"{name}: on_error must be 'fail' or 'skip', got {on_error!r}")
        self.name = name
        self.mode = mode
        self.on_error = on_error
        self.chunk_samples = chunk_samples
        # A format that leaves out the rate or channels takes them from each file (the reader
        # fills in what a mapping leaves out); a whole one is checked now.
        partial = isinstance(format, dict) and not {"sample_rate", "channels"} <= set(format)
        self.format = format if partial else as_format(format)
        self.files, self.skipped = expand_inputs_skipping(paths, name)
        self.streams = unique_stream_ids(self.files)
        entries = [(stream, self._opener(path, stream))
                   for stream, path in zip(self.streams, self.files)]
        self._interleaver = StreamInterleaver(entries, interleave=interleave, max_open=max_open,
                                              on_error=on_file_error or on_error, name=name)

    def _opener(self, path: Path, stream: str):
        def open_file() -> tuple[Iterator[Any], Any]:
            reader = AudioFileReader(path, format=self.format, chunk_samples=self.chunk_samples,
                                     stream=stream, mode=self.mode, on_error=self.on_error)
            return iter(reader), reader.close, reader
        return open_file

    frames = packets = InterleavedSource.__iter__

    def __repr__(self) -> str:
        return f"<MultiFileSource {len(self.files)} files {self.mode}>"
