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

from labkit.course.codec import RemoteError, decode, encode, rng_state, set_rng_state


class Connection(Protocol):
    """What a proxy needs of the checker's connection to the learner's kernel
    (:class:`labkit.course.checker_side.Peer`)."""

    def request(self, req: dict[str, Any], originals: dict[str, Any] | None = None) -> Any: ...

    def call(self, handle: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...

    def decode_result(self, data: Any, originals: dict[str, Any]) -> Any: ...


class RemoteProxy:
    """Base of the checker's proxies of learner objects."""

    def __init__(self, peer: Connection, handle: int, name: str) -> None:
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


def _remote_attr(obj: RemoteProxy, name: str) -> Any:
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
                "rng": encode(rng_state(), None),
            }
            if grad is not None:
                req["grad"] = encode(grad, None)
            answer = self._peer.request(req)
            if not isinstance(answer, dict):
                raise RemoteError("the learner's kernel sent a malformed reply")
            set_rng_state(decode(answer.get("rng"), None))
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
