"""Formats joined at plan time: a `resample` stage inserted on each edge whose formats disagree.

As GStreamer's `audioconvert ! audioresample`, but visible: validation
(validate.py) finds every PCM edge where what a stage gives does not meet
what the next one takes (a sample rate Opus does not encode, a mixer's inputs
at two rates, a processor's declared sample type, a file sink writing .opus
at 44.1 kHz) and a conversion can join them; `insert_joins` then returns the
same run with a `resample` stage on each such edge, which is validated again.
The planner and both runners see one more stage; `flowengine plan` lists it
on its edge, and `strict: true` (on the run) refuses such an edge instead.

A join is named `<downstream>.join` (`<downstream>.join.<upstream>` when the
stage has several joined inputs, a number appended if the name is taken),
reads from the upstream stage and feeds the downstream one, and runs as many
replicas as the stage it feeds (its streams are the same ones), with its
error policy and fusion (`fuse_with`). Where its worker runs is the planner's
choice, as for any stage: a chain that shares out whole streams (a `files`
source to a replicated sink) runs in one process per replica, join included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowengine.config.model import RunConfig, StageConfig
from flowengine.config.source import ConfigSource
from flowengine.ops.io.multifile import first_free

__all__ = ["JoinNeed", "Join", "insert_joins"]


@dataclass(frozen=True)
class JoinNeed:
    """An edge whose formats a conversion must join: to `target` (resample's parameters)."""

    upstream: str
    downstream: str
    target: dict[str, Any]
    reason: str                 # 'sample rate mismatch: stage 'a' gives ..., but x takes ...'
    where: tuple                # the YAML path errors about it point at
    label: str = ""             # the downstream stage as errors name it

    def describe(self) -> str:
        """'sample_rate: 48000, channels: 1': what the conversion changes."""
        return ", ".join(f"{key}: {value}" for key, value in self.target.items())


@dataclass(frozen=True)
class Join:
    """A conversion inserted on the edge upstream -> downstream, as the stage `stage`."""

    upstream: str
    downstream: str
    stage: str
    params: dict[str, Any]
    reason: str

    def describe(self) -> str:
        """'sink.join (resample sample_rate: 48000): <reason>', for plan and validate."""
        params = ", ".join(f"{key}: {value}" for key, value in self.params.items())
        return f"{self.stage} (resample {params}): {self.reason}"


def _join_names(needs: list[JoinNeed], taken: set[str]) -> list[str]:
    per_stage: dict[str, int] = {}
    for need in needs:
        per_stage[need.downstream] = per_stage.get(need.downstream, 0) + 1
    return [first_free(f"{need.downstream}.join" if per_stage[need.downstream] == 1
                       else f"{need.downstream}.join.{need.upstream}", taken)
            for need in needs]


def insert_joins(config: RunConfig, source: ConfigSource, inputs: dict[str, list[str]],
                 needs: list[JoinNeed]) -> tuple[RunConfig, ConfigSource, list[Join]]:
    """`config` with a join stage before each stage that needs one on an input (`inputs`:
    every stage's resolved inputs), the source's lines moved with their stages, and the
    joins made."""
    names = _join_names(needs, {stage.label for stage in config.stages})
    joins = [Join(need.upstream, need.downstream, name, dict(need.target), need.reason)
             for need, name in zip(needs, names)]
    stages: list[StageConfig] = []
    moved: dict[int, int] = {}          # old stage index -> new
    for index, stage in enumerate(config.stages):
        mine = [join for join in joins if join.downstream == stage.label]
        for join in mine:
            stages.append(StageConfig(
                name=join.stage, op="resample", params=dict(join.params),
                inputs=[join.upstream], replicas=stage.replicas, hwm=stage.hwm,
                on_error=stage.on_error, max_errors=stage.max_errors,
                fuse_with=stage.fuse_with))
        if mine:
            replaced = {join.upstream: join.stage for join in mine}
            stage = stage.model_copy(update={
                "inputs": [replaced.get(name, name) for name in inputs.get(stage.label, [])]})
        moved[index] = len(stages)
        stages.append(stage)
    fuse = config.fuse
    if isinstance(fuse, list):      # (`fuse: auto` groups the joins with the rest)
        fuse = [_fuse_group(group, joins) for group in fuse]
    joined = config.model_copy(update={"stages": stages, "fuse": fuse})
    return joined, _moved_source(source, moved), joins


def _fuse_group(group: list[str], joins: list[Join]) -> list[str]:
    """A `fuse` group with each join placed before the stage it feeds, when both ends of its
    edge are in the group (the group stays a chain)."""
    result: list[str] = []
    for name in group:
        result += [join.stage for join in joins
                   if join.downstream == name and join.upstream in group]
        result.append(name)
    return result


def _moved_source(source: ConfigSource, moved: dict[int, int]) -> ConfigSource:
    """The source with ("stages", i, ...) lines and overrides under the stages' new indices."""
    def move(path: tuple) -> tuple:
        if len(path) >= 2 and path[0] == "stages" and isinstance(path[1], int) \
                and path[1] in moved:
            return ("stages", moved[path[1]]) + tuple(path[2:])
        return path
    return ConfigSource(source.data, source.filename,
                        {move(path): line for path, line in source.lines.items()},
                        {move(path): text for path, text in source.overrides.items()})
