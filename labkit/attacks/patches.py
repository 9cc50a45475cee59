"""Printable stickers: optimise a patch that survives the physical world, and paste it.

:func:`patch_attack` optimises a square sticker that, pasted anywhere on a stop sign at a small
random rotation, size and brightness, makes the model read something else. It uses expectation
over transformation (EOT): the loss is averaged over random transformations :math:`T` drawn from
:class:`EOT`, so the sticker survives them. :func:`apply_patch` pastes it. What bounds the attack
is the patch size, not an ``eps`` ball. Inputs are checked and never modified; results stay in
the valid range. The other physical attacks (occlusion, rotations and shifts) are in
:mod:`labkit.attacks.physical`, which also re-exports these names.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from labkit._checks import check_int, check_positive
from labkit.attacks.threat import attack_mode, bounds_of, check_attack_inputs
from labkit.utils import eval_mode

__all__ = ["EOT", "PatchResult", "apply_patch", "patch_attack"]


# --------------------------------------------------------------------------------------------
# Expectation over transformation and pasting a patch
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EOT:
    """The random transformations a sticker must survive (expectation over transformation).

    Every draw places the patch's centre uniformly inside ``region`` (default: anywhere the
    patch fits in the image), rotates it by an angle uniform in
    ``[-max_rotation, max_rotation]`` degrees, scales its side by a factor uniform in ``scale``
    and multiplies its colours by a factor uniform in ``brightness`` (the print seen under
    brighter or darker light).

    Attributes
    ----------
    max_rotation:
        Largest rotation in degrees.
    scale:
        ``(low, high)`` factors on the patch's side.
    brightness:
        ``(low, high)`` factors on the patch's colours.
    region:
        ``(top, left, bottom, right)`` in pixels: the box the patch's centre is drawn in (it is
        shrunk so that an unrotated patch of nominal size stays inside the image). ``None``:
        the whole image.
    """

    max_rotation: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    brightness: tuple[float, float] = (0.8, 1.2)
    region: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.max_rotation, numbers.Real) and 0 <= self.max_rotation <= 180):
            raise ValueError(f"max_rotation must be in [0, 180] degrees, got {self.max_rotation!r}")
        for name, (low, high), least in (("scale", self.scale, 0.0), ("brightness", self.brightness, 0.0)):
            if not (least < low <= high):
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(low, high)}")
        if self.region is not None:
            top, left, bottom, right = self.region
            if not (0 <= top < bottom and 0 <= left < right):
                raise ValueError(
                    "region must be (top, left, bottom, right) with top < bottom and left < right, "
                    f"got {self.region}"
                )


_FIXED = EOT(max_rotation=0.0, scale=(1.0, 1.0), brightness=(1.0, 1.0))


def _check_patch(patch: object, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(patch, torch.Tensor) or patch.dim() != 3:
        got = tuple(patch.shape) if isinstance(patch, torch.Tensor) else type(patch).__name__
        raise ValueError(f"patch must be a tensor of shape (C, h, w), got {got}")
    if patch.shape[0] != x.shape[1]:
        raise ValueError(f"patch has {patch.shape[0]} channels but the images have {x.shape[1]}")
    if patch.shape[1] > x.shape[2] or patch.shape[2] > x.shape[3]:
        raise ValueError(
            f"patch of {tuple(patch.shape[1:])} pixels does not fit in images of {tuple(x.shape[2:])}"
        )
    return patch


def _draw(
    n: int,
    x: torch.Tensor,
    patch_hw: tuple[int, int],
    eot: EOT,
    location: tuple[int, int] | None,
    generator: torch.Generator | None,
) -> dict[str, torch.Tensor]:
    """Per-example placement (centre in pixels), angle (radians), scale and brightness."""
    device = generator.device if generator is not None else x.device
    u = torch.rand(n, 5, generator=generator, device=device, dtype=x.dtype).to(x.device)
    h, w = x.shape[-2:]
    ph, pw = patch_hw
    if location is not None:
        cy = torch.full((n,), location[0] + ph / 2, dtype=x.dtype, device=x.device)
        cx = torch.full((n,), location[1] + pw / 2, dtype=x.dtype, device=x.device)
    else:
        top, left, bottom, right = eot.region if eot.region is not None else (0, 0, h, w)
        lo_y, hi_y = max(top, 0) + ph / 2, min(bottom, h) - ph / 2
        lo_x, hi_x = max(left, 0) + pw / 2, min(right, w) - pw / 2
        if hi_y < lo_y or hi_x < lo_x:
            raise ValueError(f"a patch of {patch_hw} pixels does not fit in region {eot.region}")
        cy = lo_y + (hi_y - lo_y) * u[:, 0]
        cx = lo_x + (hi_x - lo_x) * u[:, 1]
    angle = math.radians(eot.max_rotation) * (2 * u[:, 2] - 1)
    scale = eot.scale[0] + (eot.scale[1] - eot.scale[0]) * u[:, 3]
    bright = eot.brightness[0] + (eot.brightness[1] - eot.brightness[0]) * u[:, 4]
    return {"cy": cy, "cx": cx, "angle": angle, "scale": scale, "brightness": bright}


def _paste(x: torch.Tensor, patch: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """Paste ``patch`` on every image with its own transformation (differentiable in ``patch``).

    For each output pixel the inverse transformation gives the point of the patch it shows;
    bilinear sampling of the patch and of an all-ones mask gives the colour and its coverage.
    """
    n, _, h, w = x.shape
    ph, pw = patch.shape[-2:]
    ys = torch.arange(h, dtype=x.dtype, device=x.device) + 0.5
    xs = torch.arange(w, dtype=x.dtype, device=x.device) + 0.5
    dy = ys.view(1, h, 1) - t["cy"].view(n, 1, 1)
    dx = xs.view(1, 1, w) - t["cx"].view(n, 1, 1)
    cos, sin = t["angle"].cos().view(n, 1, 1), t["angle"].sin().view(n, 1, 1)
    s = t["scale"].view(n, 1, 1)
    # rotate back by -angle, undo the scale, then normalise to the patch's [-1, 1] coordinates
    px = (cos * dx + sin * dy) / s
    py = (-sin * dx + cos * dy) / s
    grid = torch.stack([2 * px / pw, 2 * py / ph], dim=-1)
    rgba = torch.cat([patch, torch.ones_like(patch[:1])]).unsqueeze(0).expand(n, -1, -1, -1)
    sampled = F.grid_sample(rgba, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    colour, cover = sampled[:, :-1], sampled[:, -1:]
    colour = colour * t["brightness"].view(n, 1, 1, 1)
    return x * (1 - cover) + colour


def apply_patch(
    x: torch.Tensor,
    patch: torch.Tensor,
    *,
    location: tuple[int, int] | None = None,
    eot: EOT | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Paste a sticker on every image: at ``location``, or at a random place per image.

    Parameters
    ----------
    x:
        Images ``(N, C, H, W)`` in ``[0, 1]``; not modified.
    patch:
        The sticker ``(C, h, w)`` in ``[0, 1]``.
    location:
        ``(row, col)`` of the patch's top-left corner, the same for every image. ``None``:
        a random place per image, drawn as in ``eot``.
    eot:
        Random rotation, scale and brightness per image, and the region random placements are
        drawn in (:class:`EOT`). ``None``: the patch is pasted axis-aligned at its nominal size
        and brightness; with a ``location`` too its pixels are copied exactly (a random place
        falls between pixels, so the patch is resampled there).
    generator:
        Source of the random placements and transformations.

    Returns
    -------
    torch.Tensor
        The patched images, same shape, dtype and device as ``x``, clipped to ``[0, 1]``.

    Examples
    --------
    >>> x = torch.zeros(2, 3, 8, 8)
    >>> out = apply_patch(x, torch.ones(3, 2, 2), location=(1, 3))
    >>> out[0, 0].nonzero().tolist()
    [[1, 3], [1, 4], [2, 3], [2, 4]]
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(
            f"x must be images of shape (N, C, H, W), got {getattr(x, 'shape', type(x).__name__)}"
        )
    patch = _check_patch(patch, x).to(x)
    if location is not None:
        row, col = location
        if not (0 <= row <= x.shape[2] - patch.shape[1] and 0 <= col <= x.shape[3] - patch.shape[2]):
            raise ValueError(f"location {location} puts the patch outside images of {tuple(x.shape[2:])}")
    chosen = eot if eot is not None else _FIXED
    if location is not None and eot is None:  # exact copy, no resampling
        out = x.clone()
        row, col = location
        out[:, :, row : row + patch.shape[1], col : col + patch.shape[2]] = patch
        return out
    t = _draw(x.shape[0], x, (patch.shape[1], patch.shape[2]), chosen, location, generator)
    return _paste(x, patch, t).clamp(0, 1)


# --------------------------------------------------------------------------------------------
# The adversarial patch
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchResult:
    """An optimised sticker and how to use it.

    Attributes
    ----------
    patch:
        The sticker ``(C, h, w)`` in ``[0, 1]``.
    eot:
        The transformations it was optimised over (and that :meth:`apply` draws from).
    target:
        The class it pushes towards, or ``None`` (untargeted).
    losses:
        The training loss at each step.
    """

    patch: torch.Tensor
    eot: EOT
    target: int | None
    losses: list[float] = field(default_factory=list)

    def apply(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Paste the sticker on ``x`` at a random placement and transformation per image."""
        return apply_patch(x, self.patch, eot=self.eot, generator=generator)

    def accuracy(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        trials: int = 100,
        generator: torch.Generator | None = None,
    ) -> float:
        """Accuracy of ``model`` on ``x`` with the sticker at ``trials`` random placements each."""
        trials = check_int(trials, "trials", minimum=1)
        check_attack_inputs(model, x, y, eps=None, norm="linf", bounds=bounds_of(model))
        correct = torch.zeros((), dtype=torch.long, device=x.device)
        with torch.no_grad(), eval_mode(model):
            for _ in range(trials):
                correct += (model(self.apply(x, generator=generator)).argmax(1) == y).sum()
        return int(correct) / (trials * x.shape[0])

    def _repr_markdown_(self) -> str:
        c, h, w = self.patch.shape
        aim = "untargeted" if self.target is None else f"target class {self.target}"
        loss = f"{self.losses[-1]:.3f}" if self.losses else "-"
        return (
            "| patch | aim | rotation | scale | brightness | final loss |\n|---|---|---|---|---|---|\n"
            f"| {h}x{w}x{c} | {aim} | ±{self.eot.max_rotation:g}° | {self.eot.scale} | "
            f"{self.eot.brightness} | {loss} |"
        )

    def plot(self, x: torch.Tensor | None = None, *, generator: torch.Generator | None = None) -> Any:
        """The sticker, and with ``x`` a few images wearing it."""
        from labkit.plot import image_grid

        images = self.patch.unsqueeze(0)
        if x is not None:
            images = torch.cat(
                [
                    F.interpolate(images, size=x.shape[-2:], mode="nearest"),
                    self.apply(x[:7], generator=generator),
                ]
            )
        return image_grid(images.detach(), ncols=8, title="adversarial patch")


