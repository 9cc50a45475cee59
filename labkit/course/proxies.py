"""The checker's stand-ins for learner objects that do not cross as data.

A learner function, class or object, or a learner module the checker cannot rebuild from its
structure, stays in the learner's kernel; :class:`labkit.course.checker_side.Peer` hands the
checker's tests one of these proxies instead. Calling a :class:`RemoteFunction`, reading a
:class:`RemoteObject`'s attributes, items or length, and a :func:`RemoteModule`'s forward pass
and vector-Jacobian products each go to the learner's kernel as a request; the answer comes back
through :mod:`labkit.course.codec` as data or as another proxy.

Their role in the threat model: a proxy runs no learner code in the checker. A learner object
refuses to be a truth value (a test compares the data it returns instead), a remote module's
output must be a tensor, and every reply is decoded with the codec's caps.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from labkit.course.codec import RemoteError, decode, encode
from labkit.course.rng import adopt_rng_state, rng_state


class Connection(Protocol):
    """What a proxy needs of the checker's connection to the learner's kernel
    (:class:`labkit.course.checker_side.Peer`)."""

    def request(self, req: dict[str, Any], originals: dict[str, Any] | None = None) -> Any: ...

    def call(
        self, handle: int, args: tuple[Any, ...], kwargs: dict[str, Any], *, write_back: bool = True
    ) -> Any: ...

    def decode_result(self, data: Any, originals: dict[str, Any]) -> Any: ...


class RemoteProxy:
    """Base of the checker's proxies of learner objects."""

    def __init__(self, peer: Connection, handle: int, name: str) -> None:
        object.__setattr__(self, "_peer", peer)
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "__name__", name)
        object.__setattr__(self, "__qualname__", name)
        # False for a callable held by an object the checker rebuilt (a guard's model): labkit
        # code calls it on the checker's own tensors, which learner code must not change.
        object.__setattr__(self, "_write_back", True)

    def __repr__(self) -> str:
        kind = type(self).__name__.removeprefix("Remote").lower()
        return f"<learner {kind} {object.__getattribute__(self, '__name__')}>"

    def __bool__(self) -> bool:
        raise TypeError("a learner object has no truth value in the grader; compare data instead")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return object.__getattribute__(self, "_peer").call(
            object.__getattribute__(self, "_handle"),
            args,
            kwargs,
            write_back=object.__getattribute__(self, "_write_back"),
        )


class RemoteFunction(RemoteProxy):
    """A learner function or class: calling it runs it in the learner's kernel."""

    def __bool__(self) -> bool:
        return True


class RemoteObject(RemoteProxy):
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


def _remote_attr(obj: Any, name: str) -> Any:
    peer: Connection = object.__getattribute__(obj, "_peer")
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

        def __init__(self, peer: Connection, handle: int, training: bool) -> None:
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
                "rng": encode(sent := rng_state(), None),
            }
            if grad is not None:
                req["grad"] = encode(grad, None)
            answer = self._peer.request(req)
            if not isinstance(answer, dict):
                raise RemoteError("the learner's kernel sent a malformed reply")
            adopt_rng_state(sent, decode(answer.get("rng"), None))
            out = decode(answer.get("value"), None)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"the learner's model returned a {type(out).__name__}, not a tensor")
            return out.detach().to(x.dtype)

        def forward(self, x: Any) -> Any:
            return _Forward.apply(x, self)

    return _RemoteModule


def RemoteModule(peer: Connection, handle: int, training: bool) -> Any:
    """A ``torch.nn.Module`` in the checker whose forward and backward run in the learner's kernel."""
    global _REMOTE_MODULE
    if _REMOTE_MODULE is None:
        _REMOTE_MODULE = _remote_module_class()
    return _REMOTE_MODULE(peer, handle, training)


_REMOTE_MODULE: Any = None


_HOOKS = ("check_input", "check_output")


def RemoteDefense(
    peer: Connection, handle: int, name: str, *, hooks: list[Any], layer: dict[str, Any]
) -> Any:
    """A learner's own prompt-injection layer as a real :class:`labkit.genai.Defense` of the checker.

    Its class overrides exactly the hooks in ``hooks`` (the ones the learner's class overrides, as
    the learner's kernel says), each forwarding to the learner's object; the others are the base
    class's pass-through, run here. So a test's ``isinstance(layer, genai.Defense)`` and
    ``type(layer).check_input is not genai.Defense.check_input`` judge the learner's layer, and a
    learner kernel that claims a hook it does not have only forwards a call that passes through.
    ``layer`` holds its ``name`` and ``targets`` (strings, as a stack's report reads them).
    """
    chosen = tuple(h for h in _HOOKS if h in hooks)
    if len(chosen) != len(hooks):
        raise RemoteError(f"a learner Defense with hooks other than {', '.join(_HOOKS)}: {hooks[:4]!r}")
    cls = _DEFENSE_CLASSES.get(chosen)
    if cls is None:
        cls = _DEFENSE_CLASSES[chosen] = _remote_defense_class(chosen)
    obj = cls()
    object.__setattr__(obj, "_peer", peer)
    object.__setattr__(obj, "_handle", handle)
    object.__setattr__(obj, "_proxy_name", name)
    object.__setattr__(obj, "_hooks", {})
    for key in ("name", "targets"):
        value = layer.get(key)
        object.__setattr__(obj, key, value[:200] if isinstance(value, str) else "")
    return obj


def _remote_defense_class(hooks: tuple[str, ...]) -> type:
    from labkit.genai.defenses import Defense

    def forward(hook: str) -> Any:
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            cached: dict[str, Any] = object.__getattribute__(self, "_hooks")
            if hook not in cached:
                method = _remote_attr(self, hook)
                if not isinstance(method, RemoteFunction):
                    raise TypeError(f"the learner's {self!r} has no {hook} method to call")
                cached[hook] = method
            return cached[hook](*args, **kwargs)

        run.__name__ = run.__qualname__ = hook
        run.__doc__ = f"``{hook}`` of the learner's layer, run in the learner's kernel."
        return run

    def __repr__(self: Any) -> str:
        return f"<learner defense {object.__getattribute__(self, '_proxy_name')}>"

    def __getattr__(self: Any, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _remote_attr(self, name)

    namespace: dict[str, Any] = {"__repr__": __repr__, "__getattr__": __getattr__, "__module__": __name__}
    namespace.update({hook: forward(hook) for hook in hooks})
    return type("RemoteDefense", (Defense,), namespace)


_DEFENSE_CLASSES: dict[tuple[str, ...], type] = {}


def learner_handle(obj: Any) -> int | None:
    """The learner kernel's handle of ``obj`` when it is one of these proxies, else ``None``."""
    if isinstance(obj, RemoteProxy) or type(obj) in _DEFENSE_CLASSES.values():
        handle: int = object.__getattribute__(obj, "_handle")
        return handle
    return None
