"""Adversarial accessories: a perturbation confined to a mask, such as an eyeglass frame.

Sharif, Bhagavatula, Bauer and Reiter ("Accessorize to a Crime: Real and Stealthy Attacks on
State-of-the-Art Face Recognition", ACM CCS 2016) printed the texture of a pair of eyeglass
frames so that the wearer's face was recognised as nobody they are (*dodging*) or as one chosen
person (*impersonation*). The threat model is a mask :math:`M \\in \\{0, 1\\}^{H \\times W}`
(the frame): the attacker may set every pixel under it to any value in the valid range and no
other pixel, so the adversarial image is

.. math::

    x' = (1 - M) \\odot x + M \\odot P, \\qquad P \\in [0, 1]^{C \\times H \\times W}.

* :func:`eyeglass_mask` draws the frame (two lens rims, a bridge, the temples) around given
  eye positions.
* :func:`accessory_attack` optimises *one* texture :math:`P` for a set of photos of the same
  person (the printed frame they wear in every photo) and returns an :class:`AccessoryResult`.
* :func:`accessory_pgd` crafts a texture per image, the strongest form and the attack to train
  against (``functools.partial(accessory_pgd, mask=mask)`` plugs into
  :func:`labkit.hardening.adversarial_training`).

Both take signed-gradient steps on the cross-entropy (up, away from the true identity, when
dodging; down, towards the target, when impersonating). Inputs are checked and never
modified; results stay in ``[0, 1]``; the model's ``.grad`` is never touched.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from labkit._checks import check_int, check_positive
from labkit.attacks._common import objective
from labkit.attacks.threat import attack_mode, bounds_of
from labkit.utils import eval_mode

__all__ = ["AccessoryResult", "accessory_attack", "accessory_pgd", "eyeglass_mask"]


def eyeglass_mask(
    size: int | tuple[int, int],
    *,
    eyes: tuple[tuple[float, float], tuple[float, float]],
    lens: tuple[float, float] = (3.2, 3.6),
    thickness: float = 1.6,
    temples: float = 4.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """An eyeglass frame as a ``{0, 1}`` mask ``(1, H, W)``: two rims, a bridge and the temples.

    Parameters
    ----------
    size:
        Image side in pixels, or ``(height, width)``.
    eyes:
        ``((row, col), (row, col))``: the centres of the two lenses in pixels, e.g.
        ``lk.data.load("faces").info["eyes"]``.
    lens:
        ``(half height, half width)`` of each elliptical lens, in pixels, measured to the middle
        of the rim.
    thickness:
        Width of the rim, the bridge and the temples, in pixels.
    temples:
        How far each temple reaches outwards from its rim, in pixels (0: none).
    device:
        Where the mask lives (default CPU).

    Returns
    -------
    torch.Tensor
        Float32 ``(1, H, W)``: 1 on the frame, 0 elsewhere.

    Examples
    --------
    >>> mask = eyeglass_mask(32, eyes=((14.0, 11.0), (14.0, 20.0)))
    >>> tuple(mask.shape), bool(mask[0, 13, 15] == 1), bool(mask[0, 14, 11] == 0)  # bridge, lens
    ((1, 32, 32), True, True)
    """
    if isinstance(size, int) and not isinstance(size, bool):
        height, width = size, size
    elif isinstance(size, tuple) and len(size) == 2:
        height, width = check_int(size[0], "size[0]", minimum=1), check_int(size[1], "size[1]", minimum=1)
    else:
        raise TypeError(f"size must be an int or a (height, width) tuple, got {size!r}")
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    try:
        (r0, c0), (r1, c1) = ((float(r), float(c)) for r, c in eyes)
    except (TypeError, ValueError) as error:
        raise ValueError(f"eyes must be ((row, col), (row, col)) in pixels, got {eyes!r}") from error
    if c0 > c1:
        (r0, c0), (r1, c1) = (r1, c1), (r0, c0)
    half_h, half_w = (check_positive(v, "lens") for v in lens)
    t = check_positive(thickness, "thickness")
    if not (isinstance(temples, numbers.Real) and temples >= 0):
        raise ValueError(f"temples must be a number of pixels >= 0, got {temples!r}")
    rows = torch.arange(height, dtype=torch.float32, device=device).view(-1, 1).expand(height, width)
    cols = torch.arange(width, dtype=torch.float32, device=device).view(1, -1).expand(height, width)
    frame = torch.zeros(height, width, dtype=torch.bool, device=device)
    for r, c in ((r0, c0), (r1, c1)):
        d = torch.sqrt(((rows - r) / half_h) ** 2 + ((cols - c) / half_w) ** 2)
        frame |= (d - 1).abs() * min(half_h, half_w) <= t / 2
    bar_row = (r0 + r1) / 2 - 0.3 * half_h  # the bridge sits a little above the lens centres
    frame |= ((rows - bar_row).abs() <= t / 2) & (cols >= c0 + half_w) & (cols <= c1 - half_w)
    for r, inner, outer in (
        (r0, c0 - half_w, c0 - half_w - temples),
        (r1, c1 + half_w, c1 + half_w + temples),
    ):
        low, high = min(inner, outer), max(inner, outer)
        frame |= ((rows - (r - 0.3 * half_h)).abs() <= t / 2) & (cols >= low) & (cols <= high)
    return frame.float().unsqueeze(0)


def _check_mask(mask: object, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dim() not in (2, 3):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a tensor of shape (H, W) or (1, H, W), got {got}")
    m = mask if mask.dim() == 3 else mask.unsqueeze(0)
    if m.shape[0] != 1 or tuple(m.shape[1:]) != tuple(x.shape[2:]):
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not match images of {tuple(x.shape[2:])} pixels"
        )
    m = m.to(device=x.device, dtype=x.dtype)
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError("mask must hold only 0 (pixel untouched) and 1 (pixel the attacker sets)")
    if not bool(m.any()):
        raise ValueError("mask is empty: the attacker could change no pixel")
    return m


def _wear(x: torch.Tensor, pattern: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x * (1 - mask) + pattern * mask


@dataclass(frozen=True)
class AccessoryResult:
    """A printed accessory: one texture worn in every photo.

    Attributes
    ----------
    pattern:
        The texture ``(C, H, W)`` in ``[0, 1]`` (zero off the mask).
    mask:
        ``(1, H, W)``: where it is worn.
    target:
        The identity it impersonates, or ``None`` (dodging).
    losses:
        The loss at each step (falls as the attack succeeds).
    """

    pattern: torch.Tensor
    mask: torch.Tensor
    target: int | None
    losses: list[float] = field(default_factory=list)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The images ``x`` with the accessory worn (same shape, dtype and device)."""
        return _wear(x, self.pattern.to(x), _check_mask(self.mask, x))

    def success_rate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        """Fraction of ``x`` the model reads as ``target`` (impersonation) or as anyone but
        ``y`` (dodging) when wearing the accessory."""
        with torch.no_grad(), eval_mode(model):
            pred = model(self.apply(x)).argmax(1)
        hit = pred != y if self.target is None else pred == self.target
        return float(hit.float().mean())

    def _repr_markdown_(self) -> str:
        aim = "dodging" if self.target is None else f"impersonate class {self.target}"
        pixels = int(self.mask.sum())
        share = pixels / self.mask[0].numel()
        loss = f"{self.losses[-1]:.3f}" if self.losses else "-"
        return (
            "| accessory | aim | pixels | final loss |\n|---|---|---|---|\n"
            f"| {self.pattern.shape[0]}-channel texture | {aim} | {pixels} ({share:.1%}) | {loss} |"
        )

    def plot(
        self, x: torch.Tensor, *, class_names: list[str] | None = None, model: nn.Module | None = None
    ) -> Any:
        """Up to eight images of ``x`` wearing the accessory, captioned with ``model``'s reading."""
        from labkit.plot import image_grid

        worn = self.apply(x[:8]).detach()
        preds = None
        if model is not None:
            with torch.no_grad(), eval_mode(model):
                preds = model(worn).argmax(1)
        return image_grid(worn.cpu(), preds=preds, class_names=class_names, title="adversarial eyeglasses")


