"""Figures the lessons use: image grids with predictions and perturbations, and curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["adversarial_grid", "curves", "image_grid"]


def to_hwc(img: torch.Tensor) -> Any:
    img = img.detach().float().cpu()
    if img.dim() == 3 and img.shape[0] == 1:
        return img[0].numpy(), "gray"
    if img.dim() == 3:
        return img.permute(1, 2, 0).clamp(0, 1).numpy(), None
    return img.numpy(), "gray"


def _names(labels: torch.Tensor | Sequence[int] | None, class_names: Sequence[str] | None) -> list[str]:
    if labels is None:
        return []
    vals = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    return [class_names[int(v)] if class_names else str(int(v)) for v in vals]


def image_grid(
    images: torch.Tensor,
    *,
    labels: torch.Tensor | Sequence[int] | None = None,
    preds: torch.Tensor | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    ncols: int = 8,
    size: float = 1.4,
    title: str | None = None,
) -> Any:
    """Show a batch of images in a grid, captioned with labels and predictions (a wrong one in red, marked ✗).

    Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if not isinstance(images, torch.Tensor) or images.dim() not in (3, 4):
        raise ValueError("images must be a tensor of shape (N, C, H, W) or (N, H, W)")
    n = images.shape[0]
    if n == 0:
        raise ValueError("images is empty")
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    truth, guess = _names(labels, class_names), _names(preds, class_names)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        arr, cmap = to_hwc(images[i])
        ax.imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        parts, colour = [], "black"
        if truth:
            parts.append(truth[i])
        if guess:
            parts.append(f"→ {guess[i]}")
            if truth and guess[i] != truth[i]:
                colour = "crimson"
                parts.append("✗")  # wrong in words too, not by colour alone
        if parts:
            ax.set_title(" ".join(parts), fontsize=9, color=colour)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def adversarial_grid(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    preds: torch.Tensor | None = None,
    preds_adv: torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    n: int = 6,
    amplify: float | None = None,
) -> Any:
    """Rows of (original, perturbation, adversarial) with the model's answers.

    The perturbation is shown around grey, amplified so its largest entry is visible
    (``amplify`` overrides the factor).
    """
    import matplotlib.pyplot as plt

    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv differ in shape: {tuple(x.shape)} vs {tuple(x_adv.shape)}")
    n = min(n, x.shape[0])
    delta = (x_adv - x)[:n].detach().cpu()
    scale = amplify or 0.5 / max(float(delta.abs().max()), 1e-8)
    fig, axes = plt.subplots(n, 3, figsize=(5.2, 1.7 * n), squeeze=False)
    truth = _names(labels[:n] if labels is not None else None, class_names)
    before = _names(preds[:n] if preds is not None else None, class_names)
    after = _names(preds_adv[:n] if preds_adv is not None else None, class_names)
    for i in range(n):
        panels = [x[i], (0.5 + scale * delta[i]).clamp(0, 1), x_adv[i]]
        captions = [
            "original" + (f": {before[i]}" if before else ""),
            f"perturbation ×{scale:.0f}",
            "adversarial" + (f": {after[i]}" if after else ""),
        ]
        for j, (img, cap) in enumerate(zip(panels, captions, strict=True)):
            arr, cmap = to_hwc(img)
            ax = axes[i, j]
            ax.imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.axis("off")
            wrong = j == 2 and truth and after and after[i] != truth[i]
            ax.set_title(cap + (" ✗" if wrong else ""), fontsize=9, color="crimson" if wrong else "black")
    fig.tight_layout()
    return fig


def curves(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    ax: Any = None,
    marker: str = "o",
) -> Any:
    """Several named curves over a shared x axis (e.g. accuracy against epsilon)."""
    import matplotlib.pyplot as plt

    if not series:
        raise ValueError("series is empty: pass at least one named curve")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    for name, ys in series.items():
        if len(ys) != len(x):
            raise ValueError(f"curve {name!r} has {len(ys)} points, x has {len(x)}")
        ax.plot(list(x), list(ys), marker=marker, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    ax.figure.tight_layout()
    return ax.figure
