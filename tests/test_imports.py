"""The package's own import statements, read with ``ast`` (nothing is imported).

The rules (house style): library code never imports the command layer
(``dask_phot.commands``); ``dask_phot`` has no import cycle; no module imports
another module's private names, or a private module of a package it is not in.

How imports are counted:

* every ``import`` and ``from ... import`` of a ``dask_phot`` module is an edge,
  wherever it stands: at module level, or inside a function (a lazy import
  postpones a dependency, it does not remove it: a cycle closed by a function-level
  import is still a cycle). Imports under ``if TYPE_CHECKING:`` never run and
  are not counted;
* importing ``a.b.c`` also runs the ``__init__`` of ``a.b``, so it is an edge to
  that package too, except when the importer is inside ``a.b`` (whose
  ``__init__`` is then already running: a package's modules importing each other
  through the package is how packages work);
* ``from a.b import c`` names the module ``a.b.c`` when there is one, else a name
  defined in ``a.b``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "dask_phot"
COMMANDS = "dask_phot.commands"


@dataclass(frozen=True)
class Import:
    """One imported dask_phot module (and the name taken from it, if any)."""

    importer: str
    module: str
    name: str | None
    line: int


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            stack.extend(node.orelse)  # type: ignore[attr-defined]
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _imports(module: str) -> list[Import]:
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    out = []
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [Import(module, a.name, None, node.lineno) for a in node.names
                    if a.name.split(".")[0] == "dask_phot"]
            continue
        base = node.module or ""
        if node.level:
            parts = module.split(".")[: None if is_package else -1]
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join([*parts, base] if base else parts)
        if base.split(".")[0] != "dask_phot":
            continue
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            out.append(Import(module, sub, None, node.lineno) if sub in MODULES
                       else Import(module, base, alias.name, node.lineno))
    return out


IMPORTS = {m: _imports(m) for m in MODULES}


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _edges(module: str) -> set[str]:
    """The modules whose execution ``module``'s imports start (see the module docstring)."""
    out = set()
    for imp in IMPORTS[module]:
        parts = imp.module.split(".")
        out.add(imp.module)
        out.update(".".join(parts[:i]) for i in range(1, len(parts))
                   if not _inside(module, ".".join(parts[:i])))
    out.discard(module)
    return {m for m in out if m in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_scan_sees_the_package():
    assert {"dask_phot", "dask_phot.config", "dask_phot.commands.main",
            "dask_phot.pipeline.kernel"} <= MODULES.keys()
    edges = _edges("dask_phot.pipeline.kernel")
    assert {"dask_phot.engine", "dask_phot.config", "dask_phot.schema"} <= edges
    # a function-level import counts: the fetch command imports the archive when run
    assert "dask_phot.archive" in _edges("dask_phot.commands.fetch")
    # the cycle finder finds cycles
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_no_library_module_imports_a_command_module():
    wrong = [f"{i.importer} (line {i.line}) imports {i.module}"
             for m, imports in IMPORTS.items() if not _inside(m, COMMANDS)
             for i in imports if _inside(i.module, COMMANDS)]
    assert not wrong, "library code imports the command layer:\n" + "\n".join(wrong)


def test_dask_phot_has_no_import_cycle():
    cycle = _cycle({m: _edges(m) for m in MODULES})
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_is_imported_across_modules(module):
    wrong = []
    for imp in IMPORTS[module]:
        if imp.name is not None and _private(imp.name):
            wrong.append(f"line {imp.line}: {imp.name} from {imp.module}")
        parts = imp.module.split(".")
        for i, part in enumerate(parts):
            package = ".".join(parts[:i])
            if _private(part) and not _inside(module, package):
                wrong.append(f"line {imp.line}: {imp.module} is private to {package}")
    assert not wrong, f"{module}: " + "; ".join(wrong)
