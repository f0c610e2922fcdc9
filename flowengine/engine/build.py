"""RunConfig → Plan: stage names, edges, replicas, endpoints and HWMs, before any process starts.

- A stage's name is its ``name`` or its operator name; names are unique.
- A stage without ``inputs`` reads from the stage before it; a source reads
  from nothing. Several ``inputs`` = fan-in (the streams of every input share
  the inbox, one node per stream); several stages naming the same input =
  fan-out (each gets every message).
- Buffer kinds must agree on every edge (PCM into a PCM input, packets into
  a packet input).
- ``replicas: auto`` is one per usable core. A source has one replica (two
  would produce the same streams twice).
- Routing (``flowengine.engine.worker.routing``): an edge into a stage with
  ``ordered: true`` is balanced (each data message goes to a replica with
  room, with a per-replica HWM of ``hwm // replicas``); an edge out of an
  ordered stage, or of a stage with ``restart: on-failure``, is hashed
  (sticky by crc32 of the stream id: every replica of an ordered stage sends
  parts of the same stream, and they must meet; a replacement continues its
  predecessor's streams on the same replicas); every other edge is
  sticky, each sender putting a new stream on the replica with the fewest
  open streams. Only a stateless operator may be ordered, and the stage
  after it (never itself ordered, never missing: a sink cannot restore order)
  merges the parts back in order.
- Endpoints: ``ipc://`` sockets in a private directory made with
  ``tempfile.mkdtemp`` (``Plan.run_dir``; the engine removes it at the end of
  the run, whatever the outcome, and the next plan removes those of runs
  whose coordinator died: ``control/rundirs.py``), or
  ``tcp://127.0.0.1:<free port>``.
- ``security.curve``: the keys of ``security.keys`` go into the plan as
  plain strings; only replicas that bind an inbox get the server secret.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field

from flowengine.core.fusion import FUSE_AUTO, FusionStage, auto_layout, fusion_groups
from flowengine.config.model import RunConfig
from flowengine.config.restart_rules import restart_problem
from flowengine.errors import ConfigError
from flowengine.core.lookup import OperatorInfo, kind_of, resolve_operator
from flowengine.engine.control.rundirs import make_run_dir
from flowengine.engine.plan import OutputEdge, Plan, StagePart, StagePlan, WorkerSpec, auto_replicas, \
    sender_id
from flowengine.engine.worker.routing import BALANCED, HASHED, STICKY, reorder_window
from flowengine.config.keys import CurveKeys, load_keys
from flowengine.core.stage import FusedMember, node_values, paced, with_stage_on_error

__all__ = ["build_plan", "resolve_stage_inputs", "DEFAULT_HWM"]

DEFAULT_HWM = 64
_ANY = "any"


@dataclass
class _Stage:
    name: str
    info: OperatorInfo
    config: object
    inputs: list[str]
    replicas: int
    members: list["_Stage"] = field(default_factory=list)   # the stages of a fused group

    @property
    def op(self) -> str:
        return self.info.name if self.members else self.config.op


def _whole_streams(stages: list[_Stage], config: RunConfig) -> tuple[list[_Stage], list[str]]:
    """The cheap layout for many streams (DESIGN §4): a source that can share out its streams
    (`files`, `tones`) followed by a plain chain of stages, replicated, ending in a sink, runs
    as N copies of the whole chain: each replica reads its share of the streams, processes
    and writes them in one process, and no audio crosses between processes. Moving PCM
    between processes costs more than most of the chain (~35 us per 1024-sample block).
    A stage the user fused (`fuse:`, `fuse_with`) keeps the user's layout. Returns the stages
    and a note per choice, for `flowengine plan`."""
    user_fused = {name for group in _explicit_groups(config) for name in group} | \
        {s.name for s in stages if s.config.fuse_with == "previous"} | \
        {s.config.inputs[0] for s in stages if s.config.fuse_with == "previous" and s.config.inputs}
    by_name = {s.name: s for s in stages}
    consumers = {s.name: [c for c in stages if s.name in c.inputs] for s in stages}
    notes: list[str] = []
    for source in [s for s in stages if s.info.shares_streams and s.name not in user_fused]:
        chain = _chain_after(source, consumers, user_fused)
        if not chain:
            continue
        replicas = max(stage.replicas for stage in chain)
        if replicas < 2 or any((s.config.on_error, s.config.max_errors) !=
                               (chain[0].config.on_error, chain[0].config.max_errors)
                               for s in chain):
            continue
        # On a cluster each replica of the group runs where the chain asks (the source runs
        # in every replica: it may ask for nothing or the same).
        placements = {repr(_placement(s.config)) for s in chain}
        if config.cluster.engine == "ray" and (len(placements) > 1 or (
                source.config.placement is not None and
                repr(_placement(source.config)) not in placements)):
            notes.append(f"whole streams per replica: not for {source.name!r} and the chain "
                         f"after it: their stages ask for different placements, so each "
                         f"runs where it asks")
            continue
        names = [stage.name for stage in chain]
        info = OperatorInfo("streams:" + "+".join([source.name] + names), "source", None,
                            chain[-1].info.output_kind)
        group = _Stage(chain[-1].name, info, chain[0].config, [], replicas, [source] + chain)
        position = stages.index(source)
        stages = [s for s in stages if s is not source and s not in chain]
        stages.insert(position, group)
        by_name[group.name] = group
        notes.append(f"whole streams per replica: {source.name!r} ({source.config.op}) gives "
                     f"many streams and {', '.join(map(repr, names))} run with {replicas} "
                     f"replicas, so each of {replicas} workers reads its share of the streams "
                     f"and runs {' -> '.join([source.name] + names)} on them: no audio crosses "
                     f"between processes (to lay it out yourself, fuse the stages with `fuse:`)")
    return stages, notes


def _chain_after(source: _Stage, consumers: dict[str, list[_Stage]],
                 user_fused: set[str]) -> list[_Stage]:
    """The stages after `source` when they are one plain chain ending in a sink: each reads
    only the one before and feeds only the next, with one node per stream (no mixer, no
    ordered stage) and no restart policy. Else []."""
    chain, stage = [], source
    while consumers[stage.name]:
        if len(consumers[stage.name]) != 1:
            return []
        stage = consumers[stage.name][0]
        if len(stage.inputs) != 1 or stage.info.multi_input or stage.config.ordered \
                or stage.config.restart != "never" or stage.name in user_fused:
            return []
        chain.append(stage)
    return chain if chain and chain[-1].info.output_kind is None else []


def _placement(stage_config: object) -> dict | None:
    """A stage's `placement:` as plain data for the plan (cluster engine ray), or None."""
    placement = getattr(stage_config, "placement", None)
    return placement.model_dump() if placement is not None else None


