"""Common image corruptions at five severities, batched in PyTorch.

Fifteen corruptions in the spirit of ImageNet-C / CIFAR-10-C (Hendrycks and Dietterich, 2019,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations",
arXiv:1903.12261), grouped as they group them:

=================  ==========  ==============================================================
name               family      what severity 1 .. 5 changes
=================  ==========  ==============================================================
gaussian_noise     noise       additive N(0, sigma^2), sigma 0.04 .. 0.16
shot_noise         noise       Poisson photon noise, photons per unit 60 .. 4
impulse_noise      noise       salt-and-pepper, 1 % .. 12 % of values
speckle_noise      noise       multiplicative x + x * N(0, c^2), c 0.06 .. 0.35
gaussian_blur      blur        Gaussian blur, sigma 0.5 .. 1.5 pixels (at 32 px)
defocus_blur       blur        disk kernel (bilinear splat), radius 0.75 .. 2.5 px (at 32 px)
brightness         weather     additive brightness +0.1 .. +0.5
contrast           weather     contrast towards the image mean, factor 0.75 .. 0.15
fog                weather     haze: x t + A (1 - t), smooth random transmission, 0.2 .. 0.8
pixelate           digital     mosaic of 80 % .. 30 % as many blocks as pixels per side
jpeg               digital     JPEG compression, quality 80 .. 8 (torch DCT, see :func:`jpeg`)
occlusion          digital     a random solid square, 12 % .. 62 % of the side
missing_pixels     digital     dead pixels set to 0, 1 % .. 20 % of the pixels
rotation           geometric   rotation by +/- 5 .. 40 degrees about the centre
elastic            geometric   smooth random displacement field, 0.5 .. 2.5 pixels RMS (at 32 px)
=================  ==========  ==============================================================

Parameters given "at 32 px" scale with the image side, so an 8x8 digit gets the same relative
blur as a 32x32 sign. The noise, blur and contrast levels start from the CIFAR-10-C constants
and are stretched a little towards the ImageNet-C ones so that severity 5 is clearly harmful
on 32x32 images.

Every corruption takes a batch ``(N, C, H, W)`` of floats in ``[0, 1]`` on any device, never
modifies it, and returns a new tensor of the same shape, dtype and device, clipped to
``[0, 1]``. Randomness comes only from the optional ``generator``: the same seed gives the
same corrupted images.

Examples
--------
>>> x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
>>> y = corrupt(x, "gaussian_noise", 3, generator=torch.Generator().manual_seed(1))
>>> y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
True
>>> sorted(CORRUPTIONS)[:3]
['brightness', 'contrast', 'defocus_blur']
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from labkit.jpeg import jpeg_roundtrip
from labkit.stress._random import check_generator, normal, poisson, uniform
from labkit.utils import check_images

__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "Corruption",
    "check_severity",
    "corrupt",
    "jpeg",
]

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

CorruptionFn = Callable[[torch.Tensor, int, "torch.Generator | None"], torch.Tensor]


@dataclass(frozen=True)
class Corruption:
    """One corruption of the registry.

    Attributes
    ----------
    name:
        Its key in :data:`CORRUPTIONS`.
    family:
        ``noise``, ``blur``, ``weather``, ``digital`` or ``geometric``.
    description:
        One line for tables and lessons.
    levels:
        The parameter at severities 1..5 (its meaning is in ``description``).
    fn:
        ``(x, severity, generator) -> x_corrupted`` on a working-precision copy of ``x``.
    random:
        Whether the corruption draws random numbers (deterministic ones ignore ``generator``).
    """

    name: str
    family: str
    description: str
    levels: tuple[float, ...]
    fn: CorruptionFn
    random: bool = True

    def __call__(
        self, x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return corrupt(x, self.name, severity, generator=generator)


# --------------------------------------------------------------------------- helpers
def _scale(x: torch.Tensor) -> float:
    """Pixel lengths are given for 32x32 images; this scales them to ``x``'s size."""
    return min(x.shape[-2], x.shape[-1]) / 32.0


