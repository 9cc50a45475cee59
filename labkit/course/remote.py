"""The narrow interface between the trusted checker kernel and the learner's kernel.

Grading runs two kernels per submission (:mod:`labkit.course.sandbox`). The checker runs the
lesson's trusted cells and its tests and never executes learner code; every learner name a
test reads is bound in the checker by :func:`bind`, which asks the learner's kernel for it
over the Jupyter protocol (the learner kernel's connection file, read-only in the checker's
sandbox, on the worker's private loopback). The learner kernel answers in :func:`_serve`.

What crosses, and what it becomes in the checker:

* **data** (``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, lists, tuples, sets,
  dicts with string keys, NumPy arrays and torch tensors as ``.npy`` bytes read with
  ``allow_pickle=False``): checker-native objects, with sizes and depth capped. Never a proxy
  whose ``__eq__``/``__bool__``/``__float__`` would run learner code, never pickle;
* **labkit dataclasses and named tuples** (a ``Scope``, a ``Message``, a ``LabData``): their
  fields, rebuilt with the receiver's own class through its constructor, which validates them;
  a class outside labkit (or in ``labkit.course``), an unknown field or a refused value is an
  error, never an object;
* **labkit objects with behaviour that describe their state** (a ``GuardedModel``, a
  ``DriftMonitor``, a ``PredictionAPI`` that have served nothing yet; the class declares
  ``_grading_fields`` and ``_grading_state``): their constructor arguments, rebuilt with the
  checker's own class, whose code then serves and computes the verdict; a callable among them
  (the learner's model) is a call proxy. Any other state, an unknown field, a look-alike class
  or arguments the constructor refuses never become such an object;
* **functions and classes**: call proxies. Arguments go over as data; objects the checker made
  in a trusted cell and that the learner's kernel has under the same name (a zoo model, a data
  set) go *by reference* to the learner kernel's object of that name; modules made only of
  ``torch.nn``/``labkit`` classes go as their structure and tensors; any other object a test
  made (its function or lambda, a ``functools.partial``, a fake clock, a labkit object) stays in
  the checker and learner code gets a stand-in whose calls call back into the checker: the
  learner's call runs in a worker thread of its kernel, which hands each call-back over as its
  reply and waits for the checker's ``resume``. The call runs with the checker's random-number
  state, the result comes back as data, objects the checker passed come back as themselves, and
  tensors, arrays and modules that the call changed in place are changed in the checker too;
* **an exception**: re-raised in the checker as the nearest allowlisted builtin or ``labkit``
  exception class in its hierarchy, message capped (``expect_raises`` keeps working);
* **an ``nn.Module``**: rebuilt from its structure when every class in it is a ``torch.nn`` or
  ``labkit`` class (the checker's own code then runs it), otherwise a :class:`RemoteModule`
  whose forward pass and vector-Jacobian products are computed by the learner's kernel;
* **anything else**: a :class:`RemoteObject` whose attributes, items and calls are fetched the
  same way; it refuses to be used as a truth value.

Learner code may replace :func:`_serve` in its own kernel: that changes only the values it
returns, which the checker's tests still check.
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import functools
import importlib
import io
import json
import os
import queue
import random
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Peer", "RemoteError", "RemoteFunction", "RemoteModule", "RemoteObject", "bind"]

MAX_BYTES = 64 * 1024 * 1024  # one request or reply
MAX_DEPTH = 24
MAX_ITEMS = 200_000
MAX_NESTING = 8  # learner calls open at once (the checker's callables calling learner code in turn)
# Methods of a test's objects that learner code may not call: they erase what the test counts of
# what learner code did (a PredictionAPI's queries, a DriftMonitor's history, a breaker's failures).
GRADER_ONLY_METHODS = frozenset({"reset"})
MESSAGE_CHARS = 500  # of an exception's message
MIME = "text/plain"
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


# ---------------------------------------------------------------------------------------------
# The codec (both kernels)


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


class _Budget:
    def __init__(self) -> None:
        self.bytes = 0
        self.items = 0

    def spend(self, size: int) -> None:
        self.bytes += size
        self.items += 1
        if self.bytes > MAX_BYTES or self.items > MAX_ITEMS:
            raise CodecError(f"a value larger than {MAX_BYTES >> 20} MiB or {MAX_ITEMS} items")


def _tensor(t: Any, budget: _Budget) -> dict[str, Any]:

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


def _plain(obj: Any) -> bool:
    return obj is None or isinstance(obj, bool | int | float | str)


def encode(
    obj: Any, other: Callable[[Any], Any] | None, budget: _Budget | None = None, depth: int = 0
) -> Any:
    """``obj`` as JSON-ready data; ``other(obj)`` encodes what is not data (or raises)."""
    import numpy as np
    import torch

    budget = budget or _Budget()
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
    obj: Any, other: Callable[[Any], Any] | None, budget: _Budget | None = None, depth: int = 0
) -> dict[str, Any] | None:
    """``obj`` as its fields when it is exactly a labkit dataclass that crosses, else ``None``."""
    fields = _dataclass_fields(obj)
    if fields is None:
        return None
    budget = budget or _Budget()
    budget.spend(8)
    kind = type(obj)
    return {
        "$dataclass": f"{kind.__module__}:{kind.__qualname__}",
        "fields": {k: encode(v, other, budget, depth + 1) for k, v in fields.items()},
    }


def decode(
    data: Any, other: Callable[[dict[str, Any]], Any] | None, depth: int = 0, budget: _Budget | None = None
) -> Any:
    """The inverse of :func:`encode`; ``other(tagged)`` decodes tags it does not know.

    Counts the values against :data:`MAX_ITEMS` as :func:`encode` does: a sender that skips the
    encoder's cap is refused at once, not after decoding tens of millions of items.
    """
    import numpy as np
    import torch

    if depth > MAX_DEPTH:
        raise CodecError(f"a value nested deeper than {MAX_DEPTH} levels")
    budget = budget or _Budget()
    budget.spend(0)
    if _plain(data):
        return data
    if type(data) is list:
        return [decode(v, other, depth + 1, budget) for v in data]
    if type(data) is not dict or len(data) < 1:
        raise CodecError(f"not a valid encoded value: {type(data).__name__}")
    if "$tuple" in data:
        return tuple(decode(v, other, depth + 1, budget) for v in _list(data["$tuple"]))
    if "$set" in data:
        return set(decode(v, other, depth + 1, budget) for v in _list(data["$set"]))
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
        return rebuild_state(data, lambda v: decode(v, other, depth + 1, budget))
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
# rebuilt by the checker's own class (whose constructor validates them); their callables (the
# learner's model) cross as call proxies, so the checker's code runs the object and computes
# the verdict. Anything else of the learner's stays a RemoteObject.


def _stateful_class(name: str) -> type:
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
        if _stateful_class(name) is not cls:
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
    cls = _stateful_class(str(tag["$state"]))
    given = tag.get("fields")
    if type(given) is not dict:
        raise CodecError(f"a {cls.__qualname__} whose fields are not an object")
    extra = sorted(set(given) - set(vars(cls)["_grading_fields"]))
    if extra:
        raise CodecError(f"a {cls.__qualname__} with fields it does not describe: {extra[:5]}")
    values = {str(k): value(v) for k, v in given.items()}
    try:
        return cls(**values)
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


def _list(value: Any) -> list[Any]:
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


def describe_module(m: Any, budget: _Budget, depth: int = 0) -> dict[str, Any] | None:
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
    m._non_persistent_buffers_set.update(str(k) for k in _list(desc.get("non_persistent", [])))
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


def _module_state(m: Any) -> dict[str, Any]:
    return {
        "training": [bool(s.training) for s in m.modules()],
        "state": {k: v.clone() for k, v in m.state_dict().items()},
    }


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    # The legacy global generators are what notebooks seed: their state is what must cross.
    numpy_state = np.random.get_state()  # noqa: NPY002
    return {"torch": torch.get_rng_state(), "numpy": numpy_state, "random": random.getstate()}


def _set_rng_state(state: Any) -> None:
    import numpy as np
    import torch

    if not isinstance(state, dict):
        return
    if isinstance(state.get("torch"), torch.Tensor):
        torch.set_rng_state(state["torch"].to(torch.uint8))
    if isinstance(state.get("numpy"), tuple):
        name, keys, pos, gauss, cached = state["numpy"]
        np.random.set_state(  # noqa: NPY002
            (str(name), np.asarray(keys, dtype=np.uint32), int(pos), int(gauss), float(cached))
        )
    if isinstance(state.get("random"), tuple):
        version, internal, gauss = state["random"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss))


def _reraise(info: Any) -> BaseException:
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
                attrs = {str(k): v for k, v in attrs.items() if _plain(v)} if isinstance(attrs, dict) else {}
                tries = [((message,), attrs), ((), attrs), ((message,), {})] if attrs else [((message,), {})]
                for args, kwargs in tries:  # a labkit exception may take its data as keywords
                    try:
                        return cls(*args, **kwargs)
                    except Exception:
                        continue
    return RemoteError(f"{info.get('type', 'an exception')}: {message}")


# ---------------------------------------------------------------------------------------------
# The learner kernel's side


_HANDLES: dict[int, Any] = {}
_NEXT = [1]


def _keep(obj: Any) -> int:
    handle = _NEXT[0]
    _NEXT[0] += 1
    _HANDLES[handle] = obj
    return handle


def _error_info(err: BaseException) -> dict[str, Any]:
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
        if isinstance(key, str) and not key.startswith("_") and _plain(value) and not isinstance(value, str):
            attrs[key] = value
    return {"type": named[0], "bases": named[1:], "message": message, "attrs": attrs}


class _Call:
    """A request the learner kernel is serving: learner code runs in a worker thread, so that it
    can call back into the checker (a callable a test passed) while the request is open."""

    def __init__(self) -> None:
        self.number = _NEXT[0]
        _NEXT[0] += 1
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()  # worker -> _serve
        self.replies: queue.Queue[Any] = queue.Queue()  # _serve -> worker (the checker's answers)
        self.origins: dict[int, str] = {}  # id of an object the checker sent -> its token
        self.keep: list[Any] = []  # those objects, alive while the call is (so ids stay unique)
        self.thread: threading.Thread | None = None


_CALLS: dict[int, _Call] = {}
_LOCAL = threading.local()


def _serve(request: str) -> str:
    """Answer one request of the checker (runs in the learner's kernel). Returns JSON text.

    A request starts a worker thread that runs it; ``{"op": "resume"}`` hands the checker's
    answer to a worker waiting on a callback. The reply is the result, or the worker's next
    callback (``{"callback": ..., "call": n}``) for the checker to run and resume.
    """
    call: _Call | None = None
    try:
        req = json.loads(request)
        if isinstance(req, dict) and req.get("op") == "resume":
            call = _CALLS[int(req["call"])]
            call.replies.put(req)
        else:
            call = _Call()
            _CALLS[call.number] = call
            call.thread = threading.Thread(
                target=_work, args=(call, req), daemon=True, name="labkit-grading-call"
            )
            call.thread.start()
        kind, payload = call.events.get()
    except KeyboardInterrupt as err:  # the kernel was interrupted: so is the learner code it ran
        _interrupt(call)
        return _failure(err)
    except BaseException as err:
        return _failure(err)
    if kind == "callback":
        return json.dumps({"callback": payload, "call": call.number}, allow_nan=True)
    _CALLS.pop(call.number, None)
    return str(payload)


def _interrupt(call: Any) -> None:
    """Raise ``KeyboardInterrupt`` in the worker thread of ``call`` (CPython's async exception)."""
    import ctypes

    thread = getattr(call, "thread", None)
    _CALLS.pop(getattr(call, "number", 0), None)
    if thread is not None and thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(KeyboardInterrupt)
        )


def _failure(err: BaseException) -> str:
    if isinstance(err, CodecError):
        return json.dumps({"raise": {"type": "TypeError", "bases": [], "message": f"cannot grade: {err}"}})
    return json.dumps({"raise": _error_info(err)})


def _work(call: _Call, req: Any) -> None:
    _LOCAL.call = call
    try:
        text = json.dumps({"ok": _answer(req, call)}, allow_nan=True)
    except BaseException as err:
        text = _failure(err)
    call.events.put(("done", text))


def _user_ns() -> dict[str, Any]:
    from IPython import get_ipython

    shell = get_ipython()
    return shell.user_ns if shell is not None else {}


def _learner_tag(tag: dict[str, Any], call: _Call) -> Any:
    """In the learner kernel: the object for a tag the checker sent (not data)."""
    obj: Any
    if "$ref" in tag:
        obj = _user_ns()[str(tag["$ref"])]
    elif "$handle" in tag:
        obj = _HANDLES[int(tag["$handle"])]
    elif "$module" in tag:
        obj = rebuild_module(tag)
    elif "$checker" in tag:
        obj = _CheckerObject(int(tag["$checker"]), str(tag.get("name", "object"))[:100])
    elif "$import" in tag:
        module, _, qual = str(tag["$import"]).partition(":")
        if not module.startswith(("labkit", "torch", "numpy", "math")):
            raise CodecError(f"cannot import {module}")
        obj = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    else:
        raise CodecError(f"unexpected tag {sorted(tag)[:1]}")
    if isinstance(tag.get("tok"), str):  # it goes back to the checker as the checker's own object
        call.origins[id(obj)] = tag["tok"]
        call.keep.append(obj)
    return obj


def _answer(req: dict[str, Any], call: _Call) -> Any:
    op = req["op"]
    if op == "get":
        ns = _user_ns()
        if req["name"] not in ns:
            raise NameError(f"name {req['name']!r} is not defined")
        return _result(ns[req["name"]], call)
    target = _HANDLES[int(req["handle"])]
    if op == "getattr":
        return _result(getattr(target, str(req["name"])), call)
    if op == "release":
        _HANDLES.pop(int(req["handle"]), None)
        return None

    def other(tag: dict[str, Any]) -> Any:
        return _learner_tag(tag, call)

    _set_rng_state(decode(req.get("rng"), None))
    if op in ("forward", "vjp"):
        import torch

        target.train(bool(req.get("training")))
        x = decode(req["x"], other).detach().requires_grad_(op == "vjp")
        if op == "forward":
            with torch.no_grad():
                return {"value": _result(target(x), call), "rng": encode(_rng_state(), None)}
        out = target(x)
        (grad,) = torch.autograd.grad(out, x, decode(req["grad"], other))
        return {"value": _result(grad, call), "rng": encode(_rng_state(), None)}
    args = [decode(a, other) for a in req["args"]]
    kwargs = {str(k): decode(v, other) for k, v in req["kwargs"].items()}
    args_in: dict[str, Any] = {}
    for i, a in enumerate(args):
        args_in[f"a{i}"] = a
    for k, v in kwargs.items():
        args_in[f"k{k}"] = v
    call.origins.update({id(v): key for key, v in args_in.items()})
    before = {key: _snapshot(v) for key, v in args_in.items()}
    value = target(*args, **kwargs)
    changed: dict[str, Any] = {}
    for key, v in args_in.items():
        after = _snapshot(v)
        if isinstance(
            after, dict
        ):  # a module: its modes always (a shared one may differ), its tensors if changed
            old = before[key]["state"]
            state = {k: t for k, t in after["state"].items() if k not in old or not _same(old[k], t)}
            changed[key] = encode({"training": after["training"], "state": state}, None)
        elif before[key] is not None and after is not None and not _same(before[key], after):
            changed[key] = encode(after, None)
    return {"value": _result(value, call), "changed": changed, "rng": encode(_rng_state(), None)}


def _snapshot(v: Any) -> Any:
    import numpy as np
    import torch

    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    if isinstance(v, np.ndarray):
        return v.copy()
    if isinstance(v, torch.nn.Module):
        return _module_state(v)
    if isinstance(v, torch.Generator):
        return v  # compared and sent back by its state
    return None


def _same(a: Any, b: Any) -> bool:
    import numpy as np
    import torch

    if isinstance(a, torch.Generator):
        return False  # a generator's state always goes back (it is small)
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, np.ndarray):
        return bool(np.array_equal(a, b, equal_nan=True))
    return (
        a["training"] == b["training"]
        and a["state"].keys() == b["state"].keys()
        and all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    )


