"""The operator registry: every operator found by name, with typed parameters.

A YAML run (`op: mp3_encoder`), the CLI (`flowengine ops`) and plugins see
one list. An operator is a factory function that returns a Node; its keyword
parameters, their type hints and defaults ARE the parameter spec:

    @operator("gain", kind="processor", inputs=PCM, outputs=PCM, stateful=False,
              summary="Multiply every sample by a gain")
    def gain(gain: float = 1.0, gain_db: float | None = None,
             format: FormatParam | None = None) -> Node:
        '''
        gain: linear factor
        gain_db: gain in dB (instead of gain)
        '''
        ...

Parameter docs come from `name: text` lines in the factory's docstring
(flowengine/ops/params.py reads the signature). `registry.create(name,
**params)` validates the parameters with pydantic in strict mode (an int is a
valid float; a string is not a number, a bool is not an int;
flowengine/ops/param_checks.py) and turns every problem into a ConfigError
that names the operator and the parameter: unknown parameters (listing the
valid ones), missing required ones, wrong types (expected vs got), and values
the operator itself refuses. `registry.build(name, values)` builds from values
`validate` gave already: a worker's way, without pydantic.

`cost` is the operator's CPU per second of audio relative to the mp3
encoder's, measured by benchmarks/bench_op_cost.py: `fuse: auto` balances
the groups of stages it runs in worker processes with it.

`stateful` tells the engine's router whether one stream must always reach
the same replica (codecs, filters, resampler, dynamics, delay) or may be
spread (identity, gain, channel_map). `expected_out` states how many samples
the operator gives for what it takes (flowengine/ops/rules.py), for the
end-of-run sample audit, and `out_rate` the rate it gives when it changes it.

Built-in operators live in flowengine/ops/catalog.py and are loaded at
the first lookup; plugins are modules or callables published in the
`flowengine.operators` entry-point group: loading one either registers its
operators with @operator, or is a callable that gets the registry. Plugins are
loaded when a name is not a built-in's, or the whole list is asked for.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import math
import types
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

from flowengine.errors import ConfigError, FlowError, OutputError
from flowengine.ops.node import KINDS, Node
from flowengine.ops.params import Convert, FormatParam, ParamSpec, PartialFormatParam, \
    check_signature, params_of, type_name

__all__ = [
    "OPERATOR_KINDS", "ENTRY_POINT_GROUP", "Convert", "FormatParam", "PartialFormatParam",
    "ParamSpec", "OperatorSpec", "Registry", "registry", "operator", "get", "create", "names",
    "type_name",
]

OPERATOR_KINDS = ("source", "processor", "encoder", "decoder", "sink")
ENTRY_POINT_GROUP = "flowengine.operators"
# Modules that register the built-in operators: the operator families, and the live ones
# (which sit above ops, so ops never imports them).
_BUILTINS = ("flowengine.ops.catalog", "flowengine.live.operators")
_ANY_KIND = "any"


@dataclass(frozen=True)
class OperatorSpec:
    """What the registry knows about one operator."""

    name: str
    kind: str                       # source | processor | encoder | decoder | sink
    inputs: str | None              # pcm | packet | any | None (sources)
    outputs: str | None             # pcm | packet | None (sinks); see io_kinds for sources
    summary: str
    stateful: bool
    factory: Callable[..., Node] = field(repr=False, compare=False)
    kinds: Callable[[dict], tuple[str | None, str | None]] | None = field(
        default=None, repr=False, compare=False)
    # Sample rule for the end-of-run audit (flowengine.ops.rules): samples_in, params,
    # in_rate, out_rate -> (low, high) samples out; a multi-input operator's: every input's
    # samples, params -> (low, high) | None. None: the audit cannot check the stage.
    expected_out: Callable[..., tuple[int, int] | None] | None = field(
        default=None, repr=False, compare=False)
    # The rate it gives for input at in_rate (params, in_rate -> rate); None: the same rate.
    out_rate: Callable[[dict, int], int] | None = field(default=None, repr=False,
                                                        compare=False)
    # A multi-stream source whose node can read a share of its streams (`share(claim)`): the
    # planner may run whole streams per replica, each replica reading its own.
    shares_streams: bool = False
    # Parameters of a typical use, for the reference docs (docs/config.md): a stage's params.
    example: dict[str, Any] = field(default_factory=dict, compare=False)
    # Its CPU per second of audio relative to the mp3 encoder's (1.0), measured by
    # benchmarks/bench_op_cost.py; or params -> that. `fuse: auto` balances groups of stages
    # with it. None: not measured (the planner assumes a typical one of its kind).
    cost: float | Callable[[dict], float] | None = field(default=None, compare=False)
    # Docs of parameters several operators share (a factory's docstring wins).
    shared_docs: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @functools.cached_property
    def params(self) -> tuple[ParamSpec, ...]:
        """The parameters, read from the factory's signature when first asked: evaluating
        every operator's type hints when the catalog registers them cost ~25 ms of each
        process's start, for the few operators a run names."""
        return params_of(self.factory, self.shared_docs)

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def io_kinds(self, params: dict | None = None) -> tuple[str | None, str | None]:
        """(input kind, output kind) for these parameters (a file source's mode decides)."""
        if self.kinds is not None:
            return self.kinds(dict(params or {}))
        return self.inputs, self.outputs

    def cost_for(self, params: dict | None = None) -> float | None:
        """The cost hint for these parameters (see `cost`), or None."""
        return self.cost(dict(params or {})) if callable(self.cost) else self.cost

    def describe(self) -> str:
        """Several lines for `flowengine ops`: name, kinds, summary, then one line per parameter."""
        state = "stateful" if self.stateful else "stateless"
        lines = [f"{self.name}  [{self.kind}, {self.inputs or '-'} -> {self.outputs or '-'}, "
                 f"{state}]  {self.summary}"]
        for p in self.params:
            default = "required" if p.required else f"default {p.default!r}"
            doc = f"  {p.doc}" if p.doc else ""
            lines.append(f"    {p.name}: {p.type_name} ({default}){doc}")
        return "\n".join(lines)


