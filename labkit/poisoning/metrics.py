"""How well a backdoor works: clean accuracy and attack success rate, before and after defenses.

* **Clean accuracy**: accuracy on the untouched test set. A good backdoor barely lowers it,
  which is why backdoors go unnoticed.
* **Attack success rate (ASR)**: among test images whose true class is *not* the target (and,
  for a source-specific backdoor, that are of the source class), the fraction the model
  assigns to the target class once the trigger is stamped on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from labkit.data.base import LabData
from labkit.models.training import accuracy, predict
from labkit.poisoning._common import check_class, check_data, model_device
from labkit.poisoning.poison import Poisoned
from labkit.poisoning.triggers import Trigger

__all__ = ["BackdoorReport", "attack_success_rate", "evaluate_backdoor"]


def attack_success_rate(
    model: nn.Module,
    data: LabData,
    *,
    trigger: Trigger,
    target: int,
    source: int | None = None,
    batch_size: int = 512,
) -> float:
    """Fraction of triggered test images (not of class ``target``) classified as ``target``.

    Parameters
    ----------
    model:
        The (possibly backdoored) model.
    data:
        Clean test data; the trigger is applied here, ``data`` is not modified.
    trigger, target:
        The backdoor's trigger and target class.
    source:
        For a source-specific backdoor, count only images of this class.
    batch_size:
        Rows per forward pass.

    Examples
    --------
    >>> import labkit as lk
    >>> from labkit.poisoning import patch_trigger
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    >>> with torch.no_grad():  # predicts class 1 iff the bottom-right pixel is bright
    ...     _ = net[1].weight.zero_(); _ = net[1].bias.zero_(); _ = net[1].weight[1, 15].fill_(1.0)
    >>> model = lk.LabModel(net, input_shape=(1, 4, 4), num_classes=2).eval()
    >>> test = lk.data.LabData("toy", "test", torch.zeros(6, 1, 4, 4), torch.tensor([0, 1] * 3), ["a", "b"])
    >>> attack_success_rate(model, test, trigger=patch_trigger((1, 4, 4), size=1, pattern="white"), target=1)
    1.0
    """
    data = check_data(data)
    if not isinstance(trigger, Trigger):
        raise TypeError(f"trigger must be a Trigger, got {type(trigger).__name__}")
    tgt = check_class(target, data.num_classes, "target")
    keep = data.y != tgt
    if source is not None:
        keep &= data.y == check_class(source, data.num_classes, "source")
    if not bool(keep.any()):
        raise ValueError("no test image is eligible (all are of the target class)")
    x = trigger.apply(data.x[keep])
    pred = predict(model, x.to(model_device(model)), batch_size=batch_size)
    return float((pred == tgt).float().mean())


@dataclass
class BackdoorReport:
    """Clean accuracy and attack success rate of several models (e.g. before/after defenses).

    Index it by model name (``report["fine-pruning"]["asr"]``), show it as a table in a
    notebook, or :meth:`plot` it.
    """

    rows: dict[str, dict[str, float]]
    target: int
    trigger: str
    poison_rate: float | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> dict[str, float]:
        return self.rows[name]

    def _repr_markdown_(self) -> str:
        head = f"**Backdoor** ({self.trigger}, target class {self.target}"
        if self.poison_rate is not None:
            head += f", poison rate {100 * self.poison_rate:.1f}%"
        head += ")"
        lines = [
            head,
            "",
            "| model | clean accuracy | attack success rate |",
            "|---|---:|---:|",
        ]
        for name, r in self.rows.items():
            note = f" ({self.notes[name]})" if name in self.notes else ""
            lines.append(f"| {name}{note} | {100 * r['clean_acc']:.1f}% | {100 * r['asr']:.1f}% |")
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """Grouped bars: clean accuracy and ASR per model."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(1.6 + 1.3 * len(self.rows), 3.2))
        names = list(self.rows)
        pos = torch.arange(len(names)).float()
        ax.bar((pos - 0.2).tolist(), [self.rows[n]["clean_acc"] for n in names], 0.4, label="clean accuracy")
        ax.bar((pos + 0.2).tolist(), [self.rows[n]["asr"] for n in names], 0.4, label="attack success")
        ax.set_xticks(pos.tolist(), names, rotation=15)
        ax.set_ylim(0, 1)
        ax.legend(frameon=False)
        ax.figure.tight_layout()
        return ax.figure


def evaluate_backdoor(
    models: nn.Module | Mapping[str, nn.Module],
    data: LabData,
    *,
    trigger: Trigger | None = None,
    target: int | None = None,
    poisoned: Poisoned | None = None,
    source: int | None = None,
) -> BackdoorReport:
    """Clean accuracy and ASR of one model or of several (``{"no defense": m, ...}``).

    Give either ``poisoned`` (the :class:`Poisoned` returned by the attack: trigger, target
    and poison rate come from it) or ``trigger`` and ``target``.

    Examples
    --------
    >>> # report = evaluate_backdoor({"backdoored": model, "fine-pruned": pruned}, test, poisoned=bad)
    """
    data = check_data(data)
    rate = None
    if poisoned is not None:
        if poisoned.trigger is None or poisoned.target is None:
            raise ValueError(f"{poisoned.kind} has no trigger: there is no backdoor to evaluate")
        trigger = trigger or poisoned.trigger
        target = poisoned.target if target is None else target
        source = poisoned.source if source is None else source
        rate = poisoned.rate
    if trigger is None or target is None:
        raise TypeError("pass poisoned=, or both trigger= and target=")
    named = {"model": models} if isinstance(models, nn.Module) else dict(models)
    if not named:
        raise ValueError("models is empty")
    rows = {}
    for name, model in named.items():
        if not isinstance(model, nn.Module):
            raise TypeError(f"models[{name!r}] must be a torch.nn.Module, got {type(model).__name__}")
        rows[name] = {
            "clean_acc": accuracy(model, data),
            "asr": attack_success_rate(model, data, trigger=trigger, target=target, source=source),
        }
    return BackdoorReport(rows=rows, target=int(target), trigger=trigger.name, poison_rate=rate)
