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

Black-box attacks (:mod:`labkit.attacks.blackbox`: only the model's outputs, a query budget per
example, a :class:`BlackBoxResult` with ``x_adv`` and the queries each example used):

* :func:`simba`: SimBA, pixel or DCT directions one at a time (Guo et al., arXiv:1905.07121).
* :func:`square`: Square Attack, L-inf random search (Andriushchenko et al., arXiv:1912.00049).
* :func:`nes_pgd`: PGD on an NES gradient estimate (Ilyas et al., arXiv:1804.08598).
* :func:`hopskipjump`: decision-based, top label only (Chen et al., arXiv:1904.02144).

Transfer attacks (:mod:`labkit.attacks.transfer`): :func:`mi_fgsm` (momentum, Dong et al.,
arXiv:1710.06081) and :func:`di_fgsm` (input diversity, Xie et al., arXiv:1803.06978) craft on a
surrogate from :func:`train_surrogate`; :func:`transfer_rate` and :func:`transfer_matrix` measure
how well the examples fool other models.

Physical and manual modifications (:mod:`labkit.attacks.physical`): :func:`patch_attack`, an
adversarial sticker optimised with expectation over transformation (Brown et al.,
arXiv:1712.09665; Athalye et al., arXiv:1707.07397), pasted by :func:`apply_patch`;
:func:`occlusion` sensitivity (Zeiler and Fergus, arXiv:1311.2901); and :func:`spatial_attack`,
worst-of-k rotations and translations (Engstrom et al., arXiv:1712.02779). Accessories
(:mod:`labkit.attacks.accessory`): :func:`accessory_attack` optimises one texture confined to a
mask, such as the :func:`eyeglass_mask` frame, to dodge or impersonate an identity (Sharif et al.,
ACM CCS 2016); :func:`accessory_pgd` is its per-image form, to train against.

Adaptive-attack primitives (:mod:`labkit.attacks.adaptive`), the models a gradient attack should
aim at when the gradient looks masked (Athalye et al., arXiv:1802.00420): :func:`straight_through`
(BPDA with the identity on every piecewise-constant op), :func:`expectation` (EOT, logits
averaged over draws), :func:`rescaled` (unsaturated logits) and :func:`dlr_head`, with
:func:`apgd_dlr` (APGD on the DLR loss, Croce and Hein, arXiv:2003.01690); :func:`margin_pgd` is PGD
on the Carlini-Wagner logit margin, which a saturated softmax does not hide.

Every attack goes through :mod:`labkit.attacks.threat`, which validates the arguments once,
projects onto the ball and clips to the valid range. :func:`attack_success` and
:func:`robust_accuracy` measure the result; ``robust_accuracy`` takes any
``(model, x, y) -> x_adv`` callable, such as ``functools.partial(pgd, eps=8/255, steps=20)``.

One contract (:mod:`labkit.attacks.contract`): every attack is ``attack(model, x, y, *, eps,
...)`` (:class:`BudgetAttack`); with its budget bound it is an :class:`Attack`; attacks that
report queries or their own verdict return an :class:`AttackResult` (``x_adv``, ``success``),
and :func:`adversarial_points` reads ``x_adv`` from either kind; :func:`takes_budget` tells
the two kinds of attack function apart.
"""

from labkit.attacks import accessory, adaptive, blackbox, contract, physical, threat, transfer
from labkit.attacks.accessory import AccessoryResult, accessory_attack, accessory_pgd, eyeglass_mask
from labkit.attacks.adaptive import apgd_dlr, dlr_head, expectation, margin_pgd, rescaled, straight_through
from labkit.attacks.blackbox import (
    BlackBoxResult,
    QueryBudgetWarning,
    as_attack,
    hopskipjump,
    nes_pgd,
    simba,
    square,
)
from labkit.attacks.contract import Attack, AttackResult, BudgetAttack, adversarial_points, takes_budget
from labkit.attacks.physical import (
    EOT,
    OcclusionResult,
    PatchResult,
    apply_patch,
    occlusion,
    patch_attack,
    spatial_attack,
)
from labkit.attacks.threat import ProbabilityOutputWarning, apply_threat_model, clip_to_bounds, project
from labkit.attacks.transfer import (
    TransferMatrix,
    di_fgsm,
    mi_fgsm,
    train_surrogate,
    transfer_matrix,
    transfer_rate,
)
from labkit.attacks.whitebox import apgd, attack_success, cw, fgsm, pgd, robust_accuracy

__all__ = [
    "EOT",
    "AccessoryResult",
    "Attack",
    "AttackResult",
    "BlackBoxResult",
    "BudgetAttack",
    "OcclusionResult",
    "PatchResult",
    "ProbabilityOutputWarning",
    "QueryBudgetWarning",
    "TransferMatrix",
    "accessory",
    "accessory_attack",
    "accessory_pgd",
    "adaptive",
    "adversarial_points",
    "apgd",
    "apgd_dlr",
    "apply_patch",
    "apply_threat_model",
    "as_attack",
    "attack_success",
    "blackbox",
    "clip_to_bounds",
    "contract",
    "cw",
    "di_fgsm",
    "dlr_head",
    "expectation",
    "eyeglass_mask",
    "fgsm",
    "hopskipjump",
    "margin_pgd",
    "mi_fgsm",
    "nes_pgd",
    "occlusion",
    "patch_attack",
    "pgd",
    "physical",
    "project",
    "rescaled",
    "robust_accuracy",
    "simba",
    "spatial_attack",
    "square",
    "straight_through",
    "takes_budget",
    "threat",
    "train_surrogate",
    "transfer",
    "transfer_matrix",
    "transfer_rate",
]