def _explicit_groups(config: RunConfig) -> list[list[str]]:
    """The run's `fuse` groups as written (none with `fuse: auto`)."""
    return config.fuse if isinstance(config.fuse, list) else []


def _fuse(stages: list[_Stage], config: RunConfig) -> tuple[list[_Stage], list[str]]:
    """Each fused group becomes one stage named after its last member (core/fusion.py); with
    `fuse: auto` the groups are the planner's, said why in the notes."""
    consumers = {s.name: tuple(c.name for c in stages if s.name in c.inputs) for s in stages}
    fusion = [FusionStage(
        s.name, tuple(s.inputs), consumers[s.name], source=s.info.input_kind is None,
        multi_input=s.info.multi_input, fuse_with_previous=s.config.fuse_with == "previous",
        replicas=s.replicas, on_error=s.config.on_error, max_errors=s.config.max_errors,
        ordered=s.config.ordered, restart=s.config.restart,
        placed=config.cluster.engine != "local" and s.config.placement is not None,
        cost=sum(m.info.cost for m in s.members) if s.members else s.info.cost)
        for s in stages]
    groups, notes = fusion_groups(fusion, _explicit_groups(config)), []
    if config.fuse == FUSE_AUTO:
        planned, notes = _auto_groups(fusion)
        groups += planned
    by_name = {s.name: s for s in stages}
    group_of = {name: group for group in groups for name in group}
    fused: list[_Stage] = []
    for stage in stages:
        group = group_of.get(stage.name)
        if group is None:
            fused.append(stage)
        elif stage.name == group[-1]:
            members = [by_name[name] for name in group]
            first = members[0]
            info = OperatorInfo("fused:" + "+".join(group),
                                kind_of(first.info.input_kind, stage.info.output_kind),
                                first.info.input_kind, stage.info.output_kind)
            fused.append(_Stage(stage.name, info, first.config, first.inputs, first.replicas,
                                members))
    return fused, notes