def _result(value: Any, call: _Call | None) -> Any:
    """In the learner kernel: ``value`` encoded for the checker. Objects the checker sent go back
    as its own (by token), the checker's objects as themselves, anything else as data or a handle."""
    import torch

    budget = _Budget()
    origins = call.origins if call is not None else {}

    def other(obj: Any) -> Any:
        if id(obj) in origins:
            return {"$arg": origins[id(obj)]}
        if type(obj) is _CheckerObject:
            return {"$exported": object.__getattribute__(obj, "_handle")}
        try:
            tag = encode_dataclass(obj, other, budget)
        except CodecError:
            tag = None  # too large, or a field that cannot cross: a handle instead
        if tag is not None:
            return tag
        described = grading_state(obj)
        if described is not None:
            try:
                fields = {k: encode(v, other, budget) for k, v in described[1].items()}
            except CodecError:
                fields = None  # a field that cannot cross: a handle instead
            if fields is not None:
                return {"$state": described[0], "fields": fields}
        if isinstance(obj, torch.nn.Module):
            desc = describe_module(obj, budget)
            return {"$remote": _keep(obj), "kind": "module", "training": bool(obj.training), "desc": desc}
        kind = "function" if callable(obj) else "object"
        return {
            "$remote": _keep(obj),
            "kind": kind,
            "name": str(getattr(obj, "__name__", type(obj).__name__))[:100],
        }

    if id(value) in origins:
        return {"$arg": origins[id(value)]}
    return encode(value, other, budget)


