"""Physical and manual modifications: stickers, occlusion, rotations and shifts.

These attacks change an image the way the physical world can, instead of adding an invisible
perturbation bounded in a norm ball:

* :func:`patch_attack` optimises a printable sticker (a square patch) that, pasted anywhere on a
  stop sign at a small random rotation, size and brightness, makes the model read something else.
  It uses expectation over transformation (EOT): the loss is averaged over random
  transformations :math:`T` drawn from :class:`EOT`, so the sticker survives them.
  :func:`apply_patch` pastes it. Both live in :mod:`labkit.attacks.patches` and are re-exported here.
* :func:`occlusion` slides a grey square over the image and records how much each position lowers
  the model's confidence: a sensitivity map, and the worst occlusion as an attack.
* :func:`spatial_attack` tries ``k`` random rotations and translations and keeps the worst one.

None of them is bounded by an ``eps`` ball: what bounds them is the patch size, the occluder's
size, or the largest rotation and shift. Inputs are checked and never modified; results stay in
the valid range.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from labkit._checks import check_int
from labkit.attacks._common import Best, objective, succeeded
from labkit.attacks.contract import AttackResult
from labkit.attacks.patches import EOT, PatchResult, apply_patch, patch_attack
from labkit.attacks.threat import attack_mode, bounds_of, clip_to_bounds

__all__ = [
    "EOT",
    "OcclusionResult",
    "PatchResult",
    "apply_patch",
    "occlusion",
    "patch_attack",
    "spatial_attack",
]


# --------------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class OcclusionResult(AttackResult):
    """What covering each part of the image does to the model.

    Attributes
    ----------
    sensitivity:
        ``(N, rows, cols)``: the drop in the probability of the true class when the square whose
        top-left corner is at ``(row * stride, col * stride)`` is covered.
    x_adv:
        Each image with its worst square covered (the lowest margin of the true class).
    success:
        ``(N,)`` bool: that worst occlusion changes the prediction away from ``y``.
    worst:
        ``(N, 2)`` top-left pixel of the worst square.
    size, stride:
        The occluder's side and step in pixels.
    """

    sensitivity: torch.Tensor
    worst: torch.Tensor
    size: int
    stride: int

    def _repr_markdown_(self) -> str:
        n = self.success.numel()
        return (
            "| examples | occluder | stride | broken by one occlusion | largest drop |\n"
            "|---|---|---|---|---|\n"
            f"| {n} | {self.size}x{self.size} | {self.stride} | {float(self.success.float().mean()):.1%} | "
            f"{float(self.sensitivity.amax()):.3f} |"
        )

    def plot(self, x: torch.Tensor, *, n: int = 4) -> Any:
        """Images next to their sensitivity maps (brighter: covering there hurts more)."""
        import matplotlib.pyplot as plt

        from labkit.plot import to_hwc

        n = min(n, x.shape[0])
        fig, axes = plt.subplots(2, n, figsize=(1.8 * n, 3.6), squeeze=False)
        for i in range(n):
            arr, cmap = to_hwc(x[i])
            axes[0, i].imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            axes[1, i].imshow(
                self.sensitivity[i].detach().cpu().numpy(), cmap="magma", interpolation="nearest"
            )
            for ax in axes[:, i]:
                ax.axis("off")
        fig.suptitle(f"occlusion sensitivity, {self.size}x{self.size} square")
        fig.tight_layout()
        return fig


def occlusion(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    size: int,
    stride: int = 1,
    fill: float = 0.5,
    batch_size: int = 1024,
) -> OcclusionResult:
    """Occlusion sensitivity: cover each square of the image in turn and watch the true class.

    For every position :math:`(r, c)` on a grid with step ``stride``, the image
    :math:`x^{(r, c)}` has the ``size`` x ``size`` square at :math:`(r, c)` set to ``fill``, and

    .. math::

        S_{r, c} = p_y(x) - p_y(x^{(r, c)}), \\qquad p = \\mathrm{softmax}(f(x)).

    As an attack, the worst occlusion is the position with the lowest margin
    :math:`z_y - \\max_{i \\ne y} z_i`; it succeeds when that margin is negative. The cost is
    one forward pass per position and image (batched), and it needs only the model's outputs.

    Reference: Zeiler and Fergus, "Visualizing and Understanding Convolutional Networks",
    ECCV 2014, arXiv:1311.2901.

    Parameters
    ----------
    model, x, y:
        A classifier returning logits, images ``(N, C, H, W)`` in its valid range, ``int64``
        labels.
    size:
        Side of the occluding square in pixels.
    stride:
        Step between positions in pixels.
    fill:
        Value of the occluder, inside the valid range (0.5: mid grey).
    batch_size:
        Occluded images per forward pass.

    Returns
    -------
    OcclusionResult

    Examples
    --------
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1]]))
    ...     _ = net[1].bias.zero_()
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.tensor([[[[0.9, 0.9], [0.1, 0.1]]]])      # class 1: top row brighter
    >>> result = occlusion(model, x, torch.tensor([1]), size=1, fill=0.0)
    >>> result.sensitivity.shape, bool(result.sensitivity[0, 0, 0] > result.sensitivity[0, 1, 0])
    (torch.Size([1, 2, 2]), True)
    """
    bounds = bounds_of(model)
    with attack_mode(model, x, y, eps=None, norm="linf", bounds=bounds) as clean_logits, torch.no_grad():
        if x.dim() != 4:
            raise ValueError(f"occlusion needs images of shape (N, C, H, W), got {tuple(x.shape)}")
        n, _, h, w = x.shape
        size = check_int(size, "size", minimum=1)
        stride = check_int(stride, "stride", minimum=1)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        if size > min(h, w):
            raise ValueError(f"size {size} is larger than the images ({h}x{w})")
        if not isinstance(fill, numbers.Real) or (bounds is not None and not bounds[0] <= fill <= bounds[1]):
            raise ValueError(f"fill must be a number in the valid range {bounds}, got {fill!r}")
        tops = list(range(0, h - size + 1, stride))
        lefts = list(range(0, w - size + 1, stride))
        positions = [(r, c) for r in tops for c in lefts]
        p_clean = clean_logits.softmax(dim=1).gather(1, y[:, None]).squeeze(1)
        probs = torch.empty(n, len(positions), dtype=x.dtype, device=x.device)
        margins = torch.empty_like(probs)
        per_batch = max(1, batch_size // n)
        for start in range(0, len(positions), per_batch):
            chunk = positions[start : start + per_batch]
            covered = x.unsqueeze(1).repeat(1, len(chunk), 1, 1, 1)
            for j, (r, c) in enumerate(chunk):
                covered[:, j, :, r : r + size, c : c + size] = fill
            logits = model(covered.flatten(0, 1))
            yy = y.repeat_interleave(len(chunk))
            probs[:, start : start + len(chunk)] = logits.softmax(1).gather(1, yy[:, None]).view(n, -1)
            true = logits.gather(1, yy[:, None]).squeeze(1)
            other = logits.scatter(1, yy[:, None], -math.inf).amax(dim=1)
            margins[:, start : start + len(chunk)] = (true - other).view(n, -1)
        sensitivity = (p_clean[:, None] - probs).view(n, len(tops), len(lefts))
        worst = margins.argmin(dim=1)
        pos = torch.tensor(positions, device=x.device)[worst]
        x_adv = x.clone()
        for i, (r, c) in enumerate(pos.tolist()):
            x_adv[i, :, r : r + size, c : c + size] = fill
        success = margins.gather(1, worst[:, None]).squeeze(1) < 0
        return OcclusionResult(
            sensitivity=sensitivity, x_adv=x_adv, success=success, worst=pos, size=size, stride=stride
        )


# --------------------------------------------------------------------------------------------
# Spatial attack: worst of k rotations and translations
# --------------------------------------------------------------------------------------------


def _rotate_translate(x: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate each image by ``angle`` (radians, about its centre; positive turns it clockwise as
    displayed) and shift it by ``shift`` ``(N, 2)`` pixels (down, right); zeros fill what comes
    in from outside."""
    n, _, h, w = x.shape
    cos, sin = angle.cos(), angle.sin()
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    # output pixel p samples input R(-angle)(p - shift); in normalised coordinates per axis
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = sin * h / w
    theta[:, 1, 0] = -sin * w / h
    theta[:, 1, 1] = cos
    tx, ty = -2 * shift[:, 1] / w, -2 * shift[:, 0] / h
    theta[:, 0, 2] = cos * tx + sin * h / w * ty
    theta[:, 1, 2] = -sin * w / h * tx + cos * ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def spatial_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_rotation: float = 30.0,
    max_translation: float = 3.0,
    k: int = 10,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Worst-of-k spatial attack: try ``k`` random rotations and shifts, keep the worst.

    Each candidate :math:`x' = T_{\\theta, t}(x)` rotates the image by
    :math:`\\theta \\sim U[-\\theta_{\\max}, \\theta_{\\max}]` about its centre and shifts it by
    :math:`t \\sim U[-t_{\\max}, t_{\\max}]^2` pixels (bilinear resampling, black where the
    image leaves the frame). Per example the result is the candidate with the highest loss
    :math:`L(f(x'), y)`, a misclassified one first, or ``x`` itself when no candidate is worse.
    That needs ``k`` forward passes and no gradient: a cheap attack that norm-bounded defences
    do not cover.

    Reference: Engstrom, Tran, Tsipras, Schmidt and Madry, "Exploring the Landscape of Spatial
    Robustness", ICML 2019, arXiv:1712.02779.

    Parameters
    ----------
    model, x, y:
        A classifier returning logits, images ``(N, C, H, W)`` in ``[0, 1]``, ``int64`` labels
        (the targets when ``targeted``).
    max_rotation:
        :math:`\\theta_{\\max}` in degrees (the paper: 30).
    max_translation:
        :math:`t_{\\max}` in pixels (the paper: 3 on 32x32 images, about 10%).
    k:
        Random candidates per example (the paper's worst-of-10).
    targeted:
        Keep the candidate closest to the class in ``y`` instead.
    generator:
        Source of the random rotations and shifts.

    Returns
    -------
    torch.Tensor
        ``x_adv`` with the shape, dtype and device of ``x``.

    Examples
    --------
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    >>> y = model.predict(x)
    >>> bool(torch.equal(spatial_attack(model, x, y, max_rotation=0, max_translation=0), x))
    True
    """
    for name, value, top in (
        ("max_rotation", max_rotation, 180.0),
        ("max_translation", max_translation, math.inf),
    ):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= top:
            raise ValueError(f"{name} must be a number in [0, {top:g}], got {value!r}")
    k = check_int(k, "k", minimum=1)
    bounds = bounds_of(model)
    with attack_mode(model, x, y, eps=None, norm="linf", bounds=bounds) as clean_logits, torch.no_grad():
        if x.dim() != 4:
            raise ValueError(f"spatial_attack needs images of shape (N, C, H, W), got {tuple(x.shape)}")
        if max_rotation == 0 and max_translation == 0:
            return x.clone()
        best = Best(x, objective(clean_logits, y, targeted), succeeded(clean_logits, y, targeted))
        device = generator.device if generator is not None else x.device
        n = x.shape[0]
        for _ in range(k):
            u = torch.rand(n, 3, generator=generator, device=device, dtype=x.dtype).to(x.device)
            angle = math.radians(max_rotation) * (2 * u[:, 0] - 1)
            shift = max_translation * (2 * u[:, 1:] - 1)
            cand = clip_to_bounds(_rotate_translate(x, angle, shift), bounds)
            logits = model(cand)
            best.update(cand, objective(logits, y, targeted), succeeded(logits, y, targeted))
        return best.adv
