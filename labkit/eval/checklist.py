"""The evaluation checklist, automated: signs that an attack evaluation is fooling itself.

Carlini et al. ("On Evaluating Adversarial Robustness", arXiv:1902.06705) and Athalye, Carlini
and Wagner ("Obfuscated Gradients Give a False Sense of Security", arXiv:1802.00420) list the
tell-tale signs of *gradient masking*, where a defence breaks the attacker's gradients rather
than the attack itself. :func:`checklist` runs each test on a small batch and colours it:

==============================  =====================================================================
check                           what a sound evaluation shows
==============================  =====================================================================
iterative beats single-step     PGD is at least as strong as FGSM
more steps and restarts         PGD-20 is about as strong as a longer PGD with restarts
a margin loss adds nothing      PGD on the CW logit margin is no stronger than PGD on cross-entropy
success rises with eps          accuracy falls as the budget grows, towards 0
unbounded attack succeeds       with the whole input range allowed, (almost) every example breaks
white-box beats black-box       gradient attacks beat query-based (Square) and transfer attacks
gradients are usable            input gradients are neither zero nor NaN
outputs are logits              not probabilities, and not so large that the softmax saturates
no randomness                   two identical calls agree (otherwise attacks use EOT)
==============================  =====================================================================

``green``: passes; ``amber``: worth a look; ``red``: the evaluation is likely wrong (or the
defence masks gradients). On a small batch a few examples decide a row, so a row leaves green
only when its evidence is *significant* for the batch size: a gap between two attacks must pass
a one-sided exact McNemar test on the paired examples, and a rate must be significantly above
its cut (an exact binomial test), both at level ``alpha``. The size of the gap or rate then
chooses amber or red. A defence with any red row is *suspect*: attack it adaptively
(BPDA, EOT, a different loss) before believing its numbers.
"""

from __future__ import annotations

import contextlib
import itertools
import numbers
import time
import warnings
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from labkit.attacks.adaptive import margin_pgd
from labkit.attacks.threat import (
    ProbabilityOutputWarning,
    bounds_of,
    check_eps,
)
from labkit.attacks.whitebox import fgsm, pgd
from labkit.contract import LabModel
from labkit.data.base import LabData, as_xy
from labkit.eval.checklist_result import Check, Checklist, Status
from labkit.eval.stats import check_alpha
from labkit.utils import eval_mode

__all__ = ["Check", "Checklist", "Status", "checklist", "margin_pgd"]


# --------------------------------------------------------------------------------------------
# The checklist
# --------------------------------------------------------------------------------------------


def _still_right(
    model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, clean_ok: torch.Tensor
) -> torch.Tensor:
    """Per example: right both clean and attacked."""
    with torch.no_grad(), eval_mode(model):
        ok = model(x_adv).argmax(1) == y
    return (ok & clean_ok).cpu()


def _mean(ok: torch.Tensor) -> float:
    return float(ok.float().mean())


def _beats(kept: torch.Tensor, other: torch.Tensor, alpha: float) -> bool:
    """Whether ``kept`` stands on significantly more examples than ``other`` (paired, one-sided).

    The exact McNemar test: of the examples the two disagree on, ``b`` are right under ``kept``
    only and ``c`` under ``other`` only; with no real difference ``b ~ Binomial(b + c, 1/2)``.
    """
    from scipy.stats import binom

    b = int((kept & ~other).sum())
    c = int((~kept & other).sum())
    if b <= c:
        return False
    return float(binom.sf(b - 1, b + c, 0.5)) < alpha


def _rate_above(ok: torch.Tensor, cut: float, alpha: float) -> bool:
    """Whether the rate of ``ok`` is above ``cut``, significantly (exact one-sided binomial test)."""
    from scipy.stats import binom

    k, n = int(ok.sum()), int(ok.numel())
    if k <= cut * n:
        return False
    return float(binom.sf(k - 1, n, cut)) < alpha


def _gap_status(gap: float, significant: bool, amber_up_to: float, tol: float) -> Status:
    if gap <= tol or not significant:
        return "green"
    return "amber" if gap <= amber_up_to else "red"


def _input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    unchecked = model.unchecked() if isinstance(model, LabModel) else contextlib.nullcontext()
    with eval_mode(model), unchecked, torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xg), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xg)
    return grad.detach()


def _default_surrogate(model: nn.Module) -> nn.Module | None:
    if isinstance(model, LabModel):
        for key in ("base", "teacher_model", "surrogate"):
            candidate = model.meta.get(key)
            if isinstance(candidate, nn.Module):
                return candidate
    return None


