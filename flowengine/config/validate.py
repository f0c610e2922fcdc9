"""Semantic validation of a run config, complete before any process starts.

`validate_run(config, source)` checks what the pydantic model cannot:

- every operator exists (close names are suggested) and its parameters are
  known, present when required and of the right type (the registry's own
  validation, with its error pinned to the line of ``params.<key>``);
- stage names are unique, ``inputs`` name stages defined *before* (so the
  graph has no cycle), a source has no inputs, a sink feeds nothing;
- buffer kinds agree on every edge (PCM into a PCM input, packets into a
  packet input);
- a format parameter is written in one of the accepted forms, and the keys
  it leaves out are filled in from the stage's input (a file source: the
  file's own) where that is known before the run;
- sample rate, channel count and sample type agree wherever they are known
  statically (see `formats.py`); where they do not and a conversion can join
  them, a `resample` stage is inserted on that edge (`joins.py`), unless the
  run says `strict: true`, which makes each such edge a problem;
- input files exist (a `files` source's globs match something: checked when
  the source is built) and output directories are writable; a per-stream
  output path (`out/{stem}.mp3`) is a valid template that gives every input
  file its own output (names.py: two inputs on one name are a problem naming
  both); a ``file_sink``'s extension names a container it writes, which
  holds the codec of an encoder before it; no two file sinks write the same
  path, and no sink writes a file a ``file_source`` of the run reads;
- ``restart: on-failure`` only on stages a new worker can resume
  (``restart.py``: not a source, sink, mix or ordered stage);
- ``security.curve`` comes with ``transport: tcp`` and a ``keys`` directory
  whose keys load, secret files not readable by others;
- ``cluster: {engine: ray}`` has Ray installed and tcp:// (``cluster.py``).

Every problem names the stage, the key and file:line; all of them are
collected and raised together as one `ConfigValidationError`. On success the
result is a `ResolvedRun`: the graph with defaults filled in, the joins
inserted and the format inferred on every edge, which `flowengine plan`
prints and both runners follow.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pydantic

from flowengine.audio.format import FORMAT_FORMS, format_mapping, format_problem, is_complete_format
from flowengine.errors import ConfigError
from flowengine.config.formats import (StaticFormat, codec_of, infer_output_format,
                                       input_requirement, join_target, probe_file)
from flowengine.config.joins import Join, JoinNeed, insert_joins
from flowengine.config.names import check_output_names, input_files
from flowengine.core.fusion import FusionStage, fusion_groups
from flowengine.config.cluster import check_cluster
from flowengine.config.model import RunConfig, StageConfig
from flowengine.config.restart_rules import restart_problem
from flowengine.config.source import ConfigSource
from flowengine.ops.param_checks import adapter

__all__ = ["ConfigValidationError", "Problem", "StageInfo", "Edge", "ResolvedRun",
           "validate_run", "describe_stage"]


class ConfigValidationError(ConfigError):
    """A run config with one or more problems; `problems` lists them in file order."""

    def __init__(self, problems: list["Problem"]) -> None:
        self.problems = problems
        lines = "\n  ".join(str(p) for p in problems)
        count = f"{len(problems)} problems" if len(problems) > 1 else "1 problem"
        super().__init__(f"invalid run config ({count}):\n  {lines}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where (file:line), which stage and key, what."""

    where: str
    stage: str | None
    key: str
    message: str
    line: int = 0

    def __str__(self) -> str:
        stage = f"stage {self.stage}: " if self.stage else ""
        return f"{self.where}: {stage}{self.key}: {self.message}"


@dataclass
class Edge:
    """A connection upstream -> downstream, with the format known on it (if any)."""

    upstream: str
    downstream: str
    kind: str | None
    format: StaticFormat


