"""Input-transformation defences, their differentiable approximations, BPDA and EOT.

A preprocessing defence classifies :math:`f(g(x))` instead of :math:`f(x)`, with :math:`g` a
transform meant to wash perturbations out: fewer bits per pixel, a median filter, JPEG. Many of
these :math:`g` are not differentiable (rounding has zero gradient almost everywhere), so a
gradient attack on :math:`f \\circ g` sees zero or shattered gradients and fails: the defence
*looks* robust. Two tools from Athalye, Carlini and Wagner, "Obfuscated Gradients Give a False
Sense of Security" (ICML 2018, arXiv:1802.00420) see through it:

* BPDA (Backward Pass Differentiable Approximation): run the exact :math:`g` forwards but
  differentiate a smooth :math:`\\hat g \\approx g` backwards,

  .. math::

      \\nabla_x f(g(x)) \\approx \\nabla_x f(\\hat g(x)) \\big|_{\\text{evaluated at } g(x)},

  with :math:`\\hat g(x) = x` (the identity) for transforms with :math:`g(x) \\approx x`.
  :func:`bpda` builds it; every :class:`InputTransform` has its own :meth:`~InputTransform.approx`.
* EOT (Expectation over Transformation): for a *random* :math:`g`, attack the average
  :math:`\\mathbb{E}_g f(g(x))` estimated over ``n`` draws. :func:`eot` builds it.

:func:`preprocess` attaches a transform to a model; :func:`squeeze` and :class:`SqueezeDetector`
are feature squeezing (Xu, Evans and Qi, "Feature Squeezing: Detecting Adversarial Examples in
Deep Neural Networks", NDSS 2018, arXiv:1704.01155).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from labkit._checks import check_int
from labkit.attacks.adaptive import Expectation
from labkit.attacks.whitebox import Attack
from labkit.contract import LabModel
from labkit.hardening.wrappers import base_of, check_lab_model, wrap
from labkit.jpeg import jpeg_roundtrip
from labkit.utils import check_images, eval_mode

__all__ = [
    "BPDA",
    "JPEG",
    "BitDepth",
    "Compose",
    "GaussianNoise",
    "InputTransform",
    "MedianFilter",
    "SqueezeDetector",
    "bpda",
    "eot",
    "preprocess",
    "squeeze",
]


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------


class InputTransform(nn.Module):
    """A transform :math:`g` of images in ``[0, 1]`` with a differentiable stand-in for BPDA.

    ``forward`` is the exact transform the defence applies; :meth:`approx` is a differentiable
    :math:`\\hat g` with :math:`\\hat g(x) \\approx g(x)`, the identity unless a subclass knows
    better. ``differentiable`` says whether ``forward`` has useful gradients itself; ``random``
    says whether two calls on the same input may differ (then attack it with :func:`eot`).
    """

    differentiable: bool = True
    random: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        """The differentiable approximation :math:`\\hat g(x)` BPDA backpropagates through."""
        return x


class BitDepth(InputTransform):
    """Reduce every pixel to ``bits`` bits: :math:`g(x) = \\mathrm{round}(x (2^b - 1)) / (2^b - 1)`.

    Rounding has zero gradient almost everywhere, so :math:`f \\circ g` gives gradient attacks
    nothing to follow; :meth:`approx` is the identity (BPDA), exact up to
    :math:`1 / (2 (2^b - 1))` per pixel.

    Examples
    --------
    >>> BitDepth(1)(torch.tensor([[[[0.2, 0.7]]]]))
    tensor([[[[0., 1.]]]])
    """

    differentiable = False

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = check_int(bits, "bits", minimum=1, maximum=16)
        self.levels = float(2**self.bits - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * self.levels) / self.levels

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class MedianFilter(InputTransform):
    """Replace each pixel by the median of its ``size x size`` neighbourhood, per channel.

    Edges are reflected. The median passes gradient to one pixel per window only (a sparse,
    "shattered" gradient); :meth:`approx` is the identity.

    Examples
    --------
    >>> x = torch.zeros(1, 1, 3, 3)
    >>> x[0, 0, 1, 1] = 1.0                       # one bright pixel: salt noise
    >>> MedianFilter(3)(x).abs().max()
    tensor(0.)
    """

    def __init__(self, size: int = 2) -> None:
        super().__init__()
        self.size = check_int(size, "size", minimum=1, maximum=15)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.size
        if k == 1:
            return x
        before, after = (k - 1) // 2, k // 2
        padded = F.pad(x, (before, after, before, after), mode="reflect")
        windows = padded.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H, W, k, k)
        return windows.reshape(*x.shape, k * k).median(dim=-1).values

    def extra_repr(self) -> str:
        return f"size={self.size}"


def _round_exact(t: torch.Tensor) -> torch.Tensor:
    return torch.round(t)


def _round_smooth(t: torch.Tensor) -> torch.Tensor:
    """Shin and Song's differentiable rounding: ``round(t) + (t - round(t))**3``."""
    r = torch.round(t).detach()
    return r + (t - r) ** 3


