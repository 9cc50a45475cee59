"""Procedurally generated 32x32 grey face-like images of a few identities.

Every identity is a fixed face geometry: the width and height of the head, skin tone, hair
(tone, hairline, length at the sides), eye spacing, size and darkness, brows (height, tilt,
thickness), nose and mouth. It is drawn from a generator seeded by the identity's index alone,
so identity ``k`` is the same face in every split, at every seed and whatever the number of
identities. Every image of an identity is that face under its own pose (shift, rotation,
scale), expression (mouth curvature), lighting (gain, offset, a gradient from one side), a
background level and sensor noise; ``jitter`` scales all of that. The faces are *aligned*,
like the crops a face-recognition pipeline passes to its classifier: the eyes stay within
about a pixel of :data:`EYES`, which is where an eyeglass frame
(:func:`labkit.attacks.eyeglass_mask`) sits.

Everything runs batched in PyTorch and draws its randomness from :class:`torch.Generator`
objects only: the same arguments give bit-identical data.

Examples
--------
>>> data = load_faces("train", 50, identities=5, seed=0)
>>> tuple(data.x.shape), data.classes[:2], data.class_counts()
((50, 1, 32, 32), ['person_0', 'person_1'], [10, 10, 10, 10, 10])
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch

from labkit._checks import check_choice, check_fraction, check_int
from labkit.data.base import LabData

__all__ = ["EYES", "GENERATOR_VERSION", "IMAGE_SIZE", "identity_names", "load_faces", "render_faces"]

#: Bump whenever the images change.
GENERATOR_VERSION = 1

IMAGE_SIZE = 32
SPLITS = ("train", "test")
OPTIONS = ("identities", "jitter", "glasses")
MAX_IDENTITIES = 100
MAX_JITTER = 2.0

# Per-identity geometry, uniform in [low, high], in face coordinates: the image spans [-1, 1]
# in both directions, u to the right and v downwards.
_IDENTITY_RANGES: dict[str, tuple[float, float]] = {
    "face_w": (0.52, 0.68),
    "face_h": (0.70, 0.84),
    "skin": (0.50, 0.85),
    "hair_tone": (0.05, 0.45),
    "hairline": (-0.62, -0.34),
    "hair_curve": (-0.25, 0.35),
    "hair_side": (-0.25, 0.75),
    "eye_dx": (0.22, 0.29),
    "eye_y": (-0.14, -0.08),
    "eye_r": (0.06, 0.10),
    "pupil_tone": (0.0, 0.3),
    "brow_gap": (0.10, 0.17),
    "brow_tilt": (-0.35, 0.35),
    "brow_thick": (0.025, 0.06),
    "nose_len": (0.16, 0.30),
    "nose_w": (0.03, 0.08),
    "mouth_y": (0.34, 0.48),
    "mouth_w": (0.12, 0.26),
    "mouth_curve": (-0.10, 0.14),
    "mouth_tone": (0.15, 0.45),
}
_FIELDS = tuple(_IDENTITY_RANGES)
_SOFT = 0.035  # edge softness in face units (a pixel is 0.0625): anti-aliased shapes


def _pixel(coord: float) -> float:
    """Face coordinate in [-1, 1] to the pixel index whose centre it is."""
    return (coord + 1) * IMAGE_SIZE / 2 - 0.5


def _mid(name: str) -> float:
    low, high = _IDENTITY_RANGES[name]
    return (low + high) / 2


#: ``((row, col), (row, col))``: where the left and right eyes of an average face sit, in
#: pixels. Every image's eyes lie within about a pixel of these (identity and pose vary them).
EYES: tuple[tuple[float, float], tuple[float, float]] = (
    (_pixel(_mid("eye_y")), _pixel(-_mid("eye_dx"))),
    (_pixel(_mid("eye_y")), _pixel(_mid("eye_dx"))),
)


def identity_names(identities: int) -> list[str]:
    """The class names of ``identities`` people: ``person_0``, ``person_1``, ..."""
    return [f"person_{k}" for k in range(identities)]


def _seed(*parts: object) -> int:
    key = "|".join(["labkit.faces", *map(str, parts)]).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def _identity_table(identities: int) -> torch.Tensor:
    """``(identities, fields)``: every identity's geometry, from its own seeded generator."""
    low = torch.tensor([r[0] for r in _IDENTITY_RANGES.values()])
    high = torch.tensor([r[1] for r in _IDENTITY_RANGES.values()])
    rows = [
        low + (high - low) * torch.rand(len(_FIELDS), generator=torch.Generator().manual_seed(_seed("id", k)))
        for k in range(identities)
    ]
    return torch.stack(rows)


