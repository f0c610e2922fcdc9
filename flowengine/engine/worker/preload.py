"""What a worker does before it reports ready: import what its operators need and build
their parameter models, so none of it happens on the data path.

Importing this module (the forkserver does, see forkserver.py)
loads the operator registry with its plugins and builds the parameter models
of the operators the forkserver was started for, once for every worker (a
worker that built them itself paid ~0.25 s of CPU before it was ready, most of
it pydantic importing its own machinery; a worker of another operator builds
its own, in a few milliseconds once that machinery is loaded).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from flowengine.engine.worker.forkserver import PRELOAD_OPS_ENV, SCIPY_OPS
from flowengine.errors import ConfigError
from flowengine.ops.registry import registry

__all__ = ["warm"]


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


# Once, in the forkserver: the built-in operators and the plugins, and the parameter models
# of the operators it was started for (of every operator when it was told of none).
registry.build_models([op for op in os.environ.get(PRELOAD_OPS_ENV, "").split(",") if op]
                      or None)
