"""The checker kernel's side of grading: its connection to the learner's kernel, and :func:`bind`.

:class:`Peer` talks to the learner's kernel over the Jupyter shell channel (the learner kernel's
connection file, on the worker's private loopback): it sends requests that the learner's kernel
answers in :func:`labkit.course.learner_side.serve`, runs the call-backs learner code makes into
the checker's objects while a request is open, writes back what a learner call changed in the
checker's tensors, arrays, generators and modules, and turns what comes back into data or
proxies (:mod:`labkit.course.proxies`). :func:`bind` binds the learner names a test cell reads.

Its role in the threat model: this runs in the trusted checker kernel, which never executes
learner code. What the checker hands to learner code is data, a reference to an object the
trusted cells made in both kernels, a module by its structure, an importable labkit/torch/numpy
function, or an object that stays here (:func:`_exportable`: a test's function or a labkit
object, never a Python module, a class, a builtin or another library's object). Learner code
can call such an object back only during the test cell that passed it and only while the checker
is calling learner code, and never a method that erases what the test counts
(:data:`GRADER_ONLY_METHODS`).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import time
import types
from typing import Any

from labkit.course.codec import (
    MAX_BYTES,
    Budget,
    CodecError,
    RemoteError,
    checked_list,
    decode,
    describe_module,
    encode,
    encode_dataclass,
    error_info,
    plain,
    rebuild_module,
    reraise,
    user_ns,
)
from labkit.course.proxies import (
    RemoteDefense,
    RemoteFunction,
    RemoteModule,
    RemoteObject,
    RemoteProxy,
    learner_handle,
)
from labkit.course.rng import adopt_rng_state, derived_seed, rng_state, set_rng_state

MAX_NESTING = 8  # learner calls open at once (the checker's callables calling learner code in turn)
# Methods of a test's objects that learner code may not call: they erase what the test counts of
# what learner code did (a PredictionAPI's queries, a DriftMonitor's history, a breaker's failures).
GRADER_ONLY_METHODS = frozenset({"reset"})
MIME = "text/plain"


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
            raise reraise(answer["raise"])
        return answer.get("ok")

    def _exchange(self, req: dict[str, Any]) -> dict[str, Any]:
        import ast

        import zmq

        text = json.dumps(req, allow_nan=True)
        if len(text) > MAX_BYTES * 2:
            raise CodecError(f"a request larger than {MAX_BYTES >> 20} MiB")
        expr = f"__import__('labkit.course.learner_side', fromlist=['serve']).serve({text!r})"
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
            set_rng_state(decode(cb.get("rng"), None))
            args = [self.decode_result(a, originals) for a in checked_list(cb.get("args", []))]
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
            reply["raise"] = error_info(err)
        reply["rng"] = encode(rng_state(), None)
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
        tag: dict[str, Any] = {"$checker": handle, "name": str(name)[:100]}
        if getattr(type(obj), "_grading_fields", None) is not None:  # its stand-in passes isinstance
            tag["cls"] = f"{type(obj).__module__}:{type(obj).__qualname__}"
        return tag

    def encode_arg(self, obj: Any, names: dict[int, str], originals: dict[str, Any] | None = None) -> Any:
        """``obj`` for learner code: data by value; the checker's other objects as tags, each with a
        token in ``originals`` so that learner code handing them back gives the checker's own."""
        import torch

        tokens = {} if originals is None else originals

        def other(o: Any) -> Any:
            if (handle := learner_handle(o)) is not None:
                tag: dict[str, Any] = {"$handle": handle}
            elif id(o) in names:
                tag = {"$ref": names[id(o)]}
            elif isinstance(o, torch.nn.Module) and (desc := describe_module(o, Budget())) is not None:
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
            if isinstance(o, torch.nn.Module) and (desc := describe_module(o, Budget())) is not None:
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
            if "$shared" in tag:  # a field of a learner object: the trusted object of that name
                name = str(tag["$shared"])
                value = _SHARED.get(name)
                if (
                    tag.get("$field") is not True
                    or name not in _trusted_names().values()
                    or getattr(type(value), "_grading_fields", None) is None
                ):
                    raise RemoteError(
                        f"the learner's kernel named {name[:40]!r} where only a trusted labkit object "
                        "held by a rebuilt object may be named"
                    )
                return value
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
                if kind == "defense":
                    layer = tag.get("layer")
                    return RemoteDefense(
                        self,
                        handle,
                        str(tag.get("name", "Defense"))[:100],
                        hooks=checked_list(tag.get("hooks", [])),
                        layer=layer if isinstance(layer, dict) else {},
                    )
                proxy: RemoteProxy
                if kind == "function":
                    proxy = RemoteFunction(self, handle, str(tag.get("name", "function"))[:100])
                else:
                    proxy = RemoteObject(self, handle, str(tag.get("name", "object"))[:100])
                if tag.get("$field") is True:  # called by the checker's labkit code, not by a test
                    object.__setattr__(proxy, "_write_back", False)
                return proxy
            raise CodecError(f"unexpected tag {sorted(tag)[:1]}")

        return decode(data, other)

    def call(
        self, handle: int, args: tuple[Any, ...], kwargs: dict[str, Any], *, write_back: bool = True
    ) -> Any:
        """Call the learner's function or class ``handle``; return its result for the checker.

        With ``write_back``, the tensors, arrays, generators and module modes of the arguments
        that the learner's call changed in place are changed here too (a test can then see that
        an answer modified its input), except the trusted cells' objects and data (anything that
        shares memory with a name the trusted cells made): learner code changing one of those is
        an error, since the tests after it would measure against what learner code wrote. A call
        that labkit code in the checker makes to a learner callable inside a rebuilt object (a
        guard's model) writes nothing back (``write_back=False``).
        """
        names = _trusted_names()
        originals = {f"a{i}": a for i, a in enumerate(args)} | {f"k{k}": v for k, v in kwargs.items()}
        req = {
            "op": "call",
            "handle": handle,
            "args": [self.encode_arg(a, names, originals) for a in args],
            "kwargs": {k: self.encode_arg(v, names, originals) for k, v in kwargs.items()},
            "rng": encode(sent := rng_state(), None),
        }
        answer = self.request(req, originals)
        if not isinstance(answer, dict):
            raise RemoteError("the learner's kernel sent a malformed reply")
        adopt_rng_state(sent, decode(answer.get("rng"), None))
        for key, value in dict(answer.get("changed") or {}).items():
            if write_back and key in originals and key[:1] in ("a", "k"):
                new = decode(value, None)
                trusted = _trusted_owner(originals[key])
                if trusted is not None and _changes_data(originals[key], new):
                    raise RemoteError(
                        f"learner code changed the grader's {trusted} in place (the notebook's own "
                        "object, which the tests measure against): work on a copy instead"
                    )
                _write_back(originals[key], new, derive=trusted is not None)
        return self.decode_result(answer.get("value"), originals)

    def get(self, name: str) -> Any:
        shared = sorted(set(_trusted_names().values()))
        return self.decode_result(self.request({"op": "get", "name": name, "shared": shared}), {})


