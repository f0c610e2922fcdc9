"""The node a stage runs: the run's block size applied to sources, fused stages as a Pipeline.

Block size (`RunConfig.block_samples`): every message on a PCM edge costs
about the same whatever its size, so offline runs move large blocks and live
runs codec-sized ones. A source with a ``chunk_samples`` parameter that the
stage does not set gets the run's ``block_samples``, or by default
`OFFLINE_BLOCK_SAMPLES` (4096), or `LIVE_BLOCK_SAMPLES` (1024, about one
codec frame) when the source is paced in real time (``realtime: true``).
Stages after a source keep the blocks they are given (processors pass them
through; codecs re-block to their frame size), so the source sets the size on
every PCM edge up to the first re-blocking stage.

Fusion: several consecutive stages may run inside one worker as a
`flowengine.ops.pipeline.Pipeline` per stream (`FusedMember`s in the plan);
the output is the same as with one worker per stage, without the hops.

Used by the workers and by the in-process runner, so both build the same
nodes from the same config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowengine.ops.node import Node
from flowengine.ops.pipeline import Pipeline
from flowengine.core.lookup import create_node

__all__ = ["OFFLINE_BLOCK_SAMPLES", "LIVE_BLOCK_SAMPLES", "FusedMember", "paced", "source_params",
           "node_values", "block_samples_for", "create_stage_node", "create_chain_node",
           "with_stage_on_error"]

OFFLINE_BLOCK_SAMPLES = 4096
LIVE_BLOCK_SAMPLES = 1024
_BLOCK_PARAM = "chunk_samples"


@dataclass(frozen=True)
class FusedMember:
    """One stage of a fused group, as plain data for the worker."""

    name: str
    op: str
    params: dict[str, Any]
    values: dict[str, Any] | None = None   # the params validated by the coordinator (node_values)


def _has_param(op: str, name: str) -> bool:
    if ":" in op:
        return False          # an imported test operator: its parameters are its own business
    from flowengine.ops.registry import registry

    if op not in registry:
        return False          # said by the stage's validation
    spec = registry.get(op)
    return any(p.name == name for p in spec.params)


def paced(params: dict[str, Any]) -> bool:
    """Whether a source stage with `params` is paced at real time (``realtime: true``): its
    streams are live, a block every few tens of milliseconds."""
    return params.get("realtime") is True


def block_samples_for(params: dict[str, Any], block_samples: int | None) -> int:
    """The block size of a source stage with `params` in a run with `block_samples`."""
    if block_samples is not None:
        return block_samples
    return LIVE_BLOCK_SAMPLES if paced(params) else OFFLINE_BLOCK_SAMPLES


def with_stage_on_error(stage: Any) -> Any:
    """A StageConfig whose stage-level `on_error`, when set, also reaches its operator's own
    `on_error` parameter (a file source, `files`, a decoder: the one policy for damaged
    input) unless the parameter is set; validation does the same and says when both are set
    and disagree. The stage is returned as it is when there is nothing to do."""
    if "on_error" not in stage.model_fields_set or "on_error" in stage.params \
            or not _has_param(stage.op, "on_error"):
        return stage
    return stage.model_copy(update={"params": {**stage.params, "on_error": stage.on_error}})


def source_params(op: str, kind: str, params: dict[str, Any],
                  block_samples: int | None) -> dict[str, Any]:
    """`params` with the run's block size filled in when this is a source that takes one and
    the stage left it unset."""
    if kind != "source" or _BLOCK_PARAM in params or not _has_param(op, _BLOCK_PARAM):
        return dict(params)
    return {**params, _BLOCK_PARAM: block_samples_for(params, block_samples)}


def node_values(op: str, kind: str, params: dict[str, Any],
                block_samples: int | None) -> dict[str, Any] | None:
    """The values a worker builds the node of `op` from: its parameters as create_stage_node
    would pass them, validated now (the coordinator does, when it plans the run), so that
    the worker builds without validating, and without importing pydantic. None for an
    operator imported by module path: it has no spec, the worker calls it with `params`."""
    if ":" in op:
        return None
    from flowengine.ops.registry import registry

    return registry.validate(op, source_params(op, kind, params, block_samples))


def create_stage_node(op: str, kind: str, params: dict[str, Any], *,
                      block_samples: int | None = None, fused: list[FusedMember] | None = None,
                      name: str | None = None, values: dict[str, Any] | None = None) -> Node:
    """A fresh node for one stream of a stage (or the source node of a source stage); from
    `values` when the coordinator validated the parameters (node_values)."""
    if fused:
        return create_chain_node(fused, name)
    if values is not None:
        return create_node(op, params, values)
    return create_node(op, source_params(op, kind, params, block_samples))


def create_chain_node(members: list[FusedMember], name: str | None = None) -> Node:
    """The members of a fused group as one node for one stream: a Pipeline, which runs a
    buffer through them with one call per member."""
    nodes = []
    for member in members:
        node = create_node(member.op, dict(member.params), member.values)
        node.name = member.name
        nodes.append(node)
    return Pipeline(nodes, name=name or "+".join(m.name for m in members))