def _auto_groups(fusion: list[FusionStage]) -> tuple[list[list[str]], list[str]]:
    """`fuse: auto`'s groups for this machine's cores, and the notes that say why."""
    chains, alone = auto_layout(fusion, auto_replicas())
    notes = [f"fuse: auto grouped {chain.describe()}" for chain in chains
             if sum(map(len, chain.groups)) > 1]
    if not notes:
        notes.append("fuse: auto found no chain of two or more stages left to group")
    left = [f"{name} ({why})" for name, why in alone.items()]
    if left:
        notes.append(f"fuse: auto left alone: {', '.join(left)}")
    return [group for chain in chains for group in chain.groups if len(group) > 1], notes


def resolve_stage_inputs(config: RunConfig) -> list[tuple[str, list[str]]]:
    """(name, inputs) per stage, with names defaulted and inputs defaulted to the stage before."""
    resolved: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    for index, stage in enumerate(config.stages):
        name = stage.label
        if name in seen:
            raise ConfigError(f"stages[{index}]: duplicate stage name {name!r}: give one of "
                              f"them a 'name'")
        seen.add(name)
        if stage.inputs is not None:
            inputs = list(stage.inputs)
        else:
            inputs = [resolved[-1][0]] if resolved else []
        for upstream in inputs:
            if upstream not in seen or upstream == name:
                raise ConfigError(f"stage {name!r}: input {upstream!r} is not a stage defined "
                                  f"before it")
        resolved.append((name, inputs))
    return resolved


def _stages(config: RunConfig) -> list[_Stage]:
    stages = []
    for stage_config, (name, inputs) in zip(config.stages, resolve_stage_inputs(config)):
        stage_config = with_stage_on_error(stage_config)
        info = resolve_operator(stage_config.op, stage_config.params)
        replicas = auto_replicas() if stage_config.replicas == "auto" else stage_config.replicas
        if info.input_kind is None:
            if stage_config.inputs:
                raise ConfigError(f"stage {name!r}: operator {info.name!r} is a source and "
                                  f"takes no inputs")
            inputs = []
            if replicas != 1:
                raise ConfigError(f"stage {name!r}: a source runs as one replica, got "
                                  f"replicas={replicas}")
        elif not inputs:
            raise ConfigError(f"stage {name!r}: operator {info.name!r} needs an input but no "
                              f"stage comes before it")
        if info.multi_input and replicas != 1:
            raise ConfigError(f"stage {name!r}: operator {info.name!r} takes every input in one "
                              f"node, so it runs as one replica, got replicas={replicas}")
        stages.append(_Stage(name, info, stage_config, inputs, replicas))
    _check_ordered(stages)
    _check_restart(stages)
    return stages


