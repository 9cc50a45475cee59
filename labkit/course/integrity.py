"""Advisory integrity checks, run inside the learner's kernel before each graded test cell.

:func:`check` records (``snapshot=True``) or compares what the tests rely on: builtins, NumPy,
PyTorch, labkit, the IPython shell's run and traceback methods, its AST and input transformers and
exception handler, ``sys.settrace`` and the usual aliases (``lk``, ``np``, ``torch``). Learner
code can defeat a check that runs in its own process, so this only catches the careless; scores
come from the trusted checker kernel (:mod:`labkit.course.scoring`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["check"]


_WATCHED_MODULES = ("builtins", "numpy", "numpy.testing", "torch", "labkit", "labkit.course", "labkit.models")


_ALIASES = {"lk": "labkit", "labkit": "labkit", "np": "numpy", "numpy": "numpy", "torch": "torch"}


_SHELL_METHODS = (
    "run_cell",
    "run_cell_async",
    "run_ast_nodes",
    "run_code",
    "showtraceback",
    "_showtraceback",
    "transform_cell",
    "should_run_async",
)


_SKIP_BUILTINS = {"_", "__", "___", "exit", "quit", "get_ipython", "display", "__IPYTHON__", "__builtins__"}


_SNAPSHOT: dict[str, Any] = {}


_MISSING = object()


def _watched(shell: Any) -> Iterator[tuple[str, Any]]:
    import importlib

    for name in _WATCHED_MODULES:
        module = sys.modules.get(name)
        if module is None:
            with contextlib.suppress(ImportError):
                module = importlib.import_module(name)
        if module is None:
            continue
        yield f"sys.modules[{name!r}]", module
        public = getattr(module, "__all__", None)
        if name == "builtins":
            keys = [
                k
                for k in vars(module)
                if (k not in _SKIP_BUILTINS and not k.startswith("__"))
                or k
                in (
                    "__import__",
                    "__build_class__",
                )
            ]
        elif public is not None:
            keys = list(public)
        else:
            keys = [k for k in vars(module) if not k.startswith("_") and callable(vars(module)[k])]
        for key in keys:
            if key in vars(module):
                yield f"{name}.{key}", vars(module)[key]
    torch = sys.modules.get("torch")
    if torch is not None:
        for key in ("__eq__", "__bool__", "all", "any", "item", "equal", "allclose", "argmax", "tolist"):
            if key in vars(torch.Tensor):
                yield f"torch.Tensor.{key}", vars(torch.Tensor)[key]
    yield "sys.excepthook", sys.excepthook
    yield "sys.displayhook", sys.displayhook
    # What the shell and kernel actually call: an instance attribute if set, else the class's.
    for key in _SHELL_METHODS:
        yield f"shell.{key}", vars(shell).get(key, getattr(type(shell), key, None))
    kernel = getattr(shell, "kernel", None)
    if kernel is not None:
        yield "kernel.do_execute", vars(kernel).get("do_execute", getattr(type(kernel), "do_execute", None))


def _library_wrapper(new: Any, old: Any) -> bool:
    """True when ``new`` is a library's own wrapper of ``old`` (torch wraps ``torch.manual_seed``
    when ``torch._dynamo`` is first imported): it names ``old`` as ``__wrapped__`` and its code
    lives in that library's installed files."""
    if getattr(new, "__wrapped__", None) is not old or old is None:
        return False
    code = getattr(new, "__code__", None)
    files = [getattr(sys.modules.get(name), "__file__", None) for name in ("torch", "numpy")]
    roots = [os.path.dirname(f) for f in files if f]
    return code is not None and any(code.co_filename.startswith(r + os.sep) for r in roots)


# The shell's lists of source and AST rewriters: a learner's entry could rewrite a test cell
# before it runs (turn its asserts into ``pass``).
_LISTS = ("ast_transformers", "input_transformers_cleanup", "input_transformers_post")


def check(shell: Any, snapshot: bool = False) -> str:
    """Inside the kernel: record (``snapshot``) or check what the tests rely on.

    Returns ``''`` when nothing was replaced, else a short description of what was.
    """
    if snapshot or not _SNAPSHOT:
        _SNAPSHOT.clear()
        _SNAPSHOT.update(dict(_watched(shell)))
        for name in _LISTS:
            _SNAPSHOT[f"shell.{name}"] = list(getattr(shell, name, ()))
        return ""
    current = dict(_watched(shell))
    changed = [
        name if name in current else f"{name} (removed)"
        for name, obj in _SNAPSHOT.items()
        if name.removeprefix("shell.") not in _LISTS
        and current.get(name, _MISSING) is not obj
        and not _library_wrapper(current.get(name), obj)
    ]
    if shell.custom_exceptions:
        changed.append("the shell's exception handler (set_custom_exc)")
    for name in _LISTS:
        if list(getattr(shell, name, ())) != _SNAPSHOT.get(f"shell.{name}"):
            changed.append(f"the shell's {name}")
    if sys.gettrace() is not None:
        changed.append("sys.settrace")
    for alias, module in _ALIASES.items():
        original = _SNAPSHOT.get(f"sys.modules[{module!r}]")
        if original is not None and alias in shell.user_ns and shell.user_ns[alias] is not original:
            if alias in ("lk", "np", "torch") or not isinstance(shell.user_ns[alias], type(original)):
                changed.append(f"the name {alias!r} (it no longer refers to {module})")
    return ", ".join(sorted(set(changed))[:5])
