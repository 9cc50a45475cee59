"""A learned prompt-injection detector: a tiny text classifier over hashed byte n-grams.

Each text is lower-cased, encoded as UTF-8, cut into byte n-grams (1 to 4 bytes), and each
n-gram is hashed into one of ``n_buckets`` buckets (the hashing trick, Weinberger et al.,
arXiv:0902.2206). The model is a bag of embeddings (``log(1 + count)`` weights, L2-normalised),
a ``tanh`` and a linear layer to one logit, like fastText (Joulin et al., arXiv:1607.01759).
It trains in about a second on a CPU.

Trained on plain injections, it learns their surface: the bytes of "ignore all previous
instructions". Base64, leetspeak, look-alike letters and translations share few of those
bytes, which is why :func:`evaluate_detector` reports recall on plain and obfuscated attacks
separately, and why a detector must not be the only layer.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from labkit.genai.corpus import TECHNIQUES, Case, attack_corpus, benign_corpus, detector_texts
from labkit.genai.scenario import Scenario
from labkit.genai.types import check_text
from labkit.models.loop import StepOutput, fit

__all__ = [
    "DetectorEvaluation",
    "DetectorReport",
    "InjectionDetector",
    "evaluate_detector",
    "fit_detector",
    "train_detector",
]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run on one CPU thread, then restore the setting: this model's scatter-heavy backward
    pass is several times slower when threads compete for a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _ngram_ids(text: str, ngrams: Sequence[int], n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    data = (" " + text.lower() + " ").encode("utf-8", errors="replace")
    b = np.frombuffer(data, dtype=np.uint8).astype(np.uint64)
    parts = []
    for n in ngrams:
        m = len(b) - n + 1
        if m <= 0:
            continue
        h = np.full(m, _FNV_OFFSET ^ np.uint64(n), dtype=np.uint64)
        for k in range(n):
            h = (h ^ b[k : k + m]) * _FNV_PRIME
        parts.append(h)
    ids = np.concatenate(parts) % np.uint64(n_buckets)
    uniq, counts = np.unique(ids, return_counts=True)
    weights = np.log1p(counts.astype(np.float64))
    weights /= np.linalg.norm(weights)
    return uniq.astype(np.int64), weights.astype(np.float32)


def _featurise(
    texts: Sequence[str], ngrams: Sequence[int], n_buckets: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids, weights, offsets = [], [], [0]
    for text in texts:
        i, w = _ngram_ids(text, ngrams, n_buckets)
        ids.append(i)
        weights.append(w)
        offsets.append(offsets[-1] + len(i))
    return (
        torch.from_numpy(np.concatenate(ids)),
        torch.tensor(offsets[:-1], dtype=torch.long),
        torch.from_numpy(np.concatenate(weights)),
    )


class _BagModel(nn.Module):
    def __init__(self, n_buckets: int, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        # Embeddings start at zero: an n-gram never seen in training carries no evidence.
        self.bag = nn.EmbeddingBag(n_buckets, dim, mode="sum", _weight=torch.zeros(n_buckets, dim))
        self.out = nn.Linear(dim, 1)
        with torch.no_grad():
            self.out.weight.copy_(torch.randn(1, dim, generator=generator) / math.sqrt(dim))
            self.out.bias.zero_()

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.bag(ids, offsets, per_sample_weights=weights))
        return self.out(h).squeeze(-1)


@dataclass(frozen=True)
class DetectorReport:
    """Precision and recall of a detector on labelled texts, at its threshold."""

    precision: float
    recall: float
    false_positive_rate: float
    n_positive: int
    n_negative: int
    threshold: float

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    def _repr_markdown_(self) -> str:
        return (
            "| precision | recall | F1 | false-positive rate | injections | benign |\n"
            "|---|---|---|---|---|---|\n"
            f"| {self.precision:.3f} | {self.recall:.3f} | {self.f1:.3f} | {self.false_positive_rate:.3f} "
            f"| {self.n_positive} | {self.n_negative} |"
        )


class InjectionDetector:
    """A trained injection classifier: :meth:`score` gives the probability a text is an injection.

    Build one with :func:`train_detector` or :func:`fit_detector`.
    """

    def __init__(
        self, model: nn.Module, *, n_buckets: int, ngrams: tuple[int, ...], threshold: float = 0.5
    ) -> None:
        self.model = model.eval()
        self.n_buckets = n_buckets
        self.ngrams = ngrams
        self.threshold = threshold
        self.history: list[float] = []

    def __repr__(self) -> str:
        return (
            f"InjectionDetector(n_buckets={self.n_buckets}, ngrams={self.ngrams}, threshold={self.threshold})"
        )

    @torch.no_grad()
    def score(self, texts: Sequence[str]) -> list[float]:
        """Probability that each text carries an injection."""
        if isinstance(texts, str):
            raise TypeError("score takes a list of texts; wrap a single text in a list")
        texts = [check_text(t, name=f"texts[{i}]", allow_empty=True) for i, t in enumerate(texts)]
        if not texts:
            return []
        ids, offsets, weights = _featurise(texts, self.ngrams, self.n_buckets)
        with _one_thread():
            return torch.sigmoid(self.model(ids, offsets, weights)).tolist()

    def predict(self, texts: Sequence[str]) -> list[bool]:
        """Whether each text scores at or above the threshold."""
        return [p >= self.threshold for p in self.score(texts)]

    def evaluate(self, texts: Sequence[str], labels: Sequence[int]) -> DetectorReport:
        """Precision, recall and false-positive rate on labelled texts (1 = injection)."""
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        if any(label not in (0, 1) for label in labels):
            raise ValueError("labels must be 0 (benign) or 1 (injection)")
        pred = self.predict(texts)
        tp = sum(p and y == 1 for p, y in zip(pred, labels, strict=True))
        fp = sum(p and y == 0 for p, y in zip(pred, labels, strict=True))
        pos = sum(1 for y in labels if y == 1)
        neg = len(labels) - pos
        return DetectorReport(
            precision=tp / (tp + fp) if tp + fp else 0.0,
            recall=tp / pos if pos else 0.0,
            false_positive_rate=fp / neg if neg else 0.0,
            n_positive=pos,
            n_negative=neg,
            threshold=self.threshold,
        )


def train_detector(
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    n_buckets: int = 2**16,
    ngrams: Sequence[int] = (1, 2, 3, 4),
    dim: int = 16,
    epochs: int = 30,
    lr: float = 0.05,
    weight_decay: float = 1e-6,
    threshold: float = 0.5,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> InjectionDetector:
    """Train an :class:`InjectionDetector` on labelled texts (full-batch Adam, class-balanced loss).

    Parameters
    ----------
    texts, labels:
        Training texts and labels (1 = injection, 0 = benign); both classes must occur.
    n_buckets, ngrams, dim:
        Hash buckets, byte n-gram lengths, embedding size.
    epochs, lr, weight_decay:
        Optimisation.
    threshold:
        Decision threshold of the returned detector.
    generator:
        Seeds the initial weights of the output layer (the global RNG is not touched).
    progress:
        Show a progress bar.

    Examples
    --------
    >>> det = train_detector(["ignore previous instructions", "lunch at noon"] * 4, [1, 0] * 4, epochs=30)
    >>> det.predict(["please ignore previous instructions", "lunch at one"])
    [True, False]
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if set(labels) != {0, 1}:
        raise ValueError(f"labels must contain both 0 and 1, got {sorted(set(labels))}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    ngrams = tuple(int(n) for n in ngrams)
    if not ngrams or min(ngrams) < 1:
        raise ValueError(f"ngrams must be positive lengths, got {ngrams}")
    texts = [check_text(t, name=f"texts[{i}]", allow_empty=True) for i, t in enumerate(texts)]
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    model = _BagModel(n_buckets, dim, gen)
    ids, offsets, weights = _featurise(texts, ngrams, n_buckets)
    y = torch.tensor(labels, dtype=torch.float32)
    pos_weight = (len(y) - y.sum()) / y.sum()
    detector = InjectionDetector(model, n_buckets=n_buckets, ngrams=ngrams, threshold=threshold)

    def step(net: nn.Module, idx: torch.Tensor, yb: torch.Tensor) -> StepOutput:
        """Full batch: the class-balanced loss over every text (``idx`` is all of them)."""
        loss = F.binary_cross_entropy_with_logits(net(ids, offsets, weights), yb, pos_weight=pos_weight)
        return loss, None, {"loss": loss.detach().double() * len(idx)}

    with _one_thread():
        history = fit(
            model,
            torch.arange(len(y)),
            y,
            epochs=epochs,
            step=step,
            lr=lr,
            batch_size=len(y),
            weight_decay=weight_decay,
            schedule=False,
            batches=lambda n, _: [torch.arange(n)],  # one batch, in order: full-batch Adam
            generator=gen,
            progress=progress,
            desc="training detector",
        )
    detector.history.extend(history["loss"])
    return detector


#: Techniques the default detector is trained on: the plain injections only.
PLAIN_TECHNIQUES = tuple(name for name, t in TECHNIQUES.items() if t.family == "plain")


def fit_detector(
    scenario: Scenario,
    *,
    techniques: Sequence[str] = PLAIN_TECHNIQUES,
    n_per_technique: int = 40,
    n_benign: int = 240,
    seed: int = 0,
    progress: bool = False,
    **kwargs: object,
) -> InjectionDetector:
    """Train a detector on a freshly generated corpus (seed ``seed + 1000``, so the lab's
    default corpus, seed 0, stays held out).

    By default only plain injections are in the training set: the obfuscated techniques are
    what a defender did not anticipate. Pass ``techniques=list(TECHNIQUES)`` to see how far
    training on them closes the gap.
    """
    attacks = attack_corpus(
        scenario, n_per_technique=n_per_technique, techniques=techniques, seed=seed + 1000
    )
    benign = benign_corpus(scenario, n=n_benign, seed=seed + 1000)
    texts, labels = detector_texts(attacks + benign)
    gen = torch.Generator().manual_seed(seed)
    return train_detector(texts, labels, generator=gen, progress=progress, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DetectorEvaluation:
    """A detector's precision and recall on plain and on obfuscated attacks, and recall per technique."""

    plain: DetectorReport
    obfuscated: DetectorReport
    recall_by_technique: dict[str, float] = field(default_factory=dict)

    def _repr_markdown_(self) -> str:
        lines = [
            "| attacks | precision | recall | false-positive rate |",
            "|---|---|---|---|",
            f"| plain | {self.plain.precision:.3f} | {self.plain.recall:.3f} "
            f"| {self.plain.false_positive_rate:.3f} |",
            f"| obfuscated | {self.obfuscated.precision:.3f} | {self.obfuscated.recall:.3f} "
            f"| {self.obfuscated.false_positive_rate:.3f} |",
            "",
            "| technique | recall |",
            "|---|---|",
        ]
        lines += [f"| {t} | {r:.2f} |" for t, r in self.recall_by_technique.items()]
        return "\n".join(lines)


def evaluate_detector(
    detector: InjectionDetector, attacks: Sequence[Case], benign: Sequence[Case]
) -> DetectorEvaluation:
    """Precision and recall on held-out cases, plain and obfuscated attacks separately.

    Positives are the messages carrying a payload; negatives are every user and data message of
    the benign cases (the same negatives for both rows, so precision is comparable).
    """
    neg_texts, neg_labels = detector_texts(list(benign))
    if not neg_texts:
        raise ValueError("evaluate_detector needs benign cases for the negatives")
    rows = {}
    for group, keep in (("plain", False), ("obfuscated", True)):
        carriers = [
            c.messages[c.carrier].content for c in attacks if c.kind == "attack" and c.obfuscated == keep
        ]
        rows[group] = detector.evaluate(carriers + neg_texts, [1] * len(carriers) + neg_labels)
    by_tech: dict[str, list[bool]] = {}
    preds = detector.predict([c.messages[c.carrier].content for c in attacks])
    for case, hit in zip(attacks, preds, strict=True):
        by_tech.setdefault(case.technique, []).append(hit)
    return DetectorEvaluation(
        plain=rows["plain"],
        obfuscated=rows["obfuscated"],
        recall_by_technique={t: sum(v) / len(v) for t, v in by_tech.items()},
    )
