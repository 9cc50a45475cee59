"""Find poisoned training examples from the model's learned representations.

Both detectors look, class by class, at the learned representations of a model trained on the
(possibly poisoned) data: the flattened output of the convolutional layers of a CNN (the input
of its first fully connected layer), or the last hidden layer of an MLP. Poisoned examples of
the target class are classified as the target *because of the trigger*, so their
representations differ from the genuine ones.

* :func:`spectral_signatures` (Tran, Li and Madry, "Spectral Signatures in Backdoor Attacks",
  NeurIPS 2018, arXiv:1811.00636): per class, centre the representations, project them on the
  top singular vector, and flag the examples with the largest squared projection.
* :func:`activation_clustering` (Chen et al., "Detecting Backdoor Attacks on Deep Neural
  Networks by Activation Clustering", arXiv:1811.03728): per class, reduce the
  representations to a few components, split them in two with k-means, and flag the smaller
  cluster when it is small enough.

Neither knows the target class, so both also flag clean examples of clean classes: read the
false positive rate next to the true positive rate (:meth:`Detection.evaluate`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from labkit.data.base import LabData
from labkit.poisoning._common import check_class, check_data, check_indices, check_positive_int, features
from labkit.poisoning.poison import Poisoned

__all__ = [
    "Detection",
    "DetectionScore",
    "activation_clustering",
    "detection_rates",
    "spectral_signatures",
]


@dataclass(frozen=True)
class DetectionScore:
    """How a detector's flags compare with the truly poisoned rows.

    ``tpr`` is the share of poisoned rows that were flagged (recall), ``fpr`` the share of
    clean rows that were flagged, ``precision`` the share of flagged rows that are poisoned.
    """

    method: str
    n: int
    poisoned: int
    flagged: int
    true_positives: int

    @property
    def false_positives(self) -> int:
        return self.flagged - self.true_positives

    @property
    def poison_rate(self) -> float:
        return self.poisoned / self.n

    @property
    def tpr(self) -> float:
        return self.true_positives / self.poisoned if self.poisoned else math.nan

    @property
    def fpr(self) -> float:
        clean = self.n - self.poisoned
        return self.false_positives / clean if clean else math.nan

    @property
    def precision(self) -> float:
        return self.true_positives / self.flagged if self.flagged else math.nan

    def as_dict(self) -> dict[str, float]:
        return {
            "poison_rate": self.poison_rate,
            "tpr": self.tpr,
            "fpr": self.fpr,
            "precision": self.precision,
            "flagged": float(self.flagged),
        }

    def _repr_markdown_(self) -> str:
        rows = [
            ("poisoned rows", f"{self.poisoned} of {self.n} ({100 * self.poison_rate:.1f}%)"),
            ("flagged rows", str(self.flagged)),
            ("true positive rate", f"{100 * self.tpr:.1f}% ({self.true_positives} of {self.poisoned})"),
            (
                "false positive rate",
                f"{100 * self.fpr:.1f}% ({self.false_positives} of {self.n - self.poisoned})",
            ),
            ("precision", f"{100 * self.precision:.1f}%"),
        ]
        lines = [f"**{self.method}** against the truly poisoned rows", "", "| | |", "|---|---|"]
        return "\n".join(lines + [f"| {k} | {v} |" for k, v in rows])


def detection_rates(
    flagged: torch.Tensor | Sequence[int],
    poisoned: torch.Tensor | Sequence[int] | Poisoned,
    *,
    n: int,
    method: str = "detector",
) -> DetectionScore:
    """Compare flagged row indices with the truly poisoned ones in a data set of ``n`` rows.

    Examples
    --------
    >>> s = detection_rates([0, 1, 5], [0, 1, 2, 3], n=10)
    >>> s.tpr, round(s.fpr, 3), s.precision
    (0.5, 0.167, 0.6666666666666666)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    truth = poisoned.indices if isinstance(poisoned, Poisoned) else poisoned
    f = check_indices(flagged, n, "flagged")
    t = check_indices(truth, n, "poisoned")
    tp = int(torch.isin(f, t).sum())
    return DetectionScore(method=method, n=n, poisoned=len(t), flagged=len(f), true_positives=tp)


