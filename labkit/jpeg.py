"""JPEG's lossy step in PyTorch, shared by the JPEG corruption (:func:`labkit.stress.jpeg`)
and the JPEG defence (:class:`labkit.hardening.JPEG`).

Baseline JPEG (ITU-T T.81) without entropy coding, which is lossless: RGB to YCbCr (JFIF),
level shift by 128, the orthonormal 8x8 DCT-II, quantisation with the standard luminance and
chrominance tables scaled by ``quality`` as libjpeg does, and the inverse. Chroma is not
subsampled (libjpeg's 4:4:4 mode); single-channel images use the luminance table.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F

__all__ = ["CHROMA", "LUMA", "dct_matrix", "jpeg_roundtrip", "quant_table"]

# JPEG (ITU-T T.81, Annex K) quantisation tables for luminance and chrominance.
LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
CHROMA = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)


def quant_table(base: tuple[tuple[int, ...], ...], quality: int, like: torch.Tensor) -> torch.Tensor:
    """The quantisation table ``base`` scaled to ``quality`` by libjpeg's rule (jcparam.c)."""
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    table = torch.tensor(base, device=like.device, dtype=like.dtype)
    return torch.floor((table * scale + 50.0) / 100.0).clamp(1, 255)


def dct_matrix(like: torch.Tensor) -> torch.Tensor:
    """The orthonormal 8x8 DCT-II matrix ``D`` on ``like``'s device and dtype."""
    k = torch.arange(8, device=like.device, dtype=like.dtype).view(8, 1)
    n = torch.arange(8, device=like.device, dtype=like.dtype).view(1, 8)
    d = torch.cos(math.pi * (2 * n + 1) * k / 16) * math.sqrt(2 / 8)
    d[0] = math.sqrt(1 / 8)
    return d  # orthonormal DCT-II; D @ B @ D.T is JPEG's 2-D forward DCT of a block B


def jpeg_roundtrip(
    x: torch.Tensor, quality: int, *, rounding: Callable[[torch.Tensor], torch.Tensor] = torch.round
) -> torch.Tensor:
    """Compress and decompress a batch ``(N, C, H, W)`` in ``[0, 1]``; returns 0..255 values.

    The result is neither clamped nor rounded to 8 bits: the caller decides (the corruption
    rounds to 8-bit pixels, the defence keeps it differentiable). ``rounding`` is the
    quantiser's rounding; a smooth stand-in gives a usable gradient. Sides need not be
    multiples of 8 (edges are replicated, then cropped).
    """
    n, c, h, w = x.shape
    img = x * 255.0
    if c == 3:
        r, g, b = img.unbind(1)
        ycc = torch.stack(
            [
                0.299 * r + 0.587 * g + 0.114 * b,
                -0.168736 * r - 0.331264 * g + 0.5 * b + 128.0,
                0.5 * r - 0.418688 * g - 0.081312 * b + 128.0,
            ],
            dim=1,
        )
        tables = [LUMA, CHROMA, CHROMA]
    else:
        ycc = img
        tables = [LUMA] * c
    ph, pw = (-h) % 8, (-w) % 8
    ycc = ycc - 128.0
    if ph or pw:
        ycc = F.pad(ycc, (0, pw, 0, ph), mode="replicate")
    hh, ww = ycc.shape[-2:]
    blocks = ycc.reshape(n, c, hh // 8, 8, ww // 8, 8).transpose(3, 4)  # (n, c, bh, bw, 8, 8)
    d = dct_matrix(x)
    q = torch.stack([quant_table(t, quality, x) for t in tables]).view(1, c, 1, 1, 8, 8)
    coeff = rounding((d @ blocks @ d.T) / q) * q
    blocks = d.T @ coeff @ d
    ycc = blocks.transpose(3, 4).reshape(n, c, hh, ww)[..., :h, :w] + 128.0
    if c != 3:
        return ycc
    y, cb, cr = ycc.unbind(1)
    return torch.stack(
        [
            y + 1.402 * (cr - 128.0),
            y - 0.344136 * (cb - 128.0) - 0.714136 * (cr - 128.0),
            y + 1.772 * (cb - 128.0),
        ],
        dim=1,
    )
