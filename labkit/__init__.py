"""labkit: the helper package of Model Hardening Lab.

Attacks, hardening methods, stress tests, evaluation and course tooling for a hands-on course
on hardening and robustness testing of AI models. Runs on a GPU when there is one and on a CPU
otherwise; device and dtype always follow the input tensors.

The library stands below the course: ``import labkit`` loads the library packages only; the
course tooling (:mod:`labkit.course`: manifest, grading sandbox, certificates) loads on first
use of ``lk.course``, or when a profile is read from ``course.yml``.

>>> import labkit as lk
>>> lk.pick_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from labkit import (
    atlas,
    attacks,
    config,
    data,
    ensembles,
    eval,
    genai,
    hardening,
    models,
    monitoring,
    plot,
    poisoning,
    privacy,
    redteam,
    resilience,
    serving,
    speed,
    stress,
    validation,
)
from labkit.config import cache_dir
from labkit.config import setup_profile as active_profile
from labkit.contract import LabModel, TrainModeWarning
from labkit.utils import check_images, eval_mode, pick_device, seed_everything

if TYPE_CHECKING:
    from labkit import course
    from labkit.course.manifest import Course

__version__ = "0.1.0"

__all__ = [
    "LabModel",
    "TrainModeWarning",
    "__version__",
    "active_profile",
    "atlas",
    "attacks",
    "cache_dir",
    "check_images",
    "course",
    "data",
    "ensembles",
    "eval",
    "eval_mode",
    "genai",
    "hardening",
    "models",
    "monitoring",
    "pick_device",
    "plot",
    "poisoning",
    "privacy",
    "redteam",
    "resilience",
    "seed_everything",
    "serving",
    "speed",
    "stress",
    "validation",
]


def _load_course() -> Course | None:
    """The course in ``course.yml`` (found as :func:`labkit.course.find_course_file` says), or None."""
    from labkit.course.manifest import find_course_file, load_course

    path = find_course_file()
    return None if path is None else load_course(path)


# The course stands on the library: the face wires the course's profiles into the core.
config.set_course_loader(_load_course)


def __getattr__(name: str) -> Any:
    """``lk.course`` loads the course tooling on first use."""
    if name == "course":
        return importlib.import_module("labkit.course")
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")
