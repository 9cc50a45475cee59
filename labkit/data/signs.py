"""Procedurally generated 32x32 traffic signs.

Each class has one template, drawn once with Pillow at high resolution and cached. Every image
is that template under a random pose (rotation, scale, translation, shear, slight perspective),
composited over a random cluttered background, then lit (brightness, contrast, gamma, colour
cast, shadow), blurred and given sensor noise. All of that runs batched in PyTorch and draws its
randomness from a :class:`torch.Generator` only.

``difficulty`` scales every random variation: ``0`` gives the canonical, centred sign on a plain
background (the same image every time), ``1`` is the distribution the course's models train and
test on, and values up to ``2`` give a harder, shifted distribution for stress tests. The same
seed gives the same random draws at any difficulty, so ``difficulty=0.5`` and ``difficulty=1.5``
show the same signs under milder and harsher conditions.

Examples
--------
>>> data = load_signs("test", 20, seed=0)
>>> tuple(data.x.shape), data.x.dtype, data.classes[0]
((20, 3, 32, 32), torch.float32, 'stop')
>>> clean = render(torch.tensor([0]), generator=torch.Generator().manual_seed(0), difficulty=0)
>>> tuple(clean.shape)
(1, 3, 32, 32)
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import Any

import torch
from torch.nn import functional as F

from labkit.data.base import LabData

__all__ = ["CLASSES", "GENERATOR_VERSION", "IMAGE_SIZE", "load_signs", "render"]

#: Bump whenever the images change: it is part of every cached signs model's fingerprint.
GENERATOR_VERSION = 2

#: Class names; ``CLASSES[y]`` names label ``y``. Lessons rely on ``stop`` being 0 and the
#: speed limits being 3, 4 and 5, so only ever append.
CLASSES: list[str] = [
    "stop",
    "yield",
    "no_entry",
    "speed_30",
    "speed_50",
    "speed_80",
    "priority_road",
    "keep_right",
    "turn_left",
    "pedestrians",
]

IMAGE_SIZE = 32
MAX_DIFFICULTY = 2.0
SPLITS = ("train", "test")
OPTIONS = ("difficulty", "background")

# load_signs renders in chunks of this many images, each from its own seeded generator and with
# every class equally often; that makes the first k images of any n the same.
_PER_CLASS_IN_CHUNK = 25
CHUNK = _PER_CLASS_IN_CHUNK * len(CLASSES)

_DRAW_SIZE = 256  # templates are drawn at this size ...
_TEMPLATE_SIZE = 48  # ... and kept at this one
_PLAIN = (0.56, 0.62, 0.68)  # the background at difficulty 0: an overcast sky

_RED = (200, 22, 44)
_WHITE = (246, 246, 240)
_BLACK = (22, 22, 22)
_BLUE = (18, 82, 170)
_YELLOW = (250, 196, 18)
_GREY = (70, 70, 70)


# --------------------------------------------------------------------------- templates
def _draw_template(name: str) -> Any:
    """One sign as an RGBA Pillow image of ``_DRAW_SIZE`` pixels, the sign filling the frame."""
    from PIL import Image, ImageDraw, ImageFont

    size = _DRAW_SIZE
    half = size / 2
    radius = half * 0.97

    def pt(x: float, y: float) -> tuple[float, float]:
        return (half + x * radius, half + y * radius)

    def disc(r: float, fill: tuple[int, int, int]) -> None:
        draw.ellipse([pt(-r, -r), pt(r, r)], fill=fill)

    def polygon(points: list[tuple[float, float]], fill: tuple[int, int, int]) -> None:
        draw.polygon([pt(x, y) for x, y in points], fill=fill)

    def regular(k: int, r: float, start: float) -> list[tuple[float, float]]:
        angles = [start + 2 * math.pi * i / k for i in range(k)]
        return [(r * math.cos(a), r * math.sin(a)) for a in angles]

    def scaled(points: list[tuple[float, float]], factor: float) -> list[tuple[float, float]]:
        cx = sum(p[0] for p in points) / len(points)
        cy = sum(p[1] for p in points) / len(points)
        return [(cx + factor * (x - cx), cy + factor * (y - cy)) for x, y in points]

    def text(s: str, width: float, height: float, fill: tuple[int, int, int], bold: float) -> None:
        # Draw with Pillow's bundled scalable font (no system fonts), then stretch the ink to
        # fill the box (width x height in units of the sign's radius) centred on the sign.
        try:
            font: Any = ImageFont.load_default(size=200)
            stroke = round(200 * bold)
        except TypeError:  # pragma: no cover - Pillow < 10.1 has only a small bitmap font
            font, stroke = ImageFont.load_default(), 0
        left, top, right, bottom = draw.textbbox((0, 0), s, font=font, stroke_width=stroke)
        box = (math.floor(left), math.floor(top), math.ceil(right), math.ceil(bottom))
        ink = Image.new("L", (box[2] - box[0] + 2, box[3] - box[1] + 2), 0)
        ImageDraw.Draw(ink).text(
            (1 - box[0], 1 - box[1]), s, font=font, fill=255, stroke_width=stroke, stroke_fill=255
        )
        ink = ink.crop(ink.getbbox())
        w, h = round(width * radius), round(height * radius)
        ink = ink.resize((w, h), Image.Resampling.LANCZOS)
        image.paste(fill, (round(half - w / 2), round(half - h / 2)), ink)

    def arrow(path: list[tuple[float, float]], width: float, head: float) -> None:
        w = round(width * radius)
        pts = [pt(x, y) for x, y in path]
        draw.line(pts, fill=_WHITE, width=w, joint="curve")
        for p in pts[1:-1]:
            draw.ellipse([p[0] - w / 2, p[1] - w / 2, p[0] + w / 2, p[1] + w / 2], fill=_WHITE)
        (x0, y0), (x1, y1) = path[-2], path[-1]
        length = math.hypot(x1 - x0, y1 - y0)
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        tip = (x1 + ux * head, y1 + uy * head)
        polygon(
            [
                tip,
                (x1 - uy * head * 0.95, y1 + ux * head * 0.95),
                (x1 + uy * head * 0.95, y1 - ux * head * 0.95),
            ],
            _WHITE,
        )

    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    if name == "stop":
        octagon = regular(8, 1.0, math.pi / 8)
        polygon(octagon, _WHITE)
        polygon(scaled(octagon, 0.88), _RED)
        text("STOP", 1.3, 0.46, _WHITE, bold=0.03)
    elif name in ("yield", "pedestrians"):
        sign = 1 if name == "yield" else -1
        triangle = [(0.0, 0.88 * sign), (-1.0, -0.85 * sign), (1.0, -0.85 * sign)]
        polygon(triangle, _RED)
        polygon(scaled(triangle, 0.62), _WHITE)
        if name == "pedestrians":  # a walking figure
            cy = sum(p[1] for p in triangle) / 3 + 0.01
            s = 1.3
            hx, hy, r = 0.02 * s, cy - 0.25 * s, 0.07 * s
            draw.ellipse([pt(hx - r, hy - r), pt(hx + r, hy + r)], fill=_BLACK)
            limb = round(0.075 * s * radius)
            for a, b in [
                ((0.0, -0.15), (-0.03, 0.1)),  # body
                ((-0.03, 0.1), (-0.16, 0.3)),  # back leg
                ((-0.03, 0.1), (0.1, 0.3)),  # front leg
                ((0.0, -0.12), (-0.14, 0.02)),  # back arm
                ((0.0, -0.12), (0.13, 0.0)),  # front arm
            ]:
                draw.line(
                    [pt(a[0] * s, cy + a[1] * s), pt(b[0] * s, cy + b[1] * s)],
                    fill=_BLACK,
                    width=limb,
                    joint="curve",
                )
    elif name == "no_entry":
        disc(1.0, _WHITE)
        disc(0.94, _RED)
        polygon([(-0.64, -0.17), (0.64, -0.17), (0.64, 0.17), (-0.64, 0.17)], _WHITE)
    elif name.startswith("speed_"):
        disc(1.0, _RED)
        disc(0.8, _WHITE)
        text(name.split("_")[1], 1.06, 0.9, _BLACK, bold=0.035)
    elif name == "priority_road":
        diamond = regular(4, 1.0, 0.0)
        polygon(diamond, _GREY)
        polygon(scaled(diamond, 0.94), _WHITE)
        polygon(scaled(diamond, 0.6), _YELLOW)
    elif name == "keep_right":
        disc(1.0, _WHITE)
        disc(0.93, _BLUE)
        arrow([(-0.42, -0.42), (0.12, 0.12)], 0.24, 0.3)
    elif name == "turn_left":
        disc(1.0, _WHITE)
        disc(0.93, _BLUE)
        arrow([(0.3, 0.62), (0.3, -0.12), (-0.2, -0.12)], 0.24, 0.3)
    else:  # pragma: no cover - guarded by CLASSES
        raise ValueError(f"no template for class {name!r}")
    return image


_PAD = 2  # transparent pixels around each template in the atlas


@functools.lru_cache(maxsize=1)
def _cpu_atlas() -> torch.Tensor:
    """All templates side by side as premultiplied RGBA, ``(1, 4, T + 4, classes * (T + 4))``.

    One image holds every class so that a single ``grid_sample`` call renders a mixed batch
    without copying a template per sample; the transparent padding keeps neighbours apart.
    """
    import numpy as np

    tiles = []
    for name in CLASSES:
        array = np.asarray(_draw_template(name), dtype=np.float32) / 255.0
        rgba = torch.from_numpy(array).permute(2, 0, 1)
        rgba = torch.cat([rgba[:3] * rgba[3:], rgba[3:]]).unsqueeze(0)
        small = F.interpolate(rgba, size=(_TEMPLATE_SIZE, _TEMPLATE_SIZE), mode="area")
        tiles.append(F.pad(small, (_PAD, _PAD, _PAD, _PAD)))
    return torch.cat(tiles, dim=3).contiguous()


_DEVICE_ATLAS: dict[torch.device, torch.Tensor] = {}


def _atlas(device: torch.device) -> torch.Tensor:
    if device.type == "cpu":
        return _cpu_atlas()
    if device not in _DEVICE_ATLAS:
        _DEVICE_ATLAS[device] = _cpu_atlas().to(device)
    return _DEVICE_ATLAS[device]


# --------------------------------------------------------------------------- checks
def _check_difficulty(difficulty: Any) -> float:
    if isinstance(difficulty, bool) or not isinstance(difficulty, int | float):
        raise ValueError(f"difficulty must be a number in [0, {MAX_DIFFICULTY}], got {difficulty!r}")
    if not (math.isfinite(difficulty) and 0 <= difficulty <= MAX_DIFFICULTY):
        raise ValueError(
            f"difficulty must be in [0, {MAX_DIFFICULTY}] (0: canonical pose, 1: the standard "
            f"data set), got {difficulty!r}"
        )
    return float(difficulty)


def _check_background(background: Any) -> bool:
    if not isinstance(background, bool):
        raise ValueError(f"background must be True or False, got {background!r}")
    return background


# --------------------------------------------------------------------------- rendering
# Rendering is split in two: `_draw` takes every random number an image needs from the
# generator (the same draws whatever the options), `_compose` turns labels and draws into
# images with per-image arithmetic only. So load_signs can draw chunk by chunk from separate
# generators yet compose thousands of images at once, which keeps the CPU busy with few, large
# operations.

_SHAPES = 6  # background shapes per image: two soft blobs, then ellipses and rectangles
_COMPOSE_BATCH = 2000  # images composed at once (bounds the memory used)


def _pixel_centres(size: int, device: torch.device) -> torch.Tensor:
    return torch.linspace(-1 + 1 / size, 1 - 1 / size, size, device=device)


def _draw(n: int, generator: torch.Generator, size: int) -> dict[str, torch.Tensor]:
    """All random numbers for ``n`` images, in a fixed order."""

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=generator.device)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, device=generator.device)

    return {
        "u": uniform(n, 24),
        "cast": uniform(n, 3),
        "colours": uniform(n, 2 + _SHAPES, 3),
        "shapes": uniform(n, _SHAPES, 6),
        "grain": normal(n, 1, size, size),
        "noise": normal(n, 3, size, size),
    }


def _blur(x: torch.Tensor) -> torch.Tensor:
    """A separable 3x3 binomial blur (sigma about 0.7 pixels) with replicated borders."""
    h = x * 0.5
    h[..., 1:] += x[..., :-1] * 0.25
    h[..., :-1] += x[..., 1:] * 0.25
    h[..., :1] += x[..., :1] * 0.25
    h[..., -1:] += x[..., -1:] * 0.25
    v = h * 0.5
    v[..., 1:, :] += h[..., :-1, :] * 0.25
    v[..., :-1, :] += h[..., 1:, :] * 0.25
    v[..., :1, :] += h[..., :1, :] * 0.25
    v[..., -1:, :] += h[..., -1:, :] * 0.25
    return v


def _background(draws: dict[str, torch.Tensor], centre: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Cluttered backgrounds ``(n, 3, size, size)``: gradient, blobs, shapes, a pole, grain."""
    u, grain = draws["u"][:, 10:17], draws["grain"]
    n, size, device = u.shape[0], grain.shape[-1], u.device
    ys = _pixel_centres(size, device).view(1, size, 1)
    xs = _pixel_centres(size, device).view(1, 1, size)
    colours = draws["colours"]
    grey = colours.mean(-1, keepdim=True)
    colours = grey + 0.55 * (colours - grey)  # muted, natural-looking colours

    # a two-colour linear gradient in a random direction
    angle = u[:, 0].view(n, 1, 1) * 2 * math.pi
    steep = (0.3 + u[:, 1]).view(n, 1, 1)
    ramp = (0.5 + 0.5 * steep * (xs * angle.cos() + ys * angle.sin())).clamp_(0, 1)
    bg = torch.lerp(colours[:, 0].view(n, 3, 1, 1), colours[:, 1].view(n, 3, 1, 1), ramp.unsqueeze(1))

    # two large translucent blobs (foliage, far buildings), then up to four solid ellipses and
    # rectangles with soft edges
    for k in range(_SHAPES):
        p = draws["shapes"][:, k]
        blob = k < 2
        half_w = ((0.3 + 0.7 * p[:, 2]) if blob else (0.08 + 0.6 * p[:, 2] ** 2)).view(n, 1, 1)
        half_h = ((0.3 + 0.7 * p[:, 3]) if blob else (0.08 + 0.6 * p[:, 3] ** 2)).view(n, 1, 1)
        ex = (xs - (2.4 * p[:, 0] - 1.2).view(n, 1, 1)) / half_w
        ey = (ys - (2.4 * p[:, 1] - 1.2).view(n, 1, 1)) / half_h
        dist = torch.maximum(ex.abs(), ey.abs()) if k % 2 and not blob else ex * ex + ey * ey
        if blob:
            sharp, opacity = 1 + p[:, 4], 0.6 * p[:, 5]
        else:
            sharp, opacity = 6 + 12 * p[:, 4], (p[:, 5] < 0.7).float()
        sharp = sharp.view(n, 1, 1)
        mask = torch.addcmul(sharp, dist, sharp, value=-1).clamp_(0, 1) * opacity.view(n, 1, 1)
        bg = torch.lerp(bg, colours[:, 2 + k].view(n, 3, 1, 1), mask.unsqueeze(1))

    # half the signs stand on a grey pole
    half = ((0.05 + 0.05 * u[:, 4]) * radius).view(n, 1, 1)
    across = ((half - (xs - centre[:, 0].view(n, 1, 1)).abs()) * size).clamp_(0, 1)
    below = ((ys - centre[:, 1].view(n, 1, 1)) * size).clamp_(0, 1)
    pole = across * below * (u[:, 3] < 0.5).view(n, 1, 1)
    shade = (0.3 + 0.35 * u[:, 5]).view(n, 1, 1, 1)
    bg = torch.lerp(bg, shade.expand(n, 3, 1, 1), pole.unsqueeze(1))

    # fine texture
    bg.addcmul_(grain, (0.06 * u[:, 6]).view(n, 1, 1, 1))
    return bg.clamp_(0, 1)


