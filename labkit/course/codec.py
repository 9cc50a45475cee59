"""The values that cross between the checker kernel and the learner's kernel, and how.

Both kernels load this module; :mod:`labkit.course.remote` describes the protocol as a whole,
:mod:`labkit.course.learner_side` and :mod:`labkit.course.checker_side` its two ends.

Its role in the threat model: everything the learner's kernel sends is decoded here, so that
what reaches the checker's tests is data, never an object whose ``__eq__``, ``__bool__`` or
``__float__`` would run learner code. JSON only, never pickle; arrays and tensors as ``.npy``
bytes read with ``allow_pickle=False`` and their declared dtype checked; sizes, item counts and
depth capped (:data:`MAX_BYTES`, :data:`MAX_ITEMS`, :data:`MAX_DEPTH`) while decoding, so a
sender that skips the encoder's caps is refused at once. labkit dataclasses, labkit objects
that describe their grading state and modules made only of ``torch.nn``/``labkit`` classes
are rebuilt with the receiver's own classes, whose constructors validate them; a class outside
labkit (or in ``labkit.course``) never is. An exception comes back only as an allowlisted
class with its message capped (:func:`reraise`). The random-number state of the global
generators travels with every call (:mod:`labkit.course.rng`). What is not data (a call proxy, a
handle, a reference) is left to the ``other`` hook of the caller.
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import importlib
import io
import types
from collections.abc import Callable
from typing import Any

MAX_BYTES = 64 * 1024 * 1024  # one request or reply
MAX_DEPTH = 24
MAX_ITEMS = 200_000
MESSAGE_CHARS = 500  # of an exception's message
# Exceptions re-raised in the checker as themselves; other classes become their nearest listed base.
# Never StopIteration: raised by a learner function that ``map()`` calls, it would end the test's
# loop early as if every case had been checked (``all(map(check, cases))`` is then True).
_BUILTIN_ERRORS = (
    "ArithmeticError AssertionError AttributeError EOFError FileNotFoundError FloatingPointError "
    "ImportError IndexError KeyError LookupError MemoryError ModuleNotFoundError NameError "
    "NotImplementedError OSError OverflowError RecursionError RuntimeError "
    "TimeoutError TypeError UnboundLocalError UnicodeError ValueError ZeroDivisionError Warning "
    "UserWarning RuntimeWarning"
).split()


class RemoteError(Exception):
    """The learner's kernel raised something the checker does not re-raise as itself, did not
    answer, or answered with something that is not a valid reply."""


class CodecError(ValueError):
    """A value that cannot cross between the kernels (too big, too deep, or not data)."""


def _npy(array: Any) -> str:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _from_npy(text: str) -> Any:
    import numpy as np

    if not isinstance(text, str) or len(text) > MAX_BYTES * 4 // 3 + 8:
        raise CodecError("an array payload that is not a string or is too large")
    array = np.load(io.BytesIO(base64.b64decode(text, validate=True)), allow_pickle=False)
    if array.dtype.kind not in "biufc":
        raise CodecError(f"arrays of dtype {array.dtype} do not cross between kernels")
    return array


_DTYPES = ("float16 bfloat16 float32 float64 complex64 complex128 uint8 int8 int16 int32 int64 bool").split()


class Budget:
    """What one value has spent so far of :data:`MAX_BYTES` and :data:`MAX_ITEMS`."""

    def __init__(self) -> None:
        self.bytes = 0
        self.items = 0

    def spend(self, size: int) -> None:
        self.bytes += size
        self.items += 1
        if self.bytes > MAX_BYTES or self.items > MAX_ITEMS:
            raise CodecError(f"a value larger than {MAX_BYTES >> 20} MiB or {MAX_ITEMS} items")


def _tensor(t: Any, budget: Budget) -> dict[str, Any]:

    data = t.detach().to("cpu")
    dtype = str(data.dtype).removeprefix("torch.")
    if dtype not in _DTYPES:
        raise CodecError(f"tensors of dtype {dtype} do not cross between kernels")
    if dtype == "bfloat16":
        data = data.float()
    budget.spend(data.numel() * data.element_size())
    return {"$tensor": _npy(data.numpy()), "dtype": dtype, "grad": bool(t.requires_grad)}


def _untensor(d: dict[str, Any]) -> Any:
    import numpy as np
    import torch

    dtype = d.get("dtype")
    if dtype not in _DTYPES:
        raise CodecError(f"tensors of dtype {dtype!r} do not cross between kernels")
    array = _from_npy(d["$tensor"])
    sent = "float32" if dtype == "bfloat16" else str(dtype)  # bfloat16 crosses as float32
    if array.dtype != np.dtype(sent):  # a payload widened on arrival would pass the size cap
        raise CodecError(f"a tensor payload of {array.dtype} declared as {dtype}: expected {sent} data")
    out = torch.from_numpy(array.copy()).to(getattr(torch, str(dtype)))
    if d.get("grad") is True and out.is_floating_point():
        out.requires_grad_(True)
    return out


def plain(obj: Any) -> bool:
    """Whether ``obj`` is ``None``, a bool, an int, a float or a str (it crosses as itself)."""
    return obj is None or isinstance(obj, bool | int | float | str)


def encode(obj: Any, other: Callable[[Any], Any] | None, budget: Budget | None = None, depth: int = 0) -> Any:
    """``obj`` as JSON-ready data; ``other(obj)`` encodes what is not data (or raises)."""
    import numpy as np
    import torch

    budget = budget or Budget()
    if depth > MAX_DEPTH:
        raise CodecError(f"a value nested deeper than {MAX_DEPTH} levels")
    kind = type(obj)
    if obj is None or kind in (bool, float):
        budget.spend(8)
        return obj
    if kind is int:
        if abs(obj) > 1 << 4096:
            raise CodecError("an integer with more than 4096 bits")
        budget.spend(8)
        return obj
    if kind is str:
        budget.spend(len(obj))
        return obj
    if kind is bytes or kind is bytearray:
        budget.spend(len(obj))
        return {"$bytes": base64.b64encode(obj).decode("ascii"), "mutable": kind is bytearray}
    if kind is list:
        budget.spend(8)
        return [encode(v, other, budget, depth + 1) for v in obj]
    if kind is tuple or kind is torch.Size:
        budget.spend(8)
        return {"$tuple": [encode(v, other, budget, depth + 1) for v in obj]}
    if kind in (set, frozenset):
        budget.spend(8)
        return {"$set": [encode(v, other, budget, depth + 1) for v in obj]}
    if kind is dict and all(type(k) is str for k in obj):
        budget.spend(8)
        return {"$dict": {k: encode(v, other, budget, depth + 1) for k, v in obj.items()}}
    if kind is torch.Tensor or kind is torch.nn.Parameter:
        return _tensor(obj, budget)
    if kind is np.ndarray or isinstance(obj, np.generic):
        array = np.asarray(obj)
        if array.dtype.kind not in "biufc":
            raise CodecError(f"arrays of dtype {array.dtype} do not cross between kernels")
        budget.spend(array.nbytes)
        return {"$npy": _npy(array), "scalar": isinstance(obj, np.generic)}
    if kind is torch.Generator:
        return {"$generator": _tensor(obj.get_state(), budget), "device": str(obj.device)}
    if kind is torch.dtype:
        return {"$dtype": str(obj).removeprefix("torch.")}
    if kind is torch.device:
        return {"$device": str(obj)}
    if other is None:  # a labkit dataclass is data; with ``other``, other decides (by reference?)
        tag = encode_dataclass(obj, None, budget, depth)
        if tag is None:
            raise CodecError(f"a {kind.__name__} is not data")
        return tag
    return other(obj)


def encode_dataclass(
    obj: Any, other: Callable[[Any], Any] | None, budget: Budget | None = None, depth: int = 0
) -> dict[str, Any] | None:
    """``obj`` as its fields when it is exactly a labkit dataclass that crosses, else ``None``."""
    fields = _dataclass_fields(obj)
    if fields is None:
        return None
    budget = budget or Budget()
    budget.spend(8)
    kind = type(obj)
    return {
        "$dataclass": f"{kind.__module__}:{kind.__qualname__}",
        "fields": {k: encode(v, other, budget, depth + 1) for k, v in fields.items()},
    }


def decode(
    data: Any, other: Callable[[dict[str, Any]], Any] | None, depth: int = 0, budget: Budget | None = None
) -> Any:
    """The inverse of :func:`encode`; ``other(tagged)`` decodes tags it does not know.

    Counts the values against :data:`MAX_ITEMS` as :func:`encode` does: a sender that skips the
    encoder's cap is refused at once, not after decoding tens of millions of items.
    """
    import numpy as np
    import torch

    if depth > MAX_DEPTH:
        raise CodecError(f"a value nested deeper than {MAX_DEPTH} levels")
    budget = budget or Budget()
    budget.spend(0)
    if plain(data):
        return data
    if type(data) is list:
        return [decode(v, other, depth + 1, budget) for v in data]
    if type(data) is not dict or len(data) < 1:
        raise CodecError(f"not a valid encoded value: {type(data).__name__}")
    if "$tuple" in data:
        return tuple(decode(v, other, depth + 1, budget) for v in checked_list(data["$tuple"]))
    if "$set" in data:
        return set(decode(v, other, depth + 1, budget) for v in checked_list(data["$set"]))
    if "$dict" in data:
        items = data["$dict"]
        if type(items) is not dict:
            raise CodecError("a dict payload that is not an object")
        return {str(k): decode(v, other, depth + 1, budget) for k, v in items.items()}
    if "$tensor" in data:
        return _untensor(data)
    if "$bytes" in data:
        return _from_bytes(data)
    if "$npy" in data:
        array = _from_npy(data["$npy"])
        return array[()] if data.get("scalar") is True and array.ndim == 0 else array
    if "$dtype" in data:
        name = str(data["$dtype"])
        if name not in _DTYPES:
            raise CodecError(f"unknown dtype {name!r}")
        return getattr(torch, name)
    if "$device" in data:
        return torch.device(str(data["$device"]))
    if "$generator" in data:
        state = data["$generator"]
        gen = torch.Generator(device="cpu")
        gen.set_state(_untensor(state if isinstance(state, dict) else {}).to(torch.uint8))
        return gen
    if "$dataclass" in data:
        cls = _labkit_dataclass(str(data["$dataclass"]))
        given = data.get("fields")
        if type(given) is not dict:
            raise CodecError(f"a {cls.__qualname__} whose fields are not an object")
        extra = sorted(set(given) - _field_names(cls))
        if extra:
            raise CodecError(f"a {cls.__qualname__} with fields the class does not have: {extra[:5]}")
        values = {str(k): decode(v, other, depth + 1, budget) for k, v in given.items()}
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:  # the class's own constructor refused the fields
            raise CodecError(f"a {cls.__qualname__} its constructor refuses: {str(err)[:200]}") from None
    if "$state" in data:  # its fields count against the same depth and item caps as the rest
        # What the fields hold is marked ``$field`` for ``other``: a learner callable there is
        # called by the receiver's labkit code, not by a test (see checker_side.Peer.call).
        inner = None if other is None else (lambda tag: other({**tag, "$field": True}))
        try:
            return rebuild_state(data, lambda v: decode(v, inner, depth + 1, budget))
        except CodecError:
            # A labkit defence layer whose arguments the checker's class refuses (a detector of
            # the learner's own) may name its handle as well: it is then the learner's layer, as
            # a subclass of the learner's own would be (``other`` makes it a call proxy).
            fallback = data.get("else")
            if other is None or type(fallback) is not dict or fallback.get("kind") != "defense":
                raise
            return other(fallback)
    _ = np
    if other is None:
        raise CodecError(f"unexpected tag {sorted(data)[:1]}")
    return other(data)


# labkit dataclasses (a Scope, a Message, a Reply) cross as their fields and are rebuilt with the
# receiver's own class through its constructor, which validates them.


def _labkit_class(name: str) -> Any:
    """The receiver's public labkit object named ``module:qualname`` (never ``labkit.course``)."""
    module, _, qualname = name.partition(":")
    if not module.startswith("labkit.") or module.startswith("labkit.course") or not qualname:
        raise CodecError(f"{name} is not a labkit class that may cross between kernels")
    if not all(part.isidentifier() and not part.startswith("_") for part in qualname.split(".")):
        raise CodecError(f"{name} is not a public labkit class")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise CodecError(f"{name} is not a labkit class") from None
    if not isinstance(obj, type) or obj.__module__ != module:
        raise CodecError(f"{name} is not a labkit class")
    return obj


