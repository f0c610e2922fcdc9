"""`--set` on the command line: change, add or remove one key of a run config before validation.

    --set gain.gain_db=-12                 a parameter of stage 'gain'
    --set src.format.sample_rate=48000     one key of a mapping parameter (made when missing)
    --set enc.bitrate=null                 remove the key: its default applies again
    --set enc.replicas=auto                a key of the stage itself (any StageConfig field)
    --set src.params.on_error=skip         params.KEY: a parameter named like a stage key
    --set strict=true                      a key of the run (no stage before it)

The value is YAML (`3` is an int, `-3.5` a float, `[a, b]` a list, `null` removes). A stage
is named by its `name`, or its `op` when it has none; a stage name may contain dots (the
longest name that fits wins). The source remembers which option set each key, so an error
about it shows `--set ...` instead of a line of the file.

`on_error` of a stage whose operator has an `on_error` parameter of its own (a reader or a
decoder: what damaged input does) is one setting kept in two places: `--set` of
either place sets the one the file uses, so the two never disagree because of an option.
"""

from __future__ import annotations

from typing import Any

import yaml

from flowengine.config.model import RunConfig, StageConfig
from flowengine.config.source import ConfigSource, KeyPath, safe_load
from flowengine.errors import ConfigError

__all__ = ["parse_override", "apply_override", "STAGE_KEYS", "RUN_KEYS"]

# Keys of a stage itself; any other first key after the stage name is an operator parameter.
STAGE_KEYS = frozenset(StageConfig.model_fields) - {"params"}
RUN_KEYS = frozenset(RunConfig.model_fields) - {"stages"}
_USAGE = "expected STAGE.KEY=VALUE (e.g. --set gain.gain_db=-6) or RUN_KEY=VALUE (e.g. --set " \
         "strict=true)"


def parse_override(text: str) -> tuple[str | None, tuple[str, ...], Any]:
    """'stage.key.sub=value' -> ('stage', ('key', 'sub'), value parsed as YAML); a run key
    ('strict=true') -> (None, ('strict',), True). The stage part is split off later, against
    the stage names (see `apply_override`); here it is the first dotted component."""
    target, sep, raw = text.partition("=")
    parts = tuple(part.strip() for part in target.split("."))
    if not sep or not all(parts):
        raise ConfigError(f"--set {text!r}: {_USAGE}")
    try:
        value = safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if len(parts) == 1:
        return None, parts, value
    return parts[0], parts[1:], value


def _find_stage(stages: list, parts: tuple[str, ...]) -> tuple[int, str, tuple[str, ...]] | None:
    """(index, name, key path) of the stage whose name is the longest prefix of `parts`."""
    for cut in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:cut])
        for index, stage in enumerate(stages):
            if isinstance(stage, dict) and name in (stage.get("name"), stage.get("op")):
                return index, name, parts[cut:]
    return None


def _stage_path(stage: dict, keys: tuple[str, ...]) -> tuple[str, ...]:
    """Where `keys` lives inside the stage mapping: ('params', ...) for a parameter."""
    first = keys[0]
    if first == "params":
        return keys
    if first == "on_error" and len(keys) == 1 and isinstance(stage.get("params"), dict) \
            and "on_error" in stage["params"] and "on_error" not in stage:
        return ("params", "on_error")      # the file keeps this setting in params: set it there
    if first in STAGE_KEYS:
        return keys
    return ("params",) + keys


def _follow_on_error(stage: dict, path: tuple[str, ...]) -> tuple[str, ...]:
    """params.on_error set by --set while the file has the stage-level key: set that one."""
    if path == ("params", "on_error") and "on_error" in stage \
            and not (isinstance(stage.get("params"), dict) and "on_error" in stage["params"]):
        return ("on_error",)
    return path


def _set(container: dict, path: tuple[str, ...], value: Any, where: str, override: str) -> None:
    """Set (or with value None remove) `path` inside `container`, making mappings on the way."""
    from flowengine.audio.format import format_mapping   # a format's short form, as a mapping

    node = container
    for depth, key in enumerate(path[:-1]):
        child = node.get(key)
        if child is None:
            if value is None:
                raise ConfigError(f"--set {override!r}: {where} has no "
                                  f"{'.'.join(path)} to remove")
            child = node[key] = {}
        elif not isinstance(child, dict):
            mapping = format_mapping(child) if isinstance(child, str) else None
            if mapping is None:
                raise ConfigError(f"--set {override!r}: {'.'.join(path[:depth + 1])} of {where} "
                                  f"is {child!r}, not a mapping")
            child = node[key] = mapping
        node = child
    last = path[-1]
    if value is None:
        if last not in node:
            raise ConfigError(f"--set {override!r}: {where} has no {'.'.join(path)} to remove")
        del node[last]
    else:
        node[last] = value


def apply_override(source: ConfigSource, override: str) -> None:
    """Apply one --set to the parsed YAML in place (see the module doc)."""
    stage_part, keys, value = parse_override(override)
    data = source.data
    if not isinstance(data, dict):
        raise ConfigError(f"--set {override!r}: the config is not a mapping with 'stages'")
    shown = f"--set {override.strip()}"
    if stage_part is None:
        if keys[0] not in RUN_KEYS and value is None:
            raise ConfigError(f"--set {override!r}: the run has no key {keys[0]!r} to remove")
        _set(data, keys, value, "the run", override)
        source.overrides[keys] = shown
        return
    stages = data.get("stages") if isinstance(data.get("stages"), list) else []
    found = _find_stage(stages, (stage_part,) + keys)
    if found is None:
        raise ConfigError(f"--set {override!r}: no stage named {stage_part!r}")
    index, name, keys = found
    stage = stages[index]
    path = _follow_on_error(stage, _stage_path(stage, keys))
    if path[0] == "params" and len(path) == 1:
        raise ConfigError(f"--set {override!r}: name a parameter: --set {name}.params.KEY=VALUE")
    if path[0] == "params" and not isinstance(stage.get("params", {}), dict):
        raise ConfigError(f"--set {override!r}: stage {name!r} has params that are not a "
                          f"mapping ({source.where(('stages', index, 'params'))})")
    _set(stage, path, value, f"stage {name!r}", override)
    full: KeyPath = ("stages", index) + path
    source.overrides[full] = shown
