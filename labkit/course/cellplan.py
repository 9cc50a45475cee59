"""Which cells of a lesson the trusted checker kernel runs, and which names it takes from the learner's.

Grading uses two kernels (see :mod:`labkit.course.sandbox`): the learner's kernel runs the
submission, the trusted checker kernel runs the lesson's own code and its tests. This module
reads the *released* notebook (never the submission: a learner can edit unlocked cells) with
:mod:`ast` and decides, cell by cell:

* a **learner name** is one that a solution cell assigns, or that a non-test cell assigns after
  reading a learner name (assignment, augmented assignment, ``del``, ``global`` in a function,
  ``import ... as``, ``def``/``class``, ``for`` and ``with ... as`` targets, ``:=``);
* a **trusted cell** is a code cell that is neither a solution cell nor a test cell and reads
  no learner name: the checker runs it too (unless no test depends on it), so its names are
  the checker's own objects;
* before a test cell runs in the checker, every learner name it reads is bound there from the
  learner's kernel as data or call proxies (:mod:`labkit.course.remote`).
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CellPlan", "TestStep", "plan_cells"]


@dataclass
class TestStep:
    """One test cell of the released notebook and what the checker does before it."""

    grade_id: str
    source: str
    trusted_before: list[str] = field(default_factory=list)  # trusted cells to run first, in order
    learner_names: list[str] = field(default_factory=list)  # names to bind from the learner's kernel
    shared_names: list[str] = field(default_factory=list)  # trusted names both kernels hold


@dataclass
class CellPlan:
    """The checker's steps for a released notebook: trusted cells and test cells, in order."""

    tests: dict[str, TestStep]
    order: list[str]
    trusted_after: list[str]  # trusted cells after the last test (not run)
    learner: set[str]  # every learner name of the notebook


class _Names(ast.NodeVisitor):
    """Names a piece of code reads (free) and assigns at module level."""

    def __init__(self) -> None:
        self.stored: set[str] = set()
        self.loaded: set[str] = set()
        self._local: list[set[str]] = []
        self._functions = 0

    def _store(self, name: str) -> None:
        if self._local:
            self._local[-1].add(name)
        else:
            self.stored.add(name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            if not any(node.id in scope for scope in self._local):
                self.loaded.add(node.id)
        else:  # Store, Del
            self._store(node.id)

    def visit_Global(self, node: ast.Global) -> None:
        self.stored.update(node.names)
        if self._local:
            self._local[-1].difference_update(node.names)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        return None

    def _import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                continue
            self._store(alias.asname or alias.name.split(".")[0])

    visit_Import = _import
    visit_ImportFrom = _import

    def _scope(self, node: Any, name: str | None, args: ast.arguments | None, body: list[Any]) -> None:
        for deco in getattr(node, "decorator_list", []):
            self.visit(deco)
        if args is not None:
            for default in [*args.defaults, *args.kw_defaults]:
                if default is not None:
                    self.visit(default)
        if name is not None:
            self._store(name)
        params: set[str] = set()
        if args is not None:
            params = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
            params |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
        self._local.append(params)
        self._functions += 1
        # Names a function assigns are its own, unless declared global; find them first.
        for stmt in body:
            for sub in ast.walk(stmt):
                if isinstance(sub, ast.Name) and not isinstance(sub.ctx, ast.Load):
                    params.add(sub.id)
                elif isinstance(sub, ast.Global):
                    params.difference_update(sub.names)
        for stmt in body:
            self.visit(stmt)
        self._local.pop()
        self._functions -= 1

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scope(node, node.name, node.args, node.body)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._scope(node, node.name, node.args, node.body)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._scope(node, None, node.args, [node.body])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.bases, *(k.value for k in node.keywords), *node.decorator_list]:
            self.visit(expr)
        self._store(node.name)
        self._local.append(set())
        for stmt in node.body:
            self.visit(stmt)
        self._local.pop()

    def _comprehension(self, node: Any) -> None:
        # Comprehension targets are local; a walrus inside one binds in the enclosing scope.
        targets = {n.id for gen in node.generators for n in ast.walk(gen.target) if isinstance(n, ast.Name)}
        self._local.append(targets)
        for gen in node.generators:
            self.visit(gen.iter)
            for cond in gen.ifs:
                self.visit(cond)
        for part in ("elt", "key", "value"):
            if hasattr(node, part):
                self.visit(getattr(node, part))
        self._local.pop()

    visit_ListComp = _comprehension
    visit_SetComp = _comprehension
    visit_GeneratorExp = _comprehension
    visit_DictComp = _comprehension

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        if self._functions:
            self._local[-1].add(node.target.id)
        else:
            self.stored.add(node.target.id)


def names_of(source: str) -> tuple[set[str], set[str]]:
    """(names read, names assigned) at the top level of ``source``; IPython magics are dropped."""
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return set(), set()
    found = _Names()
    found.visit(tree)
    return found.loaded - set(dir(builtins)), found.stored


