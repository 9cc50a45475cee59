"""The random state that travels with every call between the checker and the learner kernel.

The checker's global generators (torch, NumPy's legacy generator, ``random``) go with each call
(:func:`rng_state`), so learner code draws what the checker's own code would draw and a test
that seeds and compares still does. What comes back is not taken as it is:
:func:`adopt_rng_state` keeps the checker's state where learner code drew nothing and otherwise
moves to a state learner code cannot choose.
"""

from __future__ import annotations

import random
import secrets
from typing import Any

__all__ = ["adopt_rng_state", "rng_state", "set_rng_state"]

#: Drawn once per process; the checker's derivations use it, and it never leaves the process.
_KEY = secrets.token_bytes(32)


def rng_state() -> dict[str, Any]:
    """The global random-number state (torch, NumPy's legacy generator, ``random``) that
    crosses with every call, so learner code draws what the checker's code would draw."""
    import numpy as np
    import torch

    # The legacy global generators are what notebooks seed: their state is what must cross.
    numpy_state = np.random.get_state()  # noqa: NPY002
    return {"torch": torch.get_rng_state(), "numpy": numpy_state, "random": random.getstate()}


def set_rng_state(state: Any) -> None:
    """Set the global generators from :func:`rng_state`'s value; anything else is ignored."""
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


def _rng_bytes(state: dict[str, Any], name: str) -> bytes | None:
    """One generator's state from :func:`rng_state`'s value, as bytes to compare and hash."""
    import numpy as np
    import torch

    value = state.get(name)
    if name == "torch" and isinstance(value, torch.Tensor):
        return bytes(value.to(torch.uint8).flatten().tolist())
    if name == "numpy" and isinstance(value, tuple) and len(value) == 5:
        keys = np.asarray(value[1], dtype=np.uint32).tobytes()
        return keys + repr((str(value[0]), int(value[2]), int(value[3]), float(value[4]))).encode()
    if name == "random" and isinstance(value, tuple):
        return repr(value).encode()
    return None


def derived_seed(before: bytes, after: bytes) -> int:
    """A seed for a generator that learner code moved from ``before`` to ``after`` (its state
    bytes): it depends on both, but only the checker (which holds the key) can compute it."""
    import hashlib
    import hmac

    digest = hmac.new(_KEY, b"generator\0" + before + b"\0" + after, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "little")


def adopt_rng_state(sent: dict[str, Any], returned: Any) -> None:
    """Set the checker's generators after a learner call that started from ``sent``.

    A generator the learner's code did not touch keeps ``sent``. One it advanced (or replaced)
    moves to a state derived from ``HMAC(key, sent || returned)``: later draws still differ
    from the ones before the call, as they would in one process, but learner code cannot choose
    them (``key`` is the checker's own secret), so it cannot steer the random data a test draws
    after calling it.
    """
    import hashlib
    import hmac

    import numpy as np
    import torch

    set_rng_state(sent)
    if not isinstance(returned, dict):
        return
    for name in ("torch", "numpy", "random"):
        before, after = _rng_bytes(sent, name), _rng_bytes(returned, name)
        if before is None or after is None or after == before:
            continue
        digest = hmac.new(_KEY, name.encode() + b"\0" + before + b"\0" + after, hashlib.sha256).digest()
        if name == "torch":
            torch.manual_seed(int.from_bytes(digest[:8], "little"))
        elif name == "numpy":
            np.random.seed(np.frombuffer(digest, dtype=np.uint32))  # noqa: NPY002
        else:
            random.seed(digest)
