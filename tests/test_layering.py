"""The library's floors, read from the code's own imports (no module is run).

The course (``labkit/course``) stands on the library: no module below it imports it, and only
the package face (``labkit/__init__.py``, which wires the course's profiles into the core) and
the command line sit above it. Within the library there are no import cycles (an import made
only for type checking counts: it ties the two modules' designs together just the same), and no
module takes another module's private (underscore) names.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "labkit"
ABOVE_THE_COURSE = {"labkit", "labkit.cli"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES: dict[str, ast.Module] = {
    name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()
}


def _under_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _imports(name: str, *, typing: bool = False) -> Iterator[tuple[str, str | None]]:
    """(module, imported name or None) for every runtime import of labkit in module ``name``;
    with ``typing``, also those made only for the type checker (``if TYPE_CHECKING:``)."""
    return _imports_in(TREES[name], typing=typing)


def _imports_in(tree: ast.Module, *, typing: bool = False) -> Iterator[tuple[str, str | None]]:
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if not typing and _under_type_checking(node, parents):
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "labkit":
                    yield alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "labkit":
            for alias in node.names:
                yield node.module, alias.name
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func).endswith("import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and str(node.args[0].value).startswith("labkit")
        ):
            yield str(node.args[0].value), None


def _defined_in(module: str, name: str) -> str:
    """The module that really holds ``name`` when ``module`` (a package face) re-exports it."""
    if f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    for node in TREES[module].body:
        if isinstance(node, ast.ImportFrom) and node.module in MODULES:
            if any((a.asname or a.name) == name for a in node.names):
                return _defined_in(node.module, name) if node.module.startswith(module + ".") else node.module
    return module


def _edges(*, typing: bool = False) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for module, imported in _imports(name, typing=typing):
            if module not in MODULES:
                continue
            target = module if imported is None else _defined_in(module, imported)
            if target != name:
                graph[name].add(target)
    return graph


def _in_course(module: str) -> bool:
    return module == "labkit.course" or module.startswith("labkit.course.")


def test_nothing_below_the_course_imports_it() -> None:
    """Only the course itself, the package face and the CLI may import labkit.course."""
    offenders = {
        name
        for name in MODULES
        if not _in_course(name) and name not in ABOVE_THE_COURSE
        for module, _ in _imports(name)
        if _in_course(module)
    }
    assert sorted(offenders) == []


def test_import_labkit_leaves_the_course_unloaded() -> None:
    """``import labkit`` loads no course module (no grading sandbox, no certificates)."""
    import subprocess
    import sys

    code = "import sys, labkit; print(sorted(m for m in sys.modules if m.startswith('labkit.course')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def _cycles(graph: dict[str, set[str]], keep: set[str]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), within ``keep``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node] & keep):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(keep):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph, set(graph)) == [["a", "b", "c"]]


def test_an_import_for_the_type_checker_is_an_edge_of_the_cycle_finder() -> None:
    """The shape of a cycle this test once missed: a module imports another at run time, and the
    other imports it back under ``if TYPE_CHECKING:`` to annotate a parameter."""
    back = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from labkit.redteam.campaign import Campaign\n"
    )
    assert list(_imports_in(back)) == []
    assert list(_imports_in(back, typing=True)) == [("labkit.redteam.campaign", "Campaign")]
    graph = {
        "campaign": {"probes"},
        "probes": {m.rsplit(".", 1)[1] for m, _ in _imports_in(back, typing=True)},
    }
    assert _cycles(graph, set(graph)) == [["campaign", "probes"]]


def test_the_library_has_no_import_cycles() -> None:
    """Every module of the library imports only modules that do not import it back, counting
    imports made only for the type checker."""
    library = {name for name in MODULES if not _in_course(name)}
    assert _cycles(_edges(typing=True), library) == []


def test_the_course_has_no_import_cycles() -> None:
    course = {name for name in MODULES if _in_course(name)}
    assert _cycles(_edges(typing=True), course) == []


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def _private_imports(name: str) -> Iterator[str]:
    for module, imported in _imports(name):
        target = (
            module if imported is None or f"{module}.{imported}" not in MODULES else f"{module}.{imported}"
        )
        if imported is not None and target == module and _private(imported):
            yield f"{name} takes {imported} from {module}"
        elif _private(target) and target in MODULES:
            home = target.rsplit(".", 1)[0]
            if not (name == home or name.startswith(home + ".")):
                yield f"{name} imports {target}, private to {home}"


def test_no_module_takes_another_modules_private_names() -> None:
    """No ``from labkit.x import _name``: what modules share is public in a module of its own
    (a private module such as ``labkit/attacks/_common.py`` serves only its own package)."""
    library = [name for name in MODULES if not _in_course(name)]
    offenders = {line for name in library for line in _private_imports(name)}
    assert sorted(offenders) == []
