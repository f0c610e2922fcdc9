"""Configs written as YAML text in a test: resolved, or the problems they are refused with."""

from __future__ import annotations

import pytest

from flowengine.config import ConfigValidationError, load_source, resolve_source


def resolve(text: str, overrides=(), check_paths: bool = True):
    """The ResolvedRun of config `text` (as if read from run.yaml) with `overrides`."""
    return resolve_source(load_source(text, "run.yaml"), overrides, check_paths=check_paths)


def problems(text: str, overrides=(), check_paths: bool = True) -> list[str]:
    """Every problem the validation of `text` finds, as printed (it must find some)."""
    with pytest.raises(ConfigValidationError) as caught:
        resolve(text, overrides, check_paths)
    return [str(p) for p in caught.value.problems]
