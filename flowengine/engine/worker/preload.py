"""What a worker does before it reports ready: import what its operators need, so none of
it happens on the data path.

Importing this module (the forkserver does, see forkserver.py) loads the built-in
operators, once for every worker. A worker builds its nodes from the
parameter values the coordinator validated (WorkerSpec.values), so neither the
forkserver nor a worker imports pydantic (~50 ms of each start); only a stage whose
values did not come with its spec validates in the worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flowengine.engine.worker.forkserver import SCIPY_OPS
from flowengine.errors import ConfigError
from flowengine.ops.registry import registry

__all__ = ["warm"]


def warm(stages: Iterable[tuple[str, dict[str, Any], dict[str, Any] | None]]) -> None:
    """Do now what the nodes of these (op, params, values) would do on their first buffer:
    import scipy.signal for a filter, and validate the params that come without values
    (importing pydantic: ~50 ms of CPU for the first, which a chain otherwise paid stage
    after stage on its first buffer)."""
    stages = list(stages)
    if SCIPY_OPS.intersection(op for op, _, _ in stages):
        import scipy.signal  # noqa: F401 - the import is the point (cached after the first)
    for op, params, values in stages:
        if values is None and ":" not in op:     # an imported test operator has no spec
            try:
                registry.validate(op, params)
            except ConfigError:
                pass                 # the node's creation reports it, where it always has


# Once, in the forkserver: the built-in operators (a plugin's load when a worker needs one:
# a broken plugin is then that worker's error, not the forkserver's).
registry.load_builtins()
