"""Run descriptions: YAML with line numbers, the pydantic run model, validation against the
registry (`resolve_run` in resolve.py), the CURVE key files (keys.py).

The names are imported when first used (PEP 562): a worker process reads the key files
(keys.py) and must not load the config model or the validator on the way.
"""

from __future__ import annotations

from flowengine.lazy import lazy_names

_PUBLIC = {
    **dict.fromkeys(["load_run_config", "resolve_run", "resolve_source"],
                    "flowengine.config.resolve"),
    **dict.fromkeys(["RunConfig", "StageConfig", "json_schema", "parse_run_config"],
                    "flowengine.config.model"),
    **dict.fromkeys(["ConfigSource", "load_file", "load_source"], "flowengine.config.source"),
    "apply_override": "flowengine.config.overrides",
    **dict.fromkeys(["ConfigValidationError", "Problem", "ResolvedRun", "StageInfo",
                     "validate_run"], "flowengine.config.validate"),
}

__all__ = list(_PUBLIC)

__getattr__ = lazy_names(__name__, _PUBLIC, globals())