class _CheckerObject:
    """In the learner kernel: an object of the checker's that a test handed to learner code (an
    attack, a fake clock, a prediction API). Calling it, reading its public attributes, ``len``
    and indexing run in the checker, with the arguments crossing as data."""

    __slots__ = ("_handle", "_name")

    def __init__(self, handle: int, name: str) -> None:
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "_name", name)

    def __repr__(self) -> str:
        return f"<grader's {object.__getattribute__(self, '_name')}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _ask_checker(self, "call", args, kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _ask_checker(self, "getattr", (name,), {})

    def __len__(self) -> int:
        return int(_ask_checker(self, "len", (), {}))

    def __getitem__(self, key: Any) -> Any:
        return _ask_checker(self, "getitem", (key,), {})

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]


def _ask_checker(obj: _CheckerObject, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """In the learner kernel's worker thread: run ``op`` on the checker's object and wait."""
    call: _Call | None = getattr(_LOCAL, "call", None)
    if call is None or call.number not in _CALLS:
        raise RuntimeError("an object of the grader's can only be used while the grader calls learner code")
    request = {
        "op": op,
        "handle": object.__getattribute__(obj, "_handle"),
        "args": [_result(a, call) for a in args],
        "kwargs": {str(k): _result(v, call) for k, v in kwargs.items()},
        "rng": encode(_rng_state(), None),
    }
    call.events.put(("callback", request))
    reply = call.replies.get()
    if not isinstance(reply, dict):
        raise RuntimeError("the grader sent a malformed answer")
    _set_rng_state(decode(reply.get("rng"), None))
    if "raise" in reply:
        raise _reraise(reply["raise"])
    return decode(reply.get("value"), lambda tag: _learner_tag(tag, call))


# ---------------------------------------------------------------------------------------------
# The checker's side


class Peer:
    """The checker's client of the learner's kernel (shell and heartbeat channels only)."""

    def __init__(self, connection_file: str, timeout: float) -> None:
        import zmq
        from jupyter_client.session import Session

        with open(connection_file, encoding="utf-8") as fh:
            info = json.load(fh)
        self.info = info
        self.timeout = timeout
        self.session = Session(key=str(info["key"]).encode(), signature_scheme=info["signature_scheme"])
        self.context: Any = zmq.Context.instance()
        self.shell = self.context.socket(zmq.DEALER)
        self.shell.setsockopt(zmq.MAXMSGSIZE, MAX_BYTES * 2)
        self.shell.setsockopt(zmq.LINGER, 0)
        self.shell.connect(self._address("shell_port"))
        self.exports: dict[int, Any] = {}  # the checker's objects learner code may call back
        self._exported: dict[int, int] = {}
        self._next = 1  # handles are never reused: one kept from an earlier test names nothing now
        self._first = 1  # the first handle of the current test cell
        self._depth = 0  # requests open at once (a callback calling learner code opens another)

    def forget(self) -> None:
        """Start a new test cell: the objects earlier cells passed to learner code (which it may
        have kept) are no longer called back."""
        self.exports.clear()
        self._exported.clear()
        self._first = self._next

    def exported(self, handle: Any) -> Any:
        """The object this checker exported under ``handle`` in the current test cell, or raise."""
        if type(handle) is int and handle in self.exports:
            return self.exports[handle]
        if type(handle) is int and 0 < handle < self._first:
            raise RemoteError(
                "learner code used an object the grader passed it in an earlier test: a test's "
                "objects can be used only during that test"
            )
        raise RemoteError("learner code named an object the grader never passed it")

    def _address(self, port: str) -> str:
        return f"{self.info.get('transport', 'tcp')}://{self.info['ip']}:{self.info[port]}"

    def _alive(self) -> bool:
        import zmq

        sock = self.context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self._address("hb_port"))
            sock.send(b"ping")
            return bool(sock.poll(3000))
        finally:
            sock.close()

    def request(self, req: dict[str, Any], originals: dict[str, Any] | None = None) -> Any:
        """Send ``req`` to the learner's kernel and return its decoded ``ok`` value, or raise.

        While learner code runs it may call back into the checker (an object a test passed it):
        each callback is run here and its answer sent back until the request is answered.
        ``originals`` maps the tokens of the objects ``req`` carried to the checker's own.
        """
        if self._depth >= MAX_NESTING:
            raise RemoteError(
                f"learner code and the grader's callables called each other more than {MAX_NESTING} "
                "levels deep (nested calls): expected a call that returns"
            )
        may_call_back = req.get("op") not in ("get", "release")  # those run no learner function
        self._depth += 1
        try:
            answer = self._exchange(req)
            while "callback" in answer:
                back = self._callback(answer, {} if originals is None else originals, may_call_back)
                answer = self._exchange(back)
        finally:
            self._depth -= 1
        if "raise" in answer:
            raise _reraise(answer["raise"])
        return answer.get("ok")

    def _exchange(self, req: dict[str, Any]) -> dict[str, Any]:
        import ast

        import zmq

        text = json.dumps(req, allow_nan=True)
        if len(text) > MAX_BYTES * 2:
            raise CodecError(f"a request larger than {MAX_BYTES >> 20} MiB")
        expr = f"__import__('labkit.course.remote', fromlist=['_serve'])._serve({text!r})"
        content = {
            "code": "",
            "silent": True,
            "store_history": False,
            "user_expressions": {"r": expr},
            "allow_stdin": False,
            "stop_on_error": False,
        }
        msg: Any = self.session.send(self.shell, "execute_request", content)
        msg_id = msg["header"]["msg_id"]
        end = time.monotonic() + self.timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise RemoteError(f"the learner's kernel did not answer within {self.timeout:.0f} s")
            if not self.shell.poll(int(min(left, 2.0) * 1000)):
                if not self._alive():
                    raise RemoteError("the learner's kernel stopped (it no longer answers)")
                continue
            try:
                _, parts = self.session.feed_identities(self.shell.recv_multipart(zmq.NOBLOCK))
                reply = self.session.deserialize(parts)
            except (ValueError, KeyError, zmq.ZMQError):
                continue  # not a valid signed message
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                break
        value = reply.get("content", {}).get("user_expressions", {}).get("r", {})
        if value.get("status") != "ok":
            raise RemoteError(f"the learner's kernel could not answer ({value.get('ename', 'no reply')})")
        text = value.get("data", {}).get(MIME, "")
        if not isinstance(text, str) or len(text) > MAX_BYTES * 2 or text[:1] not in ("'", '"'):
            raise RemoteError("the learner's kernel sent a reply that is not a string")
        try:
            answer = json.loads(ast.literal_eval(text))
        except Exception as err:
            raise RemoteError(f"the learner's kernel sent a malformed reply ({type(err).__name__})") from None
        if not isinstance(answer, dict):
            raise RemoteError("the learner's kernel sent a malformed reply")
        return answer

    def _callback(
        self, answer: dict[str, Any], originals: dict[str, Any], allowed: bool = True
    ) -> dict[str, Any]:
        """Run the learner's callback ``answer["callback"]`` on an object this checker exported;
        the resume request with its value or its exception. Not ``allowed`` (the checker is only
        reading a name), it runs nothing and leaves the checker's random state alone."""
        reply: dict[str, Any] = {"op": "resume", "call": answer.get("call")}
        cb = answer.get("callback")
        try:
            if not isinstance(cb, dict) or type(answer.get("call")) is not int:
                raise RemoteError("the learner's kernel sent a malformed callback")
            if not allowed:
                raise RemoteError(
                    "learner code called the grader's objects while the grader was reading a name: "
                    "they can be used only while the grader calls learner code"
                )
            target = self.exported(cb.get("handle"))
            _set_rng_state(decode(cb.get("rng"), None))
            args = [self.decode_result(a, originals) for a in _list(cb.get("args", []))]
            given = cb.get("kwargs", {})
            if type(given) is not dict:
                raise CodecError("keyword arguments that are not an object")
            kwargs = {str(k): self.decode_result(v, originals) for k, v in given.items()}
            op = cb.get("op")
            if op == "call":
                reply["value"] = self.encode_arg(target(*args, **kwargs), _trusted_names(), originals)
            elif op == "getattr" and len(args) == 1 and type(args[0]) is str and not args[0].startswith("_"):
                reply["value"] = self.encode_attr(target, args[0])
            elif op == "len":
                reply["value"] = encode(len(target), None)
            elif op == "getitem" and len(args) == 1:
                reply["value"] = self.encode_arg(target[args[0]], _trusted_names(), originals)
            else:
                raise AttributeError(f"learner code cannot {op!r} the grader's {type(target).__name__}")
        except Exception as err:
            reply.pop("value", None)
            reply["raise"] = _error_info(err)
        reply["rng"] = encode(_rng_state(), None)
        return reply

    # -- encoding the checker's arguments, decoding the learner's results

    def export(self, obj: Any) -> dict[str, Any]:
        """A tag for ``obj``, which stays in the checker: learner code that uses it calls back."""
        handle = self._exported.get(id(obj))
        if handle is None or self.exports.get(handle) is not obj:
            handle = self._next
            self._next += 1
            self.exports[handle] = obj
            self._exported[id(obj)] = handle
        name = getattr(obj, "__name__", None) or type(obj).__name__
        return {"$checker": handle, "name": str(name)[:100]}

    def encode_arg(self, obj: Any, names: dict[int, str], originals: dict[str, Any] | None = None) -> Any:
        """``obj`` for learner code: data by value; the checker's other objects as tags, each with a
        token in ``originals`` so that learner code handing them back gives the checker's own."""
        import torch

        tokens = {} if originals is None else originals

        def other(o: Any) -> Any:
            if isinstance(o, _Remote):
                tag = {"$handle": object.__getattribute__(o, "_handle")}
            elif id(o) in names:
                tag = {"$ref": names[id(o)]}
            elif isinstance(o, torch.nn.Module) and (desc := describe_module(o, _Budget())) is not None:
                tag = desc
            elif (fields := encode_dataclass(o, other)) is not None:
                return fields
            elif isinstance(o, types.FunctionType | types.BuiltinFunctionType | type) and _importable(o):
                tag = {"$import": f"{o.__module__}:{o.__qualname__}"}
            elif _exportable(o):
                tag = self.export(o)
            else:
                raise TypeError(
                    f"the grader cannot pass a {type(o).__name__} to learner code: pass data, a model "
                    "made of torch.nn/labkit layers, a function, or a labkit object"
                )
            token = f"n{len(tokens)}"
            tokens[token] = o
            return {**tag, "tok": token}

        return encode(obj, other)

    def encode_attr(self, target: Any, name: str) -> Any:
        """The public attribute ``name`` of an exported checker object, for learner code: data, a
        labkit dataclass, a module by its structure, or a method or labkit object of its own (which
        stays here); never a function, module or other object the test did not hand over."""
        import torch

        if isinstance(target, functools.partial):  # its args and keywords may hold what the test knows
            what = getattr(target.func, "__name__", "a function")
            raise TypeError(
                f"learner code cannot read {name!r} of the grader's partial of {what}: call it instead"
            )
        value = getattr(target, name)

        def other(o: Any) -> Any:
            if isinstance(o, types.MethodType) and o.__self__ is target:
                if name in GRADER_ONLY_METHODS:
                    raise TypeError(
                        f"learner code cannot call the grader's {type(target).__name__}.{name}(): it would "
                        "erase what the test counts; use the object as the exercise says"
                    )
                return self.export(o)
            if isinstance(o, torch.nn.Module) and (desc := describe_module(o, _Budget())) is not None:
                return desc
            if (fields := encode_dataclass(o, other)) is not None:
                return fields
            if _exportable(o) and not isinstance(o, types.FunctionType | functools.partial):
                return self.export(o)
            raise TypeError(f"learner code cannot read the grader's {name} (a {type(o).__name__})")

        return encode(value, other)

    def decode_result(self, data: Any, originals: dict[str, Any]) -> Any:
        def other(tag: dict[str, Any]) -> Any:
            if "$arg" in tag:
                key = str(tag["$arg"])
                if key not in originals:
                    raise RemoteError("the learner's kernel named an argument that was not passed")
                return originals[key]
            if "$exported" in tag:
                return self.exported(tag["$exported"])
            if "$remote" in tag:
                handle = int(tag["$remote"])
                kind = tag.get("kind")
                if kind == "module":
                    if isinstance(tag.get("desc"), dict):
                        try:
                            return rebuild_module(tag["desc"])
                        except (CodecError, ImportError, AttributeError, TypeError, KeyError, ValueError):
                            pass
                    return RemoteModule(self, handle, bool(tag.get("training")))
                if kind == "function":
                    return RemoteFunction(self, handle, str(tag.get("name", "function"))[:100])
                return RemoteObject(self, handle, str(tag.get("name", "object"))[:100])
            raise CodecError(f"unexpected tag {sorted(tag)[:1]}")

        return decode(data, other)

    def call(self, handle: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        names = _trusted_names()
        originals = {f"a{i}": a for i, a in enumerate(args)} | {f"k{k}": v for k, v in kwargs.items()}
        req = {
            "op": "call",
            "handle": handle,
            "args": [self.encode_arg(a, names, originals) for a in args],
            "kwargs": {k: self.encode_arg(v, names, originals) for k, v in kwargs.items()},
            "rng": encode(_rng_state(), None),
        }
        answer = self.request(req, originals)
        if not isinstance(answer, dict):
            raise RemoteError("the learner's kernel sent a malformed reply")
        _set_rng_state(decode(answer.get("rng"), None))
        for key, value in dict(answer.get("changed") or {}).items():
            if key in originals and key[:1] in ("a", "k"):
                _write_back(originals[key], decode(value, None))
        return self.decode_result(answer.get("value"), originals)

    def get(self, name: str) -> Any:
        return self.decode_result(self.request({"op": "get", "name": name}), {})


def _write_back(target: Any, new: Any) -> None:
    """Apply to the checker's argument what the learner's call did to its copy."""
    import numpy as np
    import torch

    if isinstance(target, torch.Tensor) and isinstance(new, torch.Tensor) and target.shape == new.shape:
        with torch.no_grad():
            target.copy_(new.to(target.dtype))
    elif isinstance(target, torch.Generator) and isinstance(new, torch.Generator):
        target.set_state(new.get_state())
    elif isinstance(target, np.ndarray) and isinstance(new, np.ndarray) and target.shape == new.shape:
        np.copyto(target, new, casting="unsafe")
    elif isinstance(target, torch.nn.Module) and isinstance(new, dict):
        flags = new.get("training")
        subs = list(target.modules())
        if isinstance(flags, list) and len(flags) == len(subs):
            for sub, flag in zip(subs, flags, strict=True):
                sub.training = bool(flag)
        state = new.get("state")
        if isinstance(state, dict):
            own = target.state_dict()
            with torch.no_grad():
                for key, value in state.items():
                    if key in own and isinstance(value, torch.Tensor) and own[key].shape == value.shape:
                        own[key].copy_(value.to(own[key].dtype))


def _importable(obj: Any) -> bool:
    """A labkit/torch/numpy/math function or class the learner kernel imports by its name."""
    module, qual = str(getattr(obj, "__module__", "") or ""), str(getattr(obj, "__qualname__", ""))
    if not module.startswith(("labkit", "torch", "numpy", "math")) or not qual or "<" in qual:
        return False
    try:
        found: Any = importlib.import_module(module)
        for part in qual.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return False
    return found is obj


def _exportable(obj: Any) -> bool:
    """Whether the checker may hand ``obj`` to learner code as an object that stays here: a
    Python function or partial (a test's attack, callback or fake), a labkit object, or an object
    of a class the test defines. Never a Python module, a class, a builtin or another library's
    object: learner code reaches only what a test handed it and what that returns."""
    if isinstance(obj, types.FunctionType | functools.partial):
        return True
    if isinstance(obj, types.MethodType):
        return _exportable(obj.__self__)
    if isinstance(obj, types.ModuleType | type | types.BuiltinFunctionType):
        return False
    module = str(type(obj).__module__ or "")
    return module == "__main__" or (module.startswith("labkit.") and not module.startswith("labkit.course"))


def _trusted_names() -> dict[int, str]:
    """id -> name of the checker's own non-data objects that may go by reference: those that
    trusted cells assigned, which the learner's kernel ran too (see :func:`bind`)."""
    import numpy as np
    import torch

    names: dict[int, str] = {}
    for name, value in sorted(_SHARED.items()):
        if value is None or isinstance(value, _Remote):
            continue
        if _plain(value) or isinstance(value, list | tuple | dict | set | torch.Tensor | np.ndarray):
            continue
        if isinstance(value, type(json)):  # modules go by import
            continue
        names.setdefault(id(value), name)
    return names


class _Remote:
    """Base of the checker's proxies of learner objects."""

    def __init__(self, peer: Peer, handle: int, name: str) -> None:
        object.__setattr__(self, "_peer", peer)
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "__name__", name)
        object.__setattr__(self, "__qualname__", name)

    def __repr__(self) -> str:
        kind = type(self).__name__.removeprefix("Remote").lower()
        return f"<learner {kind} {object.__getattribute__(self, '__name__')}>"

    def __bool__(self) -> bool:
        raise TypeError("a learner object has no truth value in the grader; compare data instead")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return object.__getattribute__(self, "_peer").call(
            object.__getattribute__(self, "_handle"), args, kwargs
        )