def imports_of(source: str) -> dict[str, str]:
    """Names that ``source`` binds only by a top-level absolute import, each with that import
    alone as source (``{"b64": "import base64 as b64"}``); IPython magics are dropped.

    A solution cell's imports are the instructor's, not the learner's: the checker runs them
    itself rather than taking the module from the learner's kernel.
    """
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return {}
    found: dict[str, str] = {}
    rest = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Import | ast.ImportFrom) and not getattr(stmt, "level", 0):
            for alias in stmt.names:
                if alias.name == "*":
                    continue
                one = (
                    ast.Import([alias])
                    if isinstance(stmt, ast.Import)
                    else ast.ImportFrom(stmt.module, [alias], 0)
                )
                found[alias.asname or alias.name.split(".")[0]] = ast.unparse(one)
        else:
            rest.append(stmt)
    assigned = names_of(ast.unparse(ast.Module(rest, [])))[1]
    return {name: src for name, src in found.items() if name not in assigned}


def plan_cells(nb: Any, *, in_kernel: Collection[str] = ()) -> CellPlan:
    """The checker's plan for the lesson's notebook ``nb`` (an ``nbformat`` notebook).

    ``nb`` is the instructor's source, hidden tests included (the names a hidden test reads must
    be bound too); its solution cells only tell which names the learner assigns. Test cells named
    in ``in_kernel`` are not the checker's: they run in the learner's kernel, and the names they
    assign count as the learner's.

    Examples
    --------
    >>> import nbformat
    >>> nb = nbformat.v4.new_notebook()
    >>> def cell(src, **meta):
    ...     c = nbformat.v4.new_code_cell(src)
    ...     if meta:
    ...         c.metadata["nbgrader"] = meta
    ...     return c
    >>> nb.cells = [cell("import math\\nx = 2"), cell("def f(v):\\n    return v", solution=True),
    ...             cell("y = f(x)"), cell("z = x + 1"),
    ...             cell("assert f(z) == z and y", grade=True, grade_id="t", points=1)]
    >>> plan = plan_cells(nb)
    >>> sorted(plan.learner), plan.tests["t"].trusted_before, plan.tests["t"].learner_names
    (['f', 'y'], ['import math\\nx = 2', 'z = x + 1'], ['f', 'y'])
    """
    learner: set[str] = set()
    shared: set[str] = set()
    every: set[str] = set()
    pending: list[int] = []
    trusted: list[tuple[str, set[str], set[str]]] = []  # source, names read, names assigned
    tests: dict[str, TestStep] = {}
    before: dict[str, list[int]] = {}
    order: list[str] = []
    events: list[tuple[str, int | str]] = []
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        meta = cell.metadata.get("nbgrader", {})
        loaded, stored = names_of(cell.source)
        if meta.get("solution"):
            imported = imports_of(cell.source)
            learner |= stored - set(imported)
            shared -= stored
            for name, src in imported.items():  # the checker imports these itself
                learner.discard(name)
                pending.append(len(trusted))
                events.append(("trusted", len(trusted)))
                trusted.append((src, set(), {name}))
        elif meta.get("grade") and str(meta.get("grade_id")) in in_kernel:
            learner |= stored
            shared -= stored
        elif meta.get("grade"):
            grade_id = str(meta.get("grade_id"))
            tests[grade_id] = TestStep(
                grade_id,
                cell.source,
                learner_names=sorted(loaded & learner),
                shared_names=sorted(shared),
            )
            before[grade_id] = pending
            order.append(grade_id)
            events.append(("test", grade_id))
            pending = []
            learner -= stored  # names a test cell assigns are the checker's own from then on
            shared -= stored
        elif loaded & learner:
            learner |= stored
            shared -= stored
        else:
            learner -= stored
            shared |= stored
            pending.append(len(trusted))
            events.append(("trusted", len(trusted)))
            trusted.append((cell.source, loaded, stored))
        every |= learner
    # The checker skips trusted cells no test depends on (figures, demonstrations): walking back
    # from the tests, a cell is kept when it assigns a name a later kept cell or test reads, or
    # assigns nothing and reads such a name (it may change that object in place).
    needed: set[str] = set()
    kept: set[int] = set()
    for kind, key in reversed(events):
        if kind == "test":
            needed |= names_of(tests[str(key)].source)[0]
            continue
        _, loaded, stored = trusted[int(key)]
        if stored & needed or (not stored and loaded & needed):
            kept.add(int(key))
            needed = (needed - stored) | loaded
    for grade_id, indices in before.items():
        tests[grade_id].trusted_before = [trusted[i][0] for i in indices if i in kept]
    return CellPlan(tests=tests, order=order, trusted_after=[trusted[i][0] for i in pending], learner=every)