class Registry:
    """Operators by name. `registry` (module level) is the one flowengine uses."""

    def __init__(self, builtins: tuple[str, ...] | None = _BUILTINS, group: str | None = ENTRY_POINT_GROUP):
        self._specs: dict[str, OperatorSpec] = {}
        self._builtins = builtins
        self._group = group
        self._loaded = False          # the built-in operators
        self._plugins_loaded = False

    # ---- registering -----------------------------------------------------------------------

    def operator(self, name: str, *, kind: str, inputs: str | None, outputs: str | None,
                 summary: str, stateful: bool,
                 kinds: Callable[[dict], tuple[str | None, str | None]] | None = None,
                 expected_out: Callable[..., tuple[int, int] | None] | None = None,
                 out_rate: Callable[[dict, int], int] | None = None,
                 shares_streams: bool = False,
                 example: dict[str, Any] | None = None,
                 param_docs: dict[str, str] | None = None,
                 cost: float | Callable[[dict], float] | None = None):
        """Decorator: register a factory function as operator `name` (see module doc).
        `example`: the params of a typical stage (docs/config.md shows it; a test runs it).
        `param_docs`: docs of parameters several operators share (the docstring's win).
        `cost`: CPU per second of audio relative to the mp3 encoder (OperatorSpec.cost)."""
        if kind not in OPERATOR_KINDS:
            raise ConfigError(f"operator {name!r}: kind must be one of "
                              f"{', '.join(OPERATOR_KINDS)}, got {kind!r}")
        for label, value in (("inputs", inputs), ("outputs", outputs)):
            if value not in KINDS + (_ANY_KIND, None):
                raise ConfigError(f"operator {name!r}: {label} must be 'pcm', 'packet', 'any' "
                                  f"or None, got {value!r}")
        if not (cost is None or callable(cost) or (
                isinstance(cost, (int, float)) and not isinstance(cost, bool)
                and math.isfinite(cost) and cost > 0)):
            raise ConfigError(f"operator {name!r}: cost must be a positive number (CPU per "
                              f"second of audio relative to the mp3 encoder), got {cost!r}")

        def register(factory: Callable[..., Node]) -> Callable[..., Node]:
            check_signature(name, factory)
            spec = OperatorSpec(name, kind, inputs, outputs, summary, stateful, factory, kinds,
                                expected_out, out_rate, shares_streams, dict(example or {}),
                                cost, dict(param_docs or {}))
            self.register(spec)
            return factory
        return register

    def register(self, spec: OperatorSpec) -> None:
        old = self._specs.get(spec.name)
        if old is not None and _origin(old.factory) != _origin(spec.factory):
            raise ConfigError(f"operator {spec.name!r} is already registered (by "
                              f"{_origin(old.factory)}); {_origin(spec.factory)} cannot take "
                              f"the name")
        self._specs[spec.name] = spec

    # ---- looking up ------------------------------------------------------------------------

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._specs)

    def specs(self) -> list[OperatorSpec]:
        return [self._specs[n] for n in self.names()]

    def load_builtins(self) -> None:
        """Import the built-in operators now, not at the first lookup (plugins still load
        when first needed)."""
        self._load_builtins()

    def get(self, name: str) -> OperatorSpec:
        self._ensure_loaded(name)
        spec = self._specs.get(name)
        if spec is None:
            close = difflib.get_close_matches(str(name), self._specs, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown operator {name!r}{hint}; known operators: "
                              f"{', '.join(sorted(self._specs))}")
        return spec

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded(name)
        return name in self._specs

    # ---- building --------------------------------------------------------------------------

    def validate(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters checked and converted (dict -> AudioFormat, int -> float), or
        ConfigError. Defaults are filled in."""
        spec = self.get(name)
        valid = [p.name for p in spec.params]
        for key in params:
            if key not in valid:
                raise ConfigError(f"operator {name!r}: unknown parameter {key!r}; valid "
                                  f"parameters: {', '.join(valid) or '(none)'}")
        for p in spec.params:
            if p.required and p.name not in params:
                raise ConfigError(f"operator {name!r}: missing required parameter {p.name!r} "
                                  f"({p.type_name})")
        # Imported here, where a process first validates: a worker never does, and so never
        # imports pydantic (~50 ms of its start).
        from flowengine.ops.param_checks import validated

        return validated(spec, params)

    def create(self, name: str, **params: Any) -> Node:
        """Build operator `name` as a Node from parameters it checks first (`validate`)."""
        return self.build(name, self.validate(name, params))

    def build(self, name: str, values: dict[str, Any]) -> Node:
        """Build operator `name` as a Node from what `validate` gave for its parameters
        (a worker does, with the values the coordinator validated: it never imports
        pydantic)."""
        spec = self.get(name)
        try:
            node = spec.factory(**values)
        except (ConfigError, OutputError):   # an output in use or unwritable is no config error
            raise
        except (FlowError, ValueError, TypeError) as exc:
            raise ConfigError(f"operator {name!r}: {exc}") from exc
        if not isinstance(node, Node):
            raise ConfigError(f"operator {name!r}: its factory returned {type(node).__name__}, "
                              f"not a Node")
        return node

    # ---- loading ---------------------------------------------------------------------------

    def _ensure_loaded(self, name: str | None = None) -> None:
        """The built-in operators, then the plugins, each loaded once; the plugins not while
        `name` is a built-in: a run that names built-in operators only does not read every
        installed distribution's entry points (~8 ms of each process's start)."""
        self._load_builtins()
        if self._group and not self._plugins_loaded and (name is None or name not in self._specs):
            self._plugins_loaded = True
            self.load_plugins()

    def _load_builtins(self) -> None:
        if self._loaded:
            return
        self._loaded = True          # set first: the modules below register into us
        if self._builtins:
            for module in self._builtins:   # each registers into the module-level registry
                importlib.import_module(module)
            if self is not registry:
                registry._load_builtins()
                for spec in list(registry._specs.values()):
                    if spec.factory.__module__.startswith("flowengine."):
                        self.register(spec)

    def load_plugins(self) -> list[str]:
        """Load every entry point of the plugin group; returns their names."""
        loaded = []
        for ep in entry_points(group=self._group):
            try:
                obj = ep.load()
                if callable(obj) and not isinstance(obj, types.ModuleType) \
                        and not self._is_registered(obj):
                    obj(self)
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(f"operator plugin {ep.name!r} ({ep.value}) of group "
                                  f"{self._group!r} failed to load: "
                                  f"{type(exc).__name__}: {exc}") from exc
            loaded.append(ep.name)
        return loaded

    def _is_registered(self, obj: Any) -> bool:
        return any(spec.factory is obj for spec in self._specs.values())


def _origin(factory: Callable) -> str:
    return f"{factory.__module__}.{factory.__qualname__}"


registry = Registry()
operator = registry.operator
get = registry.get
create = registry.create
names = registry.names
