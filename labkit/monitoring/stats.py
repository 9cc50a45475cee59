"""Two-sample drift statistics: KS and PSI per feature, MMD on embeddings, prediction drift.

=================  ========================================  ==================================
statistic          compares                                   alert when
=================  ========================================  ==================================
KS (per feature)   empirical CDFs of one feature              p < alpha / features (Bonferroni)
PSI (per feature)  binned proportions of one feature          PSI > 0.1 (rule of thumb: < 0.1
                                                              stable, 0.1-0.25 moderate, > 0.25
                                                              major shift)
MMD                whole embedding vectors (RBF kernel)       permutation p < alpha
prediction test    the model's output distribution (KS on     p < alpha
                   binary scores, chi-square on classes)
=================  ========================================  ==================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from labkit._checks import check_generator
from labkit.classifier import Classifier, check_batch_size, model_device
from labkit.utils import eval_mode

__all__ = [
    "MMDResult",
    "embed",
    "ks_test",
    "mmd_test",
    "prediction_psi",
    "prediction_test",
    "psi",
    "psi_from_proportions",
]


def _as_numpy(values: object, name: str) -> NDArray[np.float64]:
    if isinstance(values, torch.Tensor):
        arr = values.detach().cpu().double().numpy()
    elif isinstance(values, np.ndarray | list | tuple):
        arr = np.asarray(values, dtype=np.float64)
    else:
        raise TypeError(f"{name} must be a tensor, array or list, got {type(values).__name__}")
    if arr.size == 0 or (arr.ndim >= 1 and arr.shape[0] == 0):
        raise ValueError(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _matrix(values: object, name: str) -> NDArray[np.float64]:
    arr = _as_numpy(values, name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (N,) or (N, F), got shape {arr.shape}")
    return arr


def psi_from_proportions(expected: object, actual: object, *, eps: float = 1e-4) -> float:
    """Population stability index of two binned distributions.

    ``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)``, a symmetrised Kullback-Leibler divergence
    (``KL(a||e) + KL(e||a)``). Proportions are floored at ``eps`` so that empty bins stay
    finite, then renormalised.

    References
    ----------
    Siddiqi, *Credit Risk Scorecards*, Wiley 2006; Yurdakul, "Statistical Properties of
    Population Stability Index", PhD thesis, Western Michigan University, 2018.

    Examples
    --------
    >>> round(psi_from_proportions([0.5, 0.5], [0.25, 0.75]), 4)
    0.2747
    """
    e = _as_numpy(expected, "expected").ravel()
    a = _as_numpy(actual, "actual").ravel()
    if e.shape != a.shape:
        raise ValueError(f"expected has {e.size} bins but actual has {a.size}")
    if (e < 0).any() or (a < 0).any():
        raise ValueError("proportions must be non-negative")
    if e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("proportions must not all be zero")
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def _bin_edges(reference: NDArray[np.float64], bins: int) -> tuple[str, NDArray[np.float64]]:
    """Categories when the reference has at most ``bins`` distinct values, else quantile edges."""
    values = np.unique(reference)
    if values.size <= bins:
        return "categorical", values
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1))[1:-1])
    return "quantile", edges


def _proportions(x: NDArray[np.float64], kind: str, edges: NDArray[np.float64]) -> NDArray[np.float64]:
    if kind == "categorical":
        idx = np.searchsorted(edges, x)
        known = (idx < edges.size) & (edges[np.minimum(idx, edges.size - 1)] == x)
        counts = np.bincount(np.where(known, idx, edges.size), minlength=edges.size + 1)
    else:
        counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=edges.size + 1)
    return counts / counts.sum()


def psi(reference: object, current: object, *, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of one feature, with bins from the reference.

    Continuous features get ``bins`` quantile bins of the reference (deciles by default, so
    each holds about 10 % of it); features with at most ``bins`` distinct values (flags,
    counts) get one bin per value plus one for values never seen in the reference.

    Parameters
    ----------
    reference, current:
        One-dimensional samples (tensors, arrays or lists).
    bins:
        Number of quantile bins (at least 2).
    eps:
        Floor for empty bins.

    Examples
    --------
    >>> round(psi([0, 0, 1, 1], [0, 1, 1, 1]), 3)
    0.275
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an integer of at least 2, got {bins!r}")
    ref = _as_numpy(reference, "reference").ravel()
    cur = _as_numpy(current, "current").ravel()
    kind, edges = _bin_edges(ref, bins)
    return psi_from_proportions(_proportions(ref, kind, edges), _proportions(cur, kind, edges), eps=eps)


def ks_test(reference: object, current: object) -> list[tuple[float, float]]:
    """Two-sample Kolmogorov-Smirnov test per feature: ``(statistic, p-value)`` per column.

    Uses :func:`scipy.stats.ks_2samp` (exact p-values for small samples, asymptotic for large).

    Examples
    --------
    >>> g = np.random.default_rng(0)
    >>> stat, p = ks_test(g.normal(size=500), g.normal(size=500) + 1.0)[0]
    >>> p < 1e-6
    True
    """
    from scipy.stats import ks_2samp

    ref, cur = _matrix(reference, "reference"), _matrix(current, "current")
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(f"reference has {ref.shape[1]} features but current has {cur.shape[1]}")
    out = []
    for j in range(ref.shape[1]):
        result = ks_2samp(ref[:, j], cur[:, j])
        out.append((float(result.statistic), float(result.pvalue)))
    return out


@dataclass(frozen=True)
class MMDResult:
    """Outcome of :func:`mmd_test`: the unbiased MMD² estimate, its permutation p-value, and
    the RBF bandwidth used."""

    statistic: float
    p_value: float
    bandwidth: float
    permutations: int


def median_bandwidth(x: torch.Tensor) -> float:
    """Median pairwise Euclidean distance of the rows of ``x`` (the median heuristic)."""
    d = torch.cdist(x, x)
    upper = d[torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)]
    value = float(upper.median()) if upper.numel() else 1.0
    return value if value > 0 else 1.0


def mmd_test(
    reference: torch.Tensor,
    current: torch.Tensor,
    *,
    permutations: int = 200,
    bandwidth: float | None = None,
    generator: torch.Generator | None = None,
) -> MMDResult:
    """Kernel two-sample test: unbiased MMD² with a Gaussian kernel and a permutation p-value.

    ``k(a, b) = exp(-|a - b|^2 / (2 sigma^2))`` with ``sigma`` the median pairwise distance
    unless given. The p-value is ``(1 + #{permuted MMD² >= observed}) / (1 + permutations)``,
    all permutations computed at once from one kernel matrix.

    Parameters
    ----------
    reference, current:
        Samples ``(n, d)`` and ``(m, d)`` (e.g. embeddings from :func:`embed`), ``n, m >= 2``.
    permutations:
        Number of random relabellings.
    bandwidth:
        Kernel width ``sigma``; fix it (e.g. from the reference) to compare statistics over
        time.
    generator:
        Seeds the permutations.

    References
    ----------
    Gretton, Borgwardt, Rasch, Schölkopf and Smola, "A Kernel Two-Sample Test", JMLR 2012
    (arXiv:0805.2368); Rabanser, Günnemann and Lipton, "Failing Loudly: An Empirical Study of
    Methods for Detecting Dataset Shift", NeurIPS 2019, arXiv:1810.11953.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> a, b = torch.randn(100, 5, generator=g), torch.randn(100, 5, generator=g) + 1.0
    >>> mmd_test(a, b, generator=g).p_value < 0.01
    True
    """
    if not isinstance(reference, torch.Tensor) or not isinstance(current, torch.Tensor):
        raise TypeError("reference and current must be tensors (n, d) and (m, d)")
    ref = reference.detach().double().reshape(reference.shape[0], -1).cpu()
    cur = current.detach().double().reshape(current.shape[0], -1).cpu()
    if ref.shape[0] < 2 or cur.shape[0] < 2:
        raise ValueError("mmd_test needs at least two rows in each sample")
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(f"reference has {ref.shape[1]} dimensions but current has {cur.shape[1]}")
    if not (bool(torch.isfinite(ref).all()) and bool(torch.isfinite(cur).all())):
        raise ValueError("reference and current must be finite")
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 1:
        raise ValueError(f"permutations must be a positive integer, got {permutations!r}")
    generator = check_generator(generator)
    pooled = torch.cat([ref, cur])
    sigma = median_bandwidth(pooled) if bandwidth is None else float(bandwidth)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"bandwidth must be a positive number, got {bandwidth!r}")
    kernel = torch.exp(-torch.cdist(pooled, pooled).pow(2) / (2 * sigma**2))
    kernel.fill_diagonal_(0.0)
    n, m = ref.shape[0], cur.shape[0]
    total, rows = kernel.sum(), kernel.sum(1)

    def statistic(s: torch.Tensor) -> torch.Tensor:  # s: (P, n + m) indicators of "reference"
        xx = ((s @ kernel) * s).sum(1)
        sr = s @ rows
        xy = sr - xx
        yy = total - 2 * sr + xx
        return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2 * xy / (n * m)

    observed = statistic(torch.cat([torch.ones(n), torch.zeros(m)]).double().unsqueeze(0))[0]
    where = generator.device if generator is not None else torch.device("cpu")
    order = torch.rand(permutations, n + m, generator=generator, device=where).argsort(1).cpu()
    shuffled = (order < n).double()
    null = statistic(shuffled)
    p = (1 + int((null >= observed - 1e-12).sum())) / (1 + permutations)
    return MMDResult(float(observed), float(p), sigma, permutations)


def _last_linear(model: nn.Module) -> nn.Linear | None:
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    return last


@torch.no_grad()
def embed(model: Classifier, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """Penultimate-layer features of ``model`` for ``x`` (the input of its last ``nn.Linear``).

    These embeddings are what a drift detector should compare for images: raw pixels are
    high-dimensional and dominated by nuisance variation (Rabanser et al., arXiv:1810.11953).
    Models without an ``nn.Linear`` (or plain callables) give their logits instead.

    Returns
    -------
    torch.Tensor
        ``(N, d)`` float features on the CPU.
    """
    batch_size = check_batch_size(batch_size)
    device = model_device(model, x.device)
    grabbed: list[torch.Tensor] = []
    layer = _last_linear(model) if isinstance(model, nn.Module) else None
    handle = None
    if layer is not None:

        def hook(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
            grabbed.append(inputs[0].detach().flatten(1).float().cpu())

        handle = layer.register_forward_pre_hook(hook)
    outs = []
    try:
        if isinstance(model, nn.Module):
            with eval_mode(model):
                for i in range(0, x.shape[0], batch_size):
                    outs.append(model(x[i : i + batch_size].to(device)).detach().float().cpu())
        else:
            for i in range(0, x.shape[0], batch_size):
                outs.append(model(x[i : i + batch_size].to(device)).detach().float().cpu())
    finally:
        if handle is not None:
            handle.remove()
    return torch.cat(grabbed) if grabbed else torch.cat(outs)


def prediction_psi(reference_probs: object, current_probs: object, *, bins: int = 10) -> float:
    """Drift of a model's outputs: PSI of the positive-class score (binary) or of the
    predicted-class proportions (more than two classes).

    Examples
    --------
    >>> ref = torch.tensor([[0.9, 0.1]] * 50 + [[0.2, 0.8]] * 50)
    >>> round(prediction_psi(ref, ref), 6)
    0.0
    """
    ref, cur = _matrix(reference_probs, "reference_probs"), _matrix(current_probs, "current_probs")
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(f"reference has {ref.shape[1]} classes but current has {cur.shape[1]}")
    if ref.shape[1] == 2:
        return psi(ref[:, 1], cur[:, 1], bins=bins)
    k = ref.shape[1]
    expected = np.bincount(ref.argmax(1), minlength=k) / ref.shape[0]
    actual = np.bincount(cur.argmax(1), minlength=k) / cur.shape[0]
    return psi_from_proportions(expected, actual)


def prediction_test(reference_probs: object, current_probs: object) -> float:
    """p-value of "the model's outputs have not changed".

    Binary models: a two-sample KS test on the positive-class probability. More classes: a
    chi-square test of homogeneity on the counts of predicted classes
    (:func:`scipy.stats.chi2_contingency`). Unlike PSI, its false-alarm rate does not depend
    on the window size.

    Examples
    --------
    >>> ref = torch.tensor([[0.9, 0.1]] * 50 + [[0.2, 0.8]] * 50)
    >>> prediction_test(ref, ref) > 0.99
    True
    """
    from scipy.stats import chi2_contingency, ks_2samp

    ref, cur = _matrix(reference_probs, "reference_probs"), _matrix(current_probs, "current_probs")
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(f"reference has {ref.shape[1]} classes but current has {cur.shape[1]}")
    if ref.shape[1] == 2:
        return float(ks_2samp(ref[:, 1], cur[:, 1]).pvalue)
    k = ref.shape[1]
    table = np.stack([np.bincount(ref.argmax(1), minlength=k), np.bincount(cur.argmax(1), minlength=k)])
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2:
        return 1.0  # both predict one and the same class only
    return float(chi2_contingency(table).pvalue)


def check_names(names: Sequence[str] | None, features: int) -> list[str]:
    if names is None:
        return [f"x{j}" for j in range(features)]
    out = [str(n) for n in names]
    if len(out) != features:
        raise ValueError(f"feature_names has {len(out)} names but the data have {features} features")
    return out
