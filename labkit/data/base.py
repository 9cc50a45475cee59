"""The dataset object every loader returns."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from labkit.config import cache_dir

__all__ = ["LabData", "as_xy", "data_root"]


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Where torchvision-format files are looked for: ``root``, ``LABKIT_DATA``, or the cache."""
    if root is not None:
        return Path(root)
    env = os.environ.get("LABKIT_DATA")
    return Path(env) if env else cache_dir() / "data"


@dataclass
class LabData:
    """A labelled data set held in memory as tensors.

    Attributes
    ----------
    name, split:
        Where it came from, e.g. ``"signs"``, ``"test"``.
    x:
        Inputs: images ``(N, C, H, W)`` as float32 in ``[0, 1]``, or features ``(N, F)``.
    y:
        Integer class labels ``(N,)``.
    classes:
        Class names, ``classes[y[i]]`` names example ``i``.
    feature_names:
        For tabular data, the name of each column of ``x``.
    sensitive:
        For tabular data, an optional protected attribute per example (used for fairness).
    info:
        Anything else worth knowing (generator settings, drift level, source files).
    """

    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    feature_names: list[str] | None = None
    sensitive: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} rows but y has {self.y.shape[0]} labels")
        if self.y.dtype != torch.long:
            raise TypeError(f"labels must be int64, got {self.y.dtype}")
        if self.sensitive is not None and self.sensitive.shape[0] != self.x.shape[0]:
            raise ValueError("sensitive must have one value per example")

    # ----------------------------------------------------------------- basic protocol
    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    @property
    def is_image(self) -> bool:
        return self.x.dim() == 4

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.y, minlength=self.num_classes).tolist()

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (images) or per-feature (tabular) mean and standard deviation."""
        dims = (0, 2, 3) if self.is_image else (0,)
        mean = self.x.mean(dim=dims)
        std = self.x.std(dim=dims).clamp_min(1e-6)
        return mean, std

    # ----------------------------------------------------------------- slicing
    def batch(
        self, n: int | None = None, *, start: int = 0, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples ``start .. start+n`` as ``(x, y)`` tensors, optionally on ``device``.

        The data are already shuffled when generated, so the first ``n`` are a fair sample and
        every call returns the same batch.
        """
        if n is None:
            n = len(self) - start
        if n <= 0 or start < 0 or start + n > len(self):
            raise ValueError(
                f"asked for {n} examples from index {start}, but {self.name}/{self.split} has {len(self)}"
            )
        x, y = self.x[start : start + n], self.y[start : start + n]
        if device is not None:
            x, y = x.to(device), y.to(device)
        return x, y

    def subset(self, indices: Sequence[int] | torch.Tensor) -> LabData:
        """A new LabData with the chosen rows (labels and attributes follow)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return LabData(
            name=self.name,
            split=self.split,
            x=self.x[idx],
            y=self.y[idx],
            classes=list(self.classes),
            feature_names=self.feature_names,
            sensitive=None if self.sensitive is None else self.sensitive[idx],
            info=dict(self.info),
        )

    def loader(
        self,
        batch_size: int = 128,
        *,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> DataLoader[tuple[torch.Tensor, ...]]:
        """A DataLoader over the in-memory tensors."""
        return DataLoader(
            TensorDataset(self.x, self.y),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            drop_last=drop_last,
        )

    # ----------------------------------------------------------------- display
    def _summary_rows(self) -> list[tuple[str, str]]:
        counts = self.class_counts()
        balance = ", ".join(f"{c}: {k}" for c, k in zip(self.classes, counts, strict=True))
        rows = [
            ("examples", str(len(self))),
            ("input shape", " x ".join(map(str, self.input_shape))),
            ("classes", str(self.num_classes)),
            ("per class", balance),
        ]
        if self.feature_names:
            rows.append(("features", ", ".join(self.feature_names)))
        return rows

    def _repr_markdown_(self) -> str:
        lines = [f"**{self.name}** ({self.split})", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self._summary_rows()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"LabData(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"input_shape={self.input_shape}, classes={self.num_classes})"
        )


def as_xy(
    data: LabData | tuple[torch.Tensor, torch.Tensor], n: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of ``data`` (a :class:`LabData` or a pair of tensors), the first ``n`` if set.

    Raises a ``TypeError`` for anything else and a ``ValueError`` for an empty set, for ``x`` and
    ``y`` of different lengths, or for an ``n`` that is not a positive integer.
    """
    if isinstance(data, LabData):
        x, y = data.x, data.y
    elif isinstance(data, tuple) and len(data) == 2:
        x, y = data
    else:
        raise TypeError(f"data must be a LabData or a tuple (x, y) of tensors, got {type(data).__name__}")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("data must hold tensors x and y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]} labels")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"n must be a positive number of examples, got {n!r}")
        x, y = x[:n], y[:n]
    if x.shape[0] == 0:
        raise ValueError("data is empty: at least one example is needed")
    return x, y
