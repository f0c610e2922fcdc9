"""Outputs in progress: a file sink writes `NAME.part` and renames it to `NAME` when complete.

A file sink never presents a short file under its final name: it writes to
`out/tone.mp3.part` in the same directory and only a successful finalize()
(the stream's whole end: encoder flushed, headers completed, file closed)
renames it to `out/tone.mp3` with `os.replace` (atomic on one filesystem). A
run that fails or is killed leaves the `.part` file as it was (whatever was
written up to the failure, often playable up to there) so the user can see
what was lost and inspect it; the final name then does not exist. Starting a
writer removes an old file of the final name, as writing it over would, so a
stale output of an earlier run cannot pass for this run's.

`incomplete_outputs` finds the `.part` files a failed run left, for its
error message; a `.part` another process holds locked (`outputlock`: a writer
still at work on it, e.g. another run of the same path) is not this run's.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable

from flowengine.ops.io.outputlock import held_by_another_process

__all__ = ["PART_SUFFIX", "part_path", "incomplete_outputs"]

PART_SUFFIX = ".part"


def part_path(path: str | os.PathLike) -> str:
    """Where the bytes of `path` are written until it is complete."""
    return os.fspath(path) + PART_SUFFIX


def incomplete_outputs(paths: Iterable[str], since: float | None = None) -> list[str]:
    """The `.part` files of these output paths (a `{stream}` template matches every stream),
    modified at or after `since` (a time.time() value) when given, and not locked by
    another process's writer. Sorted."""
    found: set[str] = set()
    for path in paths:
        pattern = glob.escape(path).replace(glob.escape("{stream}"), "*")
        for part in glob.glob(part_path(pattern)):
            try:
                modified = os.stat(part).st_mtime
            except OSError:
                continue        # renamed or removed meanwhile: not left incomplete
            if (since is None or modified >= since) and not held_by_another_process(part):
                found.add(part)
    return sorted(found)
