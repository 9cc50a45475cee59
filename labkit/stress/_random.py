"""Random draws that honour an optional generator and land on the input's device."""

from __future__ import annotations

import torch

from labkit._checks import check_generator

__all__ = ["check_generator", "normal", "poisson", "uniform"]


def _where(like: torch.Tensor, generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else like.device


def _dtype(like: torch.Tensor) -> torch.dtype:
    return like.dtype if like.is_floating_point() else torch.float32


def uniform(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``U[0, 1)`` samples drawn on the generator's device, returned on ``like``'s device."""
    u = torch.rand(shape, generator=generator, device=_where(like, generator), dtype=_dtype(like))
    return u.to(like.device)


def normal(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal samples drawn on the generator's device, returned on ``like``'s device."""
    z = torch.randn(shape, generator=generator, device=_where(like, generator), dtype=_dtype(like))
    return z.to(like.device)


def poisson(rate: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Poisson counts with the given rates (drawn on the generator's device)."""
    where = _where(rate, generator)
    return torch.poisson(rate.to(where), generator=generator).to(rate.device)