@dataclass(frozen=True)
class Detection:
    """What a detector flagged in a training set.

    Attributes
    ----------
    method:
        The detector and its settings.
    flagged:
        Sorted indices of the rows it flags as poisoned.
    scores:
        A suspicion score per row (higher is more suspicious; the meaning depends on the method).
    per_class:
        One row per analysed class with the detector's own statistics.
    n:
        Rows in the data set.
    """

    method: str
    flagged: torch.Tensor
    scores: torch.Tensor
    per_class: list[dict[str, float]]
    n: int
    labels: torch.Tensor = field(repr=False, default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def evaluate(self, poisoned: torch.Tensor | Sequence[int] | Poisoned) -> DetectionScore:
        """TPR, FPR and precision of the flags against the truly poisoned rows."""
        return detection_rates(self.flagged, poisoned, n=self.n, method=self.method)

    def _repr_markdown_(self) -> str:
        keys = list(self.per_class[0]) if self.per_class else []
        lines = [
            f"**{self.method}**: flagged {len(self.flagged)} of {self.n} rows",
            "",
            "| " + " | ".join(keys) + " |",
            "|" + "---:|" * len(keys),
        ]
        for row in self.per_class:
            cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def plot(self, cls: int, *, poisoned: Poisoned | torch.Tensor | None = None, ax: Any = None) -> Any:
        """Histogram of the suspicion scores of class ``cls``, poisoned rows apart if known."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.2))
        in_class = self.labels == cls
        truth = torch.zeros(self.n, dtype=torch.bool)
        if poisoned is not None:
            truth[poisoned.indices if isinstance(poisoned, Poisoned) else torch.as_tensor(poisoned)] = True
        clean_scores = self.scores[in_class & ~truth].numpy()
        ax.hist(clean_scores, bins=30, alpha=0.7, label="clean")
        if poisoned is not None:
            ax.hist(self.scores[in_class & truth].numpy(), bins=30, alpha=0.7, label="poisoned")
        ax.set_xlabel("suspicion score")
        ax.set_ylabel("examples")
        ax.set_title(f"{self.method}: class {cls}")
        ax.legend(frameon=False)
        ax.figure.tight_layout()
        return ax.figure


def _classes(data: LabData, classes: Sequence[int] | None) -> list[int]:
    if classes is None:
        return [c for c in range(data.num_classes) if bool((data.y == c).any())]
    return [check_class(c, data.num_classes, "classes") for c in classes]


def spectral_signatures(
    model: nn.Module,
    data: LabData,
    *,
    expected_rate: float,
    removal_factor: float = 1.5,
    classes: Sequence[int] | None = None,
    layer: nn.Module | None = None,
    batch_size: int = 512,
) -> Detection:
    """Spectral signatures: flag the rows with the largest projection on the top singular vector.

    For every class :math:`y`, with :math:`R_y` the learned representations of the
    examples *labelled* :math:`y` (the labels of the possibly poisoned set), centred as
    :math:`\\hat R_y = R_y - \\bar R_y`, and :math:`v` the top right singular vector of
    :math:`\\hat R_y`, each example gets the outlier score :math:`\\tau_i = (\\hat r_i \\cdot v)^2`.
    The examples with the largest :math:`\\lceil 1.5\\, \\epsilon\\, n_y \\rceil` scores are
    flagged, :math:`\\epsilon` being the defender's upper bound on the share of a class that is
    poisoned (the paper's :math:`1.5 \\epsilon` removal rule). The defender does not know the
    target class, so this many rows are flagged in *every* class: expect false positives of
    about :math:`1.5 \\epsilon` in the clean classes.

    Reference: Tran, Li and Madry, "Spectral Signatures in Backdoor Attacks", NeurIPS 2018,
    arXiv:1811.00636.

    Parameters
    ----------
    model:
        A model trained on ``data``.
    data:
        The training set to inspect (poisoned or not).
    expected_rate:
        :math:`\\epsilon`, the assumed upper bound in ``[0, 1]`` on the poisoned share of a class.
    removal_factor:
        The 1.5 of the paper.
    classes:
        Only analyse these classes (e.g. when the target is suspected); default all.
    layer:
        Read representations at the input of this module (default: the flattened output of
        the convolutional layers, or the last hidden layer of an MLP).
    batch_size:
        Rows per forward pass.
    """
    data = check_data(data)
    if not (isinstance(expected_rate, int | float) and 0 <= expected_rate <= 1):
        raise ValueError(f"expected_rate must be a fraction in [0, 1], got {expected_rate!r}")
    if not (isinstance(removal_factor, int | float) and removal_factor > 0):
        raise ValueError(f"removal_factor must be positive, got {removal_factor!r}")
    reps = features(model, data.x, layer=layer, batch_size=batch_size).double()
    labels = data.y.cpu()
    scores = torch.full((len(data),), math.nan, dtype=torch.float64)
    flagged: list[torch.Tensor] = []
    per_class: list[dict[str, float]] = []
    for c in _classes(data, classes):
        idx = torch.nonzero(labels == c).flatten()
        r = reps[idx] - reps[idx].mean(0, keepdim=True)
        if len(idx) < 2:
            continue
        _, s, vh = torch.linalg.svd(r, full_matrices=False)
        tau = (r @ vh[0]) ** 2
        scores[idx] = tau
        k = min(len(idx), math.ceil(removal_factor * expected_rate * len(idx)))
        top = idx[torch.argsort(tau, descending=True)[:k]]
        flagged.append(top)
        ratio = float(s[0] / s[1]) if len(s) > 1 and s[1] > 0 else math.inf
        per_class.append({"class": c, "examples": len(idx), "flagged": k, "sv1/sv2": ratio})
    flags = torch.sort(torch.cat(flagged)).values if flagged else torch.zeros(0, dtype=torch.long)
    method = f"spectral signatures (ε={expected_rate:g}, removal {removal_factor:g}ε per class)"
    return Detection(
        method=method, flagged=flags, scores=scores.float(), per_class=per_class, n=len(data), labels=labels
    )


def _reduce(r: torch.Tensor, k: int, *, whiten: bool) -> torch.Tensor:
    """The top ``k`` principal components of ``r`` (whitened: unit variance each).

    Components with (numerically) zero variance, such as dead ReLU units, are dropped.
    """
    centred = r - r.mean(0, keepdim=True)
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    rank = int((s > 1e-6 * max(float(s[0]), 1e-12)).sum()) if len(s) else 0
    k = max(1, min(k, rank))
    if whiten:
        return u[:, :k] * math.sqrt(max(len(r) - 1, 1))
    return u[:, :k] * s[:k]


def _two_means(
    z: torch.Tensor, *, generator: torch.Generator | None, n_init: int = 10, iters: int = 100
) -> tuple[torch.Tensor, float]:
    """2-means (Lloyd's algorithm, k-means++ starts): best of ``n_init`` runs by inertia."""
    best_assign = torch.zeros(len(z), dtype=torch.long)
    best_inertia = math.inf
    for _ in range(n_init):
        first = z[torch.randint(len(z), (1,), generator=generator)]
        d2 = ((z - first) ** 2).sum(1)
        if float(d2.sum()) == 0.0:
            break  # every point identical: one cluster
        second = z[torch.multinomial(d2 / d2.sum(), 1, generator=generator)]
        centres = torch.cat([first, second])
        assign = torch.zeros(len(z), dtype=torch.long)
        for _ in range(iters):
            new = torch.cdist(z, centres).argmin(1)
            if _ > 0 and torch.equal(new, assign):
                break
            assign = new
            for j in range(2):
                if bool((assign == j).any()):
                    centres[j] = z[assign == j].mean(0)
        inertia = float(((z - centres[assign]) ** 2).sum())
        if inertia < best_inertia:
            best_inertia, best_assign = inertia, assign.clone()
    return best_assign, best_inertia


def _silhouette(z: torch.Tensor, assign: torch.Tensor) -> float:
    """Mean silhouette coefficient of a two-cluster split (NaN if a cluster is empty)."""
    sizes = torch.bincount(assign, minlength=2)
    if int(sizes.min()) == 0:
        return math.nan
    d = torch.cdist(z, z)
    same = assign.unsqueeze(0) == assign.unsqueeze(1)
    own = (d * same).sum(1) / (sizes[assign] - 1).clamp_min(1)
    other = (d * ~same).sum(1) / sizes[1 - assign]
    s = (other - own) / torch.maximum(own, other).clamp_min(1e-12)
    s[sizes[assign] == 1] = 0.0
    return float(s.mean())


def activation_clustering(
    model: nn.Module,
    data: LabData,
    *,
    n_components: int = 10,
    reduce: Literal["ica", "pca"] = "pca",
    size_threshold: float = 0.35,
    classes: Sequence[int] | None = None,
    layer: nn.Module | None = None,
    batch_size: int = 512,
    generator: torch.Generator | None = None,
) -> Detection:
    """Activation clustering: per class, 2-means on reduced activations; flag small clusters.

    For every class, the learned representations of the examples labelled with it are
    reduced to ``n_components`` dimensions, then split into two clusters by k-means.

    ``reduce="pca"`` (the default of IBM's reference implementation in the Adversarial
    Robustness Toolbox) keeps the top principal components with their variances. The paper
    used independent component analysis (ICA): FastICA's output is an orthogonal rotation of
    the *whitened* principal components, and k-means (Euclidean) does not change under
    rotations, so ``reduce="ica"`` clusters the whitened principal components directly: the
    same split, deterministic, and no failure when dead ReLU units make the activations
    rank-deficient. Whitening gives every component equal weight, noisy ones included, so it
    often separates poison less well than plain PCA on small networks. The smaller cluster is flagged as
    poisoned when it holds at most ``size_threshold`` of the class (the paper's "relative
    size" analysis; 0.35 is the threshold of its reference implementation). A clean class can
    also split into a big and a small cluster, which shows up as false positives. The
    silhouette score of the split is reported per class for the learner to compare.

    Reference: Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy and Srivastava,
    "Detecting Backdoor Attacks on Deep Neural Networks by Activation Clustering",
    arXiv:1811.03728.

    Parameters
    ----------
    model, data:
        A model and the (possibly poisoned) set it was trained on.
    n_components:
        Dimensions kept before clustering (10 in the paper).
    reduce:
        ``"pca"`` (reference implementation) or ``"ica"`` (the paper; whitened PCA, see above).
    size_threshold:
        Flag the smaller cluster when its share of the class is at most this, in ``(0, 0.5]``.
    classes:
        Only analyse these classes; default all.
    layer:
        Read activations at the input of this module (default: as in :func:`spectral_signatures`).
    batch_size:
        Rows per forward pass.
    generator:
        Seeds the k-means starts (default: a generator seeded with 0, so runs repeat).
    """
    data = check_data(data)
    n_components = check_positive_int(n_components, "n_components")
    if reduce not in ("ica", "pca"):
        raise ValueError(f"reduce must be 'ica' or 'pca', got {reduce!r}")
    if not (isinstance(size_threshold, int | float) and 0 < size_threshold <= 0.5):
        raise ValueError(f"size_threshold must be in (0, 0.5], got {size_threshold!r}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    reps = features(model, data.x, layer=layer, batch_size=batch_size).double()
    labels = data.y.cpu()
    scores = torch.full((len(data),), math.nan)
    flagged: list[torch.Tensor] = []
    per_class: list[dict[str, float]] = []
    for c in _classes(data, classes):
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < 4:
            continue
        r = reps[idx]
        z = _reduce(r, n_components, whiten=reduce == "ica")
        assign, _ = _two_means(z, generator=gen)
        sizes = torch.bincount(assign, minlength=2)
        small = int(torch.argmin(sizes))
        share = float(sizes[small]) / len(idx)
        sil = _silhouette(z, assign)
        # score: 1 - share of the example's own cluster (small clusters are suspicious)
        scores[idx] = 1.0 - sizes[assign].float() / len(idx)
        hit = share <= size_threshold
        if hit:
            flagged.append(idx[assign == small])
        per_class.append(
            {
                "class": c,
                "examples": len(idx),
                "smaller cluster": share,
                "silhouette": sil,
                "flagged": int(sizes[small]) if hit else 0,
            }
        )
    flags = torch.sort(torch.cat(flagged)).values if flagged else torch.zeros(0, dtype=torch.long)
    method = f"activation clustering ({reduce.upper()} {n_components}, smaller cluster ≤ {size_threshold:g})"
    return Detection(
        method=method, flagged=flags, scores=scores, per_class=per_class, n=len(data), labels=labels
    )
