"""Output paths from stream ids: one safe file name per stream, and path templates that stay put.

Stream ids come from outside (file names, live senders), so they are never
trusted as paths. `safe_stream_name` maps any id to one harmless path
component; `render_path_template("out/{stream}.mp3", stream)` puts it into a
template and checks, after resolving symlinks and `..`, that the result lies
inside the template's own directory (the part before the first placeholder).

The fields of a template (TEMPLATE_FIELDS):

- `{stream}`: the stream id (a `files` source names each stream after its
  file's stem, with `-2`, `-3`, ... for a stem seen before);
- `{stem}`: the input file's name without its extension (`song` for
  `music/song.flac`);
- `{ext}`: the input file's extension without the dot (`flac`);
- `{index}`: the input file's position among the source's files, from 1.

`{stem}`, `{ext}` and `{index}` describe an input file, so they are given per
stream (`fields=`; a run config works them out from its `files` source); a
stream without them has its id as `{stem}`.

    >>> safe_stream_name("song-01")
    'song-01'
    >>> safe_stream_name("../etc/passwd")
    '___etc_passwd-7fef78f5'
    >>> render_path_template("out/{stream}.mp3", "a/../../b").as_posix()
    'out/a_.._.._b-feddf167.mp3'
"""

from __future__ import annotations

import hashlib
import os
import string
from pathlib import Path

from flowengine.errors import ConfigError

__all__ = ["PathTemplateError", "safe_stream_name", "render_path_template", "check_path_template",
           "resolve_in", "template_base_dir", "has_stream_field", "has_template_field",
           "template_fields", "TEMPLATE_FIELDS", "FILE_FIELDS", "MAX_NAME_BYTES"]

TEMPLATE_FIELDS = ("stream", "stem", "ext", "index")
FILE_FIELDS = ("stem", "ext", "index")          # the ones that describe an input file
# Longest sanitised name in UTF-8 bytes before the hash suffix: far below the usual 255-byte
# limit of one path component, leaving room for the template's own prefix and extension.
MAX_NAME_BYTES = 96
_HASH_CHARS = 8
# Besides letters and digits (any script), the characters kept as they are.
_KEPT = frozenset("-_.+=@,")
# Names Windows refuses for a file whatever the extension (CON.mp3 is the console device).
_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                       *(f"LPT{i}" for i in range(1, 10))})


class PathTemplateError(ConfigError):
    """A path template that is malformed, or whose rendering would leave its directory."""

    def __init__(self, message: str, *, template: str, stream: str | None = None) -> None:
        super().__init__(message)
        self.template = template
        self.stream = stream


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")   # never half a character


def safe_stream_name(stream_id: object) -> str:
    """`stream_id` as one safe path component: letters, digits and `-_.+=@,` only, no leading
    dot, not empty, at most MAX_NAME_BYTES (+ 9) bytes. Deterministic; when anything had to
    change, `-` and 8 hex digits of the id's SHA-256 are appended so different ids stay apart.
    """
    original = str(stream_id)
    name = "".join(ch if ch.isalnum() or ch in _KEPT else "_" for ch in original)
    stripped = name.lstrip(".")
    name = "_" * (len(name) - len(stripped)) + stripped     # no ".", "..", or hidden files
    name = _truncate_utf8(name, MAX_NAME_BYTES) or "_"
    if name.split(".")[0].upper() in _RESERVED:
        name = "_" + name
    if name != original:
        digest = hashlib.sha256(original.encode("utf-8", errors="surrogatepass")).hexdigest()
        name = f"{name}-{digest[:_HASH_CHARS]}"
    return name


def _fields(template: str) -> list[str]:
    """The placeholders of `template`; PathTemplateError for anything but plain fields."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise PathTemplateError(f"path template {template!r} is malformed: {exc} (write a literal "
                                f"brace as '{{{{' or '}}}}')", template=template) from None
    fields = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            raise PathTemplateError(f"path template {template!r}: unknown placeholder "
                                    f"{{{name}}}: expected one of "
                                    f"{', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}",
                                    template=template)
        if conversion or spec:
            raise PathTemplateError(f"path template {template!r}: {{{name}}} takes no "
                                    f"conversion or format spec", template=template)
        fields.append(name)
    return fields


def check_path_template(template: str) -> None:
    """Raise PathTemplateError when `template` has placeholders other than TEMPLATE_FIELDS."""
    _fields(template)


def template_fields(template: str) -> list[str]:
    """The fields `template` uses, in order (PathTemplateError when it is malformed)."""
    return _fields(template)


def has_template_field(path: str | os.PathLike) -> bool:
    """True when `path` contains a field ({stream}, {stem}, ...): a template giving each
    stream its own file. (Other braces stay literal in a plain path; in a template they must
    be doubled.)"""
    path = os.fspath(path)
    return any("{" + name + "}" in path for name in TEMPLATE_FIELDS)


has_stream_field = has_template_field       # its name from when {stream} was the only field


def template_base_dir(template: str) -> Path:
    """The directory every rendering of `template` must stay in: its leading components
    without a placeholder ("out/{stream}/x.mp3" -> "out"; "{stream}.wav" -> ".")."""
    parts = Path(template).parts
    static = []
    for part in parts[:-1]:
        if "{" in part or "}" in part:
            break
        static.append(part)
    return Path(*static) if static else Path(".")


def resolve_in(path: Path, real_dirs: dict[Path, Path]) -> Path:
    """`path.resolve()`, resolving each directory once for all the paths that share
    `real_dirs`: a name that is not a symlink resolves to its directory's real path joined
    with it (one lstat, where resolving the whole path costs one per component). For the
    thousands of files of a folder, and the output path of each."""
    parent, name = path.parent, path.name
    if name in ("", ".", "..") or os.path.islink(path):
        return path.resolve()
    real = real_dirs.get(parent)
    if real is None:
        real = real_dirs[parent] = parent.resolve()
    return real / name


def render_path_template(template: str | os.PathLike, stream: object,
                         base_dir: str | os.PathLike | None = None,
                         fields: dict[str, object] | None = None,
                         real_dirs: dict[Path, Path] | None = None) -> Path:
    """`template` with {stream} replaced by safe_stream_name(stream) and the file fields by
    theirs (`fields`: stem, ext, index; a missing stem is the stream id), guaranteed to
    resolve inside `base_dir` (default: template_base_dir(template)); otherwise
    PathTemplateError naming the stream and the template. `real_dirs`: directories resolved
    already (see resolve_in), shared by the renderings of one template for many streams."""
    template = os.fspath(template)
    used = _fields(template)
    values = {"stream": stream, "stem": stream, **(fields or {})}
    missing = [name for name in used if name not in values]
    if missing:
        raise PathTemplateError(f"stream {str(stream)!r}: path template {template!r} uses "
                                f"{', '.join('{' + m + '}' for m in missing)}, which name an "
                                f"input file, and this stream does not come from one",
                                template=template, stream=str(stream))
    rendered = Path(template.format(**{name: safe_stream_name(values[name]) for name in used}))
    base = Path(base_dir) if base_dir is not None else template_base_dir(template)
    real_dirs = {} if real_dirs is None else real_dirs
    root = resolve_in(base, real_dirs)
    target = resolve_in(rendered, real_dirs)
    if target == root or not target.is_relative_to(root):
        raise PathTemplateError(f"stream {str(stream)!r}: path template {template!r} gives "
                                f"'{rendered}', which resolves to '{target}', outside the "
                                f"output directory '{root}'", template=template,
                                stream=str(stream))
    return rendered
