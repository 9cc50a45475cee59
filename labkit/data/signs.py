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
GENERATOR_VERSION = 1

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
_TEMPLATE_SIZE = 64  # ... and kept at this one
_SUPERSAMPLE = 2  # signs are resampled at twice the output size, then averaged down
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

    def text(
        s: str, width: float, height: float, fill: tuple[int, int, int], bold: float, y: float = 0
    ) -> None:
        probe = ImageFont.load_default(size=100)
        stroke = round(100 * bold)
        box = draw.textbbox((0, 0), s, font=probe, anchor="mm", stroke_width=stroke)
        scale = min(width * radius / (box[2] - box[0]), height * radius / (box[3] - box[1]))
        font = ImageFont.load_default(size=max(1, round(100 * scale)))
        stroke = max(1, round(100 * scale * bold))
        box = draw.textbbox(pt(0, y), s, font=font, anchor="mm", stroke_width=stroke)
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        anchor = pt(0, y)
        at = (2 * anchor[0] - centre[0], 2 * anchor[1] - centre[1])
        draw.text(at, s, font=font, anchor="mm", fill=fill, stroke_width=stroke, stroke_fill=fill)

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
            [tip, (x1 - uy * head * 0.95, y1 + ux * head * 0.95), (x1 + uy * head * 0.95, y1 - ux * head * 0.95)],
            _WHITE,
        )

    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    if name == "stop":
        octagon = regular(8, 1.0, math.pi / 8)
        polygon(octagon, _WHITE)
        polygon(scaled(octagon, 0.88), _RED)
        text("STOP", 1.36, 0.5, _WHITE, bold=0.05)
    elif name in ("yield", "pedestrians"):
        sign = 1 if name == "yield" else -1
        triangle = [(0.0, 0.88 * sign), (-1.0, -0.85 * sign), (1.0, -0.85 * sign)]
        polygon(triangle, _RED)
        inner = scaled(triangle, 0.58)
        polygon(inner, _WHITE)
        if name == "pedestrians":
            cy = sum(p[1] for p in triangle) / 3 + 0.06
            s = 0.95
            disc_at = (0.02 * s, cy - 0.27 * s)
            r = 0.075 * s
            draw.ellipse([pt(disc_at[0] - r, disc_at[1] - r), pt(disc_at[0] + r, disc_at[1] + r)], fill=_BLACK)
            limb = round(0.07 * s * radius)
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
        text(name.split("_")[1], 1.2, 0.86, _BLACK, bold=0.07)
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


@functools.lru_cache(maxsize=1)
def _cpu_templates() -> torch.Tensor:
    """All class templates as premultiplied RGBA, ``(classes, 4, T, T)`` float32 on the CPU."""
    import numpy as np

    images = []
    for name in CLASSES:
        array = np.asarray(_draw_template(name), dtype=np.float32) / 255.0
        rgba = torch.from_numpy(array).permute(2, 0, 1)
        rgba = torch.cat([rgba[:3] * rgba[3:], rgba[3:]])
        images.append(rgba)
    stack = torch.stack(images)
    return F.interpolate(stack, size=(_TEMPLATE_SIZE, _TEMPLATE_SIZE), mode="area").contiguous()


_DEVICE_TEMPLATES: dict[torch.device, torch.Tensor] = {}


def _templates(device: torch.device) -> torch.Tensor:
    if device.type == "cpu":
        return _cpu_templates()
    if device not in _DEVICE_TEMPLATES:
        _DEVICE_TEMPLATES[device] = _cpu_templates().to(device)
    return _DEVICE_TEMPLATES[device]


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
def _pixel_centres(size: int, device: torch.device) -> torch.Tensor:
    return torch.linspace(-1 + 1 / size, 1 - 1 / size, size, device=device)


