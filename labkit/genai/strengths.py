"""How much authority a simulated model gives an instruction that conflicts with its rules.

A :class:`Strength` is a set of weights on the logit of following such an instruction (rule 5
of :mod:`labkit.genai.simulator`); :data:`STRENGTHS` holds the three models of the course:
``naive``, ``instruction_tuned`` and ``hierarchy``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["STRENGTHS", "Strength"]


@dataclass(frozen=True)
class Strength:
    """How much authority a model gives an instruction that conflicts with its rules.

    Each field is a weight on the logit of following the instruction (see the module
    docstring, rule 5). Positive weights make the model more likely to comply.
    """

    name: str
    description: str
    bias_user: float
    bias_data: float
    recency: float
    insistence: float
    roleplay: float
    obfuscated: float
    forged: float
    marked: float
    hierarchy_user: float
    hierarchy_data: float


#: The three model strengths. Weights are illustrative, chosen so that the published ordering
#: holds (undefended models follow injections; instruction tuning stops blunt direct requests
#: but not indirect ones; hierarchy training, Wallace et al. arXiv:2404.13208, separates the
#: channels; spotlighting, Hines et al. arXiv:2403.14720, helps models that follow meta-rules).
STRENGTHS: dict[str, Strength] = {
    s.name: s
    for s in [
        Strength(
            "naive",
            "a base model: every part of the context has the same authority, the latest wins",
            bias_user=2.0,
            bias_data=2.0,
            recency=1.5,
            insistence=0.5,
            roleplay=0.5,
            obfuscated=0.0,
            forged=0.5,
            marked=-0.5,
            hierarchy_user=-0.5,
            hierarchy_data=-0.5,
        ),
        Strength(
            "instruction_tuned",
            "a chat model: refuses blunt requests, falls for role-play, encodings and documents",
            bias_user=-1.5,
            bias_data=1.0,
            recency=0.5,
            insistence=0.4,
            roleplay=2.0,
            obfuscated=1.5,
            forged=0.5,
            marked=-3.5,
            hierarchy_user=-1.5,
            hierarchy_data=-2.5,
        ),
        Strength(
            "hierarchy_aware",
            "trained on an instruction hierarchy: data rarely commands it, forged system turns still can",
            bias_user=-3.0,
            bias_data=-3.5,
            recency=0.3,
            insistence=0.2,
            roleplay=1.5,
            obfuscated=0.8,
            forged=3.0,
            marked=-1.5,
            hierarchy_user=-0.5,
            hierarchy_data=-0.5,
        ),
    ]
}
