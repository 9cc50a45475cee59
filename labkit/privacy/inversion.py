"""Model inversion: reconstruct what a class "looks like" to the model from the model alone.

Fredrikson, Jha and Ristenpart ("Model Inversion Attacks that Exploit Confidence Information
and Basic Countermeasures", CCS 2015) recover a recognisable face for a name by gradient
descent on the input of a face classifier. For a class :math:`c` the attack solves

.. math::

    \\min_{x \\in [0, 1]^d}\\; -\\log p_c(x) \\;+\\; \\lambda_{TV}\\, \\mathrm{TV}(x)
    \\;+\\; \\lambda_2 \\lVert x - x_0 \\rVert_2^2,

where the total variation :math:`\\mathrm{TV}` favours smooth, image-like inputs and the
:math:`\\ell_2` term keeps the solution near a neutral start :math:`x_0` (grey). The box
constraint is kept by optimising :math:`z` with :math:`x = \\sigma(z)`. The result is a
*class representative*, an average-looking member of the class, not one training image: on
small models it mostly shows the features the model relies on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from labkit.contract import LabModel
from labkit.privacy._common import check_int, check_positive, model_device
from labkit.utils import eval_mode

__all__ = ["InversionResult", "invert"]


@dataclass(frozen=True)
class InversionResult:
    """Reconstructed class representatives.

    Attributes
    ----------
    images:
        ``(K, C, H, W)`` in ``[0, 1]``, one per class in ``classes``.
    classes:
        The classes inverted.
    confidence:
        The model's probability of each class on its reconstruction.
    class_names:
        Names for captions, when the model has them.
    """

    images: torch.Tensor
    classes: list[int]
    confidence: torch.Tensor
    class_names: list[str] | None = None

    def _repr_markdown_(self) -> str:
        names = self.class_names
        lines = ["**Model inversion**", "", "| class | model confidence |", "|---|---:|"]
        for c, p in zip(self.classes, self.confidence.tolist(), strict=True):
            label = f"{c} ({names[c]})" if names else str(c)
            lines.append(f"| {label} | {100 * p:.1f}% |")
        return "\n".join(lines)

    def plot(self, ncols: int = 10) -> Any:
        """The reconstructions in a grid, captioned with their class."""
        from labkit.plot import image_grid

        return image_grid(
            self.images,
            labels=self.classes,
            class_names=self.class_names,
            ncols=min(ncols, len(self.classes)),
            title="model inversion",
        )


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).sum(1)
    return (dh + dw) / x[0].numel()


def invert(
    model: LabModel,
    *,
    classes: Sequence[int] | None = None,
    steps: int = 300,
    lr: float = 0.1,
    tv_weight: float = 0.3,
    l2_weight: float = 0.01,
    start: float = 0.5,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> InversionResult:
    """Reconstruct one representative input per class by gradient descent on the input.

    Reference: Fredrikson, Jha and Ristenpart, "Model Inversion Attacks that Exploit Confidence
    Information and Basic Countermeasures", CCS 2015 (see the module docstring for the
    objective).

    Parameters
    ----------
    model:
        A :class:`~labkit.LabModel` on images with values in ``[0, 1]`` (white-box: the
        attack uses its gradients). Its ``.grad`` fields are never touched.
    classes:
        Classes to invert (default: all).
    steps:
        Adam steps on the input.
    lr:
        Adam learning rate in the logit space :math:`z`.
    tv_weight, l2_weight:
        :math:`\\lambda_{TV}` and :math:`\\lambda_2`.
    start:
        The grey level :math:`x_0` every reconstruction starts from.
    generator:
        Adds a little noise to the start (``None``: start exactly at ``start``).
    progress:
        Show a progress bar.

    Returns
    -------
    InversionResult
        Images in ``[0, 1]`` of the model's input shape.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1]]))
    ...     _ = net[1].bias.zero_()
    >>> model = LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> result = invert(model, steps=50, tv_weight=0.0)
    >>> model.predict(result.images).tolist(), bool(result.images.min() >= 0)
    ([0, 1], True)
    """
    if not isinstance(model, LabModel):
        raise TypeError(f"model must be a labkit.LabModel, got {type(model).__name__}")
    if model.value_range is None or len(model.input_shape) != 3:
        raise ValueError(
            "model inversion here reconstructs images: the model must take (C, H, W) inputs in a range"
        )
    k = model.num_classes
    chosen = list(range(k)) if classes is None else [int(c) for c in classes]
    if not chosen:
        raise ValueError("classes is empty")
    for c in chosen:
        if not 0 <= c < k:
            raise ValueError(f"class {c} is not a class of the model: expected 0..{k - 1}")
    steps = check_int(steps, "steps")
    lr = check_positive(lr, "lr")
    for name, v in (("tv_weight", tv_weight), ("l2_weight", l2_weight)):
        if not (isinstance(v, int | float) and v >= 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a non-negative number, got {v!r}")
    low, high = model.value_range
    if not low < start < high:
        raise ValueError(f"start must lie strictly inside the value range ({low}, {high}), got {start}")
    device = model_device(model)
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    shape = (len(chosen), *model.input_shape)
    p0 = (start - low) / (high - low)
    z0 = torch.full(shape, math.log(p0 / (1 - p0)), dtype=dtype)
    if generator is not None:
        z0 = z0 + 0.1 * torch.randn(shape, generator=generator, dtype=dtype)
    z = z0.to(device).requires_grad_(True)
    target = torch.tensor(chosen, device=device)
    x0 = torch.full(shape, float(start), dtype=dtype, device=device)
    opt = torch.optim.Adam([z], lr=lr)
    with eval_mode(model), model.unchecked():
        for _ in tqdm(range(steps), desc="inversion", disable=not progress):
            x = low + (high - low) * torch.sigmoid(z)
            loss = (
                F.cross_entropy(model(x), target, reduction="none")
                + tv_weight * _total_variation(x)
                + l2_weight * (x - x0).flatten(1).pow(2).mean(1)
            ).sum()
            (grad,) = torch.autograd.grad(loss, z)
            z.grad = grad
            opt.step()
        with torch.no_grad():
            images = (low + (high - low) * torch.sigmoid(z)).detach()
            probs = F.softmax(model(images), dim=1)
    confidence = probs[torch.arange(len(chosen)), target].cpu()
    return InversionResult(
        images=images, classes=chosen, confidence=confidence, class_names=model.class_names
    )
