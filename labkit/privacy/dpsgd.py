"""DP-SGD: differentially private training by per-example clipping and Gaussian noise.

Each step of Abadi et al. ("Deep Learning with Differential Privacy", CCS 2016,
arXiv:1607.00133):

1. Sample a lot: every training example joins independently with probability
   :math:`q = L / N` (Poisson sampling; :math:`L` is the *expected* lot size).
2. Compute the gradient :math:`g_i` of every example's loss separately (here with
   ``torch.func.vmap`` over ``torch.func.grad``: no loop, no hooks).
3. Clip each to norm at most :math:`C`: :math:`\\bar g_i = g_i / \\max(1, \\lVert g_i\\rVert_2 / C)`,
   the norm being taken over *all* parameters together.
4. Add noise and average: :math:`\\tilde g = \\frac{1}{L}\\big(\\sum_i \\bar g_i +
   \\mathcal N(0, \\sigma^2 C^2 I)\\big)`, then take an optimiser step with :math:`\\tilde g`.

Clipping bounds any one example's influence on a step; the noise hides it; the
:mod:`~labkit.privacy.accounting` module turns :math:`(q, \\sigma, \\text{steps}, \\delta)`
into the :math:`\\varepsilon` of the whole run.

Batch normalisation mixes the examples of a batch, so per-example gradients (and the privacy
analysis) do not exist for it: :func:`replace_batchnorm` swaps it for group normalisation, as
Opacus does.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap
from torch.nn import functional as F

from labkit.contract import LabModel, TrainModeWarning
from labkit.data.base import LabData
from labkit.models.loop import StepOutput, fit
from labkit.models.training import accuracy
from labkit.privacy._common import check_data, check_int, check_positive
from labkit.privacy.accounting import dp_sgd_epsilon
from labkit.utils import check_images

__all__ = [
    "DPHistory",
    "clip_and_noise",
    "per_example_gradients",
    "private_model",
    "replace_batchnorm",
    "train_dp",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def replace_batchnorm(model: nn.Module, *, groups: int = 8) -> nn.Module:
    """A copy of ``model`` with every BatchNorm layer replaced by GroupNorm.

    Each ``BatchNorm`` over :math:`C` channels becomes ``GroupNorm(g, C)`` with ``g`` the
    largest divisor of :math:`C` not above ``groups``. The new layers start untrained (weight
    1, bias 0): use it on a model before training. The input model is left untouched.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    >>> new = replace_batchnorm(net)
    >>> type(new[1]).__name__, new[1].num_groups, type(net[1]).__name__
    ('GroupNorm', 4, 'BatchNorm2d')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_int(groups, "groups")
    new = copy.deepcopy(model)

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                c = child.num_features
                g = max(d for d in range(1, min(groups, c) + 1) if c % d == 0)
                setattr(parent, name, nn.GroupNorm(g, c, affine=True))
            else:
                swap(child)

    swap(new)
    return new


def per_example_gradients(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn = F.cross_entropy,
) -> dict[str, torch.Tensor]:
    """The gradient of every example's loss, one tensor ``(N, *param.shape)`` per parameter.

    Uses ``torch.func.vmap(torch.func.grad(...))`` over ``functional_call``: the model's own
    ``.grad`` fields are never touched. The model runs in its current mode (dropout draws
    differ per example in training mode). Models with batch normalisation in training mode
    are refused: their per-example gradients are not defined.

    Examples
    --------
    >>> net = nn.Linear(3, 2)
    >>> g = per_example_gradients(net, torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1]))
    >>> tuple(g["weight"].shape), tuple(g["bias"].shape)
    ((5, 2, 3), (5, 2))
    """
    grads, _ = _per_example(model, x, y, loss_fn)
    return grads


def _per_example(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training and _has_batchnorm(model):
        raise ValueError(
            "the model has BatchNorm layers in training mode; they mix the examples of a batch, so "
            "per-example gradients are not defined. Use labkit.privacy.replace_batchnorm(model)"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]} labels")
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    saved = model.check_inputs if isinstance(model, LabModel) else None
    if isinstance(model, LabModel):
        check_images(x, name="x", shape=model.input_shape, value_range=model.value_range)
        model.check_inputs = False  # checked once above; data-dependent checks cannot run under vmap
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TrainModeWarning)
            grads, losses = vmap(grad_and_value(loss_one), in_dims=(None, 0, 0), randomness="different")(
                params, x, y
            )
    finally:
        if isinstance(model, LabModel) and saved is not None:
            model.check_inputs = saved
    return grads, losses


