"""Named models that are trained once, with a fixed seed, and cached on disk."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from labkit.config import Profile, active_profile, cache_dir
from labkit.contract import LabModel
from labkit.data import load
from labkit.data.base import LabData
from labkit.models.nets import small_net
from labkit.models.training import accuracy, train

__all__ = ["RECIPES", "Recipe", "build", "pretrained", "weights_path"]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """How to build and train one named model."""

    name: str
    dataset: str
    description: str
    lr: float = 2e-3
    weight_decay: float = 5e-4
    batch_size: int = 128
    seed: int = 0
    arch: dict[str, Any] = field(default_factory=dict)
    balanced: bool = False
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None

    def fingerprint(self, profile: Profile, n_train: int) -> str:
        """Changes whenever anything that shapes the trained weights changes."""
        spec = {
            "format": FORMAT_VERSION,
            "name": self.name,
            "dataset": self.dataset,
            "lr": self.lr,
            "wd": self.weight_decay,
            "bs": self.batch_size,
            "seed": self.seed,
            "arch": self.arch,
            "balanced": self.balanced,
            "augment": getattr(self.augment, "__name__", None),
            "epochs": profile.epochs.get(self.name),
            "n_train": n_train,
            "data_version": _data_version(self.dataset),
            "code": _training_code_version(),
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _training_code_version() -> str:
    """A digest of what turns a recipe into weights: the network definitions, the training loop
    and its callers in this package, and the PyTorch version. A change to any of them trains
    anew instead of loading weights that the current code would not produce."""
    from labkit.models import loop, nets, training

    digest = hashlib.sha256(torch.__version__.encode())
    for module in (nets, loop, training):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()[:12]


def _data_version(dataset: str) -> str:
    if dataset == "signs":
        from labkit.data.signs import GENERATOR_VERSION

        return str(GENERATOR_VERSION)
    if dataset == "transactions":
        from labkit.data.transactions import GENERATOR_VERSION as TX_VERSION

        return str(TX_VERSION)
    if dataset == "faces":
        from labkit.data.faces import GENERATOR_VERSION as FACES_VERSION

        return str(FACES_VERSION)
    return "1"


RECIPES: dict[str, Recipe] = {
    "digits-cnn": Recipe("digits-cnn", "digits", "SmallCNN on the 8x8 digits", arch={"width": 32}),
    # width 8: the convolutions at 32x32 dominate CPU time; it reaches ~98% in ~20 s on 2 cores
    "signs-cnn": Recipe(
        "signs-cnn", "signs", "SmallCNN (width 8) on 32x32 generated traffic signs", arch={"width": 8}
    ),
    "transactions-mlp": Recipe(
        "transactions-mlp",
        "transactions",
        "MLP fraud detector with class-balanced loss",
        arch={"hidden": [64, 64]},
        balanced=True,
        batch_size=256,
    ),
    # lesson 02 trains it in the notebook in a few seconds (lk.models.build + lk.models.train)
    "faces-cnn": Recipe(
        "faces-cnn", "faces", "SmallCNN (width 8) identifying 32x32 generated faces", arch={"width": 8}
    ),
    "mnist-cnn": Recipe("mnist-cnn", "mnist", "SmallCNN on MNIST (needs the files)", arch={"width": 32}),
    "fashion_mnist-cnn": Recipe(
        "fashion_mnist-cnn",
        "fashion_mnist",
        "SmallCNN on Fashion-MNIST (needs the files)",
        arch={"width": 32},
    ),
    "cifar10-cnn": Recipe(
        "cifar10-cnn", "cifar10", "SmallCNN on CIFAR-10 (needs the files)", arch={"width": 48}
    ),
}


def build(recipe: Recipe | str, data: LabData) -> LabModel:
    """An untrained model for a recipe, wrapped in the lab contract with ``data``'s statistics."""
    r = RECIPES[recipe] if isinstance(recipe, str) else recipe
    mean, std = data.stats()
    value_range = (0.0, 1.0) if data.is_image else None
    return LabModel(
        small_net(data.input_shape, data.num_classes, **r.arch),
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        mean=mean,
        std=std,
        value_range=value_range,
        class_names=data.classes,
    )


def weights_path(name: str, profile: str | Profile | None = None) -> Path:
    """Where the cached weights of ``name`` under ``profile`` live."""
    recipe = _recipe(name)
    prof = active_profile(profile)
    n_train = prof.size(recipe.dataset, "train") or 0
    return cache_dir() / "models" / f"{name}-{prof.name}-{recipe.fingerprint(prof, n_train)}.pt"


