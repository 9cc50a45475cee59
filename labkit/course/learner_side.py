"""The learner kernel's side of grading: the server that answers the checker's requests.

The checker (:mod:`labkit.course.checker_side`) asks for a learner name, calls a learner
function, reads a learner object's attribute or runs a learner module's forward pass by sending
JSON that the learner's kernel evaluates as :func:`serve`. Each request runs in a worker thread
(so learner code can call back into the checker's objects, :class:`_CheckerObject`, while it
runs); learner objects that do not cross as data stay here under a handle the checker's proxies
name; arguments the call changed in place are reported so the checker can write them back.

Its role in the threat model: this module runs next to learner code, which may read, patch or
replace any of it, :func:`serve` included. The checker trusts nothing it says: a changed server
only changes the values that come back, which the checker decodes with its caps
(:mod:`labkit.course.codec`) and its tests still check.
"""

from __future__ import annotations

import importlib
import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

from labkit.course.codec import (
    Budget,
    CodecError,
    decode,
    describe_module,
    encode,
    encode_dataclass,
    error_info,
    grading_state,
    rebuild_module,
    reraise,
    stateful_class,
    user_ns,
)
from labkit.course.rng import rng_state, set_rng_state

_HANDLES: dict[int, Any] = {}
_NEXT = [1]


def _keep(obj: Any) -> int:
    handle = _NEXT[0]
    _NEXT[0] += 1
    _HANDLES[handle] = obj
    return handle


class _Call:
    """A request the learner kernel is serving: learner code runs in a worker thread, so that it
    can call back into the checker (a callable a test passed) while the request is open."""

    def __init__(self) -> None:
        self.number = _NEXT[0]
        _NEXT[0] += 1
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()  # worker -> serve
        self.replies: queue.Queue[Any] = queue.Queue()  # serve -> worker (the checker's answers)
        self.origins: dict[int, str] = {}  # id of an object the checker sent -> its token
        self.shared: dict[int, str] = {}  # id of an object trusted cells made in both kernels -> its name
        self.keep: list[Any] = []  # those objects, alive while the call is (so ids stay unique)
        self.thread: threading.Thread | None = None


_CALLS: dict[int, _Call] = {}
_LOCAL = threading.local()


def serve(request: str) -> str:
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
    return json.dumps({"raise": error_info(err)})


def _work(call: _Call, req: Any) -> None:
    _LOCAL.call = call
    try:
        text = json.dumps({"ok": _answer(req, call)}, allow_nan=True)
    except BaseException as err:
        text = _failure(err)
    call.events.put(("done", text))


def _learner_tag(tag: dict[str, Any], call: _Call) -> Any:
    """In the learner kernel: the object for a tag the checker sent (not data)."""
    obj: Any
    if "$ref" in tag:
        obj = user_ns()[str(tag["$ref"])]
    elif "$handle" in tag:
        obj = _HANDLES[int(tag["$handle"])]
    elif "$module" in tag:
        obj = rebuild_module(tag)
    elif "$checker" in tag:
        obj = _CheckerObject(
            int(tag["$checker"]), str(tag.get("name", "object"))[:100], _stand_in_for(tag.get("cls"))
        )
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
    shared = req.get("shared")
    if type(shared) is list:
        ns = user_ns()
        call.shared = {id(ns[n]): n for n in shared if type(n) is str and n in ns}
    if op == "get":
        ns = user_ns()
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

    set_rng_state(decode(req.get("rng"), None))
    if op in ("forward", "vjp"):
        import torch

        target.train(bool(req.get("training")))
        x = decode(req["x"], other).detach().requires_grad_(op == "vjp")
        if op == "forward":
            with torch.no_grad():
                return {"value": _result(target(x), call), "rng": encode(rng_state(), None)}
        out = target(x)
        (grad,) = torch.autograd.grad(out, x, decode(req["grad"], other))
        return {"value": _result(grad, call), "rng": encode(rng_state(), None)}
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
    return {"value": _result(value, call), "changed": changed, "rng": encode(rng_state(), None)}


