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

`fuse: auto` (run level) lets the planner choose the groups instead
(`auto_layout`): each chain of stages that may share a worker is cut into as
many groups as there are cores (fewer when the chain is shorter or
replicated, or where another cut would gain less than the hop costs),
contiguous, balanced by each operator's cost hint (OperatorSpec.cost) so
that the costliest group costs as little as possible. Stages the user fused
with `fuse_with` keep the user's groups. Unlike in the user's groups, a
source may lead the first group of its chain: the worker runs the source and
then the rest, as whole streams per replica do.

`fusion_groups` and `auto_layout` are pure: the validator reports their
errors with file:line, the plan builder uses their groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from flowengine.errors import ConfigError

__all__ = ["FUSE_AUTO", "HOP_COST", "FusionStage", "AutoChain", "fusion_groups",
           "auto_layout", "partition"]

FUSE_AUTO = "auto"
# What a cut between two groups costs, in cost-hint units (CPU per second of audio relative
# to the mp3 encoder's): sending float PCM (48 kHz stereo, 4096-sample blocks) took 0.025-
# 0.032 s of CPU per 60 s of audio (~40 us a block; docs/performance.md, session 6), 0.07-0.08
# of the encoder's 6.45 ms a second. A cut that gains less than that is not made.
HOP_COST = 0.08


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
    # For `fuse: auto` only: its restart policy, whether it asks for a cluster placement, and
    # its operator's cost hint (CPU per second of audio).
    restart: str = "never"
    placed: bool = False
    cost: float = 0.0


@dataclass(frozen=True)
class AutoChain:
    """What `fuse: auto` made of one chain: its groups in order (a group of one stage runs
    as itself), their costs, and the cores it was cut for."""

    groups: list[list[str]]
    costs: list[float]
    cores: int

    def describe(self) -> str:
        """'decode, resample | encode, sink on 2 cores (cost 0.27 | 1.1)'."""
        groups = " | ".join(", ".join(group) for group in self.groups)
        costs = " | ".join(f"{cost:.2g}" for cost in self.costs)
        cores = f"{self.cores} core" + ("s" if self.cores != 1 else "")
        return f"{groups} on {cores} (cost {costs})"


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


def _check_group(group: list[str], by_name: dict[str, FusionStage], seen: set[str],
                 lead_source: bool = False) -> None:
    """ConfigError unless `group` may run in one worker; `lead_source`: its first member may
    be a source (the planner's groups: the worker runs the source, then the rest)."""
    where = f"fuse [{', '.join(group)}]"
    if len(group) < 2:
        raise ConfigError(f"{where}: a fused group needs at least two stages")
    for name in group:
        if name in seen:
            raise ConfigError(f"{where}: stage {name!r} is in two fused groups")
        seen.add(name)
        stage = by_name[name]
        if stage.source and lead_source and name == group[0]:
            continue
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


