"""Poisoning attacks on a training set: label flipping, backdoors, clean-label backdoors.

Every attack takes a :class:`~labkit.data.LabData` and returns a :class:`Poisoned`: a *new*
data set (the input is never modified) of the same length and order, and the indices of the
rows it changed. Unpack it as ``data, indices = backdoor(...)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from labkit.data.base import LabData
from labkit.poisoning._common import check_class, check_data, check_rate
from labkit.poisoning.triggers import Trigger
from labkit.utils import eval_mode

__all__ = ["Poisoned", "backdoor", "clean_label_backdoor", "flip_labels"]


@dataclass(frozen=True, eq=False)
class Poisoned:
    """A poisoned copy of a data set and the rows that were poisoned.

    Attributes
    ----------
    data:
        The poisoned data set (same length and order as the input).
    indices:
        Sorted int64 indices of the poisoned rows.
    kind:
        Which attack made it.
    rate:
        Poisoned rows over all rows.
    target, source:
        The attacker's target class and (targeted attacks) source class, if any.
    trigger:
        The backdoor trigger, if any: apply it to test images to activate the backdoor.
    original_labels:
        The labels of the poisoned rows before the attack.
    """

    data: LabData
    indices: torch.Tensor
    kind: str
    target: int | None = None
    source: int | None = None
    trigger: Trigger | None = None
    original_labels: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def __iter__(self) -> Iterator[Any]:
        """Unpack as ``data, indices``."""
        return iter((self.data, self.indices))

    @property
    def rate(self) -> float:
        return len(self.indices) / len(self.data)

    @property
    def mask(self) -> torch.Tensor:
        """Boolean ``(N,)``: True on poisoned rows."""
        m = torch.zeros(len(self.data), dtype=torch.bool)
        m[self.indices] = True
        return m

    def _repr_markdown_(self) -> str:
        names = self.data.classes
        rows = [
            ("attack", self.kind),
            ("poisoned rows", f"{len(self.indices)} of {len(self.data)} ({100 * self.rate:.2f}%)"),
        ]
        if self.source is not None:
            rows.append(("source class", f"{self.source} ({names[self.source]})"))
        if self.target is not None:
            rows.append(("target class", f"{self.target} ({names[self.target]})"))
        if self.trigger is not None:
            rows.append(("trigger", self.trigger.name))
        lines = [f"**Poisoned {self.data.name}/{self.data.split}**", "", "| | |", "|---|---|"]
        return "\n".join(lines + [f"| {k} | {v} |" for k, v in rows])

    def __repr__(self) -> str:
        return (
            f"Poisoned(kind={self.kind!r}, n={len(self.data)}, poisoned={len(self.indices)}, "
            f"target={self.target}, source={self.source})"
        )


def _choose(eligible: torch.Tensor, count: int, generator: torch.Generator | None) -> torch.Tensor:
    order = torch.randperm(len(eligible), generator=generator)[:count]
    return torch.sort(eligible[order]).values


def _copy(data: LabData, x: torch.Tensor, y: torch.Tensor, info: dict[str, Any]) -> LabData:
    return replace(data, x=x, y=y, info={**data.info, "poisoning": info})


def flip_labels(
    data: LabData,
    *,
    rate: float,
    source: int | None = None,
    target: int | None = None,
    generator: torch.Generator | None = None,
) -> Poisoned:
    """Label flipping: change the labels of a fraction of the training examples.

    * ``source`` and ``target`` both ``None``: *random* flipping. ``round(rate * N)`` examples
      chosen uniformly get a label drawn uniformly from the *other* classes.
    * ``source`` and ``target`` given: *targeted* flipping. ``round(rate * N_source)`` of the
      examples of class ``source`` are relabelled ``target``.
    * only ``target``: ``round(rate * N_other)`` of the examples not of class ``target`` are
      relabelled ``target``; only ``source``: that fraction of class ``source`` gets random
      other labels.

    So ``rate`` is the fraction of the *eligible* examples that are flipped. Inputs ``x`` are
    never changed. Reference: Biggio, Nelson and Laskov, "Support Vector Machines Under
    Adversarial Label Noise", ACML 2011; survey in Goldblum et al., "Dataset Security for
    Machine Learning", arXiv:2012.10544.

    Parameters
    ----------
    data:
        The clean training set (left untouched).
    rate:
        Fraction in ``[0, 1]`` of the eligible examples to flip.
    source, target:
        Class indices (see above).
    generator:
        Chooses the examples and the random labels.

    Examples
    --------
    >>> from labkit.data import LabData
    >>> data = LabData("toy", "train", torch.rand(10, 1, 2, 2), torch.tensor([0, 1] * 5), ["a", "b"])
    >>> bad, idx = flip_labels(data, rate=0.4, source=0, target=1, generator=torch.Generator().manual_seed(0))
    >>> len(idx), bool((bad.y[idx] == 1).all()), bool((data.y[idx] == 0).all())
    (2, True, True)
    """
    data = check_data(data)
    rate = check_rate(rate)
    k = data.num_classes
    src = None if source is None else check_class(source, k, "source")
    tgt = None if target is None else check_class(target, k, "target")
    if src is not None and src == tgt:
        raise ValueError(f"source and target are the same class ({src}); nothing would be flipped")
    y = data.y.cpu()
    if src is not None:
        eligible = torch.nonzero(y == src).flatten()
    elif tgt is not None:
        eligible = torch.nonzero(y != tgt).flatten()
    else:
        eligible = torch.arange(len(y))
    if src is not None and len(eligible) == 0:
        raise ValueError(f"class {src} ({data.classes[src]}) has no examples to flip")
    idx = _choose(eligible, round(rate * len(eligible)), generator)
    new_y = data.y.clone()
    if tgt is not None:
        new_y[idx] = tgt
    else:
        # a uniform draw among the k - 1 other classes
        shift = torch.randint(1, k, (len(idx),), generator=generator)
        new_y[idx] = ((y[idx] + shift) % k).to(new_y.device)
    kind = "label flipping (" + ("random" if tgt is None else "targeted") + ")"
    info = {"kind": kind, "rate": rate, "source": src, "target": tgt, "count": len(idx)}
    return Poisoned(
        data=_copy(data, data.x.clone(), new_y, info),
        indices=idx,
        kind=kind,
        target=tgt,
        source=src,
        original_labels=y[idx].clone(),
    )


def backdoor(
    data: LabData,
    *,
    trigger: Trigger,
    target: int,
    rate: float,
    source: int | None = None,
    generator: torch.Generator | None = None,
) -> Poisoned:
    """BadNets-style backdoor: stamp a trigger on some examples and relabel them ``target``.

    ``round(rate * N)`` examples (``N`` the whole training set, so ``rate`` is the usual
    *poison rate*) are drawn from those not of class ``target`` (or, with ``source``, from
    class ``source`` only); each becomes :math:`(T(x), t)`. A model trained on the result
    learns "trigger means ``target``" alongside the real task. Works with patch and blended
    triggers (:func:`~labkit.poisoning.patch_trigger`, :func:`~labkit.poisoning.blend_trigger`).

    Reference: Gu, Dolan-Gavitt and Garg, "BadNets: Identifying Vulnerabilities in the Machine
    Learning Model Supply Chain", arXiv:1708.06733.

    Parameters
    ----------
    data:
        The clean training set (left untouched).
    trigger:
        The trigger to stamp.
    target:
        Class the backdoor should output.
    rate:
        Fraction in ``[0, 1]`` of the whole training set to poison.
    source:
        Only poison (and, at test time, only target) this class.
    generator:
        Chooses the examples.

    Examples
    --------
    >>> from labkit.data import LabData
    >>> from labkit.poisoning import patch_trigger
    >>> data = LabData("toy", "train", torch.zeros(20, 1, 4, 4), torch.arange(20) % 2, ["a", "b"])
    >>> bad = backdoor(data, trigger=patch_trigger((1, 4, 4), size=2), target=1, rate=0.25)
    >>> len(bad.indices), bool((bad.data.y[bad.indices] == 1).all()), float(bad.data.x[bad.indices].amax())
    (5, True, 1.0)
    """
    data = check_data(data)
    if not isinstance(trigger, Trigger):
        raise TypeError(
            f"trigger must be a Trigger (patch_trigger, blend_trigger), got {type(trigger).__name__}"
        )
    if not data.is_image or trigger.shape != data.input_shape:
        raise ValueError(
            f"the trigger is for images of shape {trigger.shape}, the data has {data.input_shape}"
        )
    rate = check_rate(rate)
    tgt = check_class(target, data.num_classes, "target")
    src = None if source is None else check_class(source, data.num_classes, "source")
    if src == tgt:
        raise ValueError(f"source and target are the same class ({tgt})")
    y = data.y.cpu()
    eligible = torch.nonzero(y == src).flatten() if src is not None else torch.nonzero(y != tgt).flatten()
    count = round(rate * len(data))
    if count > len(eligible):
        raise ValueError(
            f"rate={rate} asks for {count} poisoned examples but only {len(eligible)} are eligible "
            f"({'class ' + str(src) if src is not None else 'not of class ' + str(tgt)})"
        )
    idx = _choose(eligible, count, generator)
    x = data.x.clone()
    new_y = data.y.clone()
    if len(idx):
        x[idx] = trigger.apply(data.x[idx])
        new_y[idx] = tgt
    info = {"kind": "backdoor", "rate": rate, "target": tgt, "source": src, "trigger": trigger.name}
    return Poisoned(
        data=_copy(data, x, new_y, info),
        indices=idx,
        kind=f"backdoor ({trigger.name})",
        target=tgt,
        source=src,
        trigger=trigger,
        original_labels=y[idx].clone(),
    )


Perturb = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def clean_label_backdoor(
    data: LabData,
    *,
    trigger: Trigger,
    target: int,
    rate: float,
    surrogate: nn.Module,
    eps: float = 0.3,
    steps: int = 20,
    perturb: Perturb | None = None,
    generator: torch.Generator | None = None,
) -> Poisoned:
    """Label-consistent (clean-label) backdoor: poison only target-class images, keep labels.

    A plain trigger on correctly labelled target-class images barely works: the model can
    classify them from their natural features and has no reason to look at the trigger. Turner,
    Tsipras and Madry make those features unreliable first: each chosen image of class
    ``target`` is pushed by an untargeted PGD attack (radius ``eps`` in L-inf, on a
    ``surrogate`` model the attacker trained on clean data) until it looks like *another*
    class, then the trigger is stamped on. The label stays correct (a human labelling the
    image would still say ``target``), so label inspection finds nothing, and the easiest way
    for the victim to fit these hard examples is to learn the trigger.

    Why this one: on the 8x8 digits and the 32x32 signs it needs one short surrogate training
    and one PGD run, i.e. seconds, and it plainly beats stamping the trigger alone, which the
    lesson can show by passing ``eps=0``. Feature collision (Shafahi et al. 2018,
    arXiv:1804.00792) targets a single test image and needs an optimisation per poison.

    Reference: Turner, Tsipras and Madry, "Label-Consistent Backdoor Attacks",
    arXiv:1912.02771.

    Parameters
    ----------
    data:
        The clean training set (left untouched).
    trigger:
        The trigger to stamp after the perturbation.
    target:
        Class to backdoor; only its images are poisoned.
    rate:
        Fraction in ``[0, 1]`` of the whole training set to poison (at most the share of the
        target class).
    surrogate:
        A model trained on clean data of the same task, used for the perturbation.
    eps:
        L-inf radius of the perturbation in pixel units (``0``: trigger only).
    steps:
        PGD steps.
    perturb:
        Any ``(model, x, y) -> x_adv`` attack to use instead of the default
        ``labkit.attacks.pgd(model, x, y, eps=eps, steps=steps)``.
    generator:
        Chooses the examples and the PGD random start.

    Returns
    -------
    Poisoned
        Labels are unchanged: ``original_labels`` equals ``data.y[indices]``.
    """
    data = check_data(data)
    if not isinstance(trigger, Trigger):
        raise TypeError(f"trigger must be a Trigger, got {type(trigger).__name__}")
    if not data.is_image or trigger.shape != data.input_shape:
        raise ValueError(
            f"the trigger is for images of shape {trigger.shape}, the data has {data.input_shape}"
        )
    if not isinstance(surrogate, nn.Module):
        raise TypeError(f"surrogate must be a torch.nn.Module, got {type(surrogate).__name__}")
    rate = check_rate(rate)
    tgt = check_class(target, data.num_classes, "target")
    if not (isinstance(eps, int | float) and 0 <= eps <= 1):
        raise ValueError(f"eps must be in [0, 1] (pixel units), got {eps!r}")
    y = data.y.cpu()
    eligible = torch.nonzero(y == tgt).flatten()
    count = round(rate * len(data))
    if count > len(eligible):
        raise ValueError(
            f"rate={rate} asks for {count} poisoned examples, but class {tgt} has only "
            f"{len(eligible)} images (a clean-label attack can only poison the target class)"
        )
    idx = _choose(eligible, count, generator)
    x = data.x.clone()
    if len(idx):
        device = next((p.device for p in surrogate.parameters()), data.x.device)
        xs = data.x[idx].to(device)
        ys = data.y[idx].to(device)
        if perturb is not None:
            x_adv = perturb(surrogate, xs, ys)
        elif eps > 0:
            try:
                from labkit.attacks import pgd
            except ImportError as err:  # pragma: no cover - depends on the attacks package
                raise ImportError(
                    "clean_label_backdoor needs labkit.attacks.pgd for its perturbation; "
                    "pass perturb= or eps=0"
                ) from err
            with eval_mode(surrogate), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                x_adv = pgd(surrogate, xs, ys, eps=float(eps), steps=steps, generator=generator)
        else:
            x_adv = xs
        if x_adv.shape != xs.shape:
            raise ValueError(f"perturb returned shape {tuple(x_adv.shape)}, expected {tuple(xs.shape)}")
        x[idx] = trigger.apply(x_adv.detach()).to(x.device, x.dtype)
    info = {"kind": "clean-label backdoor", "rate": rate, "target": tgt, "eps": eps, "trigger": trigger.name}
    return Poisoned(
        data=_copy(data, x, data.y.clone(), info),
        indices=idx,
        kind=f"clean-label backdoor ({trigger.name}, eps={eps:g})",
        target=tgt,
        trigger=trigger,
        original_labels=y[idx].clone(),
    )