class RemoteFunction(_Remote):
    """A learner function or class: calling it runs it in the learner's kernel."""

    def __bool__(self) -> bool:
        return True


class RemoteObject(_Remote):
    """Any other learner object: attributes, items, ``len`` and calls are fetched as data."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _remote_attr(self, name)

    def __len__(self) -> int:
        return _plain_int(_remote_attr(self, "__len__")())

    def __getitem__(self, key: Any) -> Any:
        return _remote_attr(self, "__getitem__")(key)

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]


def _remote_attr(obj: _Remote, name: str) -> Any:
    peer: Peer = object.__getattribute__(obj, "_peer")
    handle = object.__getattribute__(obj, "_handle")
    return peer.decode_result(peer.request({"op": "getattr", "handle": handle, "name": name}), {})


def _plain_int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an int from the learner's object, got {type(value).__name__}")
    return value


def _remote_module_class() -> type:
    import torch

    class _Forward(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, owner: Any) -> Any:
            ctx.owner = owner
            ctx.save_for_backward(x)
            return owner._op("forward", x)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            (x,) = ctx.saved_tensors
            return ctx.owner._op("vjp", x, grad), None

    class _RemoteModule(torch.nn.Module):
        """A learner module the checker cannot rebuild: forward passes and vector-Jacobian
        products are computed by the learner's kernel (``torch.autograd.Function``)."""

        def __init__(self, peer: Peer, handle: int, training: bool) -> None:
            super().__init__()
            self._peer = peer
            self._handle = handle
            self.train(training)

        def _op(self, op: str, x: Any, grad: Any = None) -> Any:
            import torch

            req: dict[str, Any] = {
                "op": op,
                "handle": self._handle,
                "training": self.training,
                "x": encode(x, None),
                "rng": encode(_rng_state(), None),
            }
            if grad is not None:
                req["grad"] = encode(grad, None)
            answer = self._peer.request(req)
            if not isinstance(answer, dict):
                raise RemoteError("the learner's kernel sent a malformed reply")
            _set_rng_state(decode(answer.get("rng"), None))
            out = decode(answer.get("value"), None)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"the learner's model returned a {type(out).__name__}, not a tensor")
            return out.detach().to(x.dtype)

        def forward(self, x: Any) -> Any:
            return _Forward.apply(x, self)

    return _RemoteModule


