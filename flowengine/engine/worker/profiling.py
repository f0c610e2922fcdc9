"""Optional cProfile of a worker's run, for finding the engine's own costs.

With ``FLOWENGINE_PROFILE_DIR=DIR`` set, every worker writes a cProfile of its
run to ``DIR/<stage>-<replica>.prof`` (read with pstats; waits show as poll):
how the engine's own costs were found and cut (docs/performance.md). Unset,
it costs nothing.
"""

from __future__ import annotations

import contextlib
import cProfile
import os
import sys
from collections.abc import Iterator

__all__ = ["PROFILE_ENV", "profiled"]

PROFILE_ENV = "FLOWENGINE_PROFILE_DIR"


@contextlib.contextmanager
def profiled(worker_id: str) -> Iterator[None]:
    """cProfile the block into $FLOWENGINE_PROFILE_DIR/<stage>-<replica>.prof when that is set."""
    directory = os.environ.get(PROFILE_ENV)
    if not directory:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        path = os.path.join(directory, worker_id.replace(":", "-") + ".prof")
        try:
            profile.dump_stats(path)
        except OSError as exc:   # never hides how the worker ended
            print(f"flowengine: worker {worker_id}: cannot write its profile {path}: {exc}",
                  file=sys.stderr)