def _blur(x: torch.Tensor) -> torch.Tensor:
    """A 3x3 binomial blur (sigma about 0.7 pixels) with replicated borders."""
    n, c, h, w = x.shape
    k = torch.tensor([0.25, 0.5, 0.25], device=x.device, dtype=x.dtype)
    flat = F.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    flat = F.conv2d(flat, k.view(1, 1, 1, 3))
    flat = F.conv2d(flat, k.view(1, 1, 3, 1))
    return flat.view(n, c, h, w)


def _background(
    u: torch.Tensor, g: torch.Generator, size: int, centre: torch.Tensor, radius: torch.Tensor
) -> torch.Tensor:
    """Cluttered backgrounds ``(n, 3, size, size)``: gradient, blotches, shapes, a pole, grain."""
    n, device = u.shape[0], u.device
    ys = _pixel_centres(size, device).view(1, size, 1)
    xs = _pixel_centres(size, device).view(1, 1, size)

    def colours(k: int, saturation: float) -> torch.Tensor:
        c = torch.rand(n, k, 3, generator=g, device=device)
        grey = c.mean(-1, keepdim=True)
        return grey + saturation * (c - grey)

    # a two-colour linear gradient in a random direction
    ends = colours(2, 0.6)
    angle = u[:, 0] * 2 * math.pi
    ramp = xs * angle.cos().view(n, 1, 1) + ys * angle.sin().view(n, 1, 1)
    ramp = (0.5 + 0.5 * ramp * (0.3 + u[:, 1].view(n, 1, 1))).clamp(0, 1).unsqueeze(1)
    bg = ends[:, 0].view(n, 3, 1, 1) + (ends[:, 1] - ends[:, 0]).view(n, 3, 1, 1) * ramp

    # low-frequency colour blotches (foliage, buildings far away)
    blotch = torch.rand(n, 3, 5, 5, generator=g, device=device) - 0.5
    blotch = F.interpolate(blotch, size=(size, size), mode="bicubic", align_corners=False)
    bg = bg + blotch * (0.5 * u[:, 2]).view(n, 1, 1, 1)

    # a few solid shapes: rotated rectangles and ellipses, soft-edged
    shapes = 4
    sp = torch.rand(n, shapes, 8, generator=g, device=device)
    fills = colours(shapes, 0.8)
    for k in range(shapes):
        p = sp[:, k]
        cx = (p[:, 0] * 2.4 - 1.2).view(n, 1, 1)
        cy = (p[:, 1] * 2.4 - 1.2).view(n, 1, 1)
        a = (p[:, 2] * math.pi).view(n, 1, 1)
        half_w = (0.08 + 0.6 * p[:, 3] ** 2).view(n, 1, 1)
        half_h = (0.08 + 0.6 * p[:, 4] ** 2).view(n, 1, 1)
        dx, dy = xs - cx, ys - cy
        rx = (dx * a.cos() + dy * a.sin()) / half_w
        ry = (dy * a.cos() - dx * a.sin()) / half_h
        is_rect = (p[:, 5] < 0.5).view(n, 1, 1)
        dist = torch.where(is_rect, torch.maximum(rx.abs(), ry.abs()), (rx * rx + ry * ry).sqrt())
        present = (p[:, 6] < 0.7).view(n, 1, 1)
        mask = ((1 - dist) * (4 + 12 * p[:, 7].view(n, 1, 1))).clamp(0, 1) * present
        mask = mask.unsqueeze(1)
        bg = bg + mask * (fills[:, k].view(n, 3, 1, 1) - bg)

    # half the signs stand on a grey pole
    pole_on = (u[:, 3] < 0.5).view(n, 1, 1)
    pole_half = (0.05 + 0.05 * u[:, 4]).view(n, 1, 1) * radius.view(n, 1, 1)
    px = centre[:, 0].view(n, 1, 1)
    py = centre[:, 1].view(n, 1, 1)
    pole = ((pole_half - (xs - px).abs()) * size).clamp(0, 1) * (ys > py) * pole_on
    shade = (0.35 + 0.35 * u[:, 5]).view(n, 1, 1, 1)
    bg = bg + pole.unsqueeze(1) * (shade - bg)

    # fine texture
    grain = torch.randn(n, 1, size, size, generator=g, device=device)
    bg = bg + grain * (0.06 * u[:, 6]).view(n, 1, 1, 1)
    return bg.clamp(0, 1)


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
    blotches, shapes, sometimes a pole), then lit (shadow, brightness, contrast, gamma, colour
    cast), blurred and given Gaussian sensor noise, and finally quantised to 8 bits. Each of
    those variations is scaled by ``difficulty``.

    Parameters
    ----------
    labels:
        Integer class indices into :data:`CLASSES`, shape ``(n,)``.
    generator:
        The only source of randomness; images are rendered on its device. The same labels and
        generator state give bit-identical images on the same machine.
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
        Images ``(n, 3, size, size)``, float32 in ``[0, 1]``.

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
    n = labels.shape[0]
    if n == 0:
        return torch.zeros(0, 3, size, size, device=device)

    # Every draw happens whatever the difficulty, so one seed gives the same scene throughout.
    u = torch.rand(n, 24, generator=generator, device=device)
    s = 2 * u - 1  # symmetric in [-1, 1]

    # ---- pose: sign space q in [-1, 1]^2 -> image space p in [-1, 1]^2
    radius = (0.84 * torch.exp(d * (0.235 * s[:, 0] - 0.115))).clamp(0.35, 1.0)
    room = (1 - radius + 0.06).clamp_min(0)
    centre = torch.stack([s[:, 1], s[:, 2]], 1) * (d * room).unsqueeze(1)
    angle = s[:, 3] * math.radians(12) * d
    aspect = torch.exp(s[:, 4] * 0.12 * d)
    shear = s[:, 5] * 0.12 * d
    tilt = torch.stack([s[:, 6], s[:, 7]], 1) * 0.2 * d
    cos, sin = angle.cos(), angle.sin()
    # linear part L = R(angle) @ [[1, shear], [0, 1]] @ diag(aspect, 1 / aspect) * radius
    a11 = cos * aspect
    a12 = (cos * shear - sin) / aspect
    a21 = sin * aspect
    a22 = (sin * shear + cos) / aspect
    lin = torch.stack([a11, a12, a21, a22], 1).view(n, 2, 2) * radius.view(n, 1, 1)
    inv = torch.linalg.inv(lin)

    big = size * _SUPERSAMPLE
    axis = _pixel_centres(big, device)
    py, px = torch.meshgrid(axis, axis, indexing="ij")
    p = torch.stack([px, py], -1).view(1, -1, 2) - centre.view(n, 1, 2)
    q = torch.einsum("nij,npj->npi", inv, p)
    # undo the perspective foreshortening q' = q / (1 + tilt . q)
    w = 1 - (q * tilt.view(n, 1, 2)).sum(-1, keepdim=True)
    q = q / w.clamp_min(0.2)
    q = q.view(n, big, big, 2)
    sign = F.grid_sample(
        _templates(device)[labels], q, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    sign = F.avg_pool2d(sign, _SUPERSAMPLE) if _SUPERSAMPLE > 1 else sign
    rgb, alpha = sign[:, :3], sign[:, 3:]

    # ---- the sign itself: faded paint, its own reflectance
    fade = 1 - 0.3 * d * u[:, 8].view(n, 1, 1, 1)
    grey = rgb.mean(1, keepdim=True)
    rgb = (grey + fade.clamp_min(0) * (rgb - grey)) * torch.exp(0.15 * d * s[:, 9]).view(n, 1, 1, 1)

    # ---- background
    plain = torch.tensor(_PLAIN, device=device).view(1, 3, 1, 1)
    if background and d > 0:
        clutter = _background(u[:, 10:17], generator, size, centre, radius)
        bg = plain + min(d, 1.0) * (clutter - plain)
    else:
        bg = plain.expand(n, 3, size, size)
    x = rgb + (1 - alpha) * bg

    # ---- lighting: a shadow across the scene, brightness, contrast, colour cast, gamma
    ys = _pixel_centres(size, device).view(1, 1, size, 1)
    xs = _pixel_centres(size, device).view(1, 1, 1, size)
    heading = (u[:, 17] * 2 * math.pi).view(n, 1, 1, 1)
    ramp = (0.5 + 0.8 * (xs * heading.cos() + ys * heading.sin())).clamp(0, 1)
    x = x * (1 - 0.4 * d * u[:, 18].view(n, 1, 1, 1) * ramp).clamp_min(0.05)
    x = x * torch.exp(d * (0.5 * s[:, 19] - 0.2)).view(n, 1, 1, 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + (x - mean) * torch.exp(d * (0.35 * s[:, 20] - 0.2)).view(n, 1, 1, 1)
    cast = torch.exp(0.1 * d * (2 * torch.rand(n, 3, generator=generator, device=device) - 1))
    x = x * cast.view(n, 3, 1, 1)
    x = x.clamp(0, 1) ** torch.exp(0.35 * d * s[:, 21]).view(n, 1, 1, 1)

    # ---- optics and sensor: blur, noise, 8-bit quantisation
    amount = (1.2 * d * u[:, 22]).view(n, 1, 1, 1)
    x = x + amount.clamp(0, 1) * (_blur(x) - x)
    x = x + (amount - 1).clamp(0, 1) * (_blur(x) - x)
    noise = torch.randn(n, 3, size, size, generator=generator, device=device)
    x = x + noise * (0.045 * d * u[:, 23]).view(n, 1, 1, 1)
    return (x.clamp(0, 1) * 255).round_().div_(255)


# --------------------------------------------------------------------------- data sets
def _chunk_seed(seed: int, split: str, chunk: int) -> int:
    key = f"labkit.signs|{split}|{seed}|{chunk}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def load_signs(split: str, n: int, *, seed: int = 0, **options: Any) -> LabData:
    """A split of the generated traffic-sign data set.

    Images are rendered by :func:`render` in chunks of :data:`CHUNK`; each chunk draws from its
    own generator, seeded from ``(seed, split, chunk)``, and holds every class equally often in
    random order. So train and test never share a random stream, the same arguments always give
    bit-identical data, and the first ``k`` images of a larger ``n`` equal those of ``n=k``.

    Parameters
    ----------
    split:
        ``"train"`` or ``"test"``.
    n:
        Number of images, a positive integer.
    seed:
        Selects the random stream.
    **options:
        ``difficulty`` (float in ``[0, 2]``, default 1) and ``background`` (bool, default True),
        passed to :func:`render`.

    Returns
    -------
    LabData
        ``x`` float32 ``(n, 3, 32, 32)`` in ``[0, 1]``, ``y`` int64, ``classes`` :data:`CLASSES`
        and the generator settings in ``info``.

    Examples
    --------
    >>> a = load_signs("train", 300, seed=1)
    >>> b = load_signs("train", 10, seed=1)
    >>> bool(torch.equal(a.x[:10], b.x))
    True
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

    xs, ys = [], []
    base = torch.arange(len(CLASSES)).repeat(_PER_CLASS_IN_CHUNK)
    for chunk in range(math.ceil(n / CHUNK)):
        g = torch.Generator().manual_seed(_chunk_seed(seed, split, chunk))
        labels = base[torch.randperm(CHUNK, generator=g)]
        images = render(labels, generator=g, difficulty=difficulty, background=background)
        keep = min(CHUNK, n - chunk * CHUNK)
        xs.append(images[:keep])
        ys.append(labels[:keep])
    return LabData(
        name="signs",
        split=split,
        x=torch.cat(xs).contiguous(),
        y=torch.cat(ys),
        classes=list(CLASSES),
        info={
            "generator": "labkit.data.signs",
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "difficulty": difficulty,
            "background": background,
            "image_size": IMAGE_SIZE,
            "chunk": CHUNK,
        },
    )
