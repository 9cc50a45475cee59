"""Defensive distillation (Papernot et al., 2016) and why it only *looks* robust.

A student network is trained at temperature :math:`T` on the soft labels of a teacher,

.. math::

    \\min_\\theta \\; \\mathbb{E}_x \\Big[ -\\sum_i p^{\\text{teacher}}_i(x)\\,
    \\log \\mathrm{softmax}\\big(z_\\theta(x) / T\\big)_i \\Big],

and deployed at :math:`T = 1`. To fit soft labels *through* a division by :math:`T` its logits
grow about :math:`T` times larger than a normal model's, so at :math:`T = 1` the softmax
saturates: the cross-entropy's gradient :math:`\\mathrm{softmax}(z) - e_y` is exactly zero in
float32 for almost every input, and gradient attacks on the cross-entropy (plain PGD, FGSM)
find nothing to follow. The decision boundary has not moved: Carlini and Wagner's attack on
the logits, or PGD on :math:`z / T` (:func:`~labkit.hardening.with_temperature`), break it.

References: Papernot, McDaniel, Wu, Jha and Swami, "Distillation as a Defense to Adversarial
Perturbations against Deep Neural Networks", IEEE S&P 2016, arXiv:1511.04508; Carlini and
Wagner, "Defensive Distillation is Not Robust to Adversarial Examples", arXiv:1607.04311.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from labkit._checks import check_int, check_number
from labkit.contract import LabModel
from labkit.data.base import LabData
from labkit.hardening.wrappers import check_lab_model, check_temperature
from labkit.models.loop import fit, soft_label_step
from labkit.utils import check_images, eval_mode, fresh_seed

__all__ = ["distill"]


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()


@torch.no_grad()
def _soft_labels(
    teacher: LabModel, x: torch.Tensor, temperature: float, batch_size: int, device: torch.device
) -> torch.Tensor:
    out = []
    with eval_mode(teacher):
        for i in range(0, x.shape[0], batch_size):
            out.append((teacher(x[i : i + batch_size].to(device)) / temperature).softmax(dim=1))
    return torch.cat(out)


def distill(
    teacher: LabModel,
    data: LabData,
    *,
    temperature: float,
    teacher_temperature: float = 1.0,
    epochs: int = 12,
    lr: float = 2e-3,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    student: LabModel | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> LabModel:
    """Defensive distillation: train a student at ``temperature`` on the teacher's soft labels.

    The soft labels are :math:`\\mathrm{softmax}(z^{\\text{teacher}} / T_{\\text{teacher}})`. In
    Papernot et al. the teacher itself was trained at temperature :math:`T` and read at
    :math:`T`; its logits are then :math:`T` times those of a normally trained network, so
    reading a normally trained teacher (such as the zoo's) at ``teacher_temperature=1`` gives
    the same soft labels. The student is trained on :math:`\\mathrm{softmax}(z / T)` and
    returned as it is deployed, at :math:`T = 1`, with logits about :math:`T` times larger.

    Parameters
    ----------
    teacher:
        A trained :class:`~labkit.LabModel`.
    data:
        Training inputs (their labels are not used: the teacher's soft labels replace them).
    temperature:
        :math:`T > 0` the student is trained at; Papernot et al. used 100.
    teacher_temperature:
        Temperature the teacher's logits are read at.
    epochs, lr, batch_size, weight_decay:
        Adam with a one-cycle schedule, as :func:`labkit.models.train`.
    student:
        The network to train (default: a freshly initialised copy of the teacher's
        architecture, seeded from ``generator``).
    generator:
        Seeds the student's initialisation, the shuffling and dropout; the global RNG is
        left as it was.
    progress:
        Show a progress bar.

    Returns
    -------
    LabModel
        The distilled student in eval mode, normalisation inside, with
        ``meta["defense"] = "defensive distillation"`` and ``meta["temperature"]``.

    Examples
    --------
    >>> import labkit as lk
    >>> data = lk.data.load("digits", split="train", n=64)
    >>> teacher = lk.models.build("digits-cnn", data).eval()
    >>> student = distill(teacher, data, temperature=50, epochs=1, progress=False)
    >>> student.meta["temperature"], student.training
    (50.0, False)
    """
    teacher = check_lab_model(teacher, "teacher")
    if not isinstance(data, LabData):
        raise TypeError(f"data must be a LabData (from labkit.data.load), got {type(data).__name__}")
    temperature = check_temperature(temperature)
    teacher_temperature = check_temperature(teacher_temperature)
    epochs = check_int(epochs, "epochs", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    lr = check_number(lr, "lr")
    weight_decay = check_number(weight_decay, "weight_decay", strict=False)
    check_images(data.x, name="data.x", shape=teacher.input_shape, value_range=teacher.value_range)
    if len(data) == 0:
        raise ValueError("data is empty")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    device = teacher.mean.device
    fork_devices = [device] if device.type == "cuda" else []

    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(fresh_seed(gen))
        if student is None:
            model = copy.deepcopy(teacher)
            _reset(model.net)
            model.meta = {}
        else:
            model = check_lab_model(student, "student")
            if model.input_shape != teacher.input_shape or model.num_classes != teacher.num_classes:
                raise ValueError(
                    f"student takes {model.input_shape} -> {model.num_classes} classes but the teacher "
                    f"takes {teacher.input_shape} -> {teacher.num_classes}"
                )
        model = model.to(device)
        targets = _soft_labels(teacher, data.x, teacher_temperature, 512, device)

        start = time.perf_counter()
        fit(
            model,
            data.x,
            targets,
            epochs=epochs,
            step=soft_label_step(temperature),
            lr=lr,
            batch_size=batch_size,
            weight_decay=weight_decay,
            generator=gen,
            progress=progress,
            desc=f"distilling at T={temperature:g}",
        )
    model.meta = {
        **model.meta,
        "defense": "defensive distillation",
        "temperature": temperature,
        "teacher": teacher.meta.get("name", type(teacher.net).__name__),
        "teacher_model": teacher,
        "train_seconds": time.perf_counter() - start,
    }
    return model.eval()
