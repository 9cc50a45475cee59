"""What the evaluations share: reading the data they are given. Private to :mod:`labkit.eval`."""

from __future__ import annotations

import torch

from labkit.data.base import LabData

__all__ = ["as_xy"]


def as_xy(
    data: LabData | tuple[torch.Tensor, torch.Tensor], n: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of ``data`` (a :class:`~labkit.data.LabData` or a pair of tensors), first ``n`` if set."""
    if isinstance(data, LabData):
        x, y = data.x, data.y
    elif isinstance(data, tuple) and len(data) == 2:
        x, y = data
    else:
        raise TypeError(f"data must be a LabData or a tuple (x, y), got {type(data).__name__}")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("data must hold tensors x and y")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"n must be a positive number of examples, got {n!r}")
        x, y = x[:n], y[:n]
    if x.shape[0] == 0:
        raise ValueError("data is empty")
    return x, y
