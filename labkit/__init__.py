"""labkit: the helper package of Model Hardening Lab.

Attacks, hardening methods, stress tests, evaluation and course tooling for a hands-on course
on hardening and robustness testing of AI models. Runs on a GPU when there is one and on a CPU
otherwise; device and dtype always follow the input tensors.

>>> import labkit as lk
>>> lk.pick_device("cpu")
device(type='cpu')
"""

from labkit import (
    atlas,
    attacks,
    course,
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
from labkit.config import active_profile, cache_dir
from labkit.contract import LabModel, TrainModeWarning
from labkit.utils import check_images, eval_mode, pick_device, seed_everything

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