def _check_jitter(jitter: object) -> float:
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not math.isfinite(jitter):
        raise ValueError(f"jitter must be a number in [0, {MAX_JITTER}], got {jitter!r}")
    if not 0 <= jitter <= MAX_JITTER:
        raise ValueError(
            f"jitter must be in [0, {MAX_JITTER}] (0: every image of a person identical, "
            f"1: the standard data set), got {jitter!r}"
        )
    return float(jitter)


def _check_identities(identities: object) -> int:
    if (
        isinstance(identities, bool)
        or not isinstance(identities, int)
        or not 2 <= identities <= MAX_IDENTITIES
    ):
        raise ValueError(f"identities must be an integer in [2, {MAX_IDENTITIES}], got {identities!r}")
    return identities


def _ellipse(u: torch.Tensor, v: torch.Tensor, cu: Any, cv: Any, ru: Any, rv: Any) -> torch.Tensor:
    """Soft coverage in [0, 1] of an axis-aligned ellipse."""
    d = torch.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 + 1e-12) - 1
    return torch.sigmoid(-d * torch.minimum(torch.as_tensor(ru), torch.as_tensor(rv)) / _SOFT)


def _below(a: torch.Tensor, b: Any) -> torch.Tensor:
    """Soft indicator of ``a < b``."""
    return torch.sigmoid((b - a) / _SOFT)


def _mix(image: torch.Tensor, tone: Any, cover: torch.Tensor) -> torch.Tensor:
    return image * (1 - cover) + tone * cover


# An ordinary frame, in face units: the lens rims (half height and width to the middle of the
# rim), the rim's width, and the temples' reach; 16 pixels make one unit at 32x32.
_LENS = (3.2 / 16, 3.6 / 16)
_RIM = 1.6 / 16
_TEMPLE = 4.0 / 16


def _frame(u: torch.Tensor, v: torch.Tensor, eye_dx: torch.Tensor, eye_y: torch.Tensor) -> torch.Tensor:
    """Soft coverage of a plain eyeglass frame centred on the eyes at ``(+-eye_dx, eye_y)``."""
    cover = torch.zeros_like(u)
    bar = v - (eye_y - 0.3 * _LENS[0])
    for side in (-1.0, 1.0):
        d = torch.sqrt(((u - side * eye_dx) / _LENS[1]) ** 2 + ((v - eye_y) / _LENS[0]) ** 2 + 1e-12)
        cover = torch.maximum(cover, _below((d - 1).abs() * _LENS[0], _RIM / 2))
        outer = side * u - (eye_dx + _LENS[1])  # beyond the rim, towards the ear
        temple = _below(bar.abs(), _RIM / 2) * _below(-outer, 0.0) * _below(outer, _TEMPLE)
        cover = torch.maximum(cover, temple)
    bridge = _below(bar.abs(), _RIM / 2) * _below(u.abs(), eye_dx - _LENS[1])
    return torch.maximum(cover, bridge)


