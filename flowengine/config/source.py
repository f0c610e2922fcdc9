"""YAML text -> plain data, remembering the line of every key so errors can point at it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flowengine.errors import ConfigError

__all__ = ["ConfigSource", "load_source", "load_file", "safe_load"]

KeyPath = tuple  # a key path into the document: ("stages", 2, "params", "gain_db")


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader that also reads 1e9 and 2E-3 as floats, as YAML 1.2 does (PyYAML's 1.1
    rules want a dot, 1.0e9, and made `seconds: 1e3` the string '1e3'). libyaml's parser
    when PyYAML has it (its wheels do): ten times faster than PyYAML's own."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"))


def safe_load(text: str) -> Any:
    """yaml.safe_load with _Loader's floats."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


@dataclass
class ConfigSource:
    """Parsed YAML plus where each key and item stands in the file (1-based lines)."""

    data: Any
    filename: str = "<config>"
    lines: dict[KeyPath, int] = field(default_factory=dict)
    # Keys set on the command line (config/overrides.py): path -> "--set gain.gain_db=-6",
    # shown instead of a line.
    overrides: dict[KeyPath, str] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def where(self, path: KeyPath) -> str:
        """'file.yaml:12' for a key of the file, or the --set option that gave it."""
        path = tuple(path)
        for length in range(len(path), 0, -1):
            if path[:length] in self.overrides:
                return f"{self.filename} ({self.overrides[path[:length]]})"
        line = self.line_of(path)
        return f"{self.filename}:{line}" if line else self.filename


# YAML aliases share one node many times: a few lines can expand to billions of nodes
# ("billion laughs") or refer to themselves. A run config is a few hundred nodes.
MAX_EXPANDED_NODES = 100_000
MAX_DEPTH = 64


def _record_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], filename: str,
                  open_nodes: set[int], budget: list[int]) -> None:
    line = node.start_mark.line + 1
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(f"{filename}:{line}: YAML aliases expand to more than "
                          f"{MAX_EXPANDED_NODES} nodes (a run config needs a few hundred)")
    if len(path) > MAX_DEPTH:
        raise ConfigError(f"{filename}:{line}: YAML nested deeper than {MAX_DEPTH} levels")
    if id(node) in open_nodes:
        raise ConfigError(f"{filename}:{line}: YAML alias refers to a node that contains it "
                          f"(a recursive structure)")
    lines.setdefault(path, line)
    open_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue    # a list or map as a key: safe_load refuses it (unhashable)
            key = path + (key_node.value,)
            key_line = key_node.start_mark.line + 1
            # safe_load keeps the last of two equal keys: a silently lost setting. Merge
            # keys (<<) are the exception: YAML merges every one of them.
            first = first_seen.get((key_node.tag, key_node.value))
            if first is not None and key_node.tag != "tag:yaml.org,2002:merge":
                raise ConfigError(f"{filename}:{key_line}: duplicate key {key_node.value!r} "
                                  f"(also on line {first}): YAML would keep only the last one")
            first_seen[(key_node.tag, key_node.value)] = key_line
            lines[key] = key_line
            _record_lines(value_node, key, lines, filename, open_nodes, budget)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, path + (index,), lines, filename, open_nodes, budget)
    open_nodes.discard(id(node))


def load_source(text: str, filename: str = "<config>") -> ConfigSource:
    """Parse YAML text; a syntax error becomes a ConfigError with file and line."""
    try:
        # Composed (and its aliases checked) before it is constructed: safe_load would
        # build a self-referring or exponentially shared structure first.
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            lines: dict[KeyPath, int] = {}
            if root is not None:
                _record_lines(root, (), lines, filename, set(), [MAX_EXPANDED_NODES])
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{filename}{line}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{filename}: invalid YAML: {exc}") from None
    except RecursionError:      # PyYAML's composer recurses once per nesting level
        raise ConfigError(f"{filename}: invalid YAML: nested too deeply") from None
    return ConfigSource(data, filename, lines)


def load_file(path: str | Path) -> ConfigSource:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} "
                          f"at byte offset {exc.start} ({exc.reason})") from None
    return load_source(text, str(path))
