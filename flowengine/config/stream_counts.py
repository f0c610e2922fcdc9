"""How many streams flow through each stage, as far as the config says before the run.

Replicas split streams, not one stream: every stream sticks to one replica
of a stage (unless the stage is `ordered`, which spreads a stateless stage's
messages), so a stage with more replicas than streams leaves some idle.
`idle_replica_notes` says so for `flowengine plan` and `run`:
"stage 'encode': 2 replicas, 1 stream: one replica will idle".

Counted statically: a `tone` or `file_source` gives one stream, `files` one per
input file, `tones` its `streams`, `tcp_ingest` its `streams` (else unknown);
a mixer gives one; any other stage carries the streams of all its inputs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["stream_counts", "idle_replica_notes"]

_ONE_STREAM = {"tone", "file_source", "mix"}


def _source_streams(info: Any) -> int | None:
    if info.op in _ONE_STREAM:
        return 1
    if info.op == "files":
        found = info.input_files
        return len(found[0]) if found else None
    streams = info.params.get("streams")
    if info.op in ("tones", "tcp_ingest") and isinstance(streams, int) and streams > 0:
        return streams
    return 2 if info.op == "tones" and streams is None else None


def stream_counts(stages: list[Any]) -> dict[str, int | None]:
    """Stage name -> how many streams pass through it (None: known only at run time)."""
    counts: dict[str, int | None] = {}
    for info in stages:          # in order: a stage's inputs come before it
        if info.input_kind is None:
            counts[info.name] = _source_streams(info)
        elif info.op in _ONE_STREAM:
            counts[info.name] = 1
        else:
            upstream = [counts.get(name) for name in info.inputs]
            counts[info.name] = None if None in upstream or not upstream else sum(upstream)
    return counts


def idle_replica_notes(stages: list[Any], replicas: dict[str, int]) -> list[tuple[str, str]]:
    """(stage, note) for every stage with more replicas (`replicas`: as planned, 'auto'
    resolved) than streams, unless it spreads messages (`ordered`)."""
    counts = stream_counts(stages)
    notes = []
    for info in stages:
        planned, streams = replicas.get(info.name, 1), counts.get(info.name)
        if streams is None or planned <= streams or info.config.ordered:
            continue
        idle = planned - streams
        notes.append((info.name, f"stage {info.name!r}: {planned} replicas, {streams} "
                     f"stream{'s' if streams != 1 else ''}: "
                     f"{'one replica' if idle == 1 else f'{idle} replicas'} will idle "
                     f"(replicas share out streams, not one stream)"))
    return notes