def _gaussian_kernel1d(sigma: float, like: torch.Tensor) -> torch.Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, device=like.device, dtype=like.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _separable_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of every channel, replicated borders."""
    if sigma <= 0:
        return x.clone()
    k = _gaussian_kernel1d(sigma, x)
    r = (k.numel() - 1) // 2
    n, c, h, w = x.shape
    flat = x.reshape(n * c, 1, h, w)
    flat = F.conv2d(F.pad(flat, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return flat.reshape(n, c, h, w)


def _sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _identity_grid(x: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype).expand(n, 2, 3)
    return F.affine_grid(theta, [n, 1, h, w], align_corners=False)


# --------------------------------------------------------------------------- noise
_GAUSSIAN = (0.04, 0.06, 0.08, 0.12, 0.16)
_SHOT = (60.0, 25.0, 12.0, 7.0, 4.0)
_IMPULSE = (0.01, 0.03, 0.05, 0.08, 0.12)
_SPECKLE = (0.06, 0.1, 0.15, 0.25, 0.35)


def _gaussian_noise(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    return x + _GAUSSIAN[s - 1] * normal(tuple(x.shape), x, g)


def _shot_noise(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    c = _SHOT[s - 1]
    return poisson(x * c, g) / c


def _impulse_noise(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    amount = _IMPULSE[s - 1]
    u = uniform(tuple(x.shape), x, g)
    out = torch.where(u < amount / 2, torch.zeros_like(x), x)
    return torch.where(u > 1 - amount / 2, torch.ones_like(x), out)


def _speckle_noise(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    return x + x * _SPECKLE[s - 1] * normal(tuple(x.shape), x, g)


# --------------------------------------------------------------------------- blur
_BLUR_SIGMA = (0.5, 0.7, 0.9, 1.2, 1.5)
_DEFOCUS_RADIUS = (0.75, 1.0, 1.5, 2.0, 2.5)


def _gaussian_blur(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    return _separable_blur(x, _BLUR_SIGMA[s - 1] * _scale(x))


def _disk_kernel(radius: float, like: torch.Tensor) -> torch.Tensor:
    """Defocus kernel: the mean of bilinear shifts by every offset in a disk of ``radius`` px.

    Splatting a fine grid of disk points onto the pixel grid with bilinear weights keeps the
    kernel continuous in the radius, so a sub-pixel defocus on a tiny image still blurs a
    little more at each severity (a plain pixel-centre disk would be the identity there).
    """
    half = math.ceil(radius) + 1
    t = torch.linspace(-radius, radius, 41, device=like.device, dtype=like.dtype)
    uy, ux = torch.meshgrid(t, t, indexing="ij")
    inside = ux**2 + uy**2 <= radius**2 + 1e-12
    ux, uy = ux[inside], uy[inside]
    offsets = torch.arange(-half, half + 1, device=like.device, dtype=like.dtype)
    wx = (1 - (offsets.view(1, -1) - ux.view(-1, 1)).abs()).clamp(min=0)
    wy = (1 - (offsets.view(1, -1) - uy.view(-1, 1)).abs()).clamp(min=0)
    kernel = (wy.unsqueeze(2) * wx.unsqueeze(1)).mean(0)
    return kernel / kernel.sum()


def _defocus_blur(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    kernel = _disk_kernel(_DEFOCUS_RADIUS[s - 1] * _scale(x), x)
    half = (kernel.shape[-1] - 1) // 2
    n, c, h, w = x.shape
    flat = F.pad(x.reshape(n * c, 1, h, w), (half, half, half, half), mode="replicate")
    return F.conv2d(flat, kernel.view(1, 1, *kernel.shape)).reshape(n, c, h, w)


# --------------------------------------------------------------------------- weather
_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
_CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
_FOG = (0.2, 0.35, 0.5, 0.65, 0.8)


def _brightness(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    return x + _BRIGHTNESS[s - 1]


def _contrast(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _CONTRAST[s - 1] + mean


def _fog(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    n, _, h, w = x.shape
    density = _FOG[s - 1]
    coarse = uniform((n, 1, 4, 4), x, g)  # low-frequency patches of thicker and thinner haze
    smooth = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    airlight = 0.75 + 0.2 * uniform((n, 1, 1, 1), x, g)  # light grey to white
    transmission = 1.0 - density * (0.6 + 0.4 * smooth)
    return x * transmission + airlight * (1.0 - transmission)


# --------------------------------------------------------------------------- digital
_PIXELATE = (0.8, 0.6, 0.5, 0.4, 0.3)
_JPEG_QUALITY = (80, 50, 30, 15, 8)
_OCCLUSION = (0.12, 0.25, 0.37, 0.5, 0.62)
_MISSING = (0.01, 0.03, 0.06, 0.1, 0.2)


def _blocks(size: int, fraction: float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Membership of each of ``size`` pixels in ``round(size * fraction)`` blocks (nearest)."""
    k = max(1, round(size * fraction))
    idx = torch.arange(size, device=like.device) * k // size
    member = F.one_hot(idx, k).T.to(like.dtype)  # (k, size)
    return member / member.sum(1, keepdim=True), member


