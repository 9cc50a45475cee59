"""Black-box attacks: they see only the model's outputs, never its gradients.

A black-box attacker can send inputs to a model (a prediction API) and read what comes back:
*score-based* attacks read a score per class (logits or probabilities), *decision-based* ones
only the top label. Each input sent is a **query**, and queries are what such an attack pays
with, so every attack here takes a budget ``max_queries`` per example and reports how many
queries each example used.

=====================  ==============  ======================================================
attack                 reads           idea
=====================  ==============  ======================================================
:func:`simba`          scores          try +/- a step along one pixel or DCT direction at a time
:func:`square`         scores          random search over squares at the corners of the ball
:func:`nes_pgd`        scores          PGD with a gradient estimated from random probes (NES)
:func:`hopskipjump`    top label       walk along the decision boundary towards the input
=====================  ==============  ======================================================

They share one design:

* ``model`` is an ``nn.Module`` or any callable mapping a batch ``(N, ...)`` to scores
  ``(N, classes)``: logits or probabilities both work, since nothing is differentiated. The
  model is only ever called under ``torch.no_grad()`` and in eval mode.
* The result is a :class:`BlackBoxResult` holding ``x_adv`` (shape, dtype and device of ``x``,
  inside the ``eps`` ball and the valid range like every attack of :mod:`labkit.attacks`),
  ``queries`` (per example), ``success`` and ``exhausted``. :func:`as_attack` turns a
  black-box attack into the plain ``(model, x, y) -> x_adv`` callable that
  :func:`~labkit.attacks.robust_accuracy` takes.
* **Every query counts**, once per example it was made for: a batched call on ``k`` examples
  costs each of them one query, the clean input included (``queries >= 1``). Only examples
  still running are queried, so the model sees exactly ``result.queries.sum()`` inputs. An
  example stops as soon as it succeeds or when its budget cannot pay for its next query;
  ``max_queries`` is never exceeded. When some examples run out of budget without success a
  :class:`QueryBudgetWarning` says so and ``result.exhausted`` marks them.
* Score-based attacks minimise the *margin* of the scores :math:`s`,

  .. math::

      m(x') = s_y(x') - \\max_{i \\ne y} s_i(x') \\quad\\text{(untargeted)}, \\qquad
      m(x') = \\max_{i \\ne t} s_i(x') - s_t(x') \\quad\\text{(targeted to } t\\text{)},

  which is negative exactly when the attack succeeded, for logits and probabilities alike.

Each loop waits on the host once per iteration to pick the examples still running: that is
what keeps the query count honest, and on a CPU it costs nothing.

Where each part lives: :mod:`~labkit.attacks.blackbox.random_search` (:func:`simba`,
:func:`square`), :mod:`~labkit.attacks.blackbox.nes` (:func:`nes_pgd`),
:mod:`~labkit.attacks.blackbox.decision` (:func:`hopskipjump`),
:mod:`~labkit.attacks.blackbox.result` (:class:`BlackBoxResult`, :func:`as_attack`) and the
query counter they all go through, ``labkit/attacks/blackbox/_queries.py``.
"""

from __future__ import annotations

from labkit.attacks.blackbox.decision import hopskipjump
from labkit.attacks.blackbox.nes import nes_pgd
from labkit.attacks.blackbox.random_search import simba, square
from labkit.attacks.blackbox.result import BlackBoxResult, QueryBudgetWarning, QueryModel, as_attack

__all__ = [
    "BlackBoxResult",
    "QueryBudgetWarning",
    "QueryModel",
    "as_attack",
    "hopskipjump",
    "nes_pgd",
    "simba",
    "square",
]
