"""Surrogate models: a model the attacker owns, to craft transfer attacks on.

:func:`train_surrogate` trains a CNN or an MLP with its own seed, optionally on labels read from
the target (Papernot et al.'s black-box setting). :mod:`labkit.attacks.transfer` re-exports it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from labkit._checks import check_int
from labkit.contract import LabModel
from labkit.data.base import LabData

__all__ = ["train_surrogate"]


# --------------------------------------------------------------------------------------------
# Surrogates
# --------------------------------------------------------------------------------------------


def train_surrogate(
    data: LabData,
    *,
    family: Literal["cnn", "mlp"] = "cnn",
    seed: int = 1,
    epochs: int = 10,
    width: int = 16,
    hidden: tuple[int, ...] = (256, 128),
    labels_from: nn.Module | None = None,
    lr: float = 2e-3,
    progress: bool = False,
) -> LabModel:
    """Train a surrogate model to craft transfer attacks on.

    A surrogate differs from the target in what the attacker controls: the architecture
    (``family``), the random seed, and the labels. With ``labels_from`` the training labels
    are the target's own predictions on ``data.x``, which costs one query per training input:
    the attacker needs no labelled data, only access to the target's top label (Papernot et
    al., "Practical Black-Box Attacks against Machine Learning", arXiv:1602.02697, without
    their Jacobian data augmentation).

    Parameters
    ----------
    data:
        Training images, e.g. ``labkit.data.load("digits", split="train")``.
    family:
        ``"cnn"``: :class:`~labkit.models.SmallCNN` of the given ``width``; ``"mlp"``: a
        multi-layer perceptron on the flattened pixels with layers ``hidden``.
    seed:
        Seed of the initialisation, dropout and shuffling; the global random state is left alone.
    epochs, lr:
        Training length and Adam's learning rate (one-cycle schedule).
    width, hidden:
        Size of the CNN or of the MLP.
    labels_from:
        A model whose predictions replace ``data.y`` (the black-box setting).
    progress:
        Show a progress bar.

    Returns
    -------
    LabModel
        The trained surrogate in eval mode, normalisation inside, ``meta["family"]`` and
        ``meta["seed"]`` set.
    """
    from labkit.models.nets import MLP, small_net
    from labkit.models.training import predict, train

    if family not in ("cnn", "mlp"):
        raise ValueError(f"family must be 'cnn' or 'mlp', got {family!r}")
    if not isinstance(data, LabData) or not data.is_image:
        raise TypeError("data must be an image LabData, e.g. labkit.data.load('digits', split='train')")
    seed = check_int(seed, "seed", minimum=0)
    epochs = check_int(epochs, "epochs", minimum=1)
    if labels_from is not None:
        labels = predict(labels_from, data.x)
        data = LabData(
            name=data.name,
            split=data.split,
            x=data.x,
            y=labels.to(data.y.device),
            classes=list(data.classes),
            info={**data.info, "labels_from": type(labels_from).__name__},
        )
    shape = data.input_shape
    mean, std = data.stats()
    with torch.random.fork_rng(devices=[]):  # seeded initialisation and dropout, global RNG untouched
        torch.manual_seed(seed)
        if family == "cnn":
            net: nn.Module = small_net(shape, data.num_classes, width=width)
        else:
            net = nn.Sequential(nn.Flatten(), MLP(math.prod(shape), data.num_classes, hidden=hidden))
        model = LabModel(
            net, input_shape=shape, num_classes=data.num_classes, mean=mean, std=std, class_names=data.classes
        )
        train(
            model,
            data,
            epochs=epochs,
            lr=lr,
            weight_decay=5e-4,
            generator=torch.Generator().manual_seed(seed),
            progress=progress,
        )
    model.meta = {
        "family": family,
        "seed": seed,
        "epochs": epochs,
        "labels_from_target": labels_from is not None,
    }
    return model.eval()
