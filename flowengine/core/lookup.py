"""Operator lookup for the engine: a name in the config → what kind of stage it is, and nodes.

Two spellings of ``op`` are accepted:

- a registry name (``gain``, ``mp3_encoder``): looked up in
  ``flowengine.ops.registry`` (``get(op)`` for the spec, ``create(op, **params)``
  for a node), the same list the YAML, the CLI and plugins see;
- ``"module:attribute"`` (``"engine_ops:SlowSink"``): a Node subclass or a
  factory returning a Node, imported by module path. This is how tests and
  one-off experiments run their own operators without registering them; the
  kind comes from the class's ``input_kind`` / ``output_kind`` and whether
  replicas may spread one stream from its ``stateful`` attribute (default
  True).

Worker processes resolve the name again on their side (the plan carries only
names and parameters), so whatever the coordinator can import, a worker can:
the forkserver child gets the coordinator's ``sys.path``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from flowengine.errors import ConfigError
from flowengine.ops.node import Node

__all__ = ["OperatorInfo", "resolve_operator", "create_node", "kind_of", "is_multi_input",
           "DEFAULT_COSTS"]

# The cost hint (OperatorSpec.cost: CPU per second of audio relative to the mp3 encoder's) of
# an operator that states none, by kind: the median of the built-ins of that kind
# (benchmarks/results/op_cost.json), but for a processor a numpy filter's (lowpass): one
# without a hint is most likely a user's own Python.
DEFAULT_COSTS = {"source": 0.13, "decoder": 0.16, "processor": 0.2, "encoder": 1.0,
                 "sink": 0.05}


@dataclass(frozen=True)
class OperatorInfo:
    """What the engine needs to know about an operator to plan a stage."""

    name: str
    kind: str                  # source | processor | encoder | decoder | sink
    input_kind: str | None     # "pcm" | "packet" | "any" | None (a source)
    output_kind: str | None    # "pcm" | "packet" | None (a sink)
    stateful: bool = True
    multi_input: bool = False  # one node takes every input of the stage (a mixer)
    shares_streams: bool = False   # a multi-stream source that can read a share of its streams
    cost: float = 0.0          # CPU per second of audio relative to the mp3 encoder (fuse: auto)


def kind_of(input_kind: str | None, output_kind: str | None) -> str:
    """The stage kind implied by what an operator takes and gives."""
    if input_kind is None:
        return "source"
    if output_kind is None:
        return "sink"
    if (input_kind, output_kind) == ("pcm", "packet"):
        return "encoder"
    if (input_kind, output_kind) == ("packet", "pcm"):
        return "decoder"
    return "processor"


def is_multi_input(obj: Any) -> bool:
    """Whether an operator factory or node class speaks the multi-input protocol
    (flowengine.ops.multiinput; checked by attribute so the engine need not import nodes)."""
    return bool(getattr(obj, "multi_input", False))


def _import_attribute(op: str) -> Callable[..., Node]:
    module_name, _, attribute = op.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"operator {op!r}: cannot import module {module_name!r} ({exc})") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigError(f"operator {op!r}: module {module_name!r} has no attribute "
                          f"{attribute!r}") from None


def resolve_operator(op: str, params: dict[str, Any] | None = None) -> OperatorInfo:
    """The kind and buffer kinds of operator `op` with `params` (a file source's mode decides
    what it outputs); ConfigError when the operator does not exist."""
    if ":" in op:
        factory = _import_attribute(op)
        input_kind = getattr(factory, "input_kind", "pcm")
        output_kind = getattr(factory, "output_kind", "pcm")
        kind = kind_of(input_kind, output_kind)
        return OperatorInfo(op, kind, input_kind, output_kind,
                            bool(getattr(factory, "stateful", True)), is_multi_input(factory),
                            cost=_cost(getattr(factory, "cost", None), kind))
    from flowengine.ops.registry import registry  # the registry imports every operator family: load it on demand

    spec = registry.get(op)
    input_kind, output_kind = spec.io_kinds(params)
    return OperatorInfo(op, spec.kind, input_kind, output_kind, spec.stateful,
                        is_multi_input(spec.factory), spec.shares_streams,
                        _cost(spec.cost_for(params), spec.kind))


def _cost(hint: Any, kind: str) -> float:
    """An operator's cost hint, or the usual one of its kind when it states none."""
    return float(hint) if isinstance(hint, (int, float)) else DEFAULT_COSTS[kind]


def create_node(op: str, params: dict[str, Any], values: dict[str, Any] | None = None) -> Node:
    """A fresh node of operator `op`: built from `values` when they are what the registry's
    `validate` gave for its parameters, else from `params`, validated first."""
    if ":" in op:
        return _import_attribute(op)(**params)
    from flowengine.ops.registry import registry

    return registry.create(op, **params) if values is None else registry.build(op, values)
