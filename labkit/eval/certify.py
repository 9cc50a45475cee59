"""Randomized smoothing: a certified L2 radius from Gaussian noise (Cohen, Rosenfeld and Kolter, 2019).

The smoothed classifier predicts the class the base classifier :math:`f` returns most often
under Gaussian noise,

.. math::

    g(x) = \\arg\\max_c
    \\Pr_{\\varepsilon \\sim \\mathcal{N}(0, \\sigma^2 I)}\\big[f(x + \\varepsilon) = c\\big].

If the top class has probability at least :math:`\\underline{p_A} > \\tfrac12`, then :math:`g`
predicts it on the whole L2 ball of radius

.. math::

    R = \\sigma\\, \\Phi^{-1}(\\underline{p_A}),

with :math:`\\Phi^{-1}` the standard normal quantile. :func:`certify` is the paper's CERTIFY:
``n0`` noisy samples pick the candidate class, ``n`` fresh ones give a one-sided
Clopper-Pearson lower bound :math:`\\underline{p_A}` at level :math:`1 - \\alpha`, and the input
is certified (or the procedure abstains when :math:`\\underline{p_A} \\le \\tfrac12`). With
probability at least :math:`1 - \\alpha` every non-abstaining answer is correct about :math:`g`.

Base classifiers certify much better when trained on noisy inputs: :func:`train_with_noise`.

Reference: Cohen, Rosenfeld and Kolter, "Certified Adversarial Robustness via Randomized
Smoothing", ICML 2019, arXiv:1902.02918.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from labkit.contract import LabModel
from labkit.data.base import LabData
from labkit.eval.stats import check_alpha, clopper_pearson_lower
from labkit.models.training import History, train
from labkit.utils import check_images, eval_mode

__all__ = ["Certificate", "certify", "train_with_noise"]

ABSTAIN = -1


def _check_sigma(sigma: object) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(
            f"sigma must be a positive number (noise standard deviation), got {type(sigma).__name__}"
        )
    value = float(sigma)
    if not value > 0 or value == float("inf"):
        raise ValueError(
            f"sigma must be a finite number > 0 (noise standard deviation in pixel units), got {sigma!r}"
        )
    return value


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer number of samples, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


@dataclass(frozen=True)
class Certificate:
    """What :func:`certify` found for each input.

    Attributes
    ----------
    prediction:
        ``int64`` ``(N,)``: the smoothed classifier's class, or ``-1`` where it abstains.
    radius:
        ``(N,)``: the certified L2 radius :math:`\\sigma\\,\\Phi^{-1}(\\underline{p_A})`, 0 where it
        abstains.
    pa_lower:
        ``(N,)``: the lower confidence bound :math:`\\underline{p_A}` on the top class's probability.
    counts:
        ``int64`` ``(N,)``: how many of the ``n`` samples voted for the candidate class.
    sigma, n0, n, alpha:
        The settings it ran with.
    """

    prediction: torch.Tensor
    radius: torch.Tensor
    pa_lower: torch.Tensor
    counts: torch.Tensor
    sigma: float
    n0: int
    n: int
    alpha: float

    @property
    def abstained(self) -> torch.Tensor:
        """``bool`` ``(N,)``: inputs without a certificate."""
        return self.prediction == ABSTAIN

    def certified_accuracy(self, y: torch.Tensor, radius: float = 0.0) -> float:
        """Fraction of inputs predicted correctly *and* certified at L2 radius ``>= radius``."""
        y = y.to(self.prediction.device)
        if y.shape != self.prediction.shape:
            raise ValueError(f"y has shape {tuple(y.shape)}, expected {tuple(self.prediction.shape)}")
        ok = (self.prediction == y) & (self.radius >= radius)
        return float(ok.float().mean())

    def curve(self, y: torch.Tensor, radii: Sequence[float] | None = None) -> tuple[list[float], list[float]]:
        """Certified accuracy at each radius (default: 0 to the largest radius found, 21 points).

        Non-increasing in the radius by construction.
        """
        if radii is None:
            top = float(self.radius.max()) if self.radius.numel() else 0.0
            radii = [top * k / 20 for k in range(21)]
        radii = [float(r) for r in radii]
        return radii, [self.certified_accuracy(y, r) for r in radii]

    def plot(
        self,
        y: torch.Tensor,
        *,
        radii: Sequence[float] | None = None,
        ax: Any = None,
        label: str | None = None,
    ) -> Any:
        """Certified accuracy against L2 radius."""
        from labkit.plot import curves

        xs, ys = self.curve(y, radii)
        return curves(
            xs,
            {label or f"sigma={self.sigma:g}": ys},
            xlabel="L2 radius",
            ylabel="certified accuracy",
            title="randomized smoothing",
            ax=ax,
            marker=".",
        )

    def _repr_markdown_(self) -> str:
        n_inputs = int(self.prediction.numel())
        abstain = int(self.abstained.sum())
        certified = self.radius[~self.abstained]
        median = float(certified.median()) if certified.numel() else 0.0
        return (
            "| inputs | abstained | median radius (certified) | sigma | n0 | n | alpha |\n"
            "|---|---|---|---|---|---|---|\n"
            f"| {n_inputs} | {abstain} | {median:.3f} | {self.sigma:g} | {self.n0} | {self.n} "
            f"| {self.alpha:g} |"
        )


@torch.no_grad()
def _sample_counts(
    model: nn.Module,
    x: torch.Tensor,
    num: int,
    sigma: float,
    num_classes: int,
    batch_size: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Votes per class of ``model`` on ``num`` noisy copies of each input, ``(N, C)`` on the device."""
    counts = torch.zeros(x.shape[0], num_classes, dtype=torch.long, device=x.device)
    per = min(num, batch_size)  # samples of one input per forward pass
    chunk = max(1, batch_size // per)  # inputs per forward pass
    gen_device = generator.device if generator is not None else x.device
    for i in range(0, x.shape[0], chunk):
        xb = x[i : i + chunk]
        left = num
        while left > 0:
            m = min(per, left)
            batch = xb.repeat_interleave(m, dim=0)
            noise = torch.randn(batch.shape, generator=generator, device=gen_device, dtype=x.dtype)
            pred = model(batch + sigma * noise.to(x.device)).argmax(dim=1).view(xb.shape[0], m)
            counts[i : i + xb.shape[0]] += F.one_hot(pred, num_classes).sum(dim=1)
            left -= m
    return counts


def certify(
    model: nn.Module,
    x: torch.Tensor,
    *,
    sigma: float,
    n0: int = 100,
    n: int = 1000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> Certificate:
    """Certify each input's prediction of the Gaussian-smoothed ``model`` (Cohen et al.'s CERTIFY).

    For every input: classify ``n0`` noisy copies :math:`x + \\varepsilon`,
    :math:`\\varepsilon \\sim \\mathcal{N}(0, \\sigma^2 I)`, and take the most frequent class
    :math:`c_A`; classify ``n`` fresh copies and count the votes :math:`n_A` for :math:`c_A`;
    bound :math:`\\underline{p_A} = B^{-1}(\\alpha;\\, n_A,\\, n - n_A + 1)` (one-sided
    Clopper-Pearson, ``scipy.stats.beta``); return :math:`c_A` with radius
    :math:`\\sigma\\, \\Phi^{-1}(\\underline{p_A})` if :math:`\\underline{p_A} > \\tfrac12`, else abstain.

    Noisy copies leave the valid input range, as in the paper (no clipping): a
    :class:`~labkit.LabModel` is called with its input checks off for them. The Monte Carlo
    samples are batched across inputs, ``batch_size`` images per forward pass.

    Parameters
    ----------
    model:
        The base classifier :math:`f`, returning logits.
    x:
        Inputs ``(N, ...)`` in the valid range (checked, not modified).
    sigma:
        Noise standard deviation in pixel units, ``> 0``.
    n0:
        Samples for choosing the class (the paper: 100).
    n:
        Samples for the bound (the paper: 100,000; ``n >= n0``). With very few samples the
        bound stays below one half and the procedure abstains.
    alpha:
        Failure probability of the certificate, in (0, 1).
    batch_size:
        Noisy images per forward pass.
    generator:
        Source of the noise, for reproducible certificates.

    Returns
    -------
    Certificate
        Per input: prediction (``-1`` = abstain), radius, :math:`\\underline{p_A}` and counts.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1]]))
    ...     _ = net[1].bias.zero_()
    >>> model = LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])       # far on the side of class 1
    >>> cert = certify(model, x, sigma=0.25, n0=10, n=200, generator=torch.Generator().manual_seed(0))
    >>> int(cert.prediction), round(float(cert.radius), 2)   # 200/200 votes: sigma * Phi^-1(0.001 ** (1/200))
    (1, 0.46)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    sigma = _check_sigma(sigma)
    n0 = _check_count(n0, "n0")
    n = _check_count(n, "n")
    if n0 > n:
        raise ValueError(
            f"n0 ({n0}) must not exceed n ({n}): n0 samples pick the class, n bound its probability"
        )
    alpha = check_alpha(alpha)
    batch_size = _check_count(batch_size, "batch_size")
    shape = model.input_shape if isinstance(model, LabModel) else None
    value_range = model.value_range if isinstance(model, LabModel) else (0.0, 1.0)
    x = check_images(x, name="x", shape=shape, value_range=value_range)
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError("x must be a non-empty batch of inputs (N, ...)")
    from scipy.stats import norm

    unchecked = model.unchecked() if isinstance(model, LabModel) else contextlib.nullcontext()
    with eval_mode(model), unchecked:
        with torch.no_grad():
            num_classes = model(x[:1]).shape[1]
        counts0 = _sample_counts(model, x, n0, sigma, num_classes, batch_size, generator)
        guess = counts0.argmax(dim=1)
        counts = _sample_counts(model, x, n, sigma, num_classes, batch_size, generator)
    n_a = counts.gather(1, guess[:, None]).squeeze(1).cpu()
    lower = torch.tensor(
        [clopper_pearson_lower(int(k), n, alpha=alpha) for k in n_a.tolist()], dtype=torch.float64
    )
    certified = lower > 0.5
    radius = torch.where(
        certified,
        sigma * torch.as_tensor(norm.ppf(lower.clamp(0.5, 1 - 1e-16).numpy())),
        torch.zeros_like(lower),
    )
    prediction = torch.where(certified, guess.cpu(), torch.full_like(guess.cpu(), ABSTAIN))
    device = x.device
    return Certificate(
        prediction=prediction.to(device),
        radius=radius.to(device=device, dtype=x.dtype),
        pa_lower=lower.to(device=device, dtype=x.dtype),
        counts=n_a.to(device),
        sigma=sigma,
        n0=n0,
        n=n,
        alpha=alpha,
    )


def train_with_noise(
    model: nn.Module,
    data: LabData,
    *,
    sigma: float,
    epochs: int = 15,
    lr: float = 2e-3,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    val: LabData | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> History:
    """Train a base classifier for randomized smoothing on Gaussian-noise-augmented inputs.

    Every training batch becomes :math:`x + \\varepsilon`, :math:`\\varepsilon \\sim
    \\mathcal{N}(0, \\sigma^2 I)` (no clipping, matching :func:`certify`), via
    :func:`labkit.models.train`'s ``augment``. Use the ``sigma`` you will certify with.
    Dropout is seeded from ``generator``; the global RNG is left as it was.

    Examples
    --------
    >>> import labkit as lk
    >>> data = lk.data.load("digits", split="train", n=64)
    >>> model = lk.models.build("digits-cnn", data)
    >>> len(train_with_noise(model, data, sigma=0.25, epochs=1, progress=False))
    1
    """
    sigma = _check_sigma(sigma)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)

    def gaussian(xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        device = g.device
        noise = torch.randn(xb.shape, generator=g, device=device, dtype=xb.dtype).to(xb.device)
        return xb + sigma * noise

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        history = train(
            model,
            data,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            weight_decay=weight_decay,
            val=val,
            augment=gaussian,
            generator=gen,
            progress=progress,
        )
    if isinstance(model, LabModel):
        model.meta = {**model.meta, "defense": f"Gaussian noise training (sigma={sigma:g})", "sigma": sigma}
    return history