def _labkit_dataclass(name: str) -> type:
    """The receiver's labkit dataclass named ``module:qualname``; refuses anything else."""
    obj = _labkit_class(name)
    if not (dataclasses.is_dataclass(obj) or _named(obj)):
        raise CodecError(f"{name} is not a labkit dataclass")
    if dataclasses.is_dataclass(obj) and not all(f.init for f in dataclasses.fields(obj)):
        raise CodecError(f"{name} has fields its constructor does not take: it does not cross as data")
    return obj


# labkit objects with behaviour (a GuardedModel) whose class declares ``_grading_fields`` and
# ``_grading_state``: while that state is all they hold, they cross as those constructor arguments,
# rebuilt by the checker's own class (whose constructor validates them, or its classmethod
# ``_grading_rebuild`` where the class has one: a Campaign replays its journal); their callables
# (the learner's model) cross as call proxies, so the checker's code runs the object and computes
# the verdict. Anything else of the learner's stays a RemoteObject.


def stateful_class(name: str) -> type:
    """The receiver's labkit class named ``module:qualname`` that declares its grading state."""
    cls = _labkit_class(name)
    fields = vars(cls).get("_grading_fields")
    if not (isinstance(fields, tuple) and all(type(f) is str for f in fields)) or not callable(
        vars(cls).get("_grading_state")
    ):
        raise CodecError(f"{name} does not describe its state: it does not cross as its fields")
    return cls