def partition(costs: Sequence[float], k: int) -> list[int]:
    """Cut `costs`, in order, into min(k, len(costs)) contiguous non-empty runs so that the
    costliest run costs as little as possible (the linear partition problem, by dynamic
    programming: a chain is a few stages); the sizes of the runs. Of equal cuts the earliest
    wins."""
    n = len(costs)
    if n == 0:
        return []
    k = max(1, min(k, n))
    prefix = [0.0]
    for cost in costs:
        prefix.append(prefix[-1] + cost)
    # best[j][i]: the least possible cost of the costliest run when the first i costs make
    # j runs; cut[j][i]: where the last of those runs starts.
    best = [[math.inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0.0
    for j in range(1, k + 1):
        for i in range(j, n + 1):
            for start in range(j - 1, i):
                worst = max(best[j - 1][start], prefix[i] - prefix[start])
                if worst < best[j][i]:
                    best[j][i], cut[j][i] = worst, start
    sizes, end = [], n
    for j in range(k, 0, -1):
        sizes.append(end - cut[j][end])
        end = cut[j][end]
    return sizes[::-1]


def auto_layout(stages: list[FusionStage], cores: int
                ) -> tuple[list[AutoChain], dict[str, str]]:
    """`fuse: auto`: the chains of stages that may share a worker, each cut into groups
    balanced by cost (`partition`): at most as many as there are cores for its replicas
    (cores // replicas) and it has stages, and no more than it takes to come within a
    hop's cost of the best those allow (`_cut`); and the stages left alone, each with
    why. The rules of `fusion_groups` hold for the groups but one: a source may lead the
    first group of its chain, so a single stream takes no hop before its first group
    (measured in docs/performance.md). A stage with `restart: on-failure` or a cluster
    placement is left alone too (a fused stage restarts with a gap; a group runs on one
    host)."""
    user = {name for group in fusion_groups(stages, None) for name in group}
    by_name = {s.name: s for s in stages}
    chains: list[list[FusionStage]] = []
    last_of: dict[str, list[FusionStage]] = {}   # a chain by its last stage's name
    alone: dict[str, str] = {}
    for stage in stages:
        why = _not_grouped(stage, user)
        if why:
            alone[stage.name] = why
            continue
        chain = last_of.pop(stage.inputs[0], None) if len(stage.inputs) == 1 else None
        if chain is not None and _links(by_name[stage.inputs[0]], stage):
            chain.append(stage)
        else:
            chain = [stage]
            chains.append(chain)
        last_of[stage.name] = chain
    layouts = []
    per_core = sum(s.cost for s in stages) / max(1, cores)
    for chain in chains:
        replicas = chain[0].replicas if isinstance(chain[0].replicas, int) else cores
        costs = [s.cost for s in chain]
        groups, start = [], 0
        for size in _cut(costs, max(1, cores // replicas), per_core):
            groups.append(chain[start:start + size])
            start += size
        layouts.append(AutoChain([[s.name for s in group] for group in groups],
                                 [sum(s.cost for s in group) for group in groups], cores))
    seen = set(user)
    for group in (group for chain in layouts for group in chain.groups if len(group) > 1):
        _check_group(group, by_name, seen, lead_source=True)
    return layouts, alone


def _cut(costs: list[float], most: int, per_core: float) -> list[int]:
    """The sizes of a chain's groups: the fewest (up to `most`) whose costliest group comes
    within a hop's cost of the least that `most` groups, or a core's share of the run's cost
    (`per_core`: the chain runs beside the rest), allow. A cut that gains less than the hop
    it adds is not made."""
    cuts = [partition(costs, k) for k in range(1, min(most, len(costs)) + 1)]
    worst = [_costliest(costs, sizes) for sizes in cuts]
    enough = max(worst[-1], per_core) + HOP_COST
    return next(sizes for sizes, cost in zip(cuts, worst) if cost <= enough)


def _costliest(costs: list[float], sizes: list[int]) -> float:
    worst, start = 0.0, 0
    for size in sizes:
        worst = max(worst, sum(costs[start:start + size]))
        start += size
    return worst


def _not_grouped(stage: FusionStage, user: set[str]) -> str:
    """Why `fuse: auto` leaves `stage` alone, or ''."""
    if stage.name in user:
        return "fused by fuse_with"
    if stage.multi_input:
        return "several inputs in one node"
    if stage.ordered:
        return "ordered"
    if stage.restart != "never":
        return f"restart: {stage.restart}"
    if stage.placed:
        return "placed on the cluster"
    return ""


def _links(before: FusionStage, after: FusionStage) -> bool:
    """Whether `after` may join `before`'s group: it reads only `before`, which feeds only it,
    and they run alike (replicas, error policy)."""
    return before.consumers == (after.name,) and after.inputs == (before.name,) and all(
        getattr(before, key) == getattr(after, key)
        for key in ("replicas", "on_error", "max_errors"))
