"""scipy.signal and scipy.ndimage, imported on first use.

Importing scipy.signal costs ~1.4 s, which every CLI call and worker start
would pay although most runs never filter; processors call through `signal`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["signal", "ndimage"]


class _LazyModule:
    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


signal = _LazyModule("scipy.signal")
ndimage = _LazyModule("scipy.ndimage")     # scipy.signal imports it too
