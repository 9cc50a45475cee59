"""Edge-case fuzzing of a model endpoint: does it refuse garbage with a clear error?

:func:`fuzz_inputs` yields the inputs that break careless endpoints (NaN, infinities, empty and
huge batches, wrong dtypes and shapes, constant images, values outside the valid range, objects
that are not tensors at all); :func:`fuzz` calls any endpoint with each and sorts what happened:

=============  ==========================================================================
outcome        verdict
=============  ==========================================================================
rejected       it raised ``ValueError`` or ``TypeError`` with a message, from its own code:
               **good** for invalid input (a caller learns what was wrong), bad for a valid one
crashed        it raised anything else (``RuntimeError`` from deep inside a layer,
               ``IndexError``, ``MemoryError`` ...), an empty message, or a ``TypeError`` /
               ``ValueError`` raised inside torch or NumPy (nobody checked the input): **bad**
returned       it returned something: **bad** for invalid input (garbage in, garbage out);
               for valid input good only if the output is finite and has one row per input
=============  ==========================================================================

Examples
--------
>>> import labkit as lk
>>> from torch import nn
>>> model = lk.LabModel(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), input_shape=(1, 2, 2),
...                     num_classes=2).eval()
>>> report = fuzz(model, (1, 2, 2), skip=["float64"])
>>> report.passed
True
>>> fuzz(lambda x: x.flatten(1) @ torch.ones(4, 2), (1, 2, 2)).passed
False
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from labkit.stress._random import check_generator, uniform
from labkit.tables import html_table, markdown_table

__all__ = ["FuzzCase", "FuzzReport", "FuzzResult", "fuzz", "fuzz_inputs"]

Expect = Literal["reject", "accept", "either"]


@dataclass(frozen=True)
class FuzzCase:
    """One input to try.

    Attributes
    ----------
    name:
        Short identifier, e.g. ``"nan_one"``.
    value:
        What the endpoint is called with.
    expect:
        ``"reject"`` for invalid input, ``"accept"`` for valid input that must give a sane
        answer, ``"either"`` where a clean refusal and a sane answer are both fine (an empty
        batch, a huge batch without a declared limit).
    description:
        One line for the report.
    rows:
        Number of inputs in the batch, when there is a batch (for the output check).
    """

    name: str
    value: Any
    expect: Expect
    description: str
    rows: int | None = None


@dataclass(frozen=True)
class FuzzResult:
    """What happened when the endpoint met one case."""

    case: str
    expect: Expect
    outcome: Literal["rejected", "crashed", "returned"]
    good: bool
    detail: str
    seconds: float


def _shape_tuple(input_shape: object) -> tuple[int, ...]:
    if isinstance(input_shape, int) and not isinstance(input_shape, bool):
        input_shape = (input_shape,)
    if not isinstance(input_shape, Sequence) or not input_shape:
        raise ValueError(f"input_shape must be a non-empty sequence of positive sizes, got {input_shape!r}")
    shape = []
    for s in input_shape:
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or s <= 0:
            raise ValueError(
                f"input_shape must be positive integers such as (3, 32, 32), got {input_shape!r}"
            )
        shape.append(int(s))
    return tuple(shape)


def fuzz_inputs(
    input_shape: Sequence[int],
    *,
    batch_size: int = 4,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    huge_batch: int = 8192,
    max_batch: int | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[FuzzCase]:
    """Yield edge-case inputs for an endpoint taking batches of shape ``(N, *input_shape)``.

    Parameters
    ----------
    input_shape:
        Shape of one input, e.g. ``(3, 32, 32)`` or ``(12,)``.
    batch_size:
        Size of the ordinary batches.
    value_range:
        The valid value range, ``(0, 1)`` for images; ``None`` for unbounded features (the
        out-of-range cases are then skipped).
    huge_batch:
        Size of the huge batch when the endpoint declares no ``max_batch``. It is built with
        ``expand``, so it costs no memory until the endpoint copies it.
    max_batch:
        The largest batch the endpoint promises to serve; the huge case then has
        ``max_batch + 1`` rows and must be rejected.
    device:
        Where the tensors live (default CPU).
    generator:
        Seeds the random valid batches.

    Yields
    ------
    FuzzCase
        Valid controls (a random batch, a single input, constant images), then NaN, infinity,
        empty and huge batches, wrong dtypes, wrong shapes, out-of-range values and non-tensor
        objects.
    """
    shape = _shape_tuple(input_shape)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"batch_size must be an integer of at least 2, got {batch_size!r}")
    if isinstance(huge_batch, bool) or not isinstance(huge_batch, int) or huge_batch <= batch_size:
        raise ValueError(f"huge_batch must be an integer larger than batch_size, got {huge_batch!r}")
    if max_batch is not None and (
        isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1
    ):
        raise ValueError(f"max_batch must be a positive integer or None, got {max_batch!r}")
    if value_range is not None:
        low, high = (float(v) for v in value_range)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"value_range must be finite (low, high) with low < high, got {value_range!r}")
    generator = check_generator(generator)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    like = torch.empty(0, device=dev)
    n = batch_size
    lo, hi = value_range if value_range is not None else (-1.0, 1.0)

    def valid(rows: int = n) -> torch.Tensor:
        return lo + (hi - lo) * uniform((rows, *shape), like, generator)

    def with_value(v: float, *, everywhere: bool = False) -> torch.Tensor:
        x = valid()
        if everywhere:
            return torch.full_like(x, v)
        x.view(n, -1)[1, 0] = v  # one bad value in one input
        return x

    # valid controls: a sane endpoint answers them
    yield FuzzCase("valid", valid(), "accept", f"a valid random batch of {n}", n)
    yield FuzzCase("single", valid(1), "accept", "a batch of one", 1)
    yield FuzzCase(
        "constant_low", torch.full((n, *shape), lo, device=dev), "accept", f"constant inputs at {lo:g}", n
    )
    yield FuzzCase(
        "constant_high", torch.full((n, *shape), hi, device=dev), "accept", f"constant inputs at {hi:g}", n
    )
    # non-finite values
    yield FuzzCase("nan_one", with_value(float("nan")), "reject", "one NaN in one input", n)
    yield FuzzCase("nan_all", with_value(float("nan"), everywhere=True), "reject", "all NaN", n)
    yield FuzzCase("inf", with_value(float("inf")), "reject", "one +inf value", n)
    yield FuzzCase("neg_inf", with_value(float("-inf")), "reject", "one -inf value", n)
    # batch sizes
    yield FuzzCase(
        "empty_batch", torch.empty((0, *shape), device=dev), "either", "an empty batch (0 inputs)", 0
    )
    if max_batch is not None:
        yield FuzzCase(
            "huge_batch",
            valid(1).expand(max_batch + 1, *shape),
            "reject",
            f"{max_batch + 1} inputs, one over the declared limit of {max_batch}",
            max_batch + 1,
        )
    else:
        yield FuzzCase(
            "huge_batch",
            valid(1).expand(huge_batch, *shape),
            "either",
            f"{huge_batch} inputs (no limit declared: a sane answer or a clean refusal)",
            huge_batch,
        )
    # dtypes
    yield FuzzCase("uint8", (valid() * 255).to(torch.uint8), "reject", "uint8 pixels 0..255", n)
    yield FuzzCase("int64", valid().round().long(), "reject", "int64 values", n)
    yield FuzzCase("bool", valid() > (lo + hi) / 2, "reject", "a boolean tensor", n)
    yield FuzzCase("float64", valid().double(), "either", "float64 (NumPy's default) instead of float32", n)
    yield FuzzCase("complex", valid().to(torch.complex64), "reject", "a complex tensor", n)
    # shapes
    yield FuzzCase("no_batch_dim", valid(1)[0], "reject", "one input without the batch dimension", None)
    if len(shape) > 1:
        yield FuzzCase("flattened", valid().reshape(n, -1), "reject", "inputs flattened to (N, features)", n)
    yield FuzzCase("extra_dim", valid().unsqueeze(1), "reject", "an extra dimension", None)
    yield FuzzCase("scalar", torch.tensor(lo + (hi - lo) / 2, device=dev), "reject", "a 0-d tensor", None)
    bigger = (shape[0] + 1, *shape[1:])
    yield FuzzCase(
        "wrong_first_dim",
        lo + (hi - lo) * uniform((n, *bigger), like, generator),
        "reject",
        f"first input dimension {shape[0] + 1} instead of {shape[0]}",
        None,
    )
    if len(shape) > 1:
        taller = (*shape[:-1], shape[-1] * 2)
        yield FuzzCase(
            "wrong_size",
            lo + (hi - lo) * uniform((n, *taller), like, generator),
            "reject",
            f"last dimension {shape[-1] * 2} instead of {shape[-1]}",
            None,
        )
    # values outside the valid range
    if value_range is not None:
        span = hi - lo
        yield FuzzCase("above_range", valid() + 2 * span, "reject", f"values above {hi:g}", n)
        yield FuzzCase("below_range", valid() - 2 * span, "reject", f"values below {lo:g}", n)
        yield FuzzCase("scaled_255", valid() * 255, "reject", "images scaled to 0..255 instead of 0..1", n)
        yield FuzzCase("huge_values", with_value(1e30), "reject", "one value of 1e30", n)
    # not tensors at all
    yield FuzzCase("none", None, "reject", "None", None)
    yield FuzzCase("string", "a picture of a stop sign", "reject", "a string", None)
    yield FuzzCase("list", valid().tolist(), "reject", "a nested Python list", n)
    yield FuzzCase("numpy", valid().cpu().numpy(), "reject", "a NumPy array", n)
    yield FuzzCase("dict", {"x": valid()}, "reject", "a dict holding a tensor", None)


def _library_roots() -> list[tuple[str, str]]:
    roots = []
    for module in (torch, np):
        path = getattr(module, "__file__", None)
        if path:
            roots.append((os.path.dirname(os.path.abspath(path)) + os.sep, module.__name__))
    return roots


def _raised_inside_library(err: BaseException) -> str | None:
    """The library (torch, numpy) whose code raised ``err``, if the innermost frame is there.

    A ``TypeError`` from deep inside ``torch.nn.functional.conv2d`` is not input validation:
    the endpoint never looked at its input, and the message talks about kernels, not inputs.
    """
    tb = err.__traceback__
    last = None
    while tb is not None:
        last = os.path.abspath(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    if last is None:
        return None
    for root, name in _library_roots():
        if last.startswith(root):
            return name
    return None


def _describe(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}" if text else f"{type(err).__name__} (no message)"


def _check_output(out: object, case: FuzzCase, num_classes: int | None) -> tuple[bool, str]:
    """Whether a returned value is a sane answer, and why not."""
    if out is None:
        return False, "returned None"
    try:
        if isinstance(out, torch.Tensor):
            arr = out.detach().float().cpu().numpy()
        else:
            arr = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError, RuntimeError):
        return True, f"returned a {type(out).__name__} (not checked)"
    if arr.size and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        return False, f"returned {bad} NaN or infinite value(s): garbage out"
    if case.rows is not None and (arr.ndim == 0 or arr.shape[0] != case.rows):
        return False, f"returned shape {arr.shape} for {case.rows} inputs"
    if num_classes is not None and arr.ndim == 2 and arr.shape[1] != num_classes:
        return False, f"returned {arr.shape[1]} columns, expected {num_classes}"
    return True, f"returned shape {tuple(arr.shape)}, all finite"


@dataclass
class FuzzReport:
    """Every case with its outcome and verdict; ``passed`` when all verdicts are good."""

    results: list[FuzzResult]
    endpoint: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(r.good for r in self.results)

    @property
    def failures(self) -> list[FuzzResult]:
        return [r for r in self.results if not r.good]

    def counts(self) -> dict[str, int]:
        """How many cases ended as ``rejected``, ``crashed`` and ``returned``, and how many were bad."""
        out = {"rejected": 0, "crashed": 0, "returned": 0}
        for r in self.results:
            out[r.outcome] += 1
        out["bad"] = len(self.failures)
        return out

    def __getitem__(self, case: str) -> FuzzResult:
        for r in self.results:
            if r.case == case:
                return r
        raise KeyError(f"no case {case!r}; have {', '.join(r.case for r in self.results)}")

    def _table(self) -> tuple[list[str], list[list[object]]]:
        headers = ["case", "expected", "outcome", "verdict", "detail"]
        rows: list[list[object]] = [
            [r.case, r.expect, r.outcome, "good" if r.good else "BAD", r.detail] for r in self.results
        ]
        return headers, rows

    def _summary(self) -> str:
        c = self.counts()
        verdict = "passed" if self.passed else f"{c['bad']} bad outcome(s)"
        return (
            f"{self.endpoint}: {len(self.results)} cases, {c['rejected']} rejected, {c['crashed']} crashed, "
            f"{c['returned']} returned; {verdict}"
        )

    def _repr_markdown_(self) -> str:
        headers, rows = self._table()
        return f"**Fuzzing.** {self._summary()}\n\n" + markdown_table(headers, rows)

    def _repr_html_(self) -> str:
        headers, rows = self._table()
        styles = [
            ["", "", "", "color: green" if r.good else "color: crimson; font-weight: bold", ""]
            for r in self.results
        ]
        return html_table(headers, rows, caption=self._summary(), styles=styles)

    def __repr__(self) -> str:
        return f"FuzzReport({self._summary()})"

    def plot(self, ax: Any = None) -> Any:
        """Bar chart of outcomes, split into good and bad verdicts."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 3))
        outcomes = ["rejected", "crashed", "returned"]
        good = [sum(r.good for r in self.results if r.outcome == o) for o in outcomes]
        bad = [sum(not r.good for r in self.results if r.outcome == o) for o in outcomes]
        ax.bar(outcomes, good, color="seagreen", label="good")
        ax.bar(outcomes, bad, bottom=good, color="crimson", hatch="//", label="bad")
        ax.set_ylabel("cases")
        ax.set_title(self.endpoint, fontsize=10)
        ax.legend(frameon=False)
        ax.figure.tight_layout()
        return ax.figure