def grading_state(obj: Any) -> tuple[str, dict[str, Any]] | None:
    """``("module:qualname", constructor arguments)`` of ``obj`` when it is exactly a labkit class
    that declares its grading state and holds no more than that state; else ``None``."""
    cls = type(obj)
    name = f"{cls.__module__}:{cls.__qualname__}"
    try:
        if stateful_class(name) is not cls:
            return None
        state = obj._grading_state()
    except Exception:
        return None
    if not isinstance(state, dict) or not set(state) <= set(cls._grading_fields):
        return None
    return name, state


def rebuild_state(tag: dict[str, Any], value: Callable[[Any], Any]) -> Any:
    """The receiver's object for a ``{"$state": name, "fields": ...}`` tag, each field decoded
    by ``value``; unknown classes or fields, and arguments the constructor refuses, raise."""
    cls = stateful_class(str(tag["$state"]))
    given = tag.get("fields")
    if type(given) is not dict:
        raise CodecError(f"a {cls.__qualname__} whose fields are not an object")
    extra = sorted(set(given) - set(vars(cls)["_grading_fields"]))
    if extra:
        raise CodecError(f"a {cls.__qualname__} with fields it does not describe: {extra[:5]}")
    values = {str(k): value(v) for k, v in given.items()}
    build = cls._grading_rebuild if "_grading_rebuild" in vars(cls) else cls  # type: ignore[attr-defined]
    try:
        return build(**values)
    except (TypeError, ValueError) as err:
        raise CodecError(f"a {cls.__qualname__} its constructor refuses: {str(err)[:200]}") from None


