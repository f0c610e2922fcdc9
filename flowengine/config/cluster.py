"""Checks of the `cluster:` section and the stages' `placement:` (docs/cluster.md).

`engine: ray` runs workers on the hosts of a Ray cluster: the data plane is
tcp:// between hosts, so it implies `transport: tcp` and CURVE (the model
fills both in unless the file says otherwise). Here, before anything starts:
Ray must be installed (found, not imported: importing it costs ~0.7 s and
~80 MB), `transport: ipc` is refused, and `security.curve: false` is allowed
with a warning.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable

from flowengine.config.model import RunConfig
from flowengine.config.source import ConfigSource

__all__ = ["check_cluster", "ray_installed", "RAY_INSTALL_HINT"]

log = logging.getLogger("flowengine")

RAY_INSTALL_HINT = "pip install 'flowengine[ray]'"


def ray_installed() -> bool:
    """Whether `import ray` would find the package (without importing it)."""
    return importlib.util.find_spec("ray") is not None


def _given(source: ConfigSource, *path: str) -> bool:
    """Whether the file (or a --set) gave this key itself, not a default."""
    data = source.data
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True


def check_cluster(config: RunConfig, source: ConfigSource,
                  add: Callable[[tuple, str | None, str, str], None]) -> None:
    """Add a problem (path, stage, key, message) for each thing wrong with the cluster keys."""
    if config.cluster.engine != "ray":
        return
    if not ray_installed():
        add(("cluster", "engine"), None, "cluster.engine",
            f"engine: ray needs the Ray package, which is not installed: {RAY_INSTALL_HINT} "
            f"(or remove the cluster section to run on this machine)")
    if config.transport != "tcp":
        add(("transport",), None, "transport",
            f"cluster.engine: ray runs workers on other hosts, which ipc:// sockets cannot "
            f"reach: remove 'transport: {config.transport}' (ray implies tcp)")
    if not config.security.curve and _given(source, "security", "curve"):
        log.warning("%s: security.curve: false with cluster.engine: ray: every tcp:// socket "
                    "between hosts is plain text that anyone on the network can read and write "
                    "to; run it only on a network you trust (docs/cluster.md)",
                    source.where(("security", "curve")))
