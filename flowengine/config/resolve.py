"""Loading a run config: the YAML, the --set overrides, then every check.

    config, source = load_run_config("configs/tone.yaml", ["gain.gain_db=-12"])
    run = resolve_run("configs/tone.yaml")      # the validated graph, formats on every edge

Both validate completely (shape, operators, parameters, wiring, formats,
paths) and raise one ConfigError listing every problem with its file:line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from flowengine.config.model import RunConfig, parse_run_config
from flowengine.config.overrides import apply_override
from flowengine.config.source import ConfigSource, load_file
from flowengine.config.validate import ResolvedRun, validate_run

__all__ = ["load_run_config", "resolve_run", "resolve_source"]


def resolve_source(source: ConfigSource, overrides: Iterable[str] = (), *,
                   check_paths: bool = True) -> ResolvedRun:
    """Apply --set overrides to parsed YAML, then check its shape and everything else."""
    for override in overrides:
        apply_override(source, override)
    config = parse_run_config(source)
    return validate_run(config, source, check_paths=check_paths)


def resolve_run(path: str | Path, overrides: Iterable[str] = (), *,
                check_paths: bool = True) -> ResolvedRun:
    """Load, override and validate a run config file: the graph with its inferred formats."""
    return resolve_source(load_file(path), overrides, check_paths=check_paths)


def load_run_config(path: str | Path, overrides: Iterable[str] = ()
                    ) -> tuple[RunConfig, ConfigSource]:
    """Load, override and validate a run config file (ConfigError listing every problem)."""
    run = resolve_run(path, overrides)
    return run.config, run.source