@dataclass
class StageInfo:
    """One stage after validation: its operator spec, kinds, inputs, consumers and formats."""

    index: int
    name: str
    config: StageConfig
    spec: Any
    input_kind: str | None
    output_kind: str | None
    inputs: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)   # parameters with defaults filled in
    output_format: StaticFormat = field(default_factory=StaticFormat.unknown)
    params_ok: bool = False           # its parameters passed every check (and it built)
    # Format parameters that leave keys to the stage's input: filled in once it is known.
    pending_formats: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return describe_stage(self.name, self.op, self.params, self.kind)

    @property
    def op(self) -> str:
        return self.config.op

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def params(self) -> dict[str, Any]:
        return self.config.params

    @cached_property
    def input_files(self) -> tuple[list[Path], list[Path]] | None:
        """(files, skipped non-audio files) of a `files` or `file_source` stage, None for any
        other source (config.names.input_files): a folder is listed once per validation, not
        once per check that asks."""
        return input_files(self)


@dataclass
class ResolvedRun:
    """A validated run: stages in order and every edge with its inferred format."""

    config: RunConfig
    source: ConfigSource
    stages: list[StageInfo]
    edges: list[Edge]
    joins: list[Join] = field(default_factory=list)   # conversions inserted on edges

    def stage(self, name: str) -> StageInfo:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    @property
    def sinks(self) -> list[StageInfo]:
        return [s for s in self.stages if not s.consumers]


def describe_stage(name: str, op: str, params: dict[str, Any], kind: str | None = None) -> str:
    """'src' (file_source mode=packet): the op, and a source's mode (it picks the kind)."""
    mode = params.get("mode") if kind == "source" else None
    return f"{name!r} ({op}{f' mode={mode}' if isinstance(mode, str) else ''})"


class _Collector:
    """Gathers problems with the file:line of their key."""

    def __init__(self, source: ConfigSource) -> None:
        self.source = source
        self.problems: list[Problem] = []

    def add(self, path: tuple, stage: str | None, key: str, message: str) -> None:
        self.problems.append(Problem(self.source.where(path), stage, key, message,
                                     self.source.line_of(path) or 0))


def _registry():
    from flowengine.ops.registry import registry   # imported late: it loads every operator family
    return registry


def _check_params(stage: StageConfig, index: int, spec: Any, label: str,
                  out: _Collector) -> bool:
    """Unknown, missing and wrong-typed parameters, each pinned to its own line (the
    registry's types, checked one parameter at a time). Returns whether all were fine."""
    base = ("stages", index, "params")
    known = {p.name: p for p in spec.params}
    before = len(out.problems)
    op_from_option = ("stages", index, "op") in out.source.overrides
    for key, value in stage.params.items():
        param = known.get(key)
        if param is None:
            close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else \
                f"; {spec.name} takes: {', '.join(known) or 'no parameters'}"
            if op_from_option:      # left over from the operator the file names
                hint += f" (remove it: --set {stage.label}.{key}=null)"
            out.add(base + (key,), label, f"params.{key}",
                    f"unknown parameter for {spec.name}{hint}")
            continue
        if _is_format_param(param):
            problem = format_problem(value) if value is not None else None
            if problem is not None:
                out.add(base + (key,), label, f"params.{key}", problem)
            continue
        reason = _type_problem(param, value)
        if reason is not None:
            out.add(base + (key,), label, f"params.{key}",
                    f"expected {param.type_name}, got {value!r} ({type(value).__name__}){reason}")
    missing_at = base if base in out.source.lines else ("stages", index, "op")
    for name, param in known.items():
        if param.required and name not in stage.params:
            out.add(missing_at, label, f"params.{name}",
                    f"missing required parameter of {spec.name} ({param.type_name})")
    return len(out.problems) == before


def _is_format_param(param: Any) -> bool:
    """Whether a parameter takes an audio format (written in any of FORMAT_FORMS)."""
    return "format" in param.type_name.split(" | ")


def _partial_formats(stage: StageConfig, spec: Any) -> list[str]:
    """The format parameters of `stage` that leave keys to its input."""
    return [p.name for p in getattr(spec, "params", ()) if _is_format_param(p)
            and stage.params.get(p.name) is not None
            and not is_complete_format(stage.params[p.name])]


