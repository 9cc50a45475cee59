"""Remove a backdoor: retrain without the flagged rows, or fine-prune the model.

* :func:`retrain_without` drops what a detector flagged and trains a fresh model on the rest.
* :func:`fine_prune` (Liu, Dolan-Gavitt and Garg, "Fine-Pruning: Defending Against
  Backdooring Attacks on Deep Neural Networks", RAID 2018, arXiv:1805.12185) needs no
  detector, only a small clean data set: it prunes the channels of the last convolutional
  layer that stay dormant on clean inputs (where backdoors tend to hide), then fine-tunes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from labkit.data.base import LabData
from labkit.models.training import History, accuracy, train
from labkit.models.zoo import Recipe, build
from labkit.poisoning._common import check_data, check_indices, draw_seed, model_device, seeded
from labkit.utils import eval_mode

__all__ = ["FinePruning", "fine_prune", "remove_flagged", "retrain_without"]


def remove_flagged(data: LabData, flagged: torch.Tensor | Sequence[int]) -> LabData:
    """A new data set without the flagged rows (the input is untouched).

    Examples
    --------
    >>> d = LabData("toy", "train", torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 0, 1, 0]), ["a", "b"])
    >>> len(remove_flagged(d, [1, 3]))
    3
    """
    data = check_data(data)
    drop = check_indices(flagged, len(data), "flagged")
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[drop] = False
    if not bool(keep.any()):
        raise ValueError("every row is flagged: nothing would be left to train on")
    return data.subset(torch.nonzero(keep).flatten())


def retrain_without(
    data: LabData,
    flagged: torch.Tensor | Sequence[int],
    *,
    model: str | Recipe | Callable[[LabData], nn.Module],
    epochs: int,
    lr: float = 2e-3,
    batch_size: int = 128,
    weight_decay: float = 0.0,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> nn.Module:
    """Drop the flagged rows and train a fresh model on the rest.

    Parameters
    ----------
    data:
        The (poisoned) training set.
    flagged:
        Rows to drop, e.g. ``detection.flagged``.
    model:
        A zoo recipe name or :class:`~labkit.models.Recipe` (built with
        :func:`labkit.models.build`), or a function ``data -> nn.Module`` returning an
        untrained model.
    epochs, lr, batch_size, weight_decay:
        Passed to :func:`labkit.models.train`.
    device:
        Where to train (default CPU).
    generator:
        Seeds the initialisation, shuffling and dropout; the global RNG is left as it was.
    progress:
        Show a progress bar.
    """
    clean = remove_flagged(data, flagged)
    seed = draw_seed(generator)
    with seeded(seed):
        net = build(model, clean) if isinstance(model, str | Recipe) else model(clean)
        if not isinstance(net, nn.Module):
            raise TypeError(f"model(data) must return a torch.nn.Module, got {type(net).__name__}")
        net = net.to(torch.device(device) if device is not None else torch.device("cpu"))
        train(
            net,
            clean,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            weight_decay=weight_decay,
            generator=torch.Generator().manual_seed(seed),
            progress=progress,
        )
    return net.eval()


class _ChannelMask:
    """Forward hook that zeroes pruned channels of a layer's output."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (output.dim() - 2)
        return output * self.mask.to(output.device, output.dtype).view(shape)


@dataclass
class FinePruning:
    """The outcome of :func:`fine_prune`.

    Attributes
    ----------
    model:
        The pruned and fine-tuned copy (the input model is untouched). Pruning is a forward
        hook on ``layer`` that zeroes the pruned channels; it is not stored in ``state_dict``.
    layer:
        Name of the pruned layer.
    pruned:
        Indices of the pruned channels, in pruning order (least active on clean data first).
    channels:
        Channels of the layer.
    accuracy_curve:
        Clean accuracy after pruning 0, 1, 2, ... channels (before fine-tuning).
    history:
        Fine-tuning history.
    """

    model: nn.Module
    layer: str
    pruned: list[int]
    channels: int
    accuracy_curve: list[float]
    history: History = field(default_factory=History)

    @property
    def prune_rate(self) -> float:
        return len(self.pruned) / self.channels

    def _repr_markdown_(self) -> str:
        rows = [
            ("layer", f"`{self.layer}`"),
            ("pruned channels", f"{len(self.pruned)} of {self.channels} ({100 * self.prune_rate:.0f}%)"),
            ("clean accuracy before pruning", f"{100 * self.accuracy_curve[0]:.1f}%"),
            ("after pruning", f"{100 * self.accuracy_curve[len(self.pruned)]:.1f}%"),
            ("after fine-tuning (train)", f"{100 * self.history.final.get('train_acc', math.nan):.1f}%"),
        ]
        lines = ["**Fine-pruning**", "", "| | |", "|---|---|"]
        return "\n".join(lines + [f"| {k} | {v} |" for k, v in rows])

    def plot(self, ax: Any = None) -> Any:
        """Clean accuracy against the number of pruned channels."""
        from labkit.plot import curves

        n = list(range(len(self.accuracy_curve)))
        return curves(
            n, {"clean accuracy": self.accuracy_curve}, xlabel="pruned channels", ylabel="accuracy", ax=ax
        )


