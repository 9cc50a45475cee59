"""Data sets for the course, all available offline by default.

=================  ==========================================================  ============
name               what                                                         offline
=================  ==========================================================  ============
``digits``         scikit-learn's bundled 8x8 handwritten digits (real data)    bundled
``signs``          procedurally generated 32x32 traffic signs                   generated
``transactions``   synthetic card transactions with rare fraud and drift        generated
``faces``          procedurally generated 32x32 grey faces of a few identities  generated
``mnist``          MNIST through torchvision's on-disk format                   if present
``fashion_mnist``  Fashion-MNIST likewise                                       if present
``cifar10``        CIFAR-10 (python pickle batches)                             if present
=================  ==========================================================  ============

Examples
--------
>>> import labkit as lk
>>> data = lk.data.load("digits", split="test")
>>> x, y = data.batch(4)
>>> tuple(x.shape), int(y.shape[0])
((4, 1, 8, 8), 4)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labkit.config import Profile, active_profile
from labkit.data.base import LabData, data_root
from labkit.data.digits import load_digits

__all__ = ["DATASETS", "LabData", "available", "load"]

SPLITS = ("train", "test")


def _digits(split: str, n: int | None, **_: Any) -> LabData:
    return load_digits(split, n)


def _signs(
    split: str, n: int | None, *, seed: int, root: Path | None, download: bool, **options: Any
) -> LabData:
    from labkit.data.signs import load_signs

    return load_signs(split, n if n is not None else 10000, seed=seed, **options)


def _transactions(
    split: str, n: int | None, *, seed: int, root: Path | None, download: bool, **options: Any
) -> LabData:
    from labkit.data.transactions import load_transactions

    return load_transactions(split, n if n is not None else 20000, seed=seed, **options)


def _faces(
    split: str, n: int | None, *, seed: int, root: Path | None, download: bool, **options: Any
) -> LabData:
    from labkit.data.faces import load_faces

    return load_faces(split, n if n is not None else 1000, seed=seed, **options)


def _torchvision(name: str) -> Callable[..., LabData]:
    def loader(split: str, n: int | None, *, root: Path | None, download: bool, **_: Any) -> LabData:
        from labkit.data.vision import load_vision

        return load_vision(name, split, n, root=root, download=download)

    return loader


DATASETS: dict[str, Callable[..., LabData]] = {
    "digits": _digits,
    "signs": _signs,
    "transactions": _transactions,
    "faces": _faces,
    "mnist": _torchvision("mnist"),
    "fashion_mnist": _torchvision("fashion_mnist"),
    "cifar10": _torchvision("cifar10"),
}


def load(
    name: str,
    split: str = "train",
    profile: str | Profile | None = None,
    *,
    n: int | None = None,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    **options: Any,
) -> LabData:
    """Load a data set split, sized by the active profile.

    Parameters
    ----------
    name:
        One of :data:`DATASETS` (``digits``, ``signs``, ``transactions``, ``faces``,
        ``mnist``, ``fashion_mnist``, ``cifar10``).
    split:
        ``"train"`` or ``"test"``.
    profile:
        Run profile whose sizes apply (default: ``LABKIT_PROFILE`` or course.yml's default).
    n:
        Number of examples; overrides the profile's size.
    seed:
        Seed of the generated data sets (``signs``, ``transactions``, ``faces``); the same seed and size
        always give the same data.
    root, download:
        For the torchvision data sets: the folder holding the files, and whether fetching them
        from the internet is allowed (off by default: the course runs offline).
    **options:
        Passed to the generator, e.g. ``drift=0.5`` for ``transactions``, ``identities=20``
        for ``faces``.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if n is None:
        n = active_profile(profile).size(name, split)
    return DATASETS[name](split, n, seed=seed, root=data_root(root), download=download, **options)


def available(root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Which data sets can be loaded right now, and why (for ``labkit doctor``)."""
    from labkit.data.vision import find_vision_files

    status = {
        "digits": "bundled with scikit-learn",
        "signs": "generated on the fly",
        "transactions": "generated on the fly",
        "faces": "generated on the fly",
    }
    base = data_root(root)
    for name in ("mnist", "fashion_mnist", "cifar10"):
        where = find_vision_files(name, base)
        status[name] = f"files found in {where}" if where else f"missing (looked in {base})"
    return status