def _pixelate(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    # A mosaic: every block of pixels takes its mean. Blocks follow nearest-neighbour
    # up-sampling exactly, so no pixel is shifted (area down + nearest up misaligns them).
    mean_h, member_h = _blocks(x.shape[-2], _PIXELATE[s - 1], x)
    mean_w, member_w = _blocks(x.shape[-1], _PIXELATE[s - 1], x)
    return member_h.T @ (mean_h @ x @ mean_w.T) @ member_w


def _occlusion(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    n, c, h, w = x.shape
    side = max(1, round(_OCCLUSION[s - 1] * min(h, w)))
    corner = uniform((n, 2), x, g)
    top = (corner[:, 0] * (h - side + 1)).floor().clamp(max=h - side).view(n, 1, 1)
    left = (corner[:, 1] * (w - side + 1)).floor().clamp(max=w - side).view(n, 1, 1)
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    colour = uniform((n, c, 1, 1), x, g)
    return torch.where(inside.unsqueeze(1), colour.expand_as(x), x)


def _missing_pixels(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    n, _, h, w = x.shape
    dead = uniform((n, 1, h, w), x, g) < _MISSING[s - 1]
    return x.masked_fill(dead, 0.0)


def jpeg(x: torch.Tensor, *, quality: int) -> torch.Tensor:
    """JPEG-compress a batch in PyTorch: 8x8 block DCT, quantisation, inverse DCT.

    This is baseline JPEG's lossy step without entropy coding (which is lossless): RGB to
    YCbCr (JFIF), level shift by 128, the orthonormal 8x8 DCT-II, quantisation with the
    standard luminance and chrominance tables scaled by ``quality`` as libjpeg does, the
    inverse, and rounding to 8-bit pixels. Chroma is not subsampled (libjpeg's 4:4:4 mode), so
    artefacts are slightly milder in colour than a default 4:2:0 JPEG. Batched, on ``x``'s
    device, no Pillow round trip; single-channel images use the luminance table.

    Parameters
    ----------
    x:
        Images ``(N, C, H, W)`` in ``[0, 1]``; sides need not be multiples of 8 (edges are
        replicated, then cropped).
    quality:
        1 (worst) to 100 (nearly lossless), as in libjpeg.

    Examples
    --------
    >>> x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> err_90 = float((jpeg(x, quality=90) - x).abs().mean())
    >>> err_10 = float((jpeg(x, quality=10) - x).abs().mean())
    >>> err_90 < err_10
    True
    """
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer in 1..100, got {quality!r}")
    x = _checked(x)
    work = x.to(torch.promote_types(x.dtype, torch.float32))
    return _jpeg_work(work, quality).clamp(0, 1).to(x.dtype)


def _jpeg_work(x: torch.Tensor, quality: int) -> torch.Tensor:
    return torch.round(jpeg_roundtrip(x, quality).clamp(0, 255)) / 255.0


def _jpeg(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    return _jpeg_work(x, _JPEG_QUALITY[s - 1])


# --------------------------------------------------------------------------- geometric
_ROTATION = (5.0, 10.0, 15.0, 25.0, 40.0)
_ELASTIC = (0.5, 1.0, 1.5, 2.0, 2.5)
_ELASTIC_SMOOTH = 3.0  # sigma of the displacement field, in pixels at 32 px


def _rotation(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    n = x.shape[0]
    sign = torch.where(uniform((n,), x, g) < 0.5, -1.0, 1.0).to(x.dtype)
    angle = sign * math.radians(_ROTATION[s - 1])
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, *x.shape[-2:]], align_corners=False)
    return _sample(x, grid)


def _elastic(x: torch.Tensor, s: int, g: torch.Generator | None) -> torch.Tensor:
    """Elastic distortion after Simard et al. (2003): a smoothed random displacement field."""
    n, _, h, w = x.shape
    scale = _scale(x)
    field = _separable_blur(normal((n, 2, h, w), x, g), max(0.5, _ELASTIC_SMOOTH * scale))
    rms = field.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-8)
    pixels = field / rms * (_ELASTIC[s - 1] * scale)  # displacement in pixels, given RMS
    to_grid = torch.tensor([2.0 / w, 2.0 / h], device=x.device, dtype=x.dtype).view(1, 2, 1, 1)
    grid = _identity_grid(x) + (pixels * to_grid).permute(0, 2, 3, 1)
    return _sample(x, grid)


# --------------------------------------------------------------------------- registry
def _entry(
    name: str, family: str, description: str, levels: tuple[float, ...], fn: CorruptionFn, random: bool
) -> tuple[str, Corruption]:
    return name, Corruption(name, family, description, tuple(float(v) for v in levels), fn, random)


CORRUPTIONS: dict[str, Corruption] = dict(
    [
        _entry(
            "gaussian_noise", "noise", "additive Gaussian noise (sigma)", _GAUSSIAN, _gaussian_noise, True
        ),
        _entry("shot_noise", "noise", "Poisson photon noise (photons per unit)", _SHOT, _shot_noise, True),
        _entry("impulse_noise", "noise", "salt-and-pepper (fraction)", _IMPULSE, _impulse_noise, True),
        _entry("speckle_noise", "noise", "multiplicative noise (sigma)", _SPECKLE, _speckle_noise, True),
        _entry(
            "gaussian_blur", "blur", "Gaussian blur (sigma, px at 32)", _BLUR_SIGMA, _gaussian_blur, False
        ),
        _entry("defocus_blur", "blur", "disk blur (radius, px at 32)", _DEFOCUS_RADIUS, _defocus_blur, False),
        _entry("brightness", "weather", "brightness shift (added)", _BRIGHTNESS, _brightness, False),
        _entry("contrast", "weather", "contrast (factor)", _CONTRAST, _contrast, False),
        _entry("fog", "weather", "haze (density)", _FOG, _fog, True),
        _entry("pixelate", "digital", "mosaic (blocks per pixel)", _PIXELATE, _pixelate, False),
        _entry("jpeg", "digital", "JPEG compression (quality)", _JPEG_QUALITY, _jpeg, False),
        _entry("occlusion", "digital", "solid square (fraction of side)", _OCCLUSION, _occlusion, True),
        _entry("missing_pixels", "digital", "dead pixels (fraction)", _MISSING, _missing_pixels, True),
        _entry("rotation", "geometric", "rotation (degrees)", _ROTATION, _rotation, True),
        _entry("elastic", "geometric", "elastic warp (RMS px at 32)", _ELASTIC, _elastic, True),
    ]
)
"""Every corruption by name; ``CORRUPTIONS[name].family`` groups them as ImageNet-C does."""


# --------------------------------------------------------------------------- entry point
def check_severity(severity: object) -> int:
    """Return ``severity`` if it is an integer in 1..5, else raise ``ValueError``."""
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer from 1 (mild) to 5 (harsh), got {severity!r}")
    return int(severity)


def _checked(x: object) -> torch.Tensor:
    x = check_images(x, name="x", value_range=(0.0, 1.0))
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch; pass at least one image")
    return x


def corrupt(
    x: torch.Tensor, name: str, severity: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` to a batch of images.

    Parameters
    ----------
    x:
        Images ``(N, C, H, W)``, floating point, values in ``[0, 1]``, on any device. Never
        modified.
    name:
        A key of :data:`CORRUPTIONS` (see the module docstring for the table).
    severity:
        1 (mild) to 5 (harsh).
    generator:
        Source of randomness; the same seed gives the same corruption. ``None`` draws from
        PyTorch's global generator. A CPU generator works for tensors on any device.

    Returns
    -------
    torch.Tensor
        A new tensor with the shape, dtype and device of ``x``, values in ``[0, 1]``.

    Raises
    ------
    ValueError
        For an unknown ``name``, a severity outside 1..5, an empty batch or values outside
        ``[0, 1]``.
    TypeError
        If ``x`` is not a floating-point tensor or ``generator`` is not a generator.

    References
    ----------
    Hendrycks and Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
    Perturbations", ICLR 2019, arXiv:1903.12261.

    Examples
    --------
    >>> x = torch.full((1, 1, 8, 8), 0.5)
    >>> corrupt(x, "contrast", 5).std().item() == 0.0
    True
    >>> corrupt(x, "snow", 1)
    Traceback (most recent call last):
    ...
    ValueError: unknown corruption 'snow'; choose one of gaussian_noise, shot_noise, ...
    """
    if not isinstance(name, str) or name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    severity = check_severity(severity)
    generator = check_generator(generator)
    x = _checked(x)
    work = x.to(torch.promote_types(x.dtype, torch.float32))
    out = CORRUPTIONS[name].fn(work, severity, generator)
    return out.clamp(0.0, 1.0).to(x.dtype)