def _module_state(m: Any) -> dict[str, Any]:
    return {
        "training": [bool(s.training) for s in m.modules()],
        "state": {k: v.clone() for k, v in m.state_dict().items()},
    }


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

    budget = Budget()
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
                fields = {k: encode(v, field, budget) for k, v in described[1].items()}
            except CodecError:
                fields = None  # a field that cannot cross: a handle instead
            if fields is not None:
                layer = _defense_tag(obj)  # the checker's class may refuse what the fields hold
                return {"$state": described[0], "fields": fields} | ({"else": layer} if layer else {})
        if isinstance(obj, torch.nn.Module):
            desc = describe_module(obj, budget)
            return {"$remote": _keep(obj), "kind": "module", "training": bool(obj.training), "desc": desc}
        layer = _defense_tag(obj)
        if layer is not None:
            return layer
        kind = "function" if callable(obj) else "object"
        return {
            "$remote": _keep(obj),
            "kind": kind,
            "name": str(getattr(obj, "__name__", type(obj).__name__))[:100],
        }

    def field(obj: Any) -> Any:
        # A labkit object with behaviour that a trusted cell made in both kernels (the lesson's
        # prediction API), held by an object that crosses as its state: the checker's own object
        # of that name. Only the name crosses; the checker decides what it stands for.
        if id(obj) in shared and getattr(type(obj), "_grading_fields", None) is not None:
            return {"$shared": shared[id(obj)]}
        return other(obj)

    shared = call.shared if call is not None else {}
    if id(value) in origins:
        return {"$arg": origins[id(value)]}
    return encode(value, other, budget)


def _defense_tag(obj: Any) -> dict[str, Any] | None:
    """A learner's own :class:`labkit.genai.Defense` layer (one that does not cross as its
    constructor arguments) as a handle with the hooks its class overrides: the checker stands in
    a ``Defense`` of its own whose overridden hooks run here. What this says only chooses which
    hooks the checker forwards; a hook it does not forward is the base class's pass-through."""
    import sys

    module = sys.modules.get("labkit.genai.defenses")
    base = getattr(module, "Defense", None)
    if base is None or not isinstance(obj, base):
        return None
    hooks = [h for h in ("check_input", "check_output") if getattr(type(obj), h) is not getattr(base, h)]
    hooks += [
        h for h in ("check_input", "check_output") if h in getattr(obj, "__dict__", {}) and h not in hooks
    ]
    return {
        "$remote": _keep(obj),
        "kind": "defense",
        "name": type(obj).__name__[:100],
        "hooks": hooks,
        "layer": {k: str(getattr(obj, k, ""))[:200] for k in ("name", "targets")},
    }


def _stand_in_for(name: Any) -> type | None:
    """The learner kernel's labkit class named ``module:qualname`` that a stand-in passes for in
    ``isinstance`` (a class with behaviour that describes its grading state, not a module)."""
    import torch

    if not isinstance(name, str):
        return None
    try:
        cls = stateful_class(name)
    except CodecError:
        return None
    return None if issubclass(cls, torch.nn.Module) else cls


class _CheckerObject:
    """In the learner kernel: an object of the checker's that a test handed to learner code (an
    attack, a fake clock, a prediction API). Calling it, reading its public attributes, ``len``
    and indexing run in the checker, with the arguments crossing as data. A stand-in for a labkit
    object with behaviour (a prediction API) passes ``isinstance`` for that object's class, so
    that labkit code in this kernel (a red-team campaign) accepts it as its target."""

    __slots__ = ("_cls", "_handle", "_name")

    def __init__(self, handle: int, name: str, cls: type | None = None) -> None:
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_cls", cls)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return object.__getattribute__(self, "_cls") or _CheckerObject

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
        "rng": encode(rng_state(), None),
    }
    call.events.put(("callback", request))
    reply = call.replies.get()
    if not isinstance(reply, dict):
        raise RuntimeError("the grader sent a malformed answer")
    set_rng_state(decode(reply.get("rng"), None))
    if "raise" in reply:
        raise reraise(reply["raise"])
    return decode(reply.get("value"), lambda tag: _learner_tag(tag, call))