def _check_restart(stages: list[_Stage]) -> None:
    """`restart: on-failure` only where a replacement can resume (config/restart_rules.py)."""
    for stage in stages:
        if stage.config.restart != "on-failure":
            continue
        problem = restart_problem(
            has_input=stage.info.input_kind is not None,
            has_output=stage.info.output_kind is not None,
            multi_input=stage.info.multi_input, ordered=stage.config.ordered,
            feeds_ordered=any(s.config.ordered for s in stages if stage.name in s.inputs))
        if problem:
            raise ConfigError(f"stage {stage.name!r}: restart: on-failure: {problem}")


def _check_ordered(stages: list[_Stage]) -> None:
    """`ordered: true` spreads a stream over replicas: only where order can come back."""
    by_name = {stage.name: stage for stage in stages}
    consumers = {stage.name: [s for s in stages if stage.name in s.inputs] for stage in stages}
    for stage in stages:
        if not stage.config.ordered:
            continue
        where = f"stage {stage.name!r}: ordered: true"
        if stage.info.stateful:
            raise ConfigError(f"{where} spreads each stream over the replicas, but operator "
                              f"{stage.info.name!r} is stateful (it must see a whole stream on "
                              f"one replica); remove 'ordered'")
        if stage.info.input_kind is None or stage.info.output_kind is None:
            what = "a source" if stage.info.input_kind is None else "a sink"
            raise ConfigError(f"{where} needs a stage after it to restore the order, but "
                              f"{stage.info.name!r} is {what}; remove 'ordered'")
        if not consumers[stage.name]:
            raise ConfigError(f"{where} needs a stage after it to restore the order")
        for upstream in stage.inputs:
            if by_name[upstream].config.ordered:
                raise ConfigError(f"{where} reads from ordered stage {upstream!r}: two ordered "
                                  f"stages in a row are not supported; remove 'ordered' from "
                                  f"one of them")


def _check_edge(upstream: _Stage, downstream: _Stage) -> None:
    out_kind, in_kind = upstream.info.output_kind, downstream.info.input_kind
    if out_kind is None:
        raise ConfigError(f"stage {downstream.name!r}: input {upstream.name!r} is a sink and "
                          f"has no output")
    if in_kind != _ANY and out_kind != in_kind:
        raise ConfigError(f"stage {downstream.name!r}: takes {in_kind} buffers but its input "
                          f"{upstream.name!r} outputs {out_kind} buffers")


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _routing(sender: _Stage, receiver: _Stage) -> str:
    """How `sender` spreads its messages over the replicas of `receiver` (``routing.py``).
    Hashed where the choice must not live in one process: an ordered stage's replicas send
    parts of one stream, and a replacement of a restarting sender must find its
    predecessor's replica for the streams it continues."""
    if receiver.config.ordered:
        return BALANCED
    if sender.config.ordered or sender.config.restart == "on-failure":
        return HASHED
    return STICKY


