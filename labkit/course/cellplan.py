"""Which cells of a lesson the trusted checker kernel runs, and which names it takes from the learner's.

Grading uses two kernels (see :mod:`labkit.course.sandbox`): the learner's kernel runs the
submission, the trusted checker kernel runs the lesson's own code and its tests. This module
reads the *released* notebook (never the submission: a learner can edit unlocked cells) with
:mod:`ast` and decides, cell by cell:

* a **learner name** is one that a solution cell assigns, or that a non-test cell assigns after
  reading a learner name (assignment, augmented assignment, ``del``, ``global`` in a function,
  ``import ... as``, ``def``/``class``, ``for`` and ``with ... as`` targets, ``:=``);
* a **trusted cell** is a code cell that is neither a solution cell nor a test cell and whose
  running executes no learner code: the checker runs it too (unless no test depends on it or
  it only draws, :data:`DISPLAY`), so its names are the checker's own objects. A cell may
  read learner names inside the bodies of the functions it defines
  (``def defend(seed): return build_defense(...)``) and stay trusted,
  as long as nothing in the cell runs such a body: the reads must sit in an undecorated ``def``
  (a decorator may call the function), not in a class body, a lambda or a comprehension (run at
  once, or handed to code that calls them), and the cell must not read, at its top level, a
  function whose body reaches a learner name (a call, an alias, ``eval``/``globals()``). Its
  top-level code (decorators, default values and annotations included) reads no learner name;
* a function a trusted cell defines counts, for the cells after it, as the names its body reads:
  a later cell that reads it at top level runs learner code and is a learner cell;
* before a test cell runs in the checker, every learner name it reads, directly or through the
  trusted functions it reads, is bound there from the learner's kernel as data or call proxies
  (:mod:`labkit.course.remote`); a trusted function finds them as its globals when called.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DISPLAY", "CellPlan", "CellReads", "TestStep", "display_only", "plan_cells", "reads_of"]

# Builtins that reach a cell's names by a string: a cell that uses one at top level may run any
# function it defined.
_DYNAMIC = frozenset({"eval", "exec", "globals", "locals", "vars"})

#: Functions that only draw (labkit's never change their inputs). A trusted cell whose every
#: statement calls one of them, through a name an import bound, with arguments that call nothing
#: (``lk.atlas.threat_map();``, ``lk.plot.curves(report, title="...")``) changes no object a
#: test reads, whatever names it reads: the checker skips it.
DISPLAY = ("labkit.plot", "labkit.atlas.threat_map", "matplotlib.pyplot", "IPython.display.display")


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


@dataclass(frozen=True)
class Deferred:
    """A function a cell defines at its top level and the free names its body reads.

    ``name`` is ``None`` for a lambda. ``deferrable`` is true only for an undecorated ``def``
    outside any class body: nothing but a later call runs its body.
    """

    name: str | None
    reads: frozenset[str]
    deferrable: bool


@dataclass(frozen=True)
class CellReads:
    """What a cell reads when it runs (``immediate``) and what its functions read when called."""

    immediate: frozenset[str]
    functions: tuple[Deferred, ...]


class _Names(ast.NodeVisitor):
    """Names a piece of code reads (free) and assigns at module level; the reads split into those
    of its top-level code and those of each function it defines at top level."""

    def __init__(self) -> None:
        self.stored: set[str] = set()
        self.loaded: set[str] = set()
        self.immediate: set[str] = set()
        self.functions: list[Deferred] = []
        self._local: list[set[str]] = []
        self._functions = 0
        self._classes = 0  # class bodies open at top level (outside any function)
        self._body: set[str] = set()  # free reads of the top-level function being visited

    def _store(self, name: str) -> None:
        if self._local:
            self._local[-1].add(name)
        else:
            self.stored.add(name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            if not any(node.id in scope for scope in self._local):
                self.loaded.add(node.id)
                (self._body if self._functions else self.immediate).add(node.id)
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
        # Decorators, default values and annotations run when the definition does.
        for deco in getattr(node, "decorator_list", []):
            self.visit(deco)
        if args is not None:
            for default in [*args.defaults, *args.kw_defaults]:
                if default is not None:
                    self.visit(default)
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            for annotation in [a.annotation for a in every if a is not None]:
                if annotation is not None:
                    self.visit(annotation)
        if getattr(node, "returns", None) is not None:
            self.visit(node.returns)
        if name is not None:
            self._store(name)
        outermost = self._functions == 0
        if outermost:
            self._body = set()
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
        if outermost:
            deferrable = name is not None and not getattr(node, "decorator_list", []) and not self._classes
            module_name = None if self._classes else name  # a method's name is its class's
            self.functions.append(Deferred(module_name, frozenset(self._body), deferrable))

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
        top = self._functions == 0
        self._classes += top
        for stmt in node.body:
            self.visit(stmt)
        self._classes -= top
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


def _visited(source: str) -> _Names:
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    found = _Names()
    try:
        found.visit(ast.parse("\n".join(lines)))
    except SyntaxError:
        return _Names()
    return found


def names_of(source: str) -> tuple[set[str], set[str]]:
    """(names read, names assigned) at the top level of ``source``; IPython magics are dropped.

    The names read include those read inside the functions ``source`` defines (free names only).
    """
    found = _visited(source)
    return found.loaded - set(dir(builtins)), found.stored


def reads_of(source: str) -> CellReads:
    """The names ``source`` reads when it runs, apart from those its functions read when called.

    >>> r = reads_of("@cache\\ndef f(x=g):\\n    return h(x)\\ny = [k(v) for v in w]")
    >>> sorted(r.immediate), [(d.name, sorted(d.reads), d.deferrable) for d in r.functions]
    (['cache', 'g', 'k', 'w'], [('f', ['h'], False)])
    """
    found = _visited(source)
    skip = set(dir(builtins)) - _DYNAMIC
    return CellReads(
        immediate=frozenset(found.immediate - skip),
        functions=tuple(Deferred(d.name, d.reads - skip, d.deferrable) for d in found.functions),
    )


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


def module_paths(source: str) -> dict[str, str]:
    """Names that ``source`` binds only by a top-level absolute import -> the dotted path of what
    they name (``{"lk": "labkit", "grid": "labkit.plot.image_grid"}``)."""
    found: dict[str, str] = {}
    for name, src in imports_of(source).items():
        stmt = ast.parse(src).body[0]
        assert isinstance(stmt, ast.Import | ast.ImportFrom)
        alias = stmt.names[0]
        if isinstance(stmt, ast.ImportFrom):
            found[name] = f"{stmt.module}.{alias.name}"
        else:
            found[name] = alias.name if alias.asname else alias.name.split(".")[0]
    return found


def _dotted(node: ast.expr, modules: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in modules:
        return None
    return ".".join([modules[node.id], *reversed(parts)])


_RUNS_CODE = (ast.Call, ast.Lambda, ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)


def display_only(source: str, modules: dict[str, str]) -> bool:
    """True when every statement of ``source`` calls a drawing function (:data:`DISPLAY`) by a
    name in ``modules`` (:func:`module_paths` of the cells before) with arguments that call
    nothing, so running it changes no object a test reads.

    >>> display_only("lk.atlas.threat_map();", {"lk": "labkit"})
    True
    >>> display_only("lk.plot.curves(model(x))", {"lk": "labkit"})  # model(x) may change model
    False
    """
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        body = ast.parse("\n".join(lines)).body
    except SyntaxError:
        return False
    for stmt in body:
        if not isinstance(stmt, ast.Expr) or not isinstance(stmt.value, ast.Call):
            return False
        path = _dotted(stmt.value.func, modules)
        if path is None or not any(path == p or path.startswith(p + ".") for p in DISPLAY):
            return False
        arguments = [*stmt.value.args, *(k.value for k in stmt.value.keywords)]
        if any(isinstance(n, _RUNS_CODE) for arg in arguments for n in ast.walk(arg)):
            return False
    return bool(body)


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
    # Each function the checker defines (a trusted or test cell's ``def``) -> the free names its
    # body reads: calling it reads those names in turn.
    calls: dict[str, frozenset[str]] = {}

    def reach(names: Collection[str], own: dict[str, frozenset[str]]) -> set[str]:
        """``names`` and every name the functions among them read when called, transitively."""
        table = {**calls, **own}
        seen: set[str] = set()
        todo = list(names)
        if _DYNAMIC & set(todo):  # eval("f()"), globals()["f"](): any function may run
            todo += list(table)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(table.get(name, ()))
        return seen

    def forget(stored: set[str]) -> None:
        for name in stored:
            calls.pop(name, None)

    pending: list[int] = []
    # source, names read, names assigned, whether it only draws
    trusted: list[tuple[str, set[str], set[str], bool]] = []
    modules: dict[str, str] = {}  # names the checker's imports bound -> what they name
    tests: dict[str, TestStep] = {}
    before: dict[str, list[int]] = {}
    order: list[str] = []
    events: list[tuple[str, int | str]] = []
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        meta = cell.metadata.get("nbgrader", {})
        loaded, stored = names_of(cell.source)
        reads = reads_of(cell.source)
        own = {d.name: d.reads for d in reads.functions if d.name is not None}
        checker_imports: dict[str, str] = {}  # modules the checker binds by running this cell
        if meta.get("solution"):
            checker_imports = module_paths(cell.source)  # the checker imports these itself
            imported = imports_of(cell.source)
            learner |= stored - set(imported)
            shared -= stored
            forget(stored)
            for name, src in imported.items():  # the checker imports these itself
                learner.discard(name)
                pending.append(len(trusted))
                events.append(("trusted", len(trusted)))
                trusted.append((src, set(), {name}, False))
        elif meta.get("grade") and str(meta.get("grade_id")) in in_kernel:
            learner |= stored
            shared -= stored
            forget(stored)
        elif meta.get("grade"):
            grade_id = str(meta.get("grade_id"))
            tests[grade_id] = TestStep(
                grade_id,
                cell.source,
                learner_names=sorted(reach(loaded, own) & learner),
                shared_names=sorted(shared),
            )
            before[grade_id] = pending
            order.append(grade_id)
            events.append(("test", grade_id))
            pending = []
            learner -= stored  # names a test cell assigns are the checker's own from then on
            shared -= stored
            forget(stored)
            calls.update(own)
        elif learner & reach(reads.immediate, own) or any(
            not d.deferrable and learner & reach(d.reads, own) for d in reads.functions
        ):  # running the cell runs learner code: a learner cell
            learner |= stored
            shared -= stored
            forget(stored)
        else:
            learner -= stored
            shared |= stored
            forget(stored)
            calls.update(own)
            pending.append(len(trusted))
            events.append(("trusted", len(trusted)))
            trusted.append((cell.source, loaded, stored, not stored and display_only(cell.source, modules)))
            checker_imports = module_paths(cell.source)
        for name in stored:  # a name rebound otherwise no longer names the checker's module
            modules.pop(name, None)
        modules.update(checker_imports)
        every |= learner
    # The checker skips trusted cells no test depends on (figures, demonstrations): walking back
    # from the tests, a cell is kept when it assigns a name a later kept cell or test reads, or
    # assigns nothing and reads such a name (it may change that object in place) without only
    # drawing (:func:`display_only`).
    needed: set[str] = set()
    kept: set[int] = set()
    for kind, key in reversed(events):
        if kind == "test":
            needed |= names_of(tests[str(key)].source)[0]
            continue
        _, loaded, stored, draws = trusted[int(key)]
        if stored & needed or (not stored and not draws and loaded & needed):
            kept.add(int(key))
            needed = (needed - stored) | loaded
    for grade_id, indices in before.items():
        tests[grade_id].trusted_before = [trusted[i][0] for i in indices if i in kept]
    return CellPlan(tests=tests, order=order, trusted_after=[trusted[i][0] for i in pending], learner=every)
