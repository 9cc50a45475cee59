"""Where labkit keeps its files and which run profile is active."""

from __future__ import annotations

import os
from pathlib import Path

from labkit.course.manifest import Profile, find_course_file, load_course

__all__ = ["FALLBACK_PROFILE", "active_profile", "cache_dir"]

# Used only when labkit runs without a course.yml (installed outside the course checkout).
# tests/test_course.py checks that it matches the manifest's ci profile.
FALLBACK_PROFILE = Profile(
    name="ci",
    description="built-in fallback (no course.yml found)",
    cell_timeout=120,
    batch_size=128,
    eval_size=256,
    datasets={
        "digits": {"train": 1437, "test": 360},
        "signs": {"train": 10000, "test": 2000},
        "transactions": {"train": 20000, "test": 5000},
        "mnist": {"train": 10000, "test": 2000},
        "fashion_mnist": {"train": 10000, "test": 2000},
        "cifar10": {"train": 10000, "test": 2000},
    },
    epochs={
        "digits-cnn": 12,
        "signs-cnn": 6,
        "transactions-mlp": 6,
        "mnist-cnn": 3,
        "fashion_mnist-cnn": 3,
        "cifar10-cnn": 5,
    },
)


def active_profile(name: str | Profile | None = None) -> Profile:
    """Resolve a run profile.

    ``name`` wins, then the ``LABKIT_PROFILE`` environment variable, then the ``default`` in
    ``course.yml``. Without a course.yml only the built-in ``ci`` profile exists.
    """
    if isinstance(name, Profile):
        return name
    path = find_course_file()
    if path is None:
        chosen = name or os.environ.get("LABKIT_PROFILE") or "ci"
        if chosen != "ci":
            raise ValueError(
                f"profile {chosen!r} needs course.yml (none found); set LABKIT_COURSE to its path"
            )
        return FALLBACK_PROFILE
    return load_course(path).profile(name)


def cache_dir() -> Path:
    """The folder for cached model weights and data: ``LABKIT_CACHE``, else the user cache."""
    env = os.environ.get("LABKIT_CACHE")
    if env:
        path = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "labkit"
    path.mkdir(parents=True, exist_ok=True)
    return path