def _named(cls: type) -> bool:
    """Whether ``cls`` is a named tuple class (``typing.NamedTuple``)."""
    return issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple)


def _field_names(cls: type) -> set[str]:
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls)}
    return {str(f) for f in getattr(cls, "_fields", ())}


def _dataclass_fields(obj: Any) -> dict[str, Any] | None:
    """The fields of ``obj`` when it is an instance of exactly a labkit dataclass that crosses."""
    cls = type(obj)
    if not (dataclasses.is_dataclass(cls) or _named(cls)) or not str(cls.__module__).startswith("labkit."):
        return None
    try:
        if _labkit_dataclass(f"{cls.__module__}:{cls.__qualname__}") is not cls:
            return None
    except CodecError:
        return None
    out = {}
    for name in sorted(_field_names(cls)):
        value = getattr(obj, name)
        out[name] = dict(value) if isinstance(value, types.MappingProxyType) else value
    return out


def _from_bytes(data: dict[str, Any]) -> bytes | bytearray:
    text = data["$bytes"]
    if not isinstance(text, str) or len(text) > MAX_BYTES * 4 // 3 + 8:
        raise CodecError(f"a bytes payload that is not a string or is larger than {MAX_BYTES >> 20} MiB")
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise CodecError("a bytes payload that is not base64") from None
    return bytearray(raw) if data.get("mutable") is True else raw


