"""Operator fusion: which consecutive stages run inside one worker.

Two spellings in the YAML, which may be combined:

    fuse: [resample, gain]            # run level: one group (or a list of groups)
    stages:
      - {name: gain, op: gain, fuse_with: previous}    # per stage: join the stage before

A group is a chain: each member after the first has the member before as its
only input, and each member but the last feeds only the next one. No member
is a source or a multi-input stage (mixer); all have the same `replicas`,
error policy and no `ordered`. The engine runs a group as one stage (named
after its last member, whose output it gives) with a `Pipeline` of the
members per stream; the samples and bytes are the same as unfused.

`fusion_groups` is pure: the validator reports its errors with file:line, the
plan builder uses its groups.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowengine.errors import ConfigError

__all__ = ["FusionStage", "fusion_groups"]


@dataclass(frozen=True)
class FusionStage:
    """What fusion needs to know about one stage."""

    name: str
    inputs: tuple[str, ...]
    consumers: tuple[str, ...]
    source: bool = False
    multi_input: bool = False
    fuse_with_previous: bool = False
    replicas: object = 1
    on_error: str = "fail"
    max_errors: int | None = None
    ordered: bool = False


def fusion_groups(stages: list[FusionStage], fuse: list[list[str]] | None) -> list[list[str]]:
    """The fused groups, each in chain order; ConfigError naming the first problem."""
    by_name = {s.name: s for s in stages}
    groups: list[list[str]] = []
    for group in fuse or []:
        for name in group:
            if name not in by_name:
                raise ConfigError(f"fuse: no stage named {name!r}")
        groups.append(list(group))
    for index, stage in enumerate(stages):
        if not stage.fuse_with_previous:
            continue
        if index == 0 or len(stage.inputs) != 1:
            raise ConfigError(f"stage {stage.name!r}: fuse_with: previous needs exactly one "
                              f"input, the stage before it")
        previous = stage.inputs[0]
        home = next((g for g in groups if g[-1] == previous), None)
        if home is not None:
            home.append(stage.name)
        else:
            groups.append([previous, stage.name])
    seen: set[str] = set()
    for group in groups:
        _check_group(group, by_name, seen)
    return groups


def _check_group(group: list[str], by_name: dict[str, FusionStage], seen: set[str]) -> None:
    where = f"fuse [{', '.join(group)}]"
    if len(group) < 2:
        raise ConfigError(f"{where}: a fused group needs at least two stages")
    for name in group:
        if name in seen:
            raise ConfigError(f"{where}: stage {name!r} is in two fused groups")
        seen.add(name)
        stage = by_name[name]
        if stage.source or stage.multi_input:
            what = "a source" if stage.source else "a multi-input stage"
            raise ConfigError(f"{where}: stage {name!r} is {what} and cannot be fused")
        if stage.ordered:
            raise ConfigError(f"{where}: stage {name!r} is ordered (spread over replicas); "
                              f"remove 'ordered' or do not fuse it")
    for before, after in zip(group, group[1:]):
        if by_name[after].inputs != (before,) or by_name[before].consumers != (after,):
            raise ConfigError(f"{where}: {after!r} must read only from {before!r} and "
                              f"{before!r} feed only {after!r} (a fused group is a chain)")
    first = by_name[group[0]]
    for name in group[1:]:
        stage = by_name[name]
        for key in ("replicas", "on_error", "max_errors"):
            if getattr(stage, key) != getattr(first, key):
                raise ConfigError(f"{where}: stage {name!r} has {key}="
                                  f"{getattr(stage, key)!r} but {group[0]!r} has "
                                  f"{getattr(first, key)!r}; a fused group runs as one stage")