def _write_back(target: Any, new: Any, *, derive: bool = False) -> None:
    """Apply to the checker's argument what the learner's call did to its copy."""
    import numpy as np
    import torch

    if isinstance(target, torch.Tensor) and isinstance(new, torch.Tensor) and target.shape == new.shape:
        with torch.no_grad():
            target.copy_(new.to(target.dtype))
    elif isinstance(target, torch.Generator) and isinstance(new, torch.Generator):
        before, after = target.get_state(), new.get_state()
        if not derive:  # a test's own generator goes on exactly as in one process
            target.set_state(after)
        elif not torch.equal(before, after):
            # the trusted cells' generator: moved on to a state learner code cannot choose (it
            # could otherwise pick the random data the lesson draws from it next)
            target.manual_seed(derived_seed(bytes(before.numpy()), bytes(after.numpy())))
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


def _changes_data(target: Any, new: Any) -> bool:
    """Whether writing ``new`` back into ``target`` would change more than a module's modes."""
    import torch

    if isinstance(target, torch.nn.Module):
        return isinstance(new, dict) and bool(new.get("state"))
    return not isinstance(target, torch.Generator)


def _storages(obj: Any, depth: int = 0) -> set[int]:
    """The memory (storage addresses) of every tensor and array ``obj`` holds: itself, a module's
    parameters and buffers, and what dataclasses, tuples, lists and dicts hold, a few levels deep."""
    import dataclasses

    import numpy as np
    import torch

    if isinstance(obj, torch.Tensor):
        return {int(obj.untyped_storage().data_ptr())}
    if isinstance(obj, np.ndarray):
        base = obj
        while isinstance(base.base, np.ndarray):
            base = base.base
        return {int(base.__array_interface__["data"][0])}
    if isinstance(obj, torch.nn.Module):
        return {int(t.untyped_storage().data_ptr()) for t in [*obj.parameters(), *obj.buffers()]}
    if depth > 4:
        return set()
    parts: list[Any] = []
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        parts = [getattr(obj, f.name, None) for f in dataclasses.fields(obj)]
    elif isinstance(obj, tuple | list):
        parts = list(obj)[:1000]
    elif isinstance(obj, dict):
        parts = list(obj.values())[:1000]
    found: set[int] = set()
    for part in parts:
        found |= _storages(part, depth + 1)
    return found


def _trusted_owner(obj: Any) -> str | None:
    """The name of the trusted cells' object that ``obj`` is, or shares memory with: a model
    wrapped, cut or put in a container by a test, a view of a data set's tensor; else ``None``."""
    mine = _storages(obj, depth=5)  # the argument itself: a tensor, an array or a module
    for name, value in _SHARED.items():
        if value is obj or (mine and mine & _storages(value)):
            return name
    return None


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
        if value is None or isinstance(value, RemoteProxy):
            continue
        if plain(value) or isinstance(value, list | tuple | dict | set | torch.Tensor | np.ndarray):
            continue
        if isinstance(value, type(json)):  # modules go by import
            continue
        names.setdefault(id(value), name)
    return names


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
    ns = user_ns()
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