def checklist(
    model: nn.Module,
    data: LabData | tuple[torch.Tensor, torch.Tensor],
    *,
    eps: float,
    n: int = 200,
    surrogate: nn.Module | None = None,
    black_box: bool = True,
    queries: int = 300,
    eot_samples: int = 8,
    tolerance: float | None = None,
    alpha: float = 0.05,
    generator: torch.Generator | None = None,
) -> Checklist:
    """Run the gradient-masking checklist on the first ``n`` examples of ``data`` at L-inf ``eps``.

    Attacks and what they feed (accuracies count examples right both clean and attacked):

    * FGSM, PGD-20, PGD-50 with 2 restarts and margin-loss PGD-20, all at ``eps``;
    * PGD-20 *without* a random start at ``eps/2, eps, 2 eps, 4 eps`` and at the whole input
      range (an unbounded attack): with no random start, any success comes from the gradients;
    * Square (``queries`` per example) and, with a ``surrogate`` (default: the model a wrapper
      was built around, ``meta["base"]``, or a distilled model's teacher), PGD-20 transferred
      from it;
    * the cross-entropy's input gradient on the clean batch, and the outputs of two identical
      calls.

    If the two calls differ the model is random: the white-box attacks then run through
    :func:`labkit.hardening.eot` with ``eot_samples`` draws.

    Parameters
    ----------
    model:
        The (possibly defended) classifier.
    data:
        A :class:`~labkit.data.LabData` or ``(x, y)``; the first ``n`` examples are used.
    eps:
        The L-inf budget the defence claims, in pixel units.
    n:
        Examples to use (200 keeps it to seconds on digits on a CPU).
    surrogate:
        A model to transfer PGD examples from.
    black_box:
        Run Square and the transfer attack (the slowest part).
    queries:
        Square's query budget per example.
    eot_samples:
        Draws per step for EOT when the model is random.
    tolerance:
        Accuracy gap too small to matter even when significant (default :math:`\\max(0.02, 2/n)`).
    alpha:
        Significance level: a row leaves green only when an exact test on the ``n`` examples
        (McNemar for a gap between two attacks, binomial for a rate above its cut) rejects
        "no problem" at this level, so a handful of examples on a small batch cannot turn it.
    generator:
        Seeds every attack, for a reproducible table.

    Returns
    -------
    Checklist
        Rows with ``status`` ``"green"``, ``"amber"``, ``"red"`` (or ``"skipped"``), the numbers
        behind them and an explanation; ``.verdict`` and a coloured ``_repr_html_``.

    Examples
    --------
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1]]))
    ...     _ = net[1].bias.zero_()
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.rand(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    >>> report = checklist(model, (x, model.predict(x)), eps=0.1, queries=50)
    >>> report.status("gradients"), report.status("logits")
    ('green', 'green')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    eps = check_eps(eps)
    alpha = check_alpha(alpha)
    if eps == 0:
        raise ValueError("eps must be > 0: the checklist tests attacks at the budget the defence claims")
    if isinstance(queries, bool) or not isinstance(queries, numbers.Integral) or queries < 2:
        raise ValueError(f"queries must be an integer >= 2, got {queries!r}")
    if isinstance(eot_samples, bool) or not isinstance(eot_samples, numbers.Integral) or eot_samples < 1:
        raise ValueError(f"eot_samples must be a positive integer, got {eot_samples!r}")
    x, y = as_xy(data, n)
    device = next((p.device for p in model.parameters()), x.device)
    x, y = x.to(device), y.to(device)
    n_used = int(x.shape[0])
    tol = max(0.02, 2.0 / n_used) if tolerance is None else float(tolerance)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) if generator is not None else 0

    def gen() -> torch.Generator:
        return torch.Generator(device=x.device).manual_seed(seed)

    bounds = bounds_of(model)
    full_range = (bounds[1] - bounds[0]) if bounds is not None else 10 * eps
    if surrogate is None:
        surrogate = _default_surrogate(model)
    started = time.perf_counter()
    rows: list[Check] = []

    # ---- outputs: probabilities? saturated? random? -------------------------------------
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProbabilityOutputWarning)
        with torch.no_grad(), eval_mode(model):
            out1 = model(x)
            out2 = model(x)
    clean_ok = out1.argmax(1) == y
    clean_acc = float(clean_ok.float().mean())
    probs_like = bool((out1.amin() >= 0) & ((out1.sum(dim=1) - 1).abs().amax() <= 1e-4))
    saturated = float((out1.float().softmax(dim=1).amax(dim=1) >= 1.0).float().mean())
    sorted_out = out1.sort(dim=1, descending=True).values
    median_margin = float((sorted_out[:, 0] - sorted_out[:, 1]).median())
    scale = float(out1.abs().amax().clamp_min(1e-12))
    random_model = bool((out1 - out2).abs().amax() > 1e-4 * scale)

    from labkit.hardening.transforms import eot

    def white(attack: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        return eot(attack, eot_samples) if random_model else attack

    def run(attack: Callable[..., torch.Tensor], target: nn.Module = model) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ProbabilityOutputWarning)
            x_adv = attack(target, x, y)
        return _still_right(model, x_adv, y, clean_ok)

    # ---- white-box attacks at eps ---------------------------------------------------------
    ok_fgsm = run(white(partial(fgsm, eps=eps)))
    ok_pgd = run(white(partial(pgd, eps=eps, steps=20, generator=gen())))
    ok_strong = run(white(partial(pgd, eps=eps, steps=50, restarts=2, generator=gen())))
    ok_margin = run(white(partial(margin_pgd, eps=eps, steps=20, generator=gen())))
    acc_fgsm, acc_pgd, acc_strong, acc_margin = map(_mean, (ok_fgsm, ok_pgd, ok_strong, ok_margin))
    ok_white = ok_pgd if acc_pgd <= acc_strong else ok_strong
    acc_white = _mean(ok_white)

    gap = acc_pgd - acc_fgsm
    rows.append(
        Check(
            "iterative",
            "iterative beats single-step",
            _gap_status(gap, _beats(ok_pgd, ok_fgsm, alpha), 2 * tol, tol),
            {"FGSM acc": acc_fgsm, "PGD-20 acc": acc_pgd},
            "PGD takes many small steps and should find at least what one FGSM step finds; "
            "if FGSM does better, the loss surface is not smooth enough for iterative steps "
            "(masked or shattered gradients).",
        )
    )
    gain = acc_pgd - acc_strong
    rows.append(
        Check(
            "steps_restarts",
            "more steps and restarts do not help",
            _gap_status(gain, _beats(ok_pgd, ok_strong, alpha), 0.1, tol),
            {"PGD-20 acc": acc_pgd, "PGD-50x2 acc": acc_strong},
            "If 100 steps from two random starts find many more adversarial examples than 20 "
            "steps, PGD-20 had not converged and the reported robustness is too high.",
        )
    )
    loss_gain = acc_pgd - acc_margin
    rows.append(
        Check(
            "loss",
            "a margin loss does not beat cross-entropy",
            _gap_status(loss_gain, _beats(ok_pgd, ok_margin, alpha), 0.1, tol),
            {"PGD-CE acc": acc_pgd, "PGD-margin acc": acc_margin},
            "The CW margin works on the logits directly; when it beats cross-entropy by a lot, "
            "the softmax saturates and cross-entropy gradients vanish (e.g. defensive distillation).",
        )
    )

    # ---- eps sweep and an unbounded attack (no random start: success must come from gradients)
    factors = [0.5, 1.0, 2.0, 4.0]
    sweep_eps = [min(f * eps, full_range) for f in factors]
    sweep_ok = [run(white(partial(pgd, eps=e, steps=20, random_start=False))) for e in sweep_eps]
    sweep = [_mean(ok) for ok in sweep_ok]
    ok_unbounded = run(white(partial(pgd, eps=full_range, steps=20, random_start=False)))
    acc_unbounded = _mean(ok_unbounded)
    rises = any(_mean(b) - _mean(a) > tol and _beats(b, a, alpha) for a, b in itertools.pairwise(sweep_ok))
    flat = sweep[1] > 0.2 and sweep[-1] > sweep[1] - tol
    if rises or flat:
        sweep_status: Status = "red"
    elif _rate_above(sweep_ok[-1], 0.1, alpha):
        sweep_status = "amber"
    else:
        sweep_status = "green"
    rows.append(
        Check(
            "eps_sweep",
            "success rises with eps",
            sweep_status,
            {f"acc@{e:.3g}": a for e, a in zip(sweep_eps, sweep, strict=True)},
            "A bigger budget can only help the attacker: accuracy must fall as eps grows and be "
            "near 0 at 4x the claimed eps. A flat or rising curve means the attack is failing, "
            "not the model succeeding.",
        )
    )
    rows.append(
        Check(
            "unbounded",
            "unbounded attack reaches ~100% success",
            "red"
            if _rate_above(ok_unbounded, 0.1, alpha)
            else ("amber" if _rate_above(ok_unbounded, 0.02, alpha) else "green"),
            {"acc, whole input range": acc_unbounded, "clean acc": clean_acc},
            "With the whole input range allowed any image can be reached, so a working gradient "
            "attack breaks (almost) every example. If it does not, the gradients are not usable.",
        )
    )

    # ---- black-box and transfer ----------------------------------------------------------------
    if black_box:
        evidence: dict[str, float] = {"white-box acc": acc_white}
        others: list[torch.Tensor] = []
        try:
            from labkit.attacks.blackbox import square
        except ImportError:  # pragma: no cover - the black-box module is optional
            square = None
        if square is not None:

            def square_attack(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
                from labkit.attacks.blackbox import QueryBudgetWarning

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", QueryBudgetWarning)
                    return square(m, xb, yb, eps=eps, max_queries=int(queries), generator=gen()).x_adv

            ok_square = run(square_attack)
            evidence["Square acc"] = _mean(ok_square)
            others.append(ok_square)
        if surrogate is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ProbabilityOutputWarning)
                x_tr = pgd(surrogate, x, y, eps=eps, steps=20, generator=gen())
            ok_transfer = _still_right(model, x_tr, y, clean_ok)
            evidence["transfer acc"] = _mean(ok_transfer)
            others.append(ok_transfer)
        if others:
            ok_other = min(others, key=_mean)
            bb_gap = acc_white - _mean(ok_other)
            status: Status = _gap_status(bb_gap, _beats(ok_white, ok_other, alpha), 2 * tol, tol)
        else:
            status = "skipped"
        rows.append(
            Check(
                "blackbox",
                "white-box beats black-box and transfer",
                status,
                evidence,
                "Gradient attacks see everything a query or transfer attack sees and more; if a "
                "black-box or transferred attack does better, the gradients are being masked.",
            )
        )
    else:
        rows.append(
            Check("blackbox", "white-box beats black-box and transfer", "skipped", {}, "black_box=False")
        )

    # ---- gradients -----------------------------------------------------------------------------
    grad = _input_gradients(model, x, y)
    norms = grad.flatten(1).norm(dim=1)
    frac_nan = float((~torch.isfinite(norms)).float().mean())
    frac_zero = float((norms <= 1e-12).float().mean())
    if frac_nan > 0 or frac_zero > 0.5:
        grad_status: Status = "red"
    elif frac_zero > 0.05:
        grad_status = "amber"
    else:
        grad_status = "green"
    rows.append(
        Check(
            "gradients",
            "gradients are neither zero nor NaN",
            grad_status,
            {"zero-gradient examples": frac_zero, "NaN-gradient examples": frac_nan},
            "Zero input gradients (rounding, saturated softmax, a hard vote) leave gradient attacks "
            "nothing to follow; use BPDA for non-differentiable steps and a logit loss for saturation.",
        )
    )

    # ---- logits, not probabilities ---------------------------------------------------------------
    if probs_like:
        logit_status: Status = "red"
    elif saturated > 0.5:
        logit_status = "amber"
    else:
        logit_status = "green"
    rows.append(
        Check(
            "logits",
            "outputs are logits, not probabilities",
            logit_status,
            {"softmax saturated": saturated, "median top-2 margin": median_margin},
            "Attacks need logits: probabilities (or logits so large that the softmax is exactly 0/1 "
            "in float32, as after defensive distillation) make cross-entropy gradients vanish.",
        )
    )

    # ---- randomness ------------------------------------------------------------------------------
    rows.append(
        Check(
            "randomness",
            "no randomness (else EOT)",
            "amber" if random_model else "green",
            {"max output change between two calls": float((out1 - out2).abs().amax())},
            (
                f"The model is random: white-box attacks above used EOT over {eot_samples} draws. "
                "Check that more draws do not lower accuracy further."
                if random_model
                else "Two identical calls agree, so plain gradients are meaningful."
            ),
        )
    )
    name = (
        model.meta.get("defense", model.meta.get("name", type(model).__name__))
        if isinstance(model, LabModel)
        else type(model).__name__
    )
    return Checklist(
        rows=rows,
        eps=eps,
        n=n_used,
        seconds=time.perf_counter() - started,
        model_name=str(name),
        notes={
            "clean_acc": clean_acc,
            "random": random_model,
            "surrogate": surrogate is not None,
            "tolerance": tol,
            "alpha": alpha,
        },
    )