def fuzz(
    endpoint: Callable[[Any], Any],
    input_shape: Sequence[int],
    *,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    num_classes: int | None = None,
    batch_size: int = 4,
    huge_batch: int = 8192,
    max_batch: int | None = None,
    skip: Sequence[str] = (),
    expect: dict[str, Expect] | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    name: str | None = None,
) -> FuzzReport:
    """Call ``endpoint`` with every case of :func:`fuzz_inputs` and judge each outcome.

    The endpoint runs under ``torch.no_grad()``; nothing it raises escapes except
    ``KeyboardInterrupt`` and ``SystemExit``.

    Parameters
    ----------
    endpoint:
        Any callable taking one batch: a :class:`~labkit.LabModel`, a wrapper, a lambda, a
        client of an HTTP API.
    input_shape, value_range, batch_size, huge_batch, max_batch, device, generator:
        As in :func:`fuzz_inputs`.
    num_classes:
        When given, a returned ``(N, K)`` output must have ``K == num_classes``.
    skip:
        Case names to leave out.
    expect:
        Override the expectation of cases by name, e.g. ``{"numpy": "either"}`` for an API that
        accepts arrays.
    progress:
        Show a progress bar.
    name:
        Label for the report (default: the endpoint's class or function name).

    Returns
    -------
    FuzzReport
    """
    if not callable(endpoint):
        raise TypeError(f"endpoint must be callable, got {type(endpoint).__name__}")
    cases = list(
        fuzz_inputs(
            input_shape,
            batch_size=batch_size,
            value_range=value_range,
            huge_batch=huge_batch,
            max_batch=max_batch,
            device=device,
            generator=generator,
        )
    )
    known = {c.name for c in cases}
    for key in [*skip, *(expect or {})]:
        if key not in known:
            raise ValueError(f"unknown fuzz case {key!r}; cases are {', '.join(sorted(known))}")
    for key, value in (expect or {}).items():
        if value not in ("reject", "accept", "either"):
            raise ValueError(f"expect[{key!r}] must be 'reject', 'accept' or 'either', got {value!r}")
    results = []
    for case in tqdm([c for c in cases if c.name not in skip], desc="fuzzing", disable=not progress):
        wanted: Expect = (expect or {}).get(case.name, case.expect)
        start = time.perf_counter()
        try:
            with torch.no_grad():
                out = endpoint(case.value)
        except (KeyboardInterrupt, SystemExit):
            raise
        except (ValueError, TypeError) as err:
            seconds = time.perf_counter() - start
            library = _raised_inside_library(err)
            clear = bool(str(err).strip()) and library is None
            outcome: Literal["rejected", "crashed", "returned"] = "rejected" if clear else "crashed"
            good = clear and wanted in ("reject", "either")
            detail = _describe(err)
            if library is not None:
                detail = f"raised inside {library}, not by input validation: {detail}"
            results.append(FuzzResult(case.name, wanted, outcome, good, detail, seconds))
            continue
        except BaseException as err:
            seconds = time.perf_counter() - start
            results.append(FuzzResult(case.name, wanted, "crashed", False, _describe(err), seconds))
            continue
        seconds = time.perf_counter() - start
        sane, detail = _check_output(out, case, num_classes)
        if wanted == "reject":
            good, detail = False, f"accepted invalid input ({case.description}); {detail}"
        else:
            good = sane
        results.append(FuzzResult(case.name, wanted, "returned", good, detail, seconds))
    label = name or getattr(endpoint, "__name__", None) or type(endpoint).__name__
    return FuzzReport(results=results, endpoint=str(label), info={"input_shape": _shape_tuple(input_shape)})