def _check_target(target: object, classes: int) -> int | None:
    if target is None:
        return None
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < classes:
        raise ValueError(f"target must be a class index in [0, {classes - 1}] or None, got {target!r}")
    return target


def _run(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mask: torch.Tensor,
    target: int | None,
    steps: int,
    step_size: float,
    universal: bool,
    batch_size: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, int | None, list[float]]:
    """Check the arguments once, then take signed-gradient steps on the attack's objective,
    the step shrinking linearly to a tenth. Returns the texture, the mask as a tensor like
    ``x``, the checked target and the losses: the cross-entropy to the target, or minus the
    cross-entropy to the true label, so they fall as the attack succeeds."""
    steps = check_int(steps, "steps", minimum=1)
    step_size = check_positive(step_size, "step_size")
    bounds = bounds_of(model)
    if bounds != (0.0, 1.0):
        raise ValueError(f"{name} needs images in [0, 1], the model's range is {bounds}")
    with attack_mode(model, x, y, eps=None, norm="linf", bounds=bounds, stacklevel=4) as clean_logits:
        if x.dim() != 4:
            raise ValueError(f"{name} needs images of shape (N, C, H, W), got {tuple(x.shape)}")
        m = _check_mask(mask, x)
        aim = _check_target(target, clean_logits.shape[1])
        device = generator.device if generator is not None else x.device
        shape = (1, *x.shape[1:]) if universal else tuple(x.shape)
        pattern = torch.rand(shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        losses: list[float] = []
        n = x.shape[0]
        for step in range(steps):
            xb, yb = x, y
            if universal and batch_size < n:
                pick = torch.randperm(n, generator=generator, device=device)[:batch_size].to(x.device)
                xb, yb = x[pick], y[pick]
            pb = pattern.detach().requires_grad_(True)
            label = yb if aim is None else torch.full_like(yb, aim)
            gain = objective(model(_wear(xb, pb, m)), label, targeted=aim is not None)
            (grad,) = torch.autograd.grad(gain.sum(), pb)
            size = step_size * (1 - 0.9 * step / max(steps - 1, 1))
            pattern = (pattern + size * grad.sign() * m).clamp(0, 1).detach()
            losses.append(-float(gain.detach().mean()))
    return pattern * m, m, aim, losses


def accessory_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mask: torch.Tensor,
    target: int | None = None,
    steps: int = 100,
    step_size: float = 0.1,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
) -> AccessoryResult:
    """One accessory texture for all of ``x``: a frame the attacker prints once and wears.

    It minimises, over one texture :math:`P` under the mask :math:`M`,

    .. math::

        \\mathbb{E}_{(x, y)}\\; \\ell\\big(f((1 - M) \\odot x + M \\odot P), y\\big),

    with :math:`\\ell` the cross-entropy to ``target`` (impersonation) or minus the
    cross-entropy to the true label (dodging), by signed-gradient
    steps on :math:`P` over random batches of ``x`` (several photos of the wearer, so the
    frame works on photos it was not optimised on). Sharif et al., "Accessorize to a Crime",
    ACM CCS 2016 (doi:10.1145/2976749.2978392).

    Parameters
    ----------
    model:
        A differentiable classifier returning logits, images in ``[0, 1]``.
    x, y:
        Photos ``(N, C, H, W)`` of the wearer and their labels.
    mask:
        ``(1, H, W)`` or ``(H, W)`` of 0 and 1, e.g. :func:`eyeglass_mask`.
    target:
        The identity to be recognised as, or ``None`` for anyone but ``y``.
    steps, step_size:
        Signed-gradient steps; the step shrinks linearly from ``step_size`` to a tenth of it.
    batch_size:
        Photos per step, drawn at random from ``x``.
    generator:
        Source of the initial texture and of the batches.

    Returns
    -------
    AccessoryResult
        The texture, with :meth:`AccessoryResult.apply` and :meth:`AccessoryResult.success_rate`.

    Examples
    --------
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8, 3))
    >>> model = lk.LabModel(net, input_shape=(1, 8, 8), num_classes=3).eval()
    >>> x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> mask = eyeglass_mask(8, eyes=((3.0, 2.0), (3.0, 6.0)), lens=(1.5, 1.5), thickness=1.0)
    >>> glasses = accessory_attack(model, x, model.predict(x), mask=mask, target=2, steps=3)
    >>> bool(torch.equal(glasses.apply(x) * (1 - mask), x * (1 - mask))), len(glasses.losses)
    (True, 3)
    """
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    pattern, m, aim, losses = _run(
        "accessory_attack", model, x, y, mask=mask, target=target, steps=steps, step_size=step_size,
        universal=True, batch_size=batch_size, generator=generator,
    )  # fmt: skip
    return AccessoryResult(pattern=pattern[0].clone(), mask=m.clone(), target=aim, losses=losses)