def _type_problem(param: Any, value: Any) -> str | None:
    """None when `value` fits the parameter's type, else the reason (': ...' or '')."""
    try:
        adapter(param.type).validate_python(value)
    except pydantic.ValidationError as exc:
        for err in exc.errors(include_url=False):
            if err["type"] == "value_error":     # the operator's own check of the value
                return ": " + err["msg"].removeprefix("Value error, ")
        return ""
    except (TypeError, pydantic.PydanticSchemaGenerationError):
        return None          # a type pydantic cannot check here: the operator checks it
    return None


def _try_build(info: "StageInfo", out: _Collector) -> bool:
    """Build the node once, so values the operator refuses are found now (a processor's
    conflicting options, an encoder that rejects its input format, a source file PyAV
    cannot read). Sinks are not built: that would create their output file. True unless
    the operator refused them."""
    if info.kind == "sink" or ("path" in info.params and not os.path.isfile(info.params["path"])):
        return True
    try:
        node = _registry().create(info.op, **info.params)
    except ConfigError as exc:
        message = _strip_op(str(exc), info.op)
        # Point at the parameter the message quotes (a path, a codec name) when there is one.
        key = next((k for k, v in info.params.items()
                    if isinstance(v, str) and repr(v) in message), None)
        path = ("stages", info.index, "params") + ((key,) if key else ())
        out.add(path, info.label, f"params.{key}" if key else "params", message)
        return False
    node.close()
    return True


def _try_encoder_for(info: "StageInfo", upstream: tuple["StageInfo", StaticFormat],
                     where: tuple, out: _Collector) -> None:
    """Open the encoder for the format its input will have, when that is known now, so a
    setting the codec refuses at that format (an MP3 bitrate at 44.1 kHz, 9 channels for
    AAC) is found before any process starts, not by the worker at its first buffer."""
    stage, fmt = upstream
    if not info.params_ok or "input_format" in info.params or fmt.sample_rate is None \
            or fmt.channels is None:
        return
    try:
        node = _registry().create(info.op, **info.params, input_format={
            "sample_rate": fmt.sample_rate, "channels": fmt.channels})
    except ConfigError as exc:
        message = _strip_op(str(exc), info.op)
        key = next((k for k in info.params if k in message), None)
        path = ("stages", info.index, "params", key) if key else where
        out.add(path, info.label, f"params.{key}" if key else "inputs",
                f"{message} (stage {stage.label} gives {fmt.explain()})")
        return
    node.close()