def RemoteModule(peer: Peer, handle: int, training: bool) -> Any:
    """A ``torch.nn.Module`` in the checker whose forward and backward run in the learner's kernel."""
    global _REMOTE_MODULE
    if _REMOTE_MODULE is None:
        _REMOTE_MODULE = _remote_module_class()
    return _REMOTE_MODULE(peer, handle, training)


_REMOTE_MODULE: Any = None
_PEER: list[Peer] = []
# Each shared name with the object it held when the test's names were bound: a test that binds
# the name to something else (``for m in (learner_model, clean_model)``) must not send that
# object by reference to the learner kernel's ``m``, which is still the trusted cells' object.
_SHARED: dict[str, Any] = {}


def peer() -> Peer:
    """The checker's connection to the learner's kernel (from ``LABKIT_PEER_CONNECTION``)."""
    if not _PEER:
        path = os.environ.get("LABKIT_PEER_CONNECTION")
        if not path:
            raise RemoteError("no learner kernel to talk to (LABKIT_PEER_CONNECTION is not set)")
        _PEER.append(Peer(path, float(os.environ.get("LABKIT_PEER_TIMEOUT", "60"))))
    return _PEER[0]


def bind(names: list[str], shared: list[str] = ()) -> str:  # type: ignore[assignment]
    """In the checker: bind each learner name in ``names`` from the learner's kernel.

    ``shared`` names the objects that trusted cells made in both kernels: those go to learner
    code by reference (the learner kernel's object of the same name).

    A name the learner's kernel does not have is left unbound (the test then fails with
    ``NameError`` if it reads it); a value that cannot cross is bound to an object that raises
    when used. Returns a short note of what could not be bound (for the grader's events).
    """
    ns = _user_ns()
    notes = []
    if _PEER:  # a new test cell: what earlier cells passed to learner code is no longer called back
        _PEER[0].forget()
    _SHARED.clear()
    _SHARED.update({name: ns[name] for name in shared if name in ns})
    for name in names:
        ns.pop(name, None)
        try:
            ns[name] = peer().get(name)
        except NameError:
            continue
        except Exception as err:
            notes.append(f"{name}: {type(err).__name__}: {str(err)[:120]}")
            ns[name] = _Unavailable(name, f"{type(err).__name__}: {str(err)[:200]}")
    return "; ".join(notes)


class _Unavailable:
    """A learner name whose value could not cross: any use raises with the reason."""

    def __init__(self, name: str, why: str) -> None:
        self._why = f"{name} could not be graded: {why}"

    def __getattr__(self, name: str) -> Any:
        raise RemoteError(object.__getattribute__(self, "_why"))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RemoteError(self._why)

    def __bool__(self) -> bool:
        raise RemoteError(self._why)

    def __eq__(self, other: object) -> bool:
        raise RemoteError(self._why)

    __hash__ = None  # type: ignore[assignment]