def accessory_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mask: torch.Tensor,
    target: int | None = None,
    steps: int = 10,
    step_size: float = 0.25,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A texture per image under ``mask``: PGD whose ball is "any value on the frame".

    The per-example form of :func:`accessory_attack`: each image gets its own texture, from a
    random start, after ``steps`` signed-gradient steps. It is the attack to train against
    (Wu, Tong and Vorobeychik, "Defending Against Physically Realizable Attacks on Image
    Classification", ICLR 2020, arXiv:1909.09552, who found L-inf adversarial training does
    little against eyeglass frames and training on the masked attack itself does much more).

    Parameters are those of :func:`accessory_attack` (no batches: every image every step).

    Returns
    -------
    torch.Tensor
        The adversarial images, same shape, dtype and device as ``x``; pixels off the mask
        are those of ``x``.

    Examples
    --------
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8, 3))
    >>> model = lk.LabModel(net, input_shape=(1, 8, 8), num_classes=3).eval()
    >>> x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> mask = eyeglass_mask(8, eyes=((3.0, 2.0), (3.0, 6.0)), lens=(1.5, 1.5), thickness=1.0)
    >>> x_adv = accessory_pgd(model, x, model.predict(x), mask=mask, steps=2)
    >>> bool(((x_adv - x).abs() * (1 - mask)).max() == 0), bool(0 <= x_adv.min() <= x_adv.max() <= 1)
    (True, True)
    """
    pattern, m, _, _ = _run(
        "accessory_pgd", model, x, y, mask=mask, target=target, steps=steps, step_size=step_size,
        universal=False, batch_size=x.shape[0] if isinstance(x, torch.Tensor) else 1, generator=generator,
    )  # fmt: skip
    return _wear(x, pattern, m).detach()
