"""Packages whose public names are imported when first used (PEP 562), so that importing
the package costs nothing: `import flowengine` loads no engine, zmq or config model."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(package: str, public: Mapping[str, str],
               namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: public name -> the module it is imported from
    at its first use; then it stays in `namespace` (the package's globals)."""
    def __getattr__(name: str) -> Any:
        module = public.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = namespace[name] = getattr(importlib.import_module(module), name)
        return value
    return __getattr__