def render_faces(
    labels: torch.Tensor,
    *,
    generator: torch.Generator,
    jitter: float = 1.0,
    glasses: float = 0.0,
    identities: int | None = None,
) -> torch.Tensor:
    """Render one face image per label.

    Parameters
    ----------
    labels:
        1-D integer tensor of identity indices.
    generator:
        Source of every per-image draw (pose, expression, lighting, noise).
    jitter:
        Scales every per-image variation: ``0`` renders each identity's canonical face (the
        same image every time), ``1`` the standard data set, up to ``2`` a harder one.
    glasses:
        Fraction of photos, in ``[0, 1]``, whose person wears ordinary glasses: a plain frame
        of random darkness around the eyes (the frame :func:`labkit.attacks.eyeglass_mask`
        draws, following the face's pose).
    identities:
        Number of identities the labels index (default ``max(labels) + 1``); only checked.

    Returns
    -------
    torch.Tensor
        Images ``(n, 1, 32, 32)``, float32 in ``[0, 1]``, quantised to 8 bits.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> x = render_faces(torch.tensor([3, 3]), generator=g, jitter=0)
    >>> tuple(x.shape), bool(torch.equal(x[0], x[1]))
    ((2, 1, 32, 32), True)
    """
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.dtype.is_floating_point:
        raise ValueError("labels must be a 1-D integer tensor of identity indices")
    j = _check_jitter(jitter)
    n = labels.shape[0]
    if n == 0:
        return torch.zeros(0, 1, IMAGE_SIZE, IMAGE_SIZE)
    top = int(labels.max()) + 1
    count = _check_identities(identities if identities is not None else max(top, 2))
    if int(labels.min()) < 0 or top > count:
        raise ValueError(
            f"labels must lie in [0, {count - 1}], got values from {int(labels.min())} to {top - 1}"
        )
    p = {k: col.view(n, 1, 1) for k, col in zip(_FIELDS, _identity_table(count)[labels].T, strict=True)}
    glasses = check_fraction(glasses, "glasses")
    r = torch.rand(n, 13, generator=generator)
    s = 2 * r - 1  # symmetric draws in [-1, 1]

    # Pose: shift (about a pixel), rotation (up to 6 degrees), scale (5%), applied to the grid.
    axis = (torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5) * 2 / IMAGE_SIZE - 1
    gv, gu = torch.meshgrid(axis, axis, indexing="ij")
    gu, gv = gu.expand(n, -1, -1), gv.expand(n, -1, -1)
    angle = (math.radians(6) * j * s[:, 0]).view(n, 1, 1)
    scale = (1 + 0.05 * j * s[:, 1]).view(n, 1, 1)
    du, dv = (0.07 * j * s[:, 2]).view(n, 1, 1), (0.07 * j * s[:, 3]).view(n, 1, 1)
    cos, sin = angle.cos(), angle.sin()
    u = (cos * (gu - du) + sin * (gv - dv)) / scale
    v = (-sin * (gu - du) + cos * (gv - dv)) / scale

    background = (0.55 + 0.3 * j * s[:, 4]).clamp(0.1, 0.95).view(n, 1, 1)
    image = background + 0.1 * j * s[:, 5].view(n, 1, 1) * gu
    hair_box = _ellipse(u, v, 0.0, -0.06, p["face_w"] * 1.14, p["face_h"] * 1.06)
    image = _mix(image, p["hair_tone"], hair_box * _below(v, p["hair_side"]))
    image = _mix(image, p["skin"], _ellipse(u, v, 0.0, 0.0, p["face_w"], p["face_h"]))
    fringe = hair_box * _below(v, p["hairline"] + p["hair_curve"] * u**2)
    image = _mix(image, p["hair_tone"], fringe)
    for side in (-1.0, 1.0):
        cu = side * p["eye_dx"]
        image = _mix(image, 0.95, _ellipse(u, v, cu, p["eye_y"], p["eye_r"] * 1.5, p["eye_r"]))
        image = _mix(
            image, p["pupil_tone"], _ellipse(u, v, cu, p["eye_y"], p["eye_r"] * 0.75, p["eye_r"] * 0.75)
        )
        # a brow: a thick segment above the eye, tilted (outer end up for positive tilt)
        bu, bv = u - cu, v - (p["eye_y"] - p["brow_gap"])
        along = bu
        across = bv + side * p["brow_tilt"] * bu
        brow = _below(across.abs(), p["brow_thick"]) * _below(along.abs(), p["eye_r"] * 1.9)
        image = _mix(image, p["hair_tone"], brow)
    nose_top = p["eye_y"] + 0.06
    nose = _below(u.abs(), p["nose_w"] / 2) * _below(nose_top, v) * _below(v, nose_top + p["nose_len"])
    image = _mix(image, p["skin"] * 0.72, nose)
    curve = p["mouth_curve"] + 0.05 * j * s[:, 6].view(n, 1, 1)  # expression
    lip = v - (p["mouth_y"] - curve * (u / p["mouth_w"]) ** 2)
    mouth = _below(lip.abs(), 0.045) * _below(u.abs(), p["mouth_w"])
    image = _mix(image, p["mouth_tone"], mouth)
    wearing = (r[:, 11] < glasses).float().view(n, 1, 1)
    image = _mix(image, (0.6 * r[:, 12]).view(n, 1, 1), wearing * _frame(u, v, p["eye_dx"], p["eye_y"]))

    # Lighting and the camera: gain, offset, a gradient from a random side, noise, 8 bits.
    gain = (1 + 0.18 * j * s[:, 7]).view(n, 1, 1)
    offset = (0.06 * j * s[:, 8]).view(n, 1, 1)
    light = math.pi * s[:, 9].view(n, 1, 1)
    gradient = 0.12 * j * r[:, 10].view(n, 1, 1) * (light.cos() * gu + light.sin() * gv)
    image = image * (gain + gradient) + offset
    noise = torch.randn(n, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 0.02 * j
    image = (image + noise).clamp(0, 1)
    return ((image * 255).round() / 255).unsqueeze(1).contiguous()


def load_faces(split: str, n: int, *, seed: int = 0, **options: Any) -> LabData:
    """A split of the generated face data set, every identity equally often in each chunk.

    Labels cycle through the identities and are then shuffled, in chunks of
    ``10 * identities`` images; each chunk draws from its own generator, seeded from
    ``(seed, split, chunk)``. So train and test never share a random stream, the same arguments
    give bit-identical data, and the first ``k`` images of a larger ``n`` are those of ``n=k``.

    Parameters
    ----------
    split:
        ``"train"`` or ``"test"``.
    n:
        Number of images, a positive integer.
    seed:
        Selects the random stream of the images (the identities never change).
    **options:
        ``identities`` (an integer in ``[2, 100]``, default 10), ``jitter`` (a number in
        ``[0, 2]``, default 1) and ``glasses`` (the fraction of photos with ordinary glasses,
        default 0.25); see :func:`render_faces`.

    Returns
    -------
    LabData
        ``x`` float32 ``(n, 1, 32, 32)`` in ``[0, 1]``, ``y`` int64 identity indices,
        ``classes`` ``person_0 ...``, and in ``info`` the generator settings and ``eyes``
        (:data:`EYES`, where the eyes of an aligned face sit, in pixels).

    Examples
    --------
    >>> a = load_faces("test", 50, seed=1, identities=4)
    >>> b = load_faces("test", 7, seed=1, identities=4)
    >>> bool(torch.equal(a.x[:7], b.x)), a.num_classes
    (True, 4)
    """
    check_choice(split, "split", SPLITS)
    n = check_int(n, "n", minimum=1)
    seed = check_int(seed, "seed")
    if unknown := sorted(set(options) - set(OPTIONS)):
        raise ValueError(f"faces takes the options {', '.join(OPTIONS)}; got unknown option(s) {unknown}")
    identities = _check_identities(options.get("identities", 10))
    jitter = _check_jitter(options.get("jitter", 1.0))
    glasses = check_fraction(options.get("glasses", 0.25), "glasses")
    chunk = 10 * identities
    xs, ys = [], []
    for index in range(math.ceil(n / chunk)):
        g = torch.Generator().manual_seed(_seed(split, seed, index))
        labels = torch.arange(identities).repeat(10)[torch.randperm(chunk, generator=g)]
        xs.append(render_faces(labels, generator=g, jitter=jitter, glasses=glasses, identities=identities))
        ys.append(labels)
    return LabData(
        name="faces",
        split=split,
        x=torch.cat(xs)[:n].contiguous(),
        y=torch.cat(ys)[:n].contiguous(),
        classes=identity_names(identities),
        info={
            "generator": "labkit.data.faces",
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "identities": identities,
            "jitter": jitter,
            "glasses": glasses,
            "image_size": IMAGE_SIZE,
            "eyes": EYES,
        },
    )
