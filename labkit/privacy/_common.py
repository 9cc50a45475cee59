"""Shared pieces of the privacy attacks: what a target reveals, soft-label training, checks."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from labkit import _checks
from labkit.contract import LabModel
from labkit.data.base import LabData
from labkit.models.loop import fit, soft_label_step
from labkit.serving.api import PredictionAPI, TopK
from labkit.utils import check_images, eval_mode

Target = nn.Module | PredictionAPI


def check_data(data: object, name: str = "data") -> LabData:
    if not isinstance(data, LabData):
        raise TypeError(f"{name} must be a LabData (from labkit.data.load), got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name} is empty")
    return data


def check_int(value: object, name: str, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` of at least ``minimum`` (a count: 1 unless told)."""
    return _checks.check_int(value, name, minimum=minimum)


def check_positive(value: object, name: str) -> float:
    """``value`` as a finite, strictly positive ``float`` (:func:`labkit._checks.check_positive`)."""
    return _checks.check_positive(value, name)


def model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def draw_seed(generator: torch.Generator | None) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def num_classes(target: Target) -> int:
    if isinstance(target, PredictionAPI):
        return target.num_classes
    if isinstance(target, LabModel):
        return target.num_classes
    raise TypeError(f"target must be a LabModel or a PredictionAPI, got {type(target).__name__}")


@torch.no_grad()
def revealed_probabilities(target: Target, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """The class probabilities an attacker sees, ``(N, C)`` on the CPU.

    A model reveals its full softmax. An API reveals what its ``output`` allows: the (rounded)
    probabilities; the top ``k`` of them with zeros elsewhere; or a one-hot label.
    """
    if isinstance(target, PredictionAPI):
        out = target(x)
        if isinstance(out, TopK):
            probs = torch.zeros(x.shape[0], target.num_classes)
            return probs.scatter_(1, out.classes.cpu(), out.scores.float().cpu())
        if target.output == "label":
            return F.one_hot(out.cpu(), target.num_classes).float()
        return out.float().cpu()
    if not isinstance(target, nn.Module):
        raise TypeError(f"target must be a torch.nn.Module or a PredictionAPI, got {type(target).__name__}")
    device = model_device(target)
    with eval_mode(target):
        logits = torch.cat([target(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)])
    return F.softmax(logits.float(), dim=1).cpu()


def like_api(model: LabModel, target: Target) -> Target:
    """``model`` behind an API that reveals what ``target`` reveals (no budget, no log)."""
    if isinstance(target, PredictionAPI):
        return PredictionAPI(model, output=target.output, k=target.k, rounding=target.rounding, log=False)
    return model


def fit_soft(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    desc: str = "training",
) -> float:
    """Train ``model`` on soft labels ``targets`` ``(N, C)`` (rows summing to 1) with Adam.

    Returns the final epoch's mean loss. The model is left in evaluation mode.
    """
    if isinstance(model, LabModel):
        check_images(x, name="x", shape=model.input_shape, value_range=model.value_range)
    history = fit(
        model,
        x,
        targets,
        epochs=epochs,
        step=soft_label_step(),
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        schedule=False,
        generator=generator,
        progress=progress,
        desc=desc,
        leave=False,
    )
    return history.final["loss"]


def image_model(
    input_shape: tuple[int, ...], num_classes: int, *, width: int = 16, dropout: float = 0.0
) -> LabModel:
    """A small CNN (or MLP for feature vectors) in the lab contract, inputs assumed in [0, 1]."""
    from labkit.models.nets import small_net

    if len(input_shape) == 3:
        net = small_net(input_shape, num_classes, width=width, dropout=dropout)
        return LabModel(net, input_shape=input_shape, num_classes=num_classes, mean=0.5, std=0.5)
    net = small_net(input_shape, num_classes, hidden=(4 * width, 4 * width), dropout=dropout)
    return LabModel(net, input_shape=input_shape, num_classes=num_classes, value_range=None)
