"""Backdoor triggers: a pattern stamped onto images through a blending mask.

A trigger maps an image :math:`x` to

.. math::

    T(x) = (1 - m) \\odot x + m \\odot p,

with a pattern :math:`p \\in [0, 1]^{C\\times H\\times W}` and a mask
:math:`m \\in [0, 1]^{1\\times H\\times W}`. A *patch* trigger (BadNets, Gu, Dolan-Gavitt and
Garg, "BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply Chain",
arXiv:1708.06733) has :math:`m = 1` on a small square and 0 elsewhere; a *blended* trigger
(Chen, Liu, Li, Lu and Song, "Targeted Backdoor Attacks on Deep Learning Systems Using Data
Poisoning", arXiv:1712.05526) has :math:`m = \\alpha` everywhere. Being a convex combination
of two images, :math:`T(x)` always stays in :math:`[0, 1]`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from labkit.utils import check_images

__all__ = ["Trigger", "blend_trigger", "patch_trigger"]

CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")


@dataclass(frozen=True, eq=False)
class Trigger:
    """A pattern and a blending mask; call it (or :meth:`apply`) on a batch of images.

    Attributes
    ----------
    pattern:
        ``(C, H, W)`` values in ``[0, 1]``.
    mask:
        ``(1, H, W)`` blending weights in ``[0, 1]`` (1: pixel replaced by the pattern).
    name:
        A short description for tables.
    """

    pattern: torch.Tensor
    mask: torch.Tensor
    name: str = "trigger"

    def __post_init__(self) -> None:
        if self.pattern.dim() != 3:
            raise ValueError(f"pattern must have shape (C, H, W), got {tuple(self.pattern.shape)}")
        if self.mask.dim() != 3 or self.mask.shape[0] != 1 or self.mask.shape[1:] != self.pattern.shape[1:]:
            raise ValueError(
                f"mask must have shape (1, {self.pattern.shape[1]}, {self.pattern.shape[2]}), "
                f"got {tuple(self.mask.shape)}"
            )
        check_images(self.pattern.unsqueeze(0), name="pattern")
        check_images(self.mask.unsqueeze(0), name="mask")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pattern.shape)

    @property
    def area(self) -> float:
        """Fraction of the image the trigger changes (sum of the mask over the pixel count)."""
        return float(self.mask.sum() / self.mask[0].numel())

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with the trigger stamped on (a new tensor on ``x``'s device and dtype)."""
        check_images(x, name="x", shape=self.shape)
        m = self.mask.to(x.device, x.dtype)
        return (1 - m) * x + m * self.pattern.to(x.device, x.dtype)

    __call__ = apply

    def plot(self, x: torch.Tensor | None = None, ax: Any = None) -> Any:
        """The pattern where the mask is on; with ``x``, a few images before and after."""
        from labkit.plot import image_grid

        if x is None:
            return image_grid((self.mask * self.pattern).unsqueeze(0), title=self.name, ncols=1, size=2)
        x = x[:4]
        return image_grid(torch.cat([x, self.apply(x)]), ncols=len(x), title=f"{self.name}: before / after")

    def __repr__(self) -> str:
        return f"Trigger({self.name!r}, shape={self.shape}, area={self.area:.3f})"


def _shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must be an image shape (C, H, W), got {tuple(input_shape)}")
    return shape[0], shape[1], shape[2]


