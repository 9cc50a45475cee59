"""Privacy attacks on models and the defenses against them.

* Extraction (:mod:`labkit.privacy.extraction`): :func:`extract` steals a model through a
  :class:`~labkit.serving.PredictionAPI` (natural, random or Jacobian-augmented queries,
  Papernot et al., arXiv:1602.02697) and records fidelity against queries;
  :func:`transfer_attack` uses the stolen copy for black-box evasion.
* Membership inference (:mod:`labkit.privacy.membership`): :func:`loss_attack` (Yeom et al.,
  arXiv:1709.01604), :func:`shadow_attack` (Shokri et al., arXiv:1610.05820), offline
  :func:`lira_attack` and metrics with TPR at low FPR (Carlini et al., arXiv:2112.03570),
  and :func:`overfit_target` to train a target that leaks.
* Model inversion (:mod:`labkit.privacy.inversion`): :func:`invert` reconstructs class
  representatives by gradient descent on the input (Fredrikson et al. 2015).
* DP-SGD (:mod:`labkit.privacy.dpsgd`): :func:`train_dp` with per-example gradients from
  ``torch.func`` (Abadi et al., arXiv:1607.00133), and the RDP accountant
  (:mod:`labkit.privacy.accounting`, Mironov et al., arXiv:1908.10530).

Other defenses are knobs elsewhere: weight decay and early stopping (``weight_decay`` and
``epochs`` of :func:`overfit_target` / :func:`labkit.models.train`), output coarsening and
query budgets (:class:`labkit.serving.PredictionAPI`).

Examples
--------
>>> from labkit.privacy import dp_sgd_epsilon
>>> round(dp_sgd_epsilon(sample_rate=0.01, noise_multiplier=1.0, steps=1000, delta=1e-5), 2)
2.1
"""

from labkit.privacy.accounting import DEFAULT_ORDERS, compute_rdp, dp_sgd_epsilon, rdp_to_epsilon
from labkit.privacy.dpsgd import (
    DPHistory,
    clip_and_noise,
    per_example_gradients,
    private_model,
    replace_batchnorm,
    train_dp,
)
from labkit.privacy.extraction import ExtractionResult, TransferResult, extract, transfer_attack
from labkit.privacy.inversion import InversionResult, invert
from labkit.privacy.membership import (
    MembershipComparison,
    MembershipResult,
    compare_membership,
    lira_attack,
    loss_attack,
    membership_metrics,
    overfit_target,
    shadow_attack,
)

__all__ = [
    "DEFAULT_ORDERS",
    "DPHistory",
    "ExtractionResult",
    "InversionResult",
    "MembershipComparison",
    "MembershipResult",
    "TransferResult",
    "clip_and_noise",
    "compare_membership",
    "compute_rdp",
    "dp_sgd_epsilon",
    "extract",
    "invert",
    "lira_attack",
    "loss_attack",
    "membership_metrics",
    "overfit_target",
    "per_example_gradients",
    "private_model",
    "rdp_to_epsilon",
    "replace_batchnorm",
    "shadow_attack",
    "train_dp",
    "transfer_attack",
]
