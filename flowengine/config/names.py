"""Output names worked out before the run: one file per input, never two inputs on one name.

A `file_sink` fed (through stages that keep stream ids) by a `files` source
writes one file per input file. Validation expands the source's paths (a
glob or a directory takes its audio files; the others are logged once, here),
renders the sink's path template for every input ({stream}, {stem}, {ext},
{index}: see ops/io/paths.py) and

- refuses two inputs that would write one file, naming both and the fields
  that tell them apart;
- refuses a plain path (no field) for several inputs: they would all write it;
- refuses {stem}, {ext} or {index} where the streams do not come from files;
- hands the sink its `stream_paths` (stream id -> path), so every replica
  names its files as `flowengine plan` shows them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flowengine.errors import ConfigError

__all__ = ["check_output_names", "input_files"]

log = logging.getLogger("flowengine.config")

# Operators whose output keeps the stream ids of their input (a mixer names its own stream).
_RENAMING = {"mix"}


def input_files(info: Any) -> tuple[list[Path], list[Path]] | None:
    """(files, skipped non-audio files) of a `files` or `file_source` stage; None for any
    other source, or when its paths give nothing (its build reported that)."""
    from flowengine.ops.io.multifile import expand_inputs_skipping

    if info.op == "files":
        try:
            return expand_inputs_skipping(info.params.get("paths", []))
        except ConfigError:
            return None
    if info.op == "file_source" and isinstance(info.params.get("path"), str):
        return [Path(info.params["path"])], []
    return None


def _origin(info: Any, by_name: dict[str, Any]) -> Any | None:
    """The source whose stream ids reach `info` unchanged, or None (a mixer, several inputs)."""
    while info.inputs:
        if len(info.inputs) != 1 or info.inputs[0] not in by_name:
            return None
        info = by_name[info.inputs[0]]
        if info.op in _RENAMING:
            return None
    return info


def _file_fields(source: Any, files: list[Path]) -> dict[str, dict[str, Any]]:
    """stream id -> {stem, ext, index} of its file."""
    from flowengine.ops.io.multifile import unique_stream_ids

    streams = unique_stream_ids(files) if source.op == "files" else \
        [source.params.get("stream") or files[0].stem]
    return {stream: {"stem": path.stem, "ext": path.suffix.lstrip("."), "index": index + 1,
                     "file": path}
            for index, (stream, path) in enumerate(zip(streams, files))}


def check_output_names(stages: list, out: Any, logged: set[str] | None = None) -> None:
    """See the module doc. `out` collects problems (validate._Collector); `logged`: sources
    whose skipped files were logged already (one line per source and validation)."""
    from flowengine.ops.io.paths import (FILE_FIELDS, PathTemplateError, has_template_field,
                                         render_path_template, template_fields)

    by_name = {info.name: info for info in stages}
    logged = set() if logged is None else logged
    for info in stages:
        if info.op == "files" and info.name not in logged:
            found = info.input_files
            if found and found[1]:
                logged.add(info.name)
                log.warning("stage %r: skipped %d file(s) that are not audio (by extension): "
                            "%s", info.name, len(found[1]), ", ".join(map(str, found[1])))
        path = info.params.get("path")
        if info.op != "file_sink" or not isinstance(path, str):
            continue
        where = ("stages", info.index, "params", "path")
        try:
            fields = template_fields(path) if has_template_field(path) else []
        except PathTemplateError:
            continue                            # reported with the other path problems
        source = _origin(info, by_name)
        found = source.input_files if source is not None else None
        file_fields = [f for f in fields if f in FILE_FIELDS]
        if found is None:       # not from files (or their paths gave nothing: reported)
            if file_fields and (source is None or source.op not in ("files", "file_source")):
                named = ", ".join("{" + f + "}" for f in file_fields)
                origin = f"stage {source.name!r} ({source.op})" if source is not None else \
                    "its input"
                out.add(where, info.label, "params.path",
                        f"{named} in {path!r} name(s) an input file, but the streams of "
                        f"{origin} do not come from files: use {{stream}}")
            continue
        files = found[0]
        if not fields:
            if len(files) > 1:
                shown = ", ".join(map(str, files[:3])) + (", ..." if len(files) > 3 else "")
                out.add(where, info.label, "params.path",
                        f"{len(files)} input files ({shown}) would all be written to {path!r}: "
                        f"give the path a per-file field, e.g. "
                        f"{_example(path)!r} (fields: {{stream}}, {{stem}}, {{ext}}, "
                        f"{{index}})")
            continue
        per_stream = _file_fields(source, files)
        rendered: dict[str, str] = {}
        first: dict[Path, Path] = {}
        real_dirs: dict[Path, Path] = {}
        for stream, values in per_stream.items():
            try:
                target = render_path_template(path, stream, fields=values, real_dirs=real_dirs)
            except PathTemplateError as exc:
                out.add(where, info.label, "params.path", str(exc))
                break
            key = Path(os.path.abspath(target))
            if key in first:
                out.add(where, info.label, "params.path",
                        f"inputs {str(first[key])!r} and {str(values['file'])!r} would both be "
                        f"written to '{target}': tell them apart with {{ext}} or {{index}} "
                        f"(e.g. {_example(path, '{stem}.{ext}')!r}), or use {{stream}}, which "
                        f"numbers a repeated name")
                break
            first[key] = values["file"]
            rendered[stream] = str(target)
        else:
            if file_fields:
                info.params["stream_paths"] = rendered
                info.values["stream_paths"] = rendered


def _example(path: str, field: str = "{stem}") -> str:
    """`path` with its file name's stem replaced by `field`: 'out/x.opus' -> 'out/{stem}.opus'."""
    from flowengine.ops.io.paths import TEMPLATE_FIELDS
    directory, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    for known in TEMPLATE_FIELDS:
        stem = stem.replace("{" + known + "}", "")
    return os.path.join(directory, f"{field}{ext}")