def _gaussian(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``like``, drawn on the generator's device."""
    where = generator.device if generator is not None else like.device
    noise = torch.randn(like.shape, generator=generator, device=where, dtype=like.dtype)
    return noise.to(like.device)


def private_model(data: LabData, *, width: int = 16, groups: int = 8, dropout: float = 0.0) -> LabModel:
    """An untrained small CNN (MLP for tabular data) for ``data``, with GroupNorm, ready for DP-SGD.

    The same architecture as :func:`labkit.privacy.overfit_target` builds, with every
    BatchNorm replaced by GroupNorm (:func:`replace_batchnorm`).
    """
    from labkit.models.zoo import Recipe, build

    data = check_data(data)
    arch: dict[str, Any] = {"width": width, "dropout": dropout} if data.is_image else {"dropout": dropout}
    model = replace_batchnorm(
        build(Recipe("private", data.name, "DP-SGD model", arch=arch), data), groups=groups
    )
    if not isinstance(model, LabModel):  # pragma: no cover - build always returns a LabModel
        raise TypeError("expected a LabModel")
    return model


def clip_and_noise(
    grads: Mapping[str, torch.Tensor],
    *,
    max_grad_norm: float,
    noise_multiplier: float,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Clip per-example gradients to total norm ``max_grad_norm``, sum them, add noise.

    Returns the noisy *sum* :math:`\\sum_i \\bar g_i + \\mathcal N(0, \\sigma^2 C^2 I)` per
    parameter (divide by the expected lot size to average) and the per-example norms before
    clipping, ``(N,)``.

    Examples
    --------
    >>> g = {"w": torch.tensor([[3.0, 4.0], [0.3, 0.4]])}  # norms 5 and 0.5
    >>> total, norms = clip_and_noise(g, max_grad_norm=1.0, noise_multiplier=0.0)
    >>> total["w"], norms
    (tensor([0.9000, 1.2000]), tensor([5.0000, 0.5000]))
    """
    if not grads:
        raise ValueError("grads is empty")
    c = check_positive(max_grad_norm, "max_grad_norm")
    if not (isinstance(noise_multiplier, int | float) and noise_multiplier >= 0):
        raise ValueError(f"noise_multiplier must be non-negative, got {noise_multiplier!r}")
    first = next(iter(grads.values()))
    n = first.shape[0]
    flat_sq = torch.stack([g.reshape(n, -1).pow(2).sum(1) for g in grads.values()]).sum(0)
    norms = flat_sq.sqrt()
    factor = (c / (norms + 1e-6)).clamp(max=1.0)
    out: dict[str, torch.Tensor] = {}
    for name, g in grads.items():
        total = torch.einsum("n,n...->...", factor.to(g.dtype), g)
        if noise_multiplier > 0:
            total = total + (noise_multiplier * c) * _gaussian(total, generator)
        out[name] = total
    return out, norms


@dataclass
class DPHistory:
    """A DP-SGD run: per-epoch rows and the privacy spent.

    ``epsilon`` is an upper bound from the RDP accountant for Poisson sampling at
    ``sample_rate``, ``noise_multiplier`` and ``steps``, at the given ``delta``. ``loss`` and
    ``train_acc`` are computed on the private data for display only: publishing them is not
    covered by the guarantee.
    """

    rows: list[dict[str, float]] = field(default_factory=list)
    noise_multiplier: float = 0.0
    max_grad_norm: float = 1.0
    sample_rate: float = 0.0
    delta: float = 1e-5
    steps: int = 0

    @property
    def epsilon(self) -> float:
        return self.rows[-1]["epsilon"] if self.rows else 0.0

    @property
    def final(self) -> dict[str, float]:
        return self.rows[-1] if self.rows else {}

    def __getitem__(self, key: str) -> list[float]:
        return [row[key] for row in self.rows if key in row]

    def _repr_markdown_(self) -> str:
        head = (
            f"**DP-SGD**: σ = {self.noise_multiplier:g}, C = {self.max_grad_norm:g}, "
            f"q = {self.sample_rate:.4g}, {self.steps} steps → "
            f"(ε = {self.epsilon:.3g}, δ = {self.delta:g})"
        )
        if not self.rows:
            return head
        keys = list(self.rows[0])
        lines = [head, "", "| " + " | ".join(keys) + " |", "|" + "---:|" * len(keys)]
        for row in self.rows:
            lines.append("| " + " | ".join(f"{row[k]:.4g}" for k in keys) + " |")
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """Accuracy against the privacy spent."""
        from labkit.plot import curves

        series = {k: self[k] for k in ("train_acc", "val_acc") if self[k]}
        return curves(self["epsilon"], series, xlabel="ε spent", ylabel="accuracy", title="DP-SGD", ax=ax)


def train_dp(
    model: nn.Module,
    data: LabData,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    max_grad_norm: float = 1.0,
    noise_multiplier: float = 1.0,
    delta: float = 1e-5,
    optimizer: Literal["adam", "sgd"] = "adam",
    momentum: float = 0.9,
    val: LabData | None = None,
    max_physical_batch: int = 256,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> DPHistory:
    """Train ``model`` in place with DP-SGD (per-example clipping and Gaussian noise).

    Reference: Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar and Zhang, "Deep Learning with
    Differential Privacy", CCS 2016, arXiv:1607.00133.

    Parameters
    ----------
    model:
        A model without BatchNorm (see :func:`replace_batchnorm`); trained in place and left
        in evaluation mode.
    data:
        The private training set.
    epochs:
        Passes over the data: ``epochs * round(N / batch_size)`` steps in all.
    batch_size:
        The *expected* lot size :math:`L`; the sample rate is :math:`q = L / N`.
    lr:
        Learning rate of the optimiser.
    max_grad_norm:
        Clipping norm :math:`C`.
    noise_multiplier:
        :math:`\\sigma`; 0 gives clipped, noiseless SGD and :math:`\\varepsilon = \\infty`.
    delta:
        The :math:`\\delta` at which :math:`\\varepsilon` is reported (keep it below
        :math:`1/N`).
    optimizer:
        ``"adam"`` or ``"sgd"`` (with ``momentum``), applied to the privatised gradient (post
        processing: the guarantee is unchanged).
    val:
        Optional held-out data, its accuracy recorded per epoch.
    max_physical_batch:
        Examples per vmap call (memory bound); does not change the result.
    generator:
        Draws the lots and the noise.
    progress:
        Show a progress bar.

    Returns
    -------
    DPHistory
        Per epoch: ``loss``, ``train_acc``, ``val_acc`` (with ``val``), ``epsilon``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    data = check_data(data)
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    lr = check_positive(lr, "lr")
    max_grad_norm = check_positive(max_grad_norm, "max_grad_norm")
    if not (isinstance(noise_multiplier, int | float) and noise_multiplier >= 0):
        raise ValueError(f"noise_multiplier must be non-negative, got {noise_multiplier!r}")
    if not (isinstance(delta, int | float) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if _has_batchnorm(model):
        raise ValueError(
            "DP-SGD needs per-example gradients, which BatchNorm layers do not have; "
            "build the model with labkit.privacy.replace_batchnorm(model)"
        )
    if isinstance(model, LabModel):
        check_images(data.x, name="data.x", shape=model.input_shape, value_range=model.value_range)
    n = len(data)
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the data set ({n} examples)")
    q = batch_size / n
    steps_per_epoch = max(1, round(n / batch_size))
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(params.values(), lr=lr)
    else:
        opt = torch.optim.SGD(params.values(), lr=lr, momentum=momentum)
    history = DPHistory(
        noise_multiplier=float(noise_multiplier),
        max_grad_norm=max_grad_norm,
        sample_rate=q,
        delta=float(delta),
    )

    def lots(n: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
        """Poisson sampling: each example joins each lot with probability q."""
        for _ in range(steps_per_epoch):
            yield torch.nonzero(torch.rand(n, generator=gen) < q).flatten()

    def step(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        """The privatised gradient of a lot: per-example gradients clipped, summed, noised.

        The returned loss is ``sum(p * g)`` over parameters, whose gradient is exactly the
        privatised ``g``; the row reports the lot's real per-example loss."""
        sums = {k: torch.zeros_like(p) for k, p in params.items()}
        lot_loss = torch.zeros((), dtype=torch.float64)
        for i in range(0, len(x), max_physical_batch):
            g, losses = _per_example(
                net, x[i : i + max_physical_batch], y[i : i + max_physical_batch], F.cross_entropy
            )
            clipped, _ = clip_and_noise(g, max_grad_norm=max_grad_norm, noise_multiplier=0.0)
            for k in sums:
                sums[k] += clipped[k]
            lot_loss += float(losses.sum())
        if noise_multiplier > 0:
            for k in sums:
                sums[k] += (noise_multiplier * max_grad_norm) * _gaussian(sums[k], gen)
        surrogate = sum(((p * (sums[k] / batch_size)).sum() for k, p in params.items()), torch.zeros(()))
        history.steps += 1
        return surrogate, None, {"loss": lot_loss}

    def account(epoch: int, model: nn.Module, row: dict[str, float]) -> None:
        row["train_acc"] = accuracy(model, data)
        if val is not None:
            row["val_acc"] = accuracy(model, val)
        row["epsilon"] = dp_sgd_epsilon(
            sample_rate=q, noise_multiplier=float(noise_multiplier), steps=history.steps, delta=float(delta)
        )

    history.rows = fit(
        model,
        data.x,
        data.y,
        epochs=epochs,
        step=step,
        lr=lr,
        batch_size=batch_size,
        schedule=False,
        optimizer=opt,
        batches=lots,
        callbacks=[account],
        generator=gen,
        progress=progress,
        desc="DP-SGD",
    ).rows
    if not math.isfinite(history.epsilon) and noise_multiplier > 0:  # pragma: no cover - sanity
        warnings.warn("the accountant returned an infinite epsilon", stacklevel=2)
    return history