def checked_list(value: Any) -> list[Any]:
    """``value`` when it is a list payload; otherwise :class:`CodecError`."""
    if type(value) is not list:
        raise CodecError("a sequence payload that is not a list")
    return value


# Modules made only of trusted classes cross as their structure (rebuilt with the receiver's code).


def _trusted_class(name: str) -> type:
    import torch

    module, _, qualname = name.partition(":")
    if not (module == "torch.nn" or module.startswith(("torch.nn.", "labkit."))) or "<" in qualname:
        raise CodecError(f"{name} is not a torch.nn or labkit class")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
        raise CodecError(f"{name} is not a module class")
    return obj


def describe_module(m: Any, budget: Budget, depth: int = 0) -> dict[str, Any] | None:
    """The structure and tensors of ``m`` when it and its children are plain ``torch.nn`` or
    ``labkit`` modules without hooks; ``None`` otherwise."""
    import torch

    if depth > MAX_DEPTH:
        return None
    cls = type(m)
    name = f"{cls.__module__}:{cls.__qualname__}"
    try:
        if _trusted_class(name) is not cls:
            return None
    except (CodecError, ImportError, AttributeError):
        return None
    base = _module_init_keys()
    attrs: dict[str, Any] = {}
    subs = {id(sub): path for path, sub in m.named_modules() if path}

    def other(o: Any) -> Any:  # a module in an attribute (a wrapper's meta["base"])
        if id(o) in subs:
            return {"$submodule": subs[id(o)]}
        desc = describe_module(o, budget, depth + 1) if isinstance(o, torch.nn.Module) else None
        if desc is None:
            raise CodecError(f"a {type(o).__name__} in a module's attributes")
        return desc

    for key, value in vars(m).items():
        if key in base:
            if key not in ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", "training"):
                if isinstance(value, dict | set) and value:
                    return None  # a hook
            continue
        try:
            attrs[key] = encode(value, other, budget, depth + 1)
        except CodecError:
            return None
    children: dict[str, Any] = {}
    for key, child in m._modules.items():
        if child is None:
            children[key] = None
            continue
        desc = describe_module(child, budget, depth + 1)
        if desc is None:
            return None
        children[key] = desc
    params = {
        k: (None if p is None else _tensor(p, budget) | {"grad": bool(p.requires_grad)})
        for k, p in m._parameters.items()
    }
    buffers = {k: (None if b is None else _tensor(b, budget)) for k, b in m._buffers.items()}
    _ = torch
    return {
        "$module": name,
        "training": bool(m.training),
        "attrs": attrs,
        "params": params,
        "buffers": buffers,
        "non_persistent": sorted(m._non_persistent_buffers_set),
        "children": children,
    }


_INIT_KEYS: set[str] = set()


def _module_init_keys() -> set[str]:
    import torch

    if not _INIT_KEYS:
        _INIT_KEYS.update(vars(torch.nn.Module()))
    return _INIT_KEYS