def _compose(
    labels: torch.Tensor, draws: dict[str, torch.Tensor], d: float, background: bool
) -> torch.Tensor:
    """Images from labels and random draws; every image depends on its own draws only."""
    u, noise = draws["u"], draws["noise"]
    n, size, device = labels.shape[0], noise.shape[-1], noise.device
    s = 2 * u - 1  # the same numbers, symmetric in [-1, 1]

    # ---- pose: sign space q in [-1, 1]^2 -> image space p in [-1, 1]^2
    radius = (0.84 * torch.exp(d * (0.235 * s[:, 0] - 0.115))).clamp(0.35, 1.0)
    room = (1 - radius + 0.06).clamp_min(0)
    centre = torch.stack([s[:, 1], s[:, 2]], 1) * (d * room).unsqueeze(1)
    angle = s[:, 3] * math.radians(12) * d
    aspect = torch.exp(s[:, 4] * 0.1 * d)
    shear = s[:, 5] * 0.1 * d
    tilt_x, tilt_y = s[:, 6] * 0.2 * d, s[:, 7] * 0.2 * d
    # p = centre + radius * R(angle) @ [[1, shear], [0, 1]] @ diag(aspect, 1 / aspect) @ q / w
    # with the foreshortening w = 1 + tilt . q; below is the inverse map from p back to q.
    cos, sin = angle.cos(), angle.sin()
    a11, a12 = cos * aspect, (cos * shear - sin) / aspect
    a21, a22 = sin * aspect, (sin * shear + cos) / aspect
    det = (a11 * a22 - a12 * a21) * radius
    axis = _pixel_centres(size, device)
    dx = axis.view(1, 1, size) - centre[:, 0].view(n, 1, 1)
    dy = axis.view(1, size, 1) - centre[:, 1].view(n, 1, 1)
    qx = (a22 / det).view(n, 1, 1) * dx - (a12 / det).view(n, 1, 1) * dy
    qy = (a11 / det).view(n, 1, 1) * dy - (a21 / det).view(n, 1, 1) * dx
    w = (1 - tilt_x.view(n, 1, 1) * qx - tilt_y.view(n, 1, 1) * qy).clamp_(min=0.2)
    # into the atlas: tile `label`, clamped inside its transparent margin
    limit = 1 + _PAD / _TEMPLATE_SIZE
    tile = _TEMPLATE_SIZE + 2 * _PAD
    scale_x = _TEMPLATE_SIZE / (tile * len(CLASSES))
    offset_x = (2 * (_PAD + labels * tile) + _TEMPLATE_SIZE) / (tile * len(CLASSES)) - 1
    gx = (qx / w).clamp_(-limit, limit) * scale_x + offset_x.view(n, 1, 1)
    gy = (qy / w).clamp_(-limit, limit) * (_TEMPLATE_SIZE / tile)
    sign = F.grid_sample(
        _atlas(device).expand(n, -1, -1, -1),
        torch.stack([gx, gy], -1),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    rgb, alpha = sign[:, :3], sign[:, 3:]

    # ---- the sign itself: faded paint and its own reflectance
    fade = (1 - 0.3 * d * u[:, 8]).clamp(min=0).view(n, 1, 1, 1)
    gain = torch.exp(0.15 * d * s[:, 9]).view(n, 1, 1, 1)
    rgb = torch.lerp(rgb.mean(1, keepdim=True), rgb, fade).mul_(gain)

    # ---- background
    plain = torch.tensor(_PLAIN, device=device).view(1, 3, 1, 1)
    if background and d > 0:
        clutter = _background(draws, centre, radius)
        bg = clutter if d >= 1 else torch.lerp(plain, clutter, d)
    else:
        bg = plain.expand(n, 3, size, size)
    x = torch.addcmul(rgb, 1 - alpha, bg)

    # ---- lighting: a shadow across the scene, brightness and colour cast, contrast, tone
    heading = u[:, 17].view(n, 1, 1) * 2 * math.pi
    ramp = 0.5 + 0.8 * (axis.view(1, 1, size) * heading.cos() + axis.view(1, size, 1) * heading.sin())
    shadow = 1 - (0.4 * d * u[:, 18]).view(n, 1, 1) * ramp.clamp_(0, 1)
    x.mul_(shadow.unsqueeze(1))
    light = torch.exp(d * (0.5 * s[:, 19] - 0.2)).view(n, 1) * torch.exp(0.1 * d * (2 * draws["cast"] - 1))
    x.mul_(light.view(n, 3, 1, 1))
    contrast = torch.exp(d * (0.35 * s[:, 20] - 0.2)).view(n, 1, 1, 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = torch.addcmul(mean * (1 - contrast), x, contrast)
    if d > 0:  # a gamma-like tone curve x / (1 + bend * (1 - x)), cheaper than a power
        bend = (torch.exp(0.6 * d * s[:, 21]) - 1).view(n, 1, 1, 1)
        x.clamp_(0, 1)
        x = x / torch.addcmul(1 + bend, x, bend, value=-1)

    # ---- optics and sensor: blur, noise, 8-bit quantisation
    if d > 0:
        blur = (1.2 * d * u[:, 22]).view(n, 1, 1, 1)
        x = torch.lerp(x, _blur(x), blur.clamp(0, 1))
        if d > 1 / 1.2:
            x = torch.lerp(x, _blur(x), (blur - 1).clamp(0, 1))
        x.addcmul_(noise, (0.045 * d * u[:, 23]).view(n, 1, 1, 1))
    return x.clamp_(0, 1).mul_(255).round_().div_(255)


def _compose_all(
    labels: torch.Tensor, draws: dict[str, torch.Tensor], d: float, background: bool
) -> torch.Tensor:
    parts = []
    for i in range(0, labels.shape[0], _COMPOSE_BATCH):
        part = {k: v[i : i + _COMPOSE_BATCH] for k, v in draws.items()}
        parts.append(_compose(labels[i : i + _COMPOSE_BATCH], part, d, background))
    return torch.cat(parts)


def render(
    labels: torch.Tensor,
    *,
    generator: torch.Generator,
    difficulty: float = 1.0,
    background: bool = True,
    size: int = IMAGE_SIZE,
) -> torch.Tensor:
    """Render traffic signs of the given classes under random viewing conditions.

    Every sign is its class template under a random pose (rotation up to 12 degrees, scale,
    translation, shear, slight perspective), composited over a random background (gradient,
    blobs, shapes, sometimes a pole), then lit (faded paint, shadow, brightness, colour cast,
    contrast, a gamma-like tone curve), blurred, given Gaussian sensor noise and quantised to
    8 bits. Each of those variations is scaled by ``difficulty``.

    Parameters
    ----------
    labels:
        Integer class indices into :data:`CLASSES`, shape ``(n,)``.
    generator:
        The only source of randomness; images are rendered on its device. The same labels and
        generator state give bit-identical images on the same machine, and the random draws
        do not depend on ``difficulty`` or ``background``.
    difficulty:
        ``0``: the canonical, centred sign on a plain background with no lighting changes or
        noise (every render of a class is the same image). ``1``: the standard data set.
        Up to ``2``: stronger variation of every kind, for stress tests.
    background:
        Random cluttered backgrounds (True) or a plain grey-blue one (False).
    size:
        Side of the square output images in pixels (at least 8).

    Returns
    -------
    torch.Tensor
        Images ``(n, 3, size, size)``, float32 in ``[0, 1]``, on the generator's device.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> stop = render(torch.tensor([CLASSES.index("stop")] * 2), generator=g, difficulty=0)
    >>> bool(torch.equal(stop[0], stop[1]))
    True
    """
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
        raise ValueError("labels must be a 1-D tensor of class indices")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(CLASSES)):
        raise ValueError(
            f"labels must lie in [0, {len(CLASSES) - 1}] (one of {len(CLASSES)} classes), "
            f"got values from {int(labels.min())} to {int(labels.max())}"
        )
    d = _check_difficulty(difficulty)
    background = _check_background(background)
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer of at least 8 pixels, got {size!r}")
    device = generator.device
    labels = labels.to(device=device, dtype=torch.long)
    if labels.shape[0] == 0:
        return torch.zeros(0, 3, size, size, device=device)
    return _compose_all(labels, _draw(labels.shape[0], generator, size), d, background)


# --------------------------------------------------------------------------- data sets
def _chunk_seed(seed: int, split: str, chunk: int) -> int:
    key = f"labkit.signs|{split}|{seed}|{chunk}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def load_signs(split: str, n: int, *, seed: int = 0, **options: Any) -> LabData:
    """A split of the generated traffic-sign data set.

    The data come in chunks of :data:`CHUNK` images; each chunk draws its labels and random
    numbers from its own generator, seeded from ``(seed, split, chunk)``, and holds every class
    equally often in random order. So train and test never share a random stream, the same
    arguments always give bit-identical data, classes are balanced, and the first ``k`` images
    of a larger ``n`` are those of ``n=k``.

    Parameters
    ----------
    split:
        ``"train"`` or ``"test"``.
    n:
        Number of images, a positive integer.
    seed:
        Selects the random stream.
    **options:
        ``difficulty`` (a number in ``[0, 2]``, default 1) and ``background`` (bool, default
        True), passed on to :func:`render`.

    Returns
    -------
    LabData
        ``x`` float32 ``(n, 3, 32, 32)`` in ``[0, 1]``, ``y`` int64, ``classes`` :data:`CLASSES`
        and the generator settings in ``info``.

    Examples
    --------
    >>> a = load_signs("train", 250, seed=1)
    >>> b = load_signs("train", 10, seed=1)
    >>> bool(torch.equal(a.x[:10], b.x)), a.class_counts()[:3]
    (True, [25, 25, 25])
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for signs; "
            f"known options: {', '.join(OPTIONS)}"
        )
    difficulty = _check_difficulty(options.get("difficulty", 1.0))
    background = _check_background(options.get("background", True))

    base = torch.arange(len(CLASSES)).repeat(_PER_CLASS_IN_CHUNK)
    chunks = math.ceil(n / CHUNK)
    per_batch = max(1, _COMPOSE_BATCH // CHUNK)
    x = torch.empty(n, 3, IMAGE_SIZE, IMAGE_SIZE)
    ys = []
    for first in range(0, chunks, per_batch):
        labels, draws = [], []
        for chunk in range(first, min(first + per_batch, chunks)):
            g = torch.Generator().manual_seed(_chunk_seed(seed, split, chunk))
            labels.append(base[torch.randperm(CHUNK, generator=g)])
            draws.append(_draw(CHUNK, g, IMAGE_SIZE))
        keep = min(n - first * CHUNK, len(labels) * CHUNK)
        y = torch.cat(labels)[:keep]
        drawn = {k: torch.cat([c[k] for c in draws])[:keep] for k in draws[0]}
        x[first * CHUNK : first * CHUNK + keep] = _compose(y, drawn, difficulty, background)
        ys.append(y)
    return LabData(
        name="signs",
        split=split,
        x=x,
        y=torch.cat(ys),
        classes=list(CLASSES),
        info={
            "generator": "labkit.data.signs",
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "difficulty": difficulty,
            "background": background,
            "image_size": IMAGE_SIZE,
        },
    )
