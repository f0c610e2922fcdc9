"""A replica's share of a source's streams, when the planner runs whole streams per replica.

Every replica of such a group opens the same source (the same files, the same
generated tones) and asks, for each stream in order, whether it is its own:

- **claims** (offline: files): a stream is taken by the first replica that is
  ready for one, by creating a file named after it in the run's claims
  directory exclusively (``O_CREAT | O_EXCL``): one replica wins, the others
  skip it. Each claims its next stream only when it has finished the last, so
  files of any lengths spread evenly over the replicas with no coordinator in
  the loop (one system call per stream).
- **by position** (a paced source: every stream is live at once): replica r of
  N reads the streams whose index is r modulo N.
- **through the coordinator** (replicas on several hosts: ``claims`` is a
  ``tcp://`` endpoint): the same first-come claims, granted by the coordinator's
  claim service (``engine/cluster/claims.py``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

__all__ = ["share_claim"]


def share_claim(share: dict, context: Any = None, curve: Any = None
                ) -> tuple[Callable[[int, str], bool], bool]:
    """(claim(index, stream) -> bool, one_at_a_time) for a WorkerSpec's `share` (`context`
    and `curve`: the worker's ZeroMQ context and keys, for claims through the coordinator)."""
    replica, replicas = share["replica"], share["replicas"]
    directory = share.get("claims")
    if directory is None:
        return (lambda index, stream: index % replicas == replica), False
    if directory.startswith("tcp://"):
        from flowengine.engine.cluster.claims import RemoteClaims
        return RemoteClaims(context, directory, share["claims_key"], curve), True
    os.makedirs(directory, exist_ok=True)

    def claim(index: int, stream: str) -> bool:
        name = hashlib.sha1(stream.encode("utf-8", "surrogatepass")).hexdigest()
        try:
            os.close(os.open(os.path.join(directory, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    return claim, True
