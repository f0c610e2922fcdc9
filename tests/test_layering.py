"""The package's layering, as docs/architecture.md draws it: each folder imports only the
folders above it, and no two modules import each other (through any chain). Module-level
imports count, `if TYPE_CHECKING:` ones included; an import inside a function is a lazy
one (start-up), allowed only downwards too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "flowengine"

# Each part, and the parts it may import (besides itself and errors.py).
LAYERS = {
    "audio": set(),
    "ops": {"audio"},
    "core": {"audio", "ops"},
    "config": {"audio", "ops", "core"},
    "local": {"audio", "ops", "core", "config"},
    "engine": {"audio", "ops", "core", "config"},
    "live": {"audio", "ops", "core", "config", "local"},
    "cli": {"audio", "ops", "core", "config", "local", "engine", "live"},
}
# The registry loads the live operators by name, at its first lookup (a plugin, not an import).


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported flowengine module, at module level?) for every import in `path` (the
    package's imports are absolute)."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom) and child.module:
                for alias in child.names:
                    target = f"{child.module}.{alias.name}"
                    found.append((target if target in modules else child.module, top))
            elif isinstance(child, ast.Import):
                found.extend((alias.name, top) for alias in child.names)
            visit(child, top and not isinstance(child, (ast.FunctionDef,
                                                         ast.AsyncFunctionDef)))

    visit(ast.parse(path.read_text()), True)
    return [(name, top) for name, top in found if name.startswith("flowengine.")]


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) \
        else parts[-1]


def test_each_part_imports_only_the_parts_below_it():
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        part = _part(module)
        if part not in LAYERS:
            continue
        for target, _ in _imports(path, modules):
            other = _part(target)
            if other in (part, "errors", "flowengine") or other not in LAYERS:
                continue
            if other not in LAYERS[part]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_import_cycles_between_modules():
    modules = _modules()
    graph = {m: {t for t, top in _imports(p, modules) if top and t in modules and t != m}
             for m, p in modules.items()}
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join(path + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    assert cycles == []


def test_no_import_inside_a_function_dodges_a_cycle():
    """An import inside a function is for start-up (load a heavy part only when used), never
    to dodge a cycle: the module it imports must not import, through any chain of
    module-level imports, the module that imports it."""
    modules = _modules()
    graph = {m: {t for t, top in _imports(p, modules) if top and t in modules and t != m}
             for m, p in modules.items()}

    def reachable(start: str) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for nxt in graph[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    dodges = [f"{module} imports {target} in a function, and {target} imports {module}"
              for module, path in modules.items()
              for target, top in _imports(path, modules)
              if not top and target in modules and module in reachable(target)]
    assert dodges == []