class JPEG(InputTransform):
    """JPEG compression as a defence (Dziugaite et al., arXiv:1608.00853; Das et al., arXiv:1705.02900).

    Baseline JPEG's lossy step in PyTorch: RGB to YCbCr, 8x8 block DCT, quantisation with the
    standard tables scaled by ``quality`` (libjpeg's rule), inverse DCT and back, as in
    :func:`labkit.stress.jpeg` (no chroma subsampling, no 8-bit rounding of the output). The
    quantiser's rounding has zero gradient; :meth:`approx` replaces it by
    :math:`\\lfloor t \\rceil + (t - \\lfloor t \\rceil)^3` (Shin and Song, "JPEG-resistant
    adversarial images", 2017), which matches it at the integers and has a non-zero slope
    between them.

    Examples
    --------
    >>> x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> t = JPEG(quality=50)
    >>> bool((t(x) - t.approx(x)).abs().max() < 0.05)
    True
    """

    differentiable = False

    def __init__(self, quality: int = 75) -> None:
        super().__init__()
        self.quality = check_int(quality, "quality", minimum=1, maximum=100)

    def _compress(self, x: torch.Tensor, rounding: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return (jpeg_roundtrip(x, self.quality, rounding=rounding) / 255.0).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._compress(x, _round_exact)

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        return self._compress(x, _round_smooth)

    def extra_repr(self) -> str:
        return f"quality={self.quality}"


class GaussianNoise(InputTransform):
    """Add Gaussian noise of standard deviation ``sigma`` and clip to ``[0, 1]``: a *random* defence.

    Every call draws fresh noise (from ``generator`` when given), so predictions change from
    call to call and a single gradient is a poor guide: attack it with :func:`eot`.

    Examples
    --------
    >>> t = GaussianNoise(0.1)
    >>> x = torch.full((1, 1, 2, 2), 0.5)
    >>> bool(torch.equal(t(x), t(x)))
    False
    """

    random = True

    def __init__(self, sigma: float, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not 0 < sigma < math.inf:
            raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
        self.sigma: float = float(sigma)
        self.generator: torch.Generator | None = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = self.generator.device if self.generator is not None else x.device
        noise = torch.randn(x.shape, generator=self.generator, device=device, dtype=x.dtype).to(x.device)
        return (x + self.sigma * noise).clamp(0.0, 1.0)

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}"


class Compose(InputTransform):
    """Apply several transforms in order; the approximation composes their approximations."""

    def __init__(self, *transforms: InputTransform) -> None:
        super().__init__()
        if not transforms:
            raise ValueError("Compose needs at least one transform")
        for t in transforms:
            if not isinstance(t, InputTransform):
                raise TypeError(f"Compose takes InputTransform objects, got {type(t).__name__}")
        self.transforms = nn.ModuleList(transforms)
        self.differentiable = all(t.differentiable for t in transforms)
        self.random = any(t.random for t in transforms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            x = t(x)
        return x

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            assert isinstance(t, InputTransform)
            x = t.approx(x)
        return x


class BPDA(InputTransform):
    """Forward pass of ``transform``, backward pass of its approximation (straight-through).

    .. math::

        \\mathrm{BPDA}(x) = \\hat g(x) + \\mathrm{stopgrad}\\big(g(x) - \\hat g(x)\\big)

    equals :math:`g(x)` in value and has the gradient of :math:`\\hat g`. For a random ``g`` the
    value uses one draw and the gradient that draw's approximation.
    """

    def __init__(self, transform: InputTransform) -> None:
        super().__init__()
        if not isinstance(transform, InputTransform):
            raise TypeError(f"bpda needs an InputTransform, got {type(transform).__name__}")
        self.transform = transform
        self.random = transform.random

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.transform, Compose):
            # Part by part, so a random part (one draw, its own gradient) does not hide the
            # zero gradient of a shattered part such as BitDepth.
            for part in self.transform.transforms:
                assert isinstance(part, InputTransform)
                x = BPDA(part)(x)
            return x
        exact = self.transform(x)
        if self.transform.random:
            return exact  # the noise itself is differentiable (identity plus a constant)
        smooth = self.transform.approx(x)
        return smooth + (exact - smooth).detach()

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform.approx(x)


# --------------------------------------------------------------------------------------------
# Defended models
# --------------------------------------------------------------------------------------------


def preprocess(model: LabModel, transform: InputTransform) -> LabModel:
    """``model`` behind an input transform: the defended classifier :math:`f(g(x))`.

    Returns a :class:`~labkit.LabModel` sharing ``model``'s weights, with
    ``meta["transform"]`` set (and ``meta["base"]`` the undefended model), so :func:`bpda` and
    :func:`~labkit.eval.checklist` can find both.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> model = LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> defended = preprocess(model, BitDepth(1))
    >>> x = torch.rand(3, 1, 2, 2)
    >>> bool(torch.equal(defended(x), model(BitDepth(1)(x))))
    True
    """
    check_lab_model(model)
    if not isinstance(transform, InputTransform):
        raise TypeError(
            f"transform must be an InputTransform such as BitDepth(3), got {type(transform).__name__}"
        )
    return wrap(model, pre=transform, meta={"transform": transform, "defense": f"preprocess: {transform}"})


def squeeze(model: LabModel, *, bits: int | None = 3, median: int | None = 2) -> LabModel:
    """Feature squeezing as a defence: classify the squeezed input (bit depth, then median filter).

    Xu et al. mainly use squeezing to *detect* adversarial examples (see
    :class:`SqueezeDetector`); as a defence it is the textbook case of obfuscated gradients:
    plain PGD through the rounding gets zero gradients, PGD through :func:`bpda` does not.

    Parameters
    ----------
    model:
        The classifier to protect.
    bits:
        Bits per pixel kept (``None``: no bit-depth reduction).
    median:
        Side of the median filter (``None``: no filter).

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> model = LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> squeeze(model, bits=1, median=None).meta["transform"]
    BitDepth(bits=1)
    """
    parts: list[InputTransform] = []
    if bits is not None:
        parts.append(BitDepth(bits))
    if median is not None:
        parts.append(MedianFilter(median))
    if not parts:
        raise ValueError("squeeze needs bits, median or both; got neither")
    transform = parts[0] if len(parts) == 1 else Compose(*parts)
    return preprocess(model, transform)


def bpda(obj: InputTransform | LabModel) -> Any:
    """Backward Pass Differentiable Approximation of a transform, or of a defended model.

    * ``bpda(transform)``: an :class:`InputTransform` with ``transform``'s forward pass and the
      gradient of ``transform.approx``.
    * ``bpda(defended)`` for a model from :func:`preprocess` or :func:`squeeze`: the same
      classifier (same weights, same outputs) whose transform is replaced by its BPDA, ready
      for any white-box attack. The adversarial examples are then scored on ``defended``.

    Reference: Athalye, Carlini and Wagner, arXiv:1802.00420, section 4.1.

    Examples
    --------
    >>> x = torch.tensor([[[[0.3, 0.8]]]], requires_grad=True)
    >>> (g,) = torch.autograd.grad(bpda(BitDepth(1))(x).sum(), x)
    >>> g                                          # identity gradient, not zero
    tensor([[[[1., 1.]]]])
    """
    if isinstance(obj, InputTransform):
        return BPDA(obj)
    if isinstance(obj, LabModel):
        transform = obj.meta.get("transform")
        base = base_of(obj)
        if not isinstance(transform, InputTransform) or base is None:
            raise ValueError(
                "bpda(model) needs a model built by labkit.hardening.preprocess or squeeze "
                "(meta['transform'] and meta['base']); pass the transform itself otherwise"
            )
        return wrap(base, pre=BPDA(transform), meta={"transform": BPDA(transform), "defense": "bpda"})
    raise TypeError(f"bpda takes an InputTransform or a defended LabModel, got {type(obj).__name__}")


def eot(attack: Attack, n: int) -> Attack:
    """Expectation over Transformation: run ``attack`` on the model averaged over ``n`` draws.

    The wrapped attack sees :math:`\\bar f(x) = \\frac{1}{n}\\sum_{k=1}^n f_k(x)`, the mean of
    the logits of ``n`` forward passes (each with its own randomness, batched in one call), so
    its gradients estimate :math:`\\nabla_x \\mathbb{E}[f(x)]` instead of following one random
    draw. The examples it returns are meant for the original, random model.

    Reference: Athalye, Engstrom, Ilyas and Kwok, "Synthesizing Robust Adversarial Examples",
    ICML 2018, arXiv:1707.07397; Athalye, Carlini and Wagner, arXiv:1802.00420, section 4.3.

    Parameters
    ----------
    attack:
        Any ``(model, x, y) -> x_adv``, e.g. ``partial(labkit.attacks.pgd, eps=0.1)``.
    n:
        Draws per forward pass (the batch grows ``n``-fold).

    Examples
    --------
    >>> from functools import partial
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> model = preprocess(LabModel(net, input_shape=(1, 2, 2), num_classes=2), GaussianNoise(0.1))
    >>> attack = eot(partial(lk.attacks.pgd, eps=0.1, steps=5), n=8)
    >>> x = torch.rand(4, 1, 2, 2)
    >>> attack(model, x, torch.zeros(4, dtype=torch.long)).shape
    torch.Size([4, 1, 2, 2])
    """
    if not callable(attack):
        raise TypeError(f"attack must be a callable (model, x, y) -> x_adv, got {type(attack).__name__}")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive integer number of draws, got {n!r}")
    draws = int(n)

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if isinstance(model, LabModel):
            averaged: nn.Module = LabModel(
                Expectation(model, draws),
                input_shape=model.input_shape,
                num_classes=model.num_classes,
                value_range=model.value_range,
                class_names=model.class_names,
            ).to(x.device)
            averaged.train(model.training)
        else:
            averaged = Expectation(model, draws)
        return attack(averaged, x, y)

    inner = getattr(attack, "__name__", getattr(getattr(attack, "func", None), "__name__", "attack"))
    run.__name__ = f"eot({inner}, {draws})"
    return run


# --------------------------------------------------------------------------------------------
# Feature squeezing as a detector
# --------------------------------------------------------------------------------------------


def default_squeezers(model: LabModel) -> dict[str, InputTransform]:
    """Squeezers by image type: 2-bit depth for grey images, 5 bits and a 2x2 median for colour.

    Xu et al. used 1 bit and a 2x2 median filter on MNIST (28x28); on the course's 8x8 digits
    both change clean predictions too much (a 2x2 median alone drops clean accuracy to about
    74%), so grey images get 2 bits, which flags about 90% of successful PGD examples at a 5%
    false positive rate. Colour images get Xu et al.'s CIFAR-10 choice.
    """
    channels = model.input_shape[0]
    if channels == 1:
        return {"bits=2": BitDepth(2)}
    return {"bits=5": BitDepth(5), "median 2x2": MedianFilter(2)}


class SqueezeDetector:
    """Feature squeezing detector: flag inputs whose prediction moves when they are squeezed.

    For squeezers :math:`g_1, \\dots, g_k` the score of an input is

    .. math::

        s(x) = \\max_i \\big\\lVert \\mathrm{softmax}(f(x)) - \\mathrm{softmax}(f(g_i(x))) \\big\\rVert_1
        \\in [0, 2],

    and inputs with :math:`s(x) > \\tau` are flagged. :meth:`fit` sets :math:`\\tau` on clean
    inputs so that a fraction ``fpr`` of them is flagged (the false positive rate). Adversarial
    examples sit close to a decision boundary, so squeezing moves their prediction more.

    Reference: Xu, Evans and Qi, NDSS 2018, arXiv:1704.01155.

    Parameters
    ----------
    model:
        The classifier (returning logits).
    squeezers:
        Named transforms; default :func:`default_squeezers`.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> model = LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.rand(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    >>> detector = SqueezeDetector(model).fit(x, fpr=0.1)
    >>> 0.0 <= detector.threshold <= 2.0, detector.detect(x).shape
    (True, torch.Size([64]))
    """

    def __init__(self, model: LabModel, squeezers: Mapping[str, InputTransform] | None = None) -> None:
        self.model = check_lab_model(model)
        chosen = dict(squeezers) if squeezers is not None else default_squeezers(model)
        if not chosen:
            raise ValueError("squeezers is empty; give at least one, e.g. {'bits=1': BitDepth(1)}")
        for name, t in chosen.items():
            if not isinstance(t, InputTransform):
                raise TypeError(f"squeezer {name!r} must be an InputTransform, got {type(t).__name__}")
        self.squeezers = chosen
        self.threshold: float | None = None
        self.fpr: float | None = None

    @torch.no_grad()
    def score(self, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
        """The detection score :math:`s(x)` per input, shape ``(N,)``, in ``[0, 2]``."""
        x = check_images(x, shape=self.model.input_shape, value_range=self.model.value_range)
        if x.shape[0] == 0:
            raise ValueError("x is an empty batch")
        scores = []
        with eval_mode(self.model), self.model.unchecked():
            for i in range(0, x.shape[0], batch_size):
                xb = x[i : i + batch_size]
                p = self.model(xb).softmax(dim=1)
                dist = torch.stack(
                    [(p - self.model(t(xb)).softmax(dim=1)).abs().sum(dim=1) for t in self.squeezers.values()]
                )
                scores.append(dist.amax(dim=0))
        return torch.cat(scores)

    def fit(self, x_clean: torch.Tensor, *, fpr: float = 0.05) -> SqueezeDetector:
        """Set the threshold so that a fraction ``fpr`` of ``x_clean`` is flagged; returns ``self``."""
        if isinstance(fpr, bool) or not isinstance(fpr, numbers.Real) or not 0 < fpr < 1:
            raise ValueError(f"fpr must be a false positive rate in (0, 1), got {fpr!r}")
        scores = self.score(x_clean)
        self.threshold = float(torch.quantile(scores.double(), 1 - float(fpr)))
        self.fpr = float(fpr)
        return self

    def detect(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean ``(N,)``: the inputs flagged as adversarial (needs :meth:`fit` first)."""
        if self.threshold is None:
            raise ValueError("the detector has no threshold yet: call .fit(x_clean, fpr=0.05) first")
        return self.score(x) > self.threshold

    def _repr_markdown_(self) -> str:
        names = ", ".join(self.squeezers)
        thr = "not fitted" if self.threshold is None else f"{self.threshold:.3f} (fpr {self.fpr:.0%})"
        return f"**SqueezeDetector**: squeezers {names}; threshold {thr}"
