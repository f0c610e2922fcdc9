"""What worker processes should import before a run starts, and the import itself.

A worker created by the forkserver starts from a copy of it, so whatever the
forkserver imported is free for every worker. The forkserver preloads
`modules_for(plan ops)`: the worker code, this module (importing it loads the
operator registry with its plugins: ~0.13 s a worker paid on its first
buffer, one stage after another along the chain) and ``scipy.signal`` when a
stage runs an operator that filters (~1.4 s per worker otherwise).

The forkserver is started once per coordinator process and keeps its first
preload list; a later run with other operators still gets them imported in
each worker before it reports ready (`warm`), all workers at once, rather
than on the data path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flowengine.errors import ConfigError
from flowengine.ops.registry import registry

__all__ = ["BASE_MODULES", "SCIPY_OPS", "modules_for", "warm"]

BASE_MODULES = ["flowengine.engine.worker.main", "flowengine.engine.worker.preload"]
# Operators whose nodes call scipy.signal (flowengine.ops.processors._scipy imports it lazily).
SCIPY_OPS = frozenset({"fir", "iir", "lowpass", "highpass", "compressor", "loudness"})


def modules_for(ops: Iterable[str]) -> list[str]:
    """The modules to preload for a run whose stages (fused members included) run `ops`."""
    return BASE_MODULES + (["scipy.signal"] if SCIPY_OPS.intersection(ops) else [])


def warm(stages: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """Do now what the nodes of these (op, params) would do on their first buffer: import
    their modules and build their parameter models (pydantic, ~40 ms of CPU each, which
    a chain otherwise paid stage after stage on its first buffer)."""
    stages = list(stages)
    if SCIPY_OPS.intersection(op for op, _ in stages):
        import scipy.signal  # noqa: F401 - the import is the point (cached after the first)
    for op, params in stages:
        if ":" not in op:            # an imported test operator has no model
            try:
                registry.validate(op, params)
            except ConfigError:
                pass                 # the node's creation reports it, where it always has


registry.names()  # loads the built-in operators and the plugins, once, in the forkserver