def _patch_loss(logits: torch.Tensor, y: torch.Tensor, target: int | None, kappa: float) -> torch.Tensor:
    """Per-example loss to *minimise*: cross-entropy to the target, or the true class's logit margin."""
    if target is not None:
        return F.cross_entropy(logits, torch.full_like(y, target), reduction="none")
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], -math.inf).amax(dim=1)
    return (true - other).clamp_min(-kappa)


def patch_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    patch_size: int | tuple[int, int],
    target: int | None = None,
    steps: int = 200,
    lr: float = 0.1,
    batch_size: int = 64,
    eot: EOT | None = None,
    kappa: float = 5.0,
    generator: torch.Generator | None = None,
) -> PatchResult:
    """Adversarial patch with expectation over transformation: a sticker that works anywhere.

    It finds one patch :math:`P` of ``patch_size`` pixels for all of ``x``,

    .. math::

        P^\\star = \\arg\\min_{P \\in [0, 1]^{C \\times h \\times w}}\\;
            \\mathbb{E}_{(x, y)}\\, \\mathbb{E}_{T \\sim \\mathcal{T}}\\,
            \\ell\\big(f(A(x, P, T)), y\\big),

    where :math:`A` pastes :math:`P` on :math:`x` under the transformation :math:`T` (placement,
    rotation, scale, brightness; :class:`EOT`), and :math:`\\ell` is the cross-entropy to
    ``target`` or, untargeted, the margin :math:`\\max(z_y - \\max_{i \\ne y} z_i, -\\kappa)`
    of the true class. Each step draws a batch of images and a fresh transformation per image,
    and takes an Adam step on :math:`P` (kept in :math:`[0, 1]`), so the patch must work in
    expectation over placements, not at one spot. Gradients flow to the patch only; the model's
    ``.grad`` is never touched.

    Measured on signs-cnn (32x32), optimised on 256 rendered stop signs with the default
    :class:`EOT` and tested on 100 held-out stop signs at 100 random placements each (clean
    accuracy 99%): an 8x8 sticker after 100 steps (about 7 s on one CPU thread) anywhere on the
    sign (``EOT(region=(6, 6, 26, 26))``) leaves 3.1% of stop signs recognised, 10x10 0.7%; a
    random sticker of the same size 88% and 86%. Placed anywhere in the image (on the
    background too) the 8x8 sticker leaves 28%, 10x10 20%.

    References: Brown, Mané, Roy, Abadi and Gilmer, "Adversarial Patch", arXiv:1712.09665
    (2017); Athalye, Engstrom, Ilyas and Kwok, "Synthesizing Robust Adversarial Examples",
    ICML 2018, arXiv:1707.07397 (EOT).

    Parameters
    ----------
    model:
        A differentiable classifier returning logits (white-box: the patch is crafted on it,
        or on a surrogate, then printed).
    x, y:
        Images ``(N, C, H, W)`` in ``[0, 1]`` to optimise over (e.g. stop signs) and their
        ``int64`` labels.
    patch_size:
        Side of the square patch in pixels, or ``(h, w)``.
    target:
        Class to push towards, or ``None`` for "anything but ``y``".
    steps:
        Adam steps (one forward and backward pass on ``batch_size`` images each).
    lr:
        Adam learning rate on the patch's pixels.
    batch_size:
        Images per step, drawn at random from ``x``.
    eot:
        The transformations to survive; default :class:`EOT()` (anywhere, ±10°, ±10% size,
        ±20% brightness).
    kappa:
        Untargeted margin beyond which an example stops contributing.
    generator:
        Source of the initial patch, the batches and the transformations.

    Returns
    -------
    PatchResult
        The patch, with :meth:`PatchResult.apply` to paste it and
        :meth:`PatchResult.accuracy` to measure it under random placements.

    Examples
    --------
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    >>> model = lk.LabModel(net, input_shape=(3, 8, 8), num_classes=2).eval()
    >>> x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> result = patch_attack(model, x, model.predict(x), patch_size=3, steps=5,
    ...                       generator=torch.Generator().manual_seed(0))
    >>> tuple(result.patch.shape), len(result.losses)
    ((3, 3, 3), 5)
    """
    if isinstance(patch_size, int) and not isinstance(patch_size, bool):
        size = (patch_size, patch_size)
    elif isinstance(patch_size, tuple) and len(patch_size) == 2:
        size = (int(patch_size[0]), int(patch_size[1]))
    else:
        raise TypeError(f"patch_size must be an int or a (height, width) tuple, got {patch_size!r}")
    steps = check_int(steps, "steps", minimum=0)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    lr = check_positive(lr, "lr")
    eot = eot if eot is not None else EOT()
    if not isinstance(eot, EOT):
        raise TypeError(f"eot must be an EOT, got {type(eot).__name__}")
    bounds = bounds_of(model)
    if bounds != (0.0, 1.0):
        raise ValueError(f"patch_attack needs images in [0, 1], the model's range is {bounds}")
    with attack_mode(model, x, y, eps=None, norm="linf", bounds=bounds) as clean_logits:
        if x.dim() != 4:
            raise ValueError(f"patch_attack needs images of shape (N, C, H, W), got {tuple(x.shape)}")
        if not (1 <= size[0] <= x.shape[2] and 1 <= size[1] <= x.shape[3]):
            raise ValueError(f"patch_size {size} must be between 1 and the image size {tuple(x.shape[2:])}")
        if target is not None:
            classes = clean_logits.shape[1]
            if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < classes:
                raise ValueError(
                    f"target must be a class index in [0, {classes - 1}] or None, got {target!r}"
                )
        device = generator.device if generator is not None else x.device
        patch = torch.rand(x.shape[1], *size, generator=generator, device=device, dtype=x.dtype).to(x.device)
        # Adam, written out: torch.optim would import torch._dynamo (seconds) for one tensor.
        m = torch.zeros_like(patch)
        v = torch.zeros_like(patch)
        beta1, beta2 = 0.9, 0.999
        losses: list[torch.Tensor] = []
        n = x.shape[0]
        for t_step in range(1, steps + 1):
            if batch_size < n:
                pick = torch.randperm(n, generator=generator, device=device)[:batch_size].to(x.device)
                xb, yb = x[pick], y[pick]
            else:
                xb, yb = x, y
            t = _draw(xb.shape[0], xb, size, eot, None, generator)
            patch.requires_grad_(True)
            logits = model(_paste(xb, patch, t).clamp(0, 1))
            loss = _patch_loss(logits, yb, target, kappa).mean()
            (grad,) = torch.autograd.grad(loss, patch)
            with torch.no_grad():
                m = beta1 * m + (1 - beta1) * grad
                v = beta2 * v + (1 - beta2) * grad * grad
                step = lr * (m / (1 - beta1**t_step)) / ((v / (1 - beta2**t_step)).sqrt() + 1e-8)
                patch = (patch.detach() - step).clamp(0, 1)
            losses.append(loss.detach())
        history = torch.stack(losses).tolist() if losses else []
        return PatchResult(patch=patch.detach().clone(), eot=eot, target=target, losses=history)