def rebuild_module(desc: dict[str, Any], depth: int = 0) -> Any:
    """A module of the receiver's own classes from :func:`describe_module`'s description."""
    import torch

    if depth > MAX_DEPTH:
        raise CodecError("a module nested too deeply")
    cls: Any = _trusted_class(str(desc["$module"]))
    m = cls.__new__(cls)
    torch.nn.Module.__init__(m)
    for key, p in dict(desc.get("params", {})).items():
        m._parameters[str(key)] = (
            None if p is None else torch.nn.Parameter(_untensor({**p, "grad": False}), bool(p.get("grad")))
        )
    for key, b in dict(desc.get("buffers", {})).items():
        m._buffers[str(key)] = None if b is None else _untensor(b)
    m._non_persistent_buffers_set.update(str(k) for k in checked_list(desc.get("non_persistent", [])))
    for key, child in dict(desc.get("children", {})).items():
        m._modules[str(key)] = None if child is None else rebuild_module(child, depth + 1)

    def other(tag: dict[str, Any]) -> Any:
        if "$submodule" in tag:
            try:
                return m.get_submodule(str(tag["$submodule"]))
            except AttributeError:
                raise CodecError(f"a module attribute naming no submodule {tag['$submodule']!r}") from None
        if "$module" in tag:
            return rebuild_module(tag, depth + 1)
        raise CodecError(f"unexpected tag {sorted(tag)[:1]} in a module's attributes")

    for key, value in dict(desc.get("attrs", {})).items():
        if not isinstance(key, str) or key in _module_init_keys() or key.startswith("__"):
            raise CodecError(f"a module attribute named {key!r}")
        vars(m)[key] = decode(value, other)
    m.train(bool(desc.get("training")))
    for key, child in dict(desc.get("children", {})).items():  # children keep their own mode
        if child is not None:
            m._modules[str(key)].train(bool(child.get("training")))
    return m


def error_info(err: BaseException) -> dict[str, Any]:
    """``err`` as the ``{"type", "bases", "message", "attrs"}`` that :func:`reraise` reads."""
    mro = type(err).__mro__
    named = [
        f"{c.__module__}.{c.__qualname__}" if c.__module__ != "builtins" else c.__qualname__ for c in mro
    ]
    try:
        message = str(err)[:MESSAGE_CHARS]
    except Exception:
        message = ""
    attrs: dict[str, Any] = {}  # public data attributes (a RateLimitExceeded's retry_after)
    for key, value in list(getattr(err, "__dict__", {}).items())[:16]:
        if isinstance(key, str) and not key.startswith("_") and plain(value) and not isinstance(value, str):
            attrs[key] = value
    return {"type": named[0], "bases": named[1:], "message": message, "attrs": attrs}


def reraise(info: Any) -> BaseException:
    """The checker's exception for the learner's ``{"type", "bases", "message"}``."""
    if not isinstance(info, dict):
        return RemoteError("the learner's kernel sent a malformed error")
    message = str(info.get("message", ""))[:MESSAGE_CHARS]
    for name in [info.get("type"), *list(info.get("bases", []))[:32]]:
        name = str(name)
        if name in _BUILTIN_ERRORS:
            error: BaseException = getattr(builtins, name)(message)
            return error
        module, _, qual = name.rpartition(".")
        if module.startswith("labkit.") and qual.isidentifier():
            try:
                cls = getattr(importlib.import_module(module), qual)
            except (ImportError, AttributeError):
                continue
            if isinstance(cls, type) and issubclass(cls, Exception):
                attrs = info.get("attrs")
                attrs = {str(k): v for k, v in attrs.items() if plain(v)} if isinstance(attrs, dict) else {}
                tries = [((message,), attrs), ((), attrs), ((message,), {})] if attrs else [((message,), {})]
                for args, kwargs in tries:  # a labkit exception may take its data as keywords
                    try:
                        return cls(*args, **kwargs)
                    except Exception:
                        continue
    return RemoteError(f"{info.get('type', 'an exception')}: {message}")


def user_ns() -> dict[str, Any]:
    """The namespace of the IPython kernel this code runs in (either kernel): where the learner's
    kernel reads the names the checker asks for, and where the checker binds them."""
    from IPython import get_ipython

    shell = get_ipython()
    return shell.user_ns if shell is not None else {}