def patch_trigger(
    input_shape: Sequence[int],
    *,
    size: int = 3,
    position: str | tuple[int, int] = "bottom-right",
    pattern: str | torch.Tensor = "checkerboard",
    margin: int = 0,
) -> Trigger:
    """A BadNets patch: a ``size`` x ``size`` square stamped at a fixed position.

    Reference: Gu, Dolan-Gavitt and Garg, "BadNets", arXiv:1708.06733.

    Parameters
    ----------
    input_shape:
        ``(C, H, W)`` of the images, e.g. ``data.input_shape``.
    size:
        Side of the square in pixels; must fit in the image.
    position:
        A corner (``"bottom-right"``, ``"bottom-left"``, ``"top-right"``, ``"top-left"``) or
        the ``(row, col)`` of the patch's top-left pixel.
    pattern:
        ``"checkerboard"`` (alternating 1 and 0, visible on any background), ``"white"``,
        ``"black"``, or a ``(C, size, size)`` tensor in ``[0, 1]``.
    margin:
        Pixels between a corner patch and the image border.

    Examples
    --------
    >>> t = patch_trigger((1, 8, 8), size=2)
    >>> x = torch.zeros(1, 1, 8, 8)
    >>> t(x)[0, 0, 6:, 6:]
    tensor([[1., 0.],
            [0., 1.]])
    >>> patch_trigger((1, 8, 8), size=9)
    Traceback (most recent call last):
    ...
    ValueError: a 9x9 patch does not fit in an image of 8x8 pixels
    """
    c, h, w = _shape(input_shape)
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if isinstance(margin, bool) or not isinstance(margin, numbers.Integral) or margin < 0:
        raise ValueError(f"margin must be a non-negative integer, got {margin!r}")
    if size > h or size > w:
        raise ValueError(f"a {size}x{size} patch does not fit in an image of {h}x{w} pixels")
    if isinstance(position, str):
        if position not in CORNERS:
            raise ValueError(f"position must be one of {', '.join(CORNERS)} or (row, col), got {position!r}")
        if size + margin > min(h, w):
            raise ValueError(f"a {size}x{size} patch with margin {margin} does not fit in {h}x{w} pixels")
        row = margin if position.startswith("top") else h - size - margin
        col = margin if position.endswith("left") else w - size - margin
    else:
        row, col = (int(v) for v in position)
        if row < 0 or col < 0 or row + size > h or col + size > w:
            raise ValueError(f"a {size}x{size} patch at (row={row}, col={col}) leaves the {h}x{w} image")
    if isinstance(pattern, torch.Tensor):
        if tuple(pattern.shape) != (c, size, size):
            raise ValueError(f"pattern must have shape ({c}, {size}, {size}), got {tuple(pattern.shape)}")
        check_images(pattern.unsqueeze(0), name="pattern")
        patch = pattern.detach().float().cpu()
    elif pattern == "checkerboard":
        grid = (torch.arange(size).view(-1, 1) + torch.arange(size).view(1, -1)) % 2 == 0
        patch = grid.float().expand(c, size, size)
    elif pattern in ("white", "black"):
        patch = torch.full((c, size, size), 1.0 if pattern == "white" else 0.0)
    else:
        raise ValueError(f"pattern must be 'checkerboard', 'white', 'black' or a tensor, got {pattern!r}")
    full = torch.zeros(c, h, w)
    full[:, row : row + size, col : col + size] = patch
    mask = torch.zeros(1, h, w)
    mask[:, row : row + size, col : col + size] = 1.0
    name = pattern if isinstance(pattern, str) else "custom"
    return Trigger(full, mask, name=f"{size}x{size} {name} patch")


def blend_trigger(
    input_shape: Sequence[int],
    *,
    alpha: float = 0.2,
    pattern: str | torch.Tensor = "noise",
    generator: torch.Generator | None = None,
) -> Trigger:
    """A blended trigger: a full-size pattern mixed into the whole image with weight ``alpha``.

    Reference: Chen, Liu, Li, Lu and Song, "Targeted Backdoor Attacks on Deep Learning Systems
    Using Data Poisoning", arXiv:1712.05526 (the "blended injection" strategy).

    Parameters
    ----------
    input_shape:
        ``(C, H, W)`` of the images.
    alpha:
        Blending weight in ``(0, 1]``; small values are hard to see and still work.
    pattern:
        ``"noise"`` (uniform random, fixed by ``generator``), ``"stripes"`` (vertical bars),
        or a ``(C, H, W)`` tensor in ``[0, 1]``.
    generator:
        Draws the noise pattern.

    Examples
    --------
    >>> t = blend_trigger((1, 8, 8), alpha=0.1, generator=torch.Generator().manual_seed(0))
    >>> x = torch.rand(4, 1, 8, 8)
    >>> bool(((t(x) - x).abs() <= 0.1).all()), round(t.area, 3)
    (True, 0.1)
    """
    c, h, w = _shape(input_shape)
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
    if isinstance(pattern, torch.Tensor):
        if tuple(pattern.shape) != (c, h, w):
            raise ValueError(f"pattern must have shape ({c}, {h}, {w}), got {tuple(pattern.shape)}")
        full = pattern.detach().float().cpu()
        name = "custom"
    elif pattern == "noise":
        full = torch.rand(c, h, w, generator=generator)
        name = "noise"
    elif pattern == "stripes":
        full = (torch.arange(w) % 2 == 0).float().expand(c, h, w).clone()
        name = "stripes"
    else:
        raise ValueError(f"pattern must be 'noise', 'stripes' or a tensor, got {pattern!r}")
    return Trigger(full, torch.full((1, h, w), float(alpha)), name=f"{name} blended at {alpha:g}")