def _default_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Name of the last leaf module whose output is a 4-D feature map (the last conv block)."""
    names = {m: n for n, m in model.named_modules()}
    seen: list[str] = []
    handles = []

    def hook(module: nn.Module, _: tuple[Any, ...], out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            seen.append(names[module])

    for m in model.modules():
        if not list(m.children()):
            handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad(), eval_mode(model):
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError("the model has no convolutional feature maps; pass layer= (a module name) to prune")
    return seen[-1]


def fine_prune(
    model: nn.Module,
    clean: LabData,
    *,
    max_accuracy_drop: float = 0.05,
    prune_rate: float | None = None,
    layer: str | None = None,
    epochs: int = 5,
    lr: float = 1e-2,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> FinePruning:
    """Fine-pruning: prune channels dormant on clean data, then fine-tune on clean data.

    1. Record the mean activation of each channel of ``layer`` (default: the last module
       producing a feature map, i.e. after the last convolution and its ReLU) on ``clean``.
    2. Prune channels in increasing order of mean activation, one at a time, while the clean
       accuracy stays within ``max_accuracy_drop`` of the unpruned model (the paper stops at a
       4% drop), or prune exactly ``prune_rate`` of them.
    3. Fine-tune the pruned model on ``clean`` for ``epochs`` epochs. On the course's small
       CNNs the fine-tuning needs a fairly large learning rate (the default 0.01 with Adam) to
       erase what pruning leaves of the backdoor; ``prune_rate=0`` gives fine-tuning alone,
       the baseline to compare with.

    Backdoor behaviour often lives in channels that clean inputs leave quiet; pruning removes
    them and fine-tuning repairs the clean accuracy (and further weakens what is left of the
    backdoor). ``clean`` is the defender's small trusted data set, not the test set.

    Reference: Liu, Dolan-Gavitt and Garg, "Fine-Pruning: Defending Against Backdooring
    Attacks on Deep Neural Networks", RAID 2018, arXiv:1805.12185.

    Parameters
    ----------
    model:
        The suspect model (left untouched; a copy is pruned).
    clean:
        Trusted clean data for ranking channels, measuring accuracy and fine-tuning.
    max_accuracy_drop:
        Largest allowed drop of clean accuracy while pruning, in ``[0, 1]``.
    prune_rate:
        Prune exactly this fraction of channels instead.
    layer:
        Name (as in ``model.named_modules()``) of the layer whose output channels are pruned.
    epochs, lr, batch_size:
        Fine-tuning settings (``epochs=0`` prunes only).
    generator:
        Seeds the fine-tuning.
    progress:
        Show a progress bar while fine-tuning.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    clean = check_data(clean, "clean")
    if not (isinstance(max_accuracy_drop, int | float) and 0 <= max_accuracy_drop <= 1):
        raise ValueError(f"max_accuracy_drop must be in [0, 1], got {max_accuracy_drop!r}")
    if prune_rate is not None and not (isinstance(prune_rate, int | float) and 0 <= prune_rate < 1):
        raise ValueError(f"prune_rate must be in [0, 1), got {prune_rate!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    pruned_model = copy.deepcopy(model).eval()
    device = model_device(pruned_model)
    x = clean.x.to(device)
    name = layer if layer is not None else _default_layer(pruned_model, x)
    modules = dict(pruned_model.named_modules())
    if name not in modules:
        raise ValueError(f"layer {name!r} is not a module of the model; see model.named_modules()")
    target = modules[name]

    acts: list[torch.Tensor] = []

    def record(_: nn.Module, __: tuple[Any, ...], out: torch.Tensor) -> None:
        acts.append(out.detach().transpose(0, 1).flatten(1).mean(1))

    handle = target.register_forward_hook(record)
    try:
        with torch.no_grad():
            for i in range(0, len(x), 512):
                pruned_model(x[i : i + 512])
    finally:
        handle.remove()
    activity = torch.stack(acts).mean(0)
    channels = len(activity)
    order = torch.argsort(activity).tolist()
    mask = torch.ones(channels, device=device)
    pruner = _ChannelMask(mask)
    target.register_forward_hook(pruner)
    curve = [accuracy(pruned_model, clean)]
    base = curve[0]
    limit = channels - 1 if prune_rate is None else round(prune_rate * channels)
    pruned: list[int] = []
    for c in order[:limit]:
        mask[c] = 0.0
        acc = accuracy(pruned_model, clean)
        if prune_rate is None and base - acc > max_accuracy_drop:
            mask[c] = 1.0
            break
        pruned.append(c)
        curve.append(acc)
    history = History()
    if epochs > 0:
        seed = draw_seed(generator)
        with seeded(seed):
            history = train(
                pruned_model,
                clean,
                epochs=epochs,
                lr=lr,
                batch_size=batch_size,
                generator=torch.Generator().manual_seed(seed),
                progress=progress,
            )
    return FinePruning(
        model=pruned_model.eval(),
        layer=name,
        pruned=pruned,
        channels=channels,
        accuracy_curve=curve,
        history=history,
    )
