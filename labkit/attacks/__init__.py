"""Adversarial attacks: functions ``(model, x, y, *, eps, ...) -> x_adv``.

White-box attacks (they use the model's input gradients):

* :func:`fgsm`: Fast Gradient Sign Method, one L-inf step (Goodfellow et al., arXiv:1412.6572).
* :func:`pgd`: Projected Gradient Descent in an L-inf or L2 ball, with random starts and
  restarts, best point per example (Madry et al., arXiv:1706.06083).
* :func:`cw`: Carlini-Wagner L2 on logits with a binary search over the trade-off constant,
  a minimum-norm attack (Carlini and Wagner, arXiv:1608.04644).
* :func:`apgd`: Auto-PGD with cross-entropy loss, PGD with an automatic step-size schedule and
  momentum (Croce and Hein, arXiv:2003.01690).

Why APGD rather than DeepFool: the course uses these attacks to *evaluate* hardened models.
DeepFool finds small perturbations on undefended models but is known to overestimate the
robustness of defended ones, and it has no budget to evaluate at. APGD works at a fixed
``eps``, needs no step size to tune (a badly tuned PGD step is the commonest way robustness
gets overestimated), and is the core of AutoAttack, the standard robustness evaluation.
FGSM, PGD and CW already cover the "one step", "iterative" and "minimum-norm" ideas.

Every attack goes through :mod:`labkit.attacks.threat`, which validates the arguments once,
projects onto the ball and clips to the valid range. :func:`attack_success` and
:func:`robust_accuracy` measure the result; ``robust_accuracy`` takes any
``(model, x, y) -> x_adv`` callable, such as ``functools.partial(pgd, eps=8/255, steps=20)``.
"""

from labkit.attacks import threat
from labkit.attacks.threat import ProbabilityOutputWarning, apply_threat_model, clip_to_bounds, project
from labkit.attacks.whitebox import Attack, apgd, attack_success, cw, fgsm, pgd, robust_accuracy

__all__ = [
    "Attack",
    "ProbabilityOutputWarning",
    "apgd",
    "apply_threat_model",
    "attack_success",
    "clip_to_bounds",
    "cw",
    "fgsm",
    "pgd",
    "project",
    "robust_accuracy",
    "threat",
]
