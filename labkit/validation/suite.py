"""The validation suite: measure a model, check it against gates, write a model card.

:func:`validate` measures (accuracy, calibration, robustness, fairness, explainability, privacy,
reliability), judges each gate and returns a :class:`~labkit.validation.card.ModelCard`; the
metric catalogue, the gates and the card itself live in :mod:`labkit.validation.card`
(re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from labkit._checks import check_generator
from labkit.classifier import Classifier, batched_logits, check_batch_size, check_model
from labkit.data.base import LabData
from labkit.validation.card import METRICS, Gate, GateResult, ModelCard, check_gates
from labkit.validation.metrics import (
    demographic_parity_difference,
    equal_opportunity_difference,
    expected_calibration_error,
    group_rates,
    recall_at_fpr,
    roc_auc,
)

__all__ = ["METRICS", "Gate", "GateResult", "ModelCard", "check_gates", "validate"]

Attack = Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]


_FAMILY = {
    "accuracy": "core",
    "roc_auc": "core",
    "recall_at_fpr": "core",
    "ece": "calibration",
    "robust_accuracy": "robustness",
    "demographic_parity_difference": "fairness",
    "equal_opportunity_difference": "fairness",
    "explanation_similarity": "explainability",
    "mia_auc": "privacy",
    "mia_tpr_at_fpr": "privacy",
    "corruption_accuracy": "reliability",
    "stress_auc": "reliability",
}


def _judge(gate: Gate, value: float | None, why_missing: str) -> GateResult:
    if value is None or math.isnan(value):
        return GateResult(gate, None, "missing", why_missing or "not measured")
    ok = (gate.min is None or value >= gate.min) and (gate.max is None or value <= gate.max)
    return GateResult(gate, value, "pass" if ok else "fail")


# --------------------------------------------------------------------------- the suite
def _check_fpr(fpr: object) -> float:
    if isinstance(fpr, bool) or not isinstance(fpr, int | float) or not math.isfinite(fpr) or not 0 < fpr < 1:
        raise ValueError(f"fpr must be a number in (0, 1), got {fpr!r}")
    return float(fpr)


def validate(
    model: Classifier,
    data: LabData,
    *,
    gates: Mapping[str, Mapping[str, float]],
    train_data: LabData | None = None,
    attack: Attack | None = None,
    sensitive: torch.Tensor | None = None,
    sensitive_name: str | None = None,
    positive_class: int = 1,
    fpr: float = 0.01,
    n: int | None = None,
    extra_metrics: Sequence[str] = (),
    explain_n: int = 64,
    robust_n: int = 256,
    reliability_n: int = 1000,
    reliability_severity: int = 3,
    corruptions: Sequence[str] | None = None,
    batch_size: int = 512,
    generator: torch.Generator | None = None,
    progress: bool = True,
    model_name: str | None = None,
) -> ModelCard:
    """Measure a classifier and check it against release gates; return a model card.

    Always measured: accuracy and expected calibration error (ECE); for binary tasks also
    ROC-AUC and recall at a fixed false-positive rate; fairness gaps when a sensitive
    attribute is available. Measured when gated (or listed in ``extra_metrics``), since they
    cost more: robustness (needs ``attack``), the explanation sanity check, membership
    inference (needs ``train_data``) and reliability under corruptions or tabular stress. A
    gate whose metric cannot be measured is reported as ``missing`` and fails the card.

    Parameters
    ----------
    model:
        The classifier (a LabModel or any module returning logits; explanations need a module).
    data:
        Held-out labelled data (images or tabular).
    gates:
        ``{metric: {"min": v} | {"max": v} | both}``, metrics from :data:`METRICS`, e.g. the
        ``gates`` section of a course.yml.
    train_data:
        The training data, for the membership-inference attack (members) against ``data``
        (non-members).
    attack:
        Any ``(model, x, y) -> x_adv``, e.g. ``functools.partial(lk.attacks.pgd, eps=8/255)``.
    sensitive, sensitive_name:
        Protected attribute per example (default ``data.sensitive``) and its name.
    positive_class:
        The "positive" class for binary metrics and fairness (fraud = 1).
    fpr:
        False-positive rate for ``recall_at_fpr`` and ``mia_tpr_at_fpr``.
    n:
        Use only the first ``n`` examples of ``data``.
    extra_metrics:
        Ungated metrics to measure too.
    explain_n, robust_n, reliability_n:
        Examples used by the explanation check, the attack and the reliability test.
    reliability_severity:
        Severity (1..5) of corruptions / tabular stresses.
    corruptions:
        Corruptions for images (default: all of :data:`labkit.stress.CORRUPTIONS`).
    batch_size, generator, progress:
        Forward-pass size, seeding, progress bar over the checks.
    model_name:
        Name on the card (default: the model's ``meta["name"]`` or class name).

    Returns
    -------
    ModelCard

    Examples
    --------
    >>> import labkit as lk
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.rand(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    >>> data = LabData("toy", "test", x, (x[:, 0, 0].mean(1) > 0.5).long(), ["a", "b"])
    >>> card = validate(model, data, gates={"accuracy": {"min": 0.99}}, progress=False)
    >>> card.passed
    False
    """
    from labkit.stress.corruptions import check_severity

    model = check_model(model)
    if not isinstance(data, LabData):
        raise TypeError(f"data must be a LabData, got {type(data).__name__}")
    parsed = check_gates(gates)
    fpr = _check_fpr(fpr)
    batch_size = check_batch_size(batch_size)
    generator = check_generator(generator)
    reliability_severity = check_severity(reliability_severity)
    for name in extra_metrics:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r} in extra_metrics; choose from {', '.join(METRICS)}")
    for name, value in (("explain_n", explain_n), ("robust_n", robust_n), ("reliability_n", reliability_n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"{name} must be an integer of at least 2, got {value!r}")
    if attack is not None and not callable(attack):
        raise TypeError("attack must be a callable (model, x, y) -> x_adv")
    if train_data is not None and not isinstance(train_data, LabData):
        raise TypeError(f"train_data must be a LabData, got {type(train_data).__name__}")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        data = data.subset(range(min(n, len(data))))
    if len(data) == 0:
        raise ValueError("data is empty")
    group = sensitive if sensitive is not None else data.sensitive
    if group is not None:
        if not isinstance(group, torch.Tensor) or group.shape[0] != len(data):
            raise ValueError(
                f"sensitive must be a tensor with one value per example ({len(data)}), got "
                f"{getattr(group, 'shape', type(group).__name__)}"
            )
        group = group[: len(data)]
    wanted = set(parsed) | set(extra_metrics)
    families = {_FAMILY[m] for m in wanted}
    binary = data.num_classes == 2
    name = model_name or str(getattr(model, "meta", {}).get("name") or type(model).__name__)

    metrics: dict[str, float] = {}
    missing: dict[str, str] = {}
    details: dict[str, Any] = {}
    notes: list[str] = []
    steps = ["core", "fairness", "robustness", "explainability", "privacy", "reliability"]
    bar = tqdm(steps, desc="validation", disable=not progress)
    x, y = data.x, data.y
    for step in bar:
        bar.set_postfix_str(step)
        if step == "core":
            probs = batched_logits(model, x, batch_size=batch_size).softmax(1).float().cpu()
            pred = probs.argmax(1)
            metrics["accuracy"] = float((pred == y.cpu()).float().mean())
            metrics["ece"] = expected_calibration_error(probs, y)
            if binary:
                labels = (y.cpu() == positive_class).long()
                if 0 < int(labels.sum()) < len(labels):
                    metrics["roc_auc"] = roc_auc(probs[:, positive_class], labels)
                    metrics["recall_at_fpr"] = recall_at_fpr(probs[:, positive_class], labels, fpr=fpr)
                else:
                    why = "the data hold only one class"
                    missing["roc_auc"] = missing["recall_at_fpr"] = why
            else:
                missing["roc_auc"] = missing["recall_at_fpr"] = "defined for binary tasks only"
        elif step == "fairness":
            if group is None:
                missing["demographic_parity_difference"] = missing["equal_opportunity_difference"] = (
                    "no sensitive attribute"
                )
                continue
            g = group.cpu()
            try:
                metrics["demographic_parity_difference"] = demographic_parity_difference(
                    pred, g, positive=positive_class
                )
            except ValueError as err:
                missing["demographic_parity_difference"] = str(err)
            try:
                metrics["equal_opportunity_difference"] = equal_opportunity_difference(
                    pred, y.cpu(), g, positive=positive_class
                )
            except ValueError as err:
                missing["equal_opportunity_difference"] = str(err)
            details["fairness"] = {
                "attribute": sensitive_name or str(data.info.get("sensitive", "sensitive attribute")),
                "positive": positive_class,
                "groups": group_rates(pred, y.cpu(), g, positive=positive_class),
            }
        elif step == "robustness" and "robustness" in families:
            if attack is None:
                missing["robust_accuracy"] = "no attack given"
                continue
            xr, yr = x[:robust_n], y[:robust_n]
            x_adv = attack(model, xr, yr)
            if not isinstance(x_adv, torch.Tensor) or x_adv.shape != xr.shape:
                raise ValueError(f"the attack must return a tensor shaped like x {tuple(xr.shape)}")
            adv_pred = batched_logits(model, x_adv, batch_size=batch_size).argmax(1).cpu()
            metrics["robust_accuracy"] = float((adv_pred == yr.cpu()).float().mean())
            details["robustness"] = {
                "attack": getattr(attack, "__name__", None) or repr(attack)[:80],
                "n": int(xr.shape[0]),
                "robust_accuracy": metrics["robust_accuracy"],
                "clean_accuracy": float((pred[: xr.shape[0]] == yr.cpu()).float().mean()),
            }
        elif step == "explainability" and "explainability" in families:
            from torch import nn

            from labkit.validation.explain import randomization_check

            if not isinstance(model, nn.Module):
                missing["explanation_similarity"] = "explanations need a differentiable nn.Module"
                continue
            result = randomization_check(model, x[:explain_n], generator=generator)
            metrics["explanation_similarity"] = result.similarity
            details["explanation"] = {
                "method": result.method,
                "similarity": result.similarity,
                "passed": result.passed,
                "n": len(result.per_example),
            }
        elif step == "privacy" and "privacy" in families:
            from labkit.validation.privacy import loss_threshold_attack

            if train_data is None:
                missing["mia_auc"] = missing["mia_tpr_at_fpr"] = "no train_data given (the members)"
                continue
            mia = loss_threshold_attack(model, train_data, data, fpr=fpr, batch_size=batch_size)
            metrics["mia_auc"] = mia.auc
            metrics["mia_tpr_at_fpr"] = mia.tpr_at_fpr
            details["privacy"] = {
                "auc": mia.auc,
                "tpr_at_fpr": mia.tpr_at_fpr,
                "fpr": mia.fpr,
                "advantage": mia.advantage,
                "n": mia.n,
            }
        elif step == "reliability" and "reliability" in families:
            _reliability(
                model,
                data,
                metrics,
                missing,
                details,
                reliability_n,
                reliability_severity,
                corruptions,
                positive_class,
                fpr,
                train_data,
                batch_size,
                generator,
            )
    bar.close()

    results = [_judge(gate, metrics.get(metric), missing.get(metric, "")) for metric, gate in parsed.items()]
    if binary:
        share = float((y == positive_class).float().mean())
        if min(share, 1 - share) < 0.1:
            notes.append(
                f"Only {min(share, 1 - share):.1%} of examples are in the rarer class: accuracy says "
                "little here; "
                "gate on roc_auc and recall_at_fpr instead."
            )
    data_name = f"{data.name}/{data.split}" + (
        f" (drift {data.info['drift']:g})" if "drift" in data.info else ""
    )
    return ModelCard(name, data_name, len(data), metrics, results, details, notes)


def _reliability(
    model: Classifier,
    data: LabData,
    metrics: dict[str, float],
    missing: dict[str, str],
    details: dict[str, Any],
    n: int,
    severity: int,
    corruptions: Sequence[str] | None,
    positive_class: int,
    fpr: float,
    train_data: LabData | None,
    batch_size: int,
    generator: torch.Generator | None,
) -> None:
    if data.is_image:
        from labkit.stress.benchmark import corruption_benchmark

        images = corruption_benchmark(
            model,
            data,
            corruptions=corruptions,
            severities=[severity],
            n=n,
            batch_size=batch_size,
            generator=generator,
            progress=False,
        )
        per = {c: acc[0] for c, acc in images.accuracy.items()}
        metrics["corruption_accuracy"] = sum(per.values()) / len(per)
        missing["stress_auc"] = "tabular stress applies to tabular data"
        details["reliability"] = {
            "severity": severity,
            "metric": "accuracy",
            "per_condition": per,
            "text": f"Accuracy under {len(per)} common corruptions (Hendrycks and Dietterich, "
            "arXiv:1903.12261) "
            f"on {images.n} inputs; clean accuracy {images.clean_accuracy:.3f}.",
        }
        return
    missing["corruption_accuracy"] = "image corruptions apply to images"
    if data.num_classes != 2:
        missing["stress_auc"] = "tabular stress is scored with ROC-AUC, for binary tasks"
        return
    from labkit.stress.tabular import tabular_stress_report

    subset = data.subset(range(min(n, len(data))))
    if len(set(subset.y.tolist())) < 2:
        missing["stress_auc"] = f"the first {len(subset)} rows hold one class; raise reliability_n"
        return
    report = tabular_stress_report(
        model,
        subset,
        severities=[severity],
        fpr=fpr,
        reference=train_data,
        positive_class=positive_class,
        batch_size=batch_size,
        generator=generator,
        progress=False,
    )
    per = {r["stress"]: float(r["auc"]) for r in report.rows}
    metrics["stress_auc"] = sum(per.values()) / len(per)
    details["reliability"] = {
        "severity": severity,
        "metric": "ROC-AUC",
        "per_condition": per,
        "text": f"ROC-AUC under missing values (mean-imputed), outliers, unit errors and covariate shift on "
        f"{report.n} rows; clean ROC-AUC {report.clean['auc']:.3f}.",
    }