def _inbox_hwm(stage: _Stage) -> int:
    """HWM of one replica's inbox. An ordered stage splits its hwm over its replicas: the
    sender picks a replica with room, so small queues keep a slow one from hoarding work."""
    hwm = stage.config.hwm or DEFAULT_HWM
    return max(1, hwm // stage.replicas) if stage.config.ordered else hwm


def _restarts_losslessly(stage: _Stage, by_name: dict[str, _Stage]) -> bool:
    """A stateless stage (one output per input) fed by sticky edges restarts without loss
    (replay.py); a stateful or fused one restarts with a reported gap. So does one fed by a
    stage that restarts with a gap: that stage's replacement numbers its streams from 0
    again, which the consumers would take for duplicates."""
    return stage.config.restart == "on-failure" and not stage.info.stateful and \
        not stage.members and not any(by_name[i].config.ordered for i in stage.inputs) and \
        all(by_name[i].config.restart != "on-failure" or _restarts_losslessly(by_name[i], by_name)
            for i in stage.inputs)


def _replay_fields(stage: _Stage, replica: int, by_name: dict[str, _Stage],
                   consumers: dict[str, list[str]], lossless: set[str]) -> dict:
    """The WorkerSpec fields of replica `replica` of `stage` for lossless restarts."""
    into = [by_name[c] for c in consumers[stage.name] if c in lossless]
    fed_by = [by_name[i] for i in stage.inputs if i in lossless]
    return dict(
        replay=stage.name in lossless,
        replay_to=[sender_id(c.name, r) for c in into for r in range(c.replicas)],
        replay_messages=min((c.config.replay_messages for c in into), default=0),
        replay_bytes=min((c.config.replay_bytes for c in into), default=0),
        indexed_senders=[sender_id(i.name, r) for i in fed_by for r in range(i.replicas)],
        ack_every=min((max(1, i.config.replay_messages // 4) for i in fed_by), default=0))


def _live_stages(stages: list[_Stage], by_name: dict[str, _Stage]) -> set[str]:
    """The stages whose every stream is live: a paced source (one that leads a group too),
    and a stage whose inputs are all live. Their edges queue more, smaller batches
    (``outbox.batching``)."""
    live: dict[str, bool] = {}

    def is_live(stage: _Stage) -> bool:
        if stage.name not in live:
            head = stage.members[0] if stage.members else stage
            live[stage.name] = paced(head.config.params) if not stage.inputs else \
                all(is_live(by_name[name]) for name in stage.inputs)
        return live[stage.name]

    return {stage.name for stage in stages if is_live(stage)}


def _curve_keys(config: RunConfig) -> CurveKeys | None:
    security = config.security
    if not security.curve:
        return None
    if security.keys is None:
        raise ConfigError("security.curve: CURVE needs 'keys': a directory made by "
                          "`flowengine keys DIR`")
    return load_keys(security.keys)


def build_plan(config: RunConfig, *, run_dir: str | None = None,
               stats_interval: float = 1.0) -> Plan:
    """Plan the run described by `config`. Creates `run_dir` (a fresh temp dir by default).
    `stats_interval`: seconds between a worker's stats (its heartbeat)."""
    # Checked before anything is made; the workers divide by it (their stats grid).
    if not (isinstance(stats_interval, (int, float)) and not isinstance(stats_interval, bool)
            and math.isfinite(stats_interval) and stats_interval > 0):
        raise ConfigError(f"build_plan: stats_interval must be a positive number of seconds, "
                          f"got {stats_interval!r}")
    stages, notes = _whole_streams(_stages(config), config)
    stages, fuse_notes = _fuse(stages, config)
    notes += fuse_notes
    by_name = {stage.name: stage for stage in stages}
    consumers: dict[str, list[str]] = {stage.name: [] for stage in stages}
    for stage in stages:
        for upstream in stage.inputs:
            _check_edge(by_name[upstream], stage)
            consumers[upstream].append(stage.name)
    curve = _curve_keys(config)

    # A fresh one is locked by this process until the run removes it, and what dead runs
    # left beside it goes first (rundirs.py).
    run_dir = run_dir or make_run_dir()
    os.makedirs(run_dir, exist_ok=True)
    # With a cluster, these tcp:// endpoints are placeholders: the launcher gives each the
    # address of the host that binds it (engine/cluster/ray_launcher.py).
    # Each host reads the CURVE keys from its own copy of the key directory (never sent).
    cluster = {**config.cluster.model_dump(),
               "keys": (config.cluster.keys or config.security.keys) if curve else None} \
        if config.cluster.engine != "local" else None

    def endpoint(name: str) -> str:
        if config.transport == "tcp":
            return f"tcp://127.0.0.1:{_free_tcp_port()}"
        return f"ipc://{os.path.join(run_dir, name)}"

    control = endpoint("control")
    inboxes = {stage.name: [endpoint(f"s{i}r{r}") if stage.inputs else None
                            for r in range(stage.replicas)]
               for i, stage in enumerate(stages)}
    lossless = {s.name for s in stages if _restarts_losslessly(s, by_name)}
    live = _live_stages(stages, by_name)
    plans = []
    for stage in stages:
        hwm = _inbox_hwm(stage)
        outputs = [OutputEdge(name, inboxes[name], _inbox_hwm(by_name[name]),
                              _routing(stage, by_name[name]))
                   for name in consumers[stage.name]]
        upstream = [sender_id(name, r) for name in stage.inputs
                    for r in range(by_name[name].replicas)]
        ordered_inputs = [by_name[name] for name in stage.inputs if by_name[name].config.ordered]
        merge_senders = [sender_id(s.name, r) for s in ordered_inputs for r in range(s.replicas)]
        window = max((reorder_window(s.replicas, s.config.hwm or DEFAULT_HWM, hwm)
                      for s in ordered_inputs), default=0)
        members = [FusedMember(m.name, m.config.op, dict(m.config.params),
                               node_values(m.config.op, m.info.kind, m.config.params,
                                           config.block_samples))
                   for m in stage.members]
        whole = bool(members) and stage.members[0].info.input_kind is None
        # Whole streams per replica (or a `fuse: auto` group led by its source): the source,
        # then the chain after it per stream.
        fused, chain = ([], members) if whole else (members, [])
        head = stage.members[0] if whole else stage
        head_values = members[0].values if whole else None if fused else node_values(
            stage.op, stage.info.kind, stage.config.params, config.block_samples)
        workers = [WorkerSpec(stage=stage.name, replica=r,
                              op=head.config.op if whole else stage.op,
                              params={} if fused else dict(head.config.params),
                              values=head_values,
                              kind=stage.info.kind, fused=fused, chain=chain,
                              share=_share(head, r, stage.replicas, run_dir)
                              if whole and stage.replicas > 1 else None,
                              control_endpoint=control, inbox_endpoint=inboxes[stage.name][r],
                              inbox_hwm=hwm, outputs=outputs, upstream=upstream,
                              on_error=stage.config.on_error, max_errors=stage.config.max_errors,
                              block_samples=config.block_samples,
                              stats_interval=stats_interval, ordered=stage.config.ordered,
                              merge_senders=merge_senders, reorder_window=window,
                              multi_input=stage.info.multi_input, live=stage.name in live,
                              restart=stage.config.restart,
                              max_restarts=stage.config.max_restarts,
                              **_replay_fields(stage, r, by_name, consumers, lossless),
                              curve=curve if curve is None or stage.inputs
                              else curve.without_server_secret())
                   for r in range(stage.replicas)]
        plans.append(StagePlan(name=stage.name, op=stage.op, kind=stage.info.kind,
                               input_kind=stage.info.input_kind,
                               output_kind=stage.info.output_kind, replicas=stage.replicas,
                               hwm=hwm, inputs=stage.inputs, outputs=consumers[stage.name],
                               workers=workers, ordered=stage.config.ordered,
                               fused=[m.name for m in stage.members],
                               parts=[StagePart(m.name, m.config.op, m.info.kind,
                                                dict(m.config.params))
                                      for m in stage.members] if whole else [],
                               placement=next(filter(None, map(_placement, (
                                   m.config for m in (stage.members or [stage])[::-1]))), None)
                               if cluster else None))
    return Plan(name=config.name, stages=plans, control_endpoint=control, run_dir=run_dir,
                curve=curve, notes=notes, cluster=cluster)


def _share(source: _Stage, replica: int, replicas: int, run_dir: str) -> dict:
    """How replica `replica` of a whole-streams group takes its share of the source's
    streams: offline, each claims the next unread stream when it is ready for one (files of
    any lengths spread evenly; claims are files made exclusively in the run directory); a
    paced source (all its streams at once, in real time) splits them by position."""
    if paced(source.config.params):
        return {"replica": replica, "replicas": replicas}
    return {"replica": replica, "replicas": replicas,
            "claims": os.path.join(run_dir, f"claims-{source.name}")}
