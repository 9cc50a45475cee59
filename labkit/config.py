"""Where labkit keeps its files, and the run profiles (plain data).

A profile sets the sizes of a run (data set splits, epochs, batch sizes, timeouts) and its
opt-in speed settings. The profiles themselves are written in the course's ``course.yml``;
this module knows nothing of the course: the package face (:mod:`labkit`) registers a loader
with :func:`set_course_loader`, and :func:`active_profile` asks it. Without one, or without a
course.yml, only the built-in ``ci`` profile (:data:`FALLBACK_PROFILE`) exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from labkit import speed
from labkit.speed import SpeedConfig

__all__ = [
    "FALLBACK_PROFILE",
    "Profile",
    "ProfileBook",
    "active_profile",
    "cache_dir",
    "course",
    "set_course_loader",
    "setup_profile",
]


@dataclass(frozen=True)
class Profile:
    """Run sizes for one profile (``ci``, ``laptop`` or ``gpu``)."""

    name: str
    description: str
    cell_timeout: int
    batch_size: int
    eval_size: int
    datasets: Mapping[str, Mapping[str, int]]
    epochs: Mapping[str, int]
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    """Opt-in speed features (:mod:`labkit.speed`); everything off unless the profile says."""

    def size(self, dataset: str, split: str) -> int | None:
        """Number of examples of ``dataset``'s ``split`` under this profile (None: all)."""
        return self.datasets.get(dataset, {}).get(split)


class ProfileBook(Protocol):
    """What :func:`active_profile` needs of a course: its profiles by name."""

    def profile(self, name: str | None = None) -> Profile:
        """The profile called ``name`` (``None``: ``LABKIT_PROFILE``, else the default)."""
        ...


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

_course_loader: Callable[[], ProfileBook | None] | None = None


def set_course_loader(loader: Callable[[], ProfileBook | None] | None) -> None:
    """Register how to load the course whose profiles :func:`active_profile` reads.

    ``loader()`` returns the course, or ``None`` when there is none (no course.yml found).
    The package face registers the course's own loader; ``None`` unregisters it.
    """
    global _course_loader
    if loader is not None and not callable(loader):
        raise TypeError(f"loader must be callable or None, got {type(loader).__name__}")
    _course_loader = loader


def course() -> ProfileBook | None:
    """The course the registered loader finds, or ``None`` (no loader, or no course.yml)."""
    return None if _course_loader is None else _course_loader()


def active_profile(name: str | Profile | None = None) -> Profile:
    """Resolve a run profile; this changes nothing (see :func:`setup_profile` for the setup call).

    ``name`` wins, then the ``LABKIT_PROFILE`` environment variable, then the ``default`` in
    ``course.yml``. Without a course.yml only the built-in ``ci`` profile exists.
    """
    if isinstance(name, Profile):
        return name
    found = course()
    if found is None:
        chosen = name or os.environ.get("LABKIT_PROFILE") or "ci"
        if chosen != "ci":
            raise ValueError(
                f"profile {chosen!r} needs course.yml (none found); set LABKIT_COURSE to its path"
            )
        return FALLBACK_PROFILE
    return found.profile(name)


def setup_profile(name: str | Profile | None = None) -> Profile:
    """Resolve a run profile and turn its speed settings on for this session.

    This is ``lk.active_profile()``, the setup call at the top of every notebook: the one
    explicit place where a profile's ``speed:`` settings (:mod:`labkit.speed`) come into force.
    Library functions never read them on their own, so what an attack computes does not
    depend on the folder it is called from.

    Examples
    --------
    >>> import labkit as lk
    >>> lk.active_profile("ci").name, lk.speed.current().enabled
    ('ci', False)
    """
    profile = active_profile(name)
    speed.set_default(profile.speed)
    return profile


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