def _recipe(name: str) -> Recipe:
    if not isinstance(name, str) or name not in RECIPES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock so parallel workers train a model only once.

    A shared read-only cache (a workshop hub's, pretrained once by the instructor) cannot hold a
    lock file; weights already there are only read, so they load without one.
    """
    lock = path.with_suffix(".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")
    except OSError:
        if path.exists():
            yield
            return
        raise
    with handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows: best effort without a lock
            pass
        yield


def pretrained(
    name: str,
    *,
    device: torch.device | str | None = None,
    profile: str | Profile | None = None,
    progress: bool = True,
    retrain: bool = False,
) -> LabModel:
    """A trained model from the zoo, in evaluation mode.

    The first call trains it with a fixed seed under the active profile and caches the weights
    under :func:`labkit.config.cache_dir`; later calls load them (``weights_only=True``).

    Parameters
    ----------
    name:
        One of :data:`RECIPES`: ``digits-cnn``, ``signs-cnn``, ``transactions-mlp``, and for
        the torchvision data sets ``mnist-cnn``, ``fashion_mnist-cnn``, ``cifar10-cnn``.
    device:
        Where to put the model (default CPU).
    profile:
        The run profile whose data size and epochs apply.
    progress:
        Show a progress bar while training.
    retrain:
        Ignore the cache and train again.
    """
    recipe = _recipe(name)
    prof = active_profile(profile)
    path = weights_path(name, prof)
    target = torch.device(device) if device is not None else torch.device("cpu")
    with _locked(path):
        if path.exists() and not retrain:
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
                model = _from_saved(recipe, saved)
                return model.to(target).eval()
            except (RuntimeError, KeyError, ValueError, EOFError, pickle.UnpicklingError) as err:
                import warnings

                warnings.warn(f"cached weights {path} are unreadable ({err}); retraining", stacklevel=2)
        model, meta = _train_recipe(recipe, prof, target, progress)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"state_dict": model.state_dict(), "meta": meta, "spec": _spec(model)}, tmp)
        os.replace(tmp, path)
    return model.eval()


def _spec(model: LabModel) -> dict[str, Any]:
    return {
        "input_shape": list(model.input_shape),
        "num_classes": model.num_classes,
        "class_names": model.class_names,
        "value_range": list(model.value_range) if model.value_range else None,
    }


def _from_saved(recipe: Recipe, saved: dict[str, Any]) -> LabModel:
    spec = saved["spec"]
    shape = tuple(spec["input_shape"])
    model = LabModel(
        small_net(shape, spec["num_classes"], **recipe.arch),
        input_shape=shape,
        num_classes=spec["num_classes"],
        value_range=tuple(spec["value_range"]) if spec["value_range"] else None,
        class_names=spec["class_names"],
    )
    model.load_state_dict(saved["state_dict"])
    model.meta = dict(saved.get("meta", {}))
    return model


def _train_recipe(
    recipe: Recipe, prof: Profile, device: torch.device, progress: bool
) -> tuple[LabModel, dict[str, Any]]:
    epochs = prof.epochs.get(recipe.name)
    if epochs is None:
        raise ValueError(f"profile {prof.name!r} sets no epochs for {recipe.name!r} in course.yml")
    train_data = load(recipe.dataset, split="train", profile=prof)
    test_data = load(recipe.dataset, split="test", profile=prof)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
        torch.manual_seed(recipe.seed)
        model = build(recipe, train_data).to(device)
    class_weight = None
    if recipe.balanced:
        counts = torch.bincount(train_data.y, minlength=train_data.num_classes).float()
        class_weight = (counts.sum() / (len(counts) * counts.clamp_min(1))).sqrt()
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: seed it, then restore
        torch.manual_seed(recipe.seed)
        history = train(
            model,
            train_data,
            epochs=epochs,
            lr=recipe.lr,
            batch_size=recipe.batch_size,
            weight_decay=recipe.weight_decay,
            class_weight=class_weight,
            augment=recipe.augment,
            generator=torch.Generator().manual_seed(recipe.seed),
            progress=progress,
        )
    meta = {
        "name": recipe.name,
        "profile": prof.name,
        "epochs": epochs,
        "train_size": len(train_data),
        "test_accuracy": accuracy(model, test_data),
        "train_seconds": time.perf_counter() - start,
        "final_loss": history.final.get("loss", float("nan")),
        "torch": str(torch.__version__),
    }
    model.meta = meta
    return model, meta
