"""scikit-learn's bundled handwritten digits (real data, 1,797 images of 8x8 pixels)."""

from __future__ import annotations

import numpy as np
import torch

from labkit.data.base import LabData

__all__ = ["load_digits"]

SPLIT_SEED = 20240601
TEST_FRACTION = 0.2


def load_digits(split: str, n: int | None = None) -> LabData:
    """The digits split into a fixed, stratified 80/20 train/test partition.

    Pixels are scaled from 0..16 to [0, 1]; images have shape ``(1, 8, 8)``.
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = bunch.images.astype(np.float32) / 16.0
    labels = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    idx = idx_train if split == "train" else idx_test
    if n is not None:
        idx = idx[:n]
    x = torch.from_numpy(images[idx]).unsqueeze(1).contiguous()
    y = torch.from_numpy(labels[idx])
    return LabData(
        name="digits",
        split=split,
        x=x,
        y=y,
        classes=[str(d) for d in range(10)],
        info={"source": "sklearn.datasets.load_digits", "split_seed": SPLIT_SEED},
    )
