"""What a served model accepts: its limits (:class:`ServeConfig`) and the checks on a request.

:func:`validate_inputs` turns the decoded ``inputs`` of a ``POST /predict`` into a float32
batch, or raises :class:`RequestError` with the HTTP status (413, 422) and a message that says
what was wrong and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from labkit.utils import check_images

__all__ = ["FLOAT_DTYPES", "RequestError", "ServeConfig", "shape_text", "validate_inputs"]

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


# ---------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ServeConfig:
    """Limits and knobs of a served model.

    Parameters
    ----------
    max_batch:
        Most rows one request may hold; more is refused with 413.
    max_body_bytes:
        Largest request body; more is refused with 413 before it is parsed.
    batch_window_ms:
        How long the micro-batcher waits for more requests after the first one (0: no wait).
    max_batch_rows:
        Most rows in one forward pass (the micro-batch); at least ``max_batch``.
    queue_size:
        Requests the server holds at once (being read and validated, waiting for a forward
        pass, or in one); one more gets 503 at once. By Little's law a server completing
        ``r`` requests per second answers a full queue in ``queue_size / r`` seconds, so a
        queue longer than ``r * timeout_s`` only holds requests that will time out.
    timeout_s:
        A request not answered within this many seconds of its arrival gets 504.
    threads:
        Intra-op threads for torch (``None``: leave as is). torch has one thread pool per
        process: an in-process server sets it for the whole process while it runs.
    dtype:
        ``"float32"``, or ``"bfloat16"`` to run the forward pass under CPU autocast (lower
        precision, less memory traffic).
    """

    max_batch: int = 256
    max_body_bytes: int = 4_000_000
    batch_window_ms: float = 2.0
    max_batch_rows: int = 512
    queue_size: int = 64
    timeout_s: float = 5.0
    threads: int | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_body_bytes", "max_batch_rows", "queue_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_batch_rows < self.max_batch:
            raise ValueError(
                f"max_batch_rows ({self.max_batch_rows}) must be at least max_batch ({self.max_batch}): "
                "a forward pass must fit the largest request"
            )
        if not (isinstance(self.batch_window_ms, int | float) and 0 <= self.batch_window_ms <= 1000):
            raise ValueError(f"batch_window_ms must be between 0 and 1000, got {self.batch_window_ms!r}")
        if not (isinstance(self.timeout_s, int | float) and 0 < self.timeout_s < math.inf):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {self.timeout_s!r}")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")


# ------------------------------------------------------------------------------------ validation
class RequestError(Exception):
    """A request the server refuses, with its HTTP status and a message for the caller."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"HTTP {status}: {message}")


def shape_text(shape: Sequence[int]) -> str:
    return "(batch, " + ", ".join(str(s) for s in shape) + ")"


def validate_inputs(
    inputs: object,
    *,
    input_shape: Sequence[int],
    value_range: tuple[float, float] | None = (0.0, 1.0),
    max_batch: int = 256,
    dtype: str | None = None,
) -> torch.Tensor:
    """Turn the decoded ``inputs`` of a request into a float32 batch, or raise :class:`RequestError`.

    Parameters
    ----------
    inputs:
        The JSON-decoded ``inputs`` field: a nested list of numbers of shape ``(N, *input_shape)``.
    input_shape, value_range:
        The model's contract.
    max_batch:
        Most rows allowed; more raises with status 413.
    dtype:
        The dtype the client declared (``"float32"``, ``"torch.uint8"``, ...); only floating
        point types pass, since integer pixels are almost always 0..255 instead of [0, 1].

    Returns
    -------
    torch.Tensor
        The batch as float32, after every check passed.

    Examples
    --------
    >>> validate_inputs([[[0.0, 1.0]]], input_shape=(1, 2)).shape
    torch.Size([1, 1, 2])
    >>> validate_inputs([], input_shape=(1, 2))
    Traceback (most recent call last):
    ...
    labkit.serving.validation.RequestError: HTTP 422: empty batch: send at least one input of shape (1, 2)
    """
    shape = tuple(int(s) for s in input_shape)
    if dtype is not None:
        name = str(dtype).removeprefix("torch.")
        if name not in FLOAT_DTYPES:
            raise RequestError(
                422,
                f"dtype {dtype!r} is not accepted: send floating-point values ({', '.join(FLOAT_DTYPES)}) "
                "scaled to the model's range, not integer pixels",
            )
    if not isinstance(inputs, list):
        raise RequestError(
            422, f"inputs must be a nested list of shape {shape_text(shape)}, got {type(inputs).__name__}"
        )
    if len(inputs) == 0:
        raise RequestError(422, f"empty batch: send at least one input of shape {shape}")
    if len(inputs) > max_batch:
        raise RequestError(
            413, f"batch of {len(inputs)} inputs is over the limit of {max_batch} per request; split it"
        )
    try:
        arr = np.asarray(inputs)
    except (ValueError, TypeError, OverflowError) as err:
        raise RequestError(
            422, f"inputs are ragged or not numbers ({err}); expected shape {shape_text(shape)}"
        ) from None
    if arr.dtype.kind == "b":
        raise RequestError(422, "inputs are booleans; send numbers scaled to the model's range")
    if arr.dtype.kind not in "iuf":
        raise RequestError(
            422,
            f"inputs must be numbers in a regular nested list of shape {shape_text(shape)} "
            f"(found {'ragged lists or mixed types' if arr.dtype.kind == 'O' else 'non-numbers'})",
        )
    if arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != shape:
        raise RequestError(422, f"inputs have shape {tuple(arr.shape)}, expected {shape_text(shape)}")
    x = torch.from_numpy(arr.astype(np.float64))
    try:
        check_images(x, name="inputs", shape=shape, value_range=value_range)
    except ValueError as err:
        raise RequestError(422, str(err)) from None
    if value_range is None and bool((x.abs() > torch.finfo(torch.float32).max).any()):
        raise RequestError(422, "inputs hold values too large for float32")
    return x.float()