def _strip_op(message: str, op: str) -> str:
    # The registry prefixes its messages with the operator; the stage label already says it.
    for prefix in (f"{op}: ", f"operator {op!r}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


@dataclass(frozen=True)
class _ImportedSpec:
    """The spec of an operator given as 'module:attribute' (the engine imports it; tests and
    experiments use this): kinds from the class, parameters unchecked."""

    name: str
    kind: str
    inputs: str | None
    outputs: str | None
    params: tuple = ()

    def io_kinds(self, params: dict) -> tuple[str | None, str | None]:
        return self.inputs, self.outputs


def _lookup(op: str) -> Any:
    """The operator's spec, or ConfigError with close names."""
    if ":" in op:
        from flowengine.core.lookup import resolve_operator
        info = resolve_operator(op)
        return _ImportedSpec(op, info.kind, info.input_kind, info.output_kind)
    registry = _registry()
    if op in registry:
        return registry.get(op)
    close = difflib.get_close_matches(op, registry.names(), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else \
        "; `flowengine ops` lists them"
    raise ConfigError(f"unknown operator {op!r}{hint}")


def _resolve_stages(config: RunConfig, out: _Collector) -> list[StageInfo]:
    seen: dict[str, int] = {}
    stages: list[StageInfo] = []
    for index, stage in enumerate(config.stages):
        name = stage.label
        if name in seen:
            key = "name" if stage.name else "op"
            out.add(("stages", index, key), describe_stage(name, stage.op, stage.params), key,
                    f"duplicate stage name {name!r} (stage {seen[name] + 1} has it too); "
                    f"give each stage a unique 'name'")
        else:
            seen[name] = index
        try:
            spec = _lookup(stage.op)
        except ConfigError as exc:
            out.add(("stages", index, "op"), repr(name), "op", str(exc))
            continue
        label = describe_stage(name, stage.op, stage.params, spec.kind)
        _source_on_error(stage, index, spec, label, out)
        params_ok = isinstance(spec, _ImportedSpec) or \
            _check_params(stage, index, spec, label, out)
        input_kind, output_kind = spec.io_kinds(stage.params) if params_ok else \
            (spec.inputs, spec.outputs)
        info = StageInfo(index, name, stage, spec, input_kind, output_kind,
                         values=dict(stage.params))
        if params_ok and not isinstance(spec, _ImportedSpec):
            info.pending_formats = _partial_formats(stage, spec)
            if not info.pending_formats:     # else: once its input's format is known
                _build_checked(info, out)
        stages.append(info)
    return stages


def _build_checked(info: StageInfo, out: _Collector) -> None:
    """The registry's values (defaults filled in) and one build of the node."""
    info.values = _registry().validate(info.op, info.params)
    info.params_ok = _try_build(info, out)


def _complete_formats(info: StageInfo, reference: StaticFormat | None, out: _Collector) -> None:
    """Fill in the keys the stage's format parameters leave out from `reference` (its input's
    format; a file source's: the file's), then check and build it as any other stage. A
    `files` source keeps what it cannot know yet: each file's own, at run time."""
    if reference is None and info.op == "file_source" and isinstance(info.params.get("path"),
                                                                       str):
        reference = probe_file(info.params["path"])
    ok = True
    for key in info.pending_formats:
        value = info.params[key]
        mapping = {**(reference.as_mapping() if reference is not None else {}),
                   **format_mapping(value)}
        missing = [k for k in ("sample_rate", "channels") if k not in mapping]
        if missing and info.op != "files":
            ok = False
            source = f"stage {info.inputs[0]!r} gives {reference.explain()}" \
                if reference is not None and info.inputs else \
                "nothing here gives them before the run"
            out.add(("stages", info.index, "params", key), info.label, f"params.{key}",
                    f"{value!r} leaves {' and '.join(missing)} to the input, and {source}: "
                    f"write them too, e.g. '48000/2/f32' (a format is {FORMAT_FORMS})")
            continue
        info.params[key] = mapping
    if ok:
        _build_checked(info, out)


def _source_on_error(stage: StageConfig, index: int, spec: Any, label: str,
                     out: _Collector) -> None:
    """The stage-level `on_error` is the one policy for damaged input: on an operator with an
    `on_error` parameter of its own (a file source, `files`, a decoder) a value set in the
    file or by --set goes there, unless params sets it too. A source has no input buffers,
    so `max_errors` cannot apply to it."""
    if spec.kind == "source" and stage.max_errors is not None:
        out.add(("stages", index, "max_errors"), label, "max_errors",
                "a source has no input buffers to skip, so max_errors would never be checked "
                "(a files source's skipped files are listed by the audit): remove it")
    if "on_error" not in stage.model_fields_set:
        return
    if not any(p.name == "on_error" for p in getattr(spec, "params", ())):
        if stage.on_error == "skip" and spec.kind == "source":
            out.add(("stages", index, "on_error"), label, "on_error",
                    f"{spec.name} has nothing to skip: a source takes no input, and a file it "
                    f"cannot read ends the run"
                    + ("; to go on without a file that cannot be read, use op: files "
                       "(paths: the file) with on_error: skip" if spec.name == "file_source"
                       else "") + "; or remove on_error")
        return
    own = stage.params.get("on_error")
    if own is None:
        stage.params["on_error"] = stage.on_error
    elif own != stage.on_error:
        out.add(("stages", index, "on_error"), label, "on_error",
                f"{stage.on_error!r} disagrees with params.on_error {own!r} (both say what "
                f"damaged input does): keep one of them, e.g. remove params.on_error")


def _wire(config: RunConfig, stages: list[StageInfo], out: _Collector) -> None:
    """Default inputs, references to earlier stages only, sources without inputs."""
    by_index = {s.index: s for s in stages}
    order = [stage.label for stage in config.stages]
    for info in stages:
        stage, index = info.config, info.index
        if info.input_kind is None:
            if stage.inputs:
                out.add(("stages", index, "inputs"), info.label, "inputs",
                        f"{info.op} is a source and takes no inputs")
            continue
        if stage.inputs is None:
            if index == 0:
                out.add(("stages", index, "op"), info.label, "inputs",
                        f"{info.op} needs an input but no stage comes before it")
            elif index - 1 in by_index:      # else: the stage before has an unknown operator
                info.inputs = [order[index - 1]]
            continue
        if not stage.inputs:
            out.add(("stages", index, "inputs"), info.label, "inputs",
                    f"{info.op} needs at least one input")
        for k, upstream in enumerate(stage.inputs):
            where = ("stages", index, "inputs", k)
            if upstream not in order:
                close = difflib.get_close_matches(upstream, order, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                out.add(where, info.label, "inputs", f"no stage named {upstream!r}{hint}")
            elif order.index(upstream) >= index:
                out.add(where, info.label, "inputs",
                        f"{upstream!r} is not defined before this stage (a stage reads only "
                        f"from stages above it, so the graph has no cycle)")
            elif upstream in info.inputs:
                out.add(where, info.label, "inputs", f"{upstream!r} is named twice")
            elif order.index(upstream) in by_index:
                info.inputs.append(upstream)


def _check_edges(stages: list[StageInfo], out: _Collector, joins: list[JoinNeed]) -> list[Edge]:
    """Kinds on every edge, then formats, stage by stage in order (inputs come first).
    Format mismatches a conversion can join are added to `joins`."""
    by_name: dict[str, StageInfo] = {}
    for stage in stages:
        by_name.setdefault(stage.name, stage)     # a duplicate name was reported already
    edges: list[Edge] = []
    for info in stages:
        in_formats: list[tuple[StageInfo, StaticFormat]] = []
        for k, upstream_name in enumerate(info.inputs):
            upstream = by_name[upstream_name]
            where = ("stages", info.index, "inputs", k) if info.config.inputs else \
                ("stages", info.index, "op")
            upstream.consumers.append(info.name)
            if upstream.output_kind is None:
                default = "" if info.config.inputs else \
                    " (a stage without 'inputs' reads from the stage before it)"
                out.add(where, info.label, "inputs",
                        f"stage {upstream.label} is a sink and gives no output{default}")
                continue
            if info.input_kind not in ("any", upstream.output_kind):
                out.add(where, info.label, "inputs",
                        f"stage {info.label} takes {info.input_kind} but stage {upstream.label} "
                        f"gives {upstream.output_kind}")
                continue
            fmt = upstream.output_format if upstream.output_kind == "pcm" else \
                StaticFormat.unknown("packets")
            edges.append(Edge(upstream.name, info.name, upstream.output_kind, fmt))
            if upstream.output_kind == "pcm":
                in_formats.append((upstream, fmt))
        if info.pending_formats:
            _complete_formats(info, in_formats[0][1] if in_formats else None, out)
        _check_formats(info, in_formats, out, joins)
    return edges


def _check_formats(info: StageInfo, in_formats: list[tuple[StageInfo, StaticFormat]],
                   out: _Collector, joins: list[JoinNeed]) -> None:
    """The stage's input requirement against each PCM input, several PCM inputs of a mixer
    against each other, then the stage's own output format. A mismatch a conversion can
    join becomes a JoinNeed (the stage then sees the converted format); any other is a
    problem."""
    where = ("stages", info.index, "inputs" if info.config.inputs else "op")
    required = input_requirement(info.op, info.kind, info.values)
    joined: list[tuple[StageInfo, StaticFormat]] = []
    mismatched = False
    for upstream, fmt in in_formats:
        mismatch = required.conflict(fmt)
        target = join_target(required, fmt)
        if target is not None:
            why = f"{mismatch} mismatch" if mismatch else "sample rate known only at run time"
            joins.append(JoinNeed(upstream.name, info.name, target,
                                  f"{why}: stage {upstream.label} gives {fmt.explain(True)}, "
                                  f"but {info.op} takes {required.explain()}",
                                  _input_path(info, upstream.name), info.label))
            fmt = _converted(fmt, target)
        elif mismatch:
            mismatched = True
            key, param_path = required.blame(info.index)
            out.add(param_path or where, info.label, key or "inputs",
                    f"{mismatch} mismatch: stage {upstream.label} gives {fmt.explain()}, "
                    f"but {info.op} takes {required.explain()}")
        joined.append((upstream, fmt))
    if info.kind == "encoder" and not mismatched and len(joined) == 1:
        _try_encoder_for(info, joined[0], where, out)
    merged = required
    if joined:
        merged = joined[0][1]
        for upstream, fmt in joined[1:]:
            mismatch = merged.conflict(fmt, types=False)
            if mismatch and info.kind == "processor" and info.op == "mix":
                target = join_target(StaticFormat(merged.sample_rate, merged.channels), fmt)
                first = joined[0][0]
                if target is not None:
                    joins.append(JoinNeed(upstream.name, info.name, target,
                                          f"a mixer's inputs must agree: {first.name!r} gives "
                                          f"{merged.explain()}, {upstream.name!r} gives "
                                          f"{fmt.explain()}", _input_path(info, upstream.name),
                                          info.label))
                else:
                    out.add(where, info.label, "inputs",
                            f"inputs disagree on {mismatch}: {first.name!r} gives "
                            f"{merged.explain()}, {upstream.name!r} gives {fmt.explain()}")
            elif mismatch:    # separate streams, one node each: the format is per stream
                merged = StaticFormat.unknown("inputs differ")
        merged = merged.intersect(required)
    found = info.input_files if info.kind == "source" else None
    info.output_format = infer_output_format(info.op, info.kind, info.values,
                                             set(info.params), merged,
                                             found[0] if found else None)


def _input_path(info: StageInfo, upstream: str) -> tuple:
    """The YAML path of the stage's input `upstream`: its entry in `inputs`, or the stage's
    op when it reads from the stage before it."""
    if info.config.inputs and upstream in info.config.inputs:
        return ("stages", info.index, "inputs", info.config.inputs.index(upstream))
    return ("stages", info.index, "op")


def _converted(fmt: StaticFormat, target: dict[str, Any]) -> StaticFormat:
    """What a conversion to `target` gives for input `fmt` (the stage after a join sees it)."""
    from dataclasses import replace
    return replace(fmt, sample_rate=target.get("sample_rate", fmt.sample_rate),
                   channels=target.get("channels", fmt.channels),
                   sample_type=target.get("sample_type", fmt.sample_type or "f32"),
                   planar=target.get("planar", True), why="converted by a join", key=None)


def _multi_input(info: StageInfo) -> bool:
    """Whether the stage's operator takes several inputs through one node (a mixer)."""
    return bool(getattr(getattr(info.spec, "factory", None), "multi_input", False))


def _check_fusion(config: RunConfig, stages: list[StageInfo], out: _Collector) -> None:
    """`fuse` groups and `fuse_with: previous` form chains of stages that can share a worker
    (`fuse: auto`: the planner makes groups that do, engine/build.py)."""
    groups = config.fuse if isinstance(config.fuse, list) else None
    if not groups and not any(s.config.fuse_with for s in stages):
        return
    try:
        fusion_groups([FusionStage(
            s.name, tuple(s.inputs), tuple(s.consumers), source=s.input_kind is None,
            multi_input=_multi_input(s),
            fuse_with_previous=s.config.fuse_with == "previous", replicas=s.config.replicas,
            on_error=s.config.on_error, max_errors=s.config.max_errors,
            ordered=bool(getattr(s.config, "ordered", False))) for s in stages], groups)
    except ConfigError as exc:
        stage = next((s for s in stages if s.config.fuse_with and repr(s.name) in str(exc)), None)
        path = ("stages", stage.index, "fuse_with") if stage and not groups else ("fuse",)
        out.add(path, None, "fuse_with" if path[0] == "stages" else "fuse", str(exc))


def _check_restart(stages: list[StageInfo], out: _Collector) -> None:
    """`restart: on-failure` only where a replacement worker can resume streams."""
    by_name = {s.name: s for s in stages}
    for info in stages:
        if info.config.restart != "on-failure":
            continue
        problem = restart_problem(
            has_input=info.input_kind is not None, has_output=info.output_kind is not None,
            multi_input=_multi_input(info),
            ordered=info.config.ordered,
            feeds_ordered=any(by_name[c].config.ordered for c in info.consumers if c in by_name))
        if problem:
            out.add(("stages", info.index, "restart"), info.label, "restart", problem)


def _check_paths(stages: list[StageInfo], out: _Collector) -> None:
    """Input files exist; output directories exist (or can be made) and are writable."""
    for info in stages:
        path = info.params.get("path")
        if not isinstance(path, str) or info.kind not in ("source", "sink"):
            continue
        where = ("stages", info.index, "params", "path")
        if info.kind == "source":
            if not os.path.isfile(path):
                what = "is a directory, not a file" if os.path.isdir(path) else "does not exist"
                out.add(where, info.label, "params.path",
                        f"input file {path!r} {what} (relative paths start at {os.getcwd()})")
            elif not os.access(path, os.R_OK):
                out.add(where, info.label, "params.path", f"input file {path!r} is not readable")
        else:
            problem = _template_problem(path) or _unwritable(Path(path))
            if problem:
                out.add(where, info.label, "params.path", f"cannot write {path!r}: {problem}")


def _check_file_sinks(stages: list[StageInfo], out: _Collector) -> None:
    """A file sink's extension picks its container: known, and holding what the encoder
    before it gives (mp3 packets do not go into a .wav file)."""
    from flowengine.ops.io.writer import WRITER_EXTENSIONS
    by_name = {stage.name: stage for stage in stages}
    for info in stages:
        path = info.params.get("path")
        if info.op != "file_sink" or not isinstance(path, str):
            continue
        where = ("stages", info.index, "params", "path")
        extension = Path(path).suffix.lower()
        if extension not in WRITER_EXTENSIONS:
            field = " (the extension picks the container before the run, so it is no field: " \
                "end the path with one, e.g. '{stem}.{ext}.m4a')" if "{" in extension else ""
            out.add(where, info.label, "params.path",
                    f"cannot write {path!r}: unknown extension {extension or '(none)'!r}: "
                    f"expected one of {' '.join(WRITER_EXTENSIONS)}{field}")
            continue
        holds = WRITER_EXTENSIONS[extension][1]
        for upstream in (by_name[name] for name in info.inputs if name in by_name):
            if upstream.kind != "encoder":
                continue
            codec = codec_of(upstream.op, upstream.params)
            if codec != holds:
                fits = " or ".join(e for e, (_, c) in WRITER_EXTENSIONS.items() if c == codec)
                hint = f"; use the extension {fits}" if fits else ""
                out.add(where, info.label, "params.path",
                        f"cannot write {path!r}: stage {upstream.label} gives {codec} packets "
                        f"and a {extension} file holds {holds}{hint}")


def _same_file(path: str) -> str:
    """A path as the file it names: absolute, normalised, symbolic links of its directory
    resolved (the file itself may not exist yet)."""
    absolute = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))


def _check_output_paths(stages: list[StageInfo], out: _Collector) -> None:
    """One writer per output file: two file sinks on one path both wrote `NAME.part` and one
    renamed the other's bytes (or failed on the rename), and a sink writing the file a
    `file_source` reads removed the input as the run started."""
    from flowengine.ops.io.paths import has_stream_field
    writers: dict[str, StageInfo] = {}
    readers = {_same_file(info.params["path"]): info for info in stages
               if info.op == "file_source" and isinstance(info.params.get("path"), str)}
    for info in stages:
        path = info.params.get("path")
        # A per-stream template ('out/{stream}.wav') may be shared by sinks of different
        # streams; two writers of one stream's file are refused at run time (outputlock.py).
        if info.op != "file_sink" or not isinstance(path, str) or has_stream_field(path):
            continue
        where = ("stages", info.index, "params", "path")
        key = _same_file(path)
        if key in writers:
            out.add(where, info.label, "params.path",
                    f"cannot write {path!r}: stage {writers[key].label} writes it too (one "
                    f"file, one writer: give each file_sink its own path)")
        elif key in readers:
            out.add(where, info.label, "params.path",
                    f"cannot write {path!r}: stage {readers[key].label} reads it (writing "
                    f"it would remove the input as the run starts): write to another path")
        writers.setdefault(key, info)


def _template_problem(path: str) -> str | None:
    """What is wrong with a per-stream output path ('out/{stream}.mp3'), or None."""
    from flowengine.ops.io.paths import PathTemplateError, check_path_template, has_template_field
    if not has_template_field(path):
        return None
    try:
        check_path_template(path)
    except PathTemplateError as exc:
        return str(exc)
    return None


def _unwritable(path: Path) -> str | None:
    """Why `path` cannot be written (missing directories are made at run time), or None."""
    if path.is_dir():
        return "it is a directory"
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{str(parent)!r} is a file, not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"directory {str(parent)!r} is not writable"
    return None


def _check_security(config: RunConfig, out: _Collector) -> None:
    """CURVE needs tcp:// edges and a key directory made by `flowengine keys`."""
    security = config.security
    if not security.curve:
        return
    if config.transport != "tcp":
        out.add(("security", "curve"), None, "security.curve",
                f"CURVE protects tcp:// edges, but transport is {config.transport!r} (ipc:// "
                f"sockets live in the run's private directory); set transport: tcp")
    if security.keys is None:
        given = out.source.data.get("security") if isinstance(out.source.data, dict) else None
        implied = config.cluster.engine == "ray" and "curve" not in (given or {})
        out.add(("cluster", "engine") if implied else ("security", "curve"), None,
                "security.curve", "CURVE needs 'keys': a directory made by `flowengine keys DIR`"
                + (" (cluster.engine: ray turns CURVE on; on a trusted network only, "
                   "security.curve: false turns it off)" if implied else ""))
        return
    from flowengine.config.keys import load_keys   # imported late: zmq, only for CURVE runs
    try:
        load_keys(security.keys)
    except ConfigError as exc:
        out.add(("security", "keys"), None, "security.keys", str(exc))


def validate_run(config: RunConfig, source: ConfigSource, *, check_paths: bool = True,
                 join: bool = True) -> ResolvedRun:
    """Validate `config` completely; raise ConfigValidationError listing every problem.
    Where formats disagree on an edge and a conversion joins them, the result is the run
    with that conversion inserted (validated again, `join=False`), or with `strict: true` a
    problem naming the edge."""
    out = _Collector(source)
    stages = _resolve_stages(config, out)
    _wire(config, stages, out)
    needs: list[JoinNeed] = []
    edges = _check_edges(stages, out, needs)
    _check_fusion(config, stages, out)
    _check_security(config, out)
    check_cluster(config, source, out.add)
    _check_restart(stages, out)
    _check_file_sinks(stages, out)
    _check_output_paths(stages, out)
    check_output_names(stages, out, logged=set() if join else {s.name for s in stages})
    if check_paths:
        _check_paths(stages, out)
    if needs and (config.strict or not join):
        for need in needs:
            out.add(need.where, need.label, "inputs",
                    f"edge {need.upstream!r} -> {need.downstream!r}: {need.reason}"
                    + (f" (strict: true inserts no conversion): put a resample stage with "
                       f"{{{need.describe()}}} on this edge, or remove strict: true"
                       if config.strict else ""))
    if out.problems:
        out.problems.sort(key=lambda p: p.line)
        raise ConfigValidationError(out.problems)
    if needs:
        joined_config, joined_source, joins = insert_joins(
            config, source, {s.name: list(s.inputs) for s in stages}, needs)
        run = validate_run(joined_config, joined_source, check_paths=check_paths, join=False)
        run.joins = joins
        return run
    return ResolvedRun(config, source, stages, edges)
