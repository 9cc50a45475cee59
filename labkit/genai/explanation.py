"""What :meth:`~labkit.genai.SimulatedAssistant.explain` returns: the reply and the instructions behind it.

An :class:`Explanation` holds the assistant's :class:`~labkit.genai.types.Reply`, the
:class:`~labkit.genai.simulator.Rules` it read in the system messages, and one
:class:`Instruction` per instruction it found, with the probability it had of being followed
and whether it was (rules 4 and 5 of :mod:`labkit.genai.simulator`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from labkit.genai._reading import Rules
from labkit.genai.types import Reply

__all__ = ["Explanation", "Instruction"]


@dataclass(frozen=True)
class Instruction:
    """One instruction the simulator found, and what it did with it."""

    message: int
    role: str
    source: str
    kind: str
    sentence: str
    arguments: Mapping[str, str]
    conflict: str | None
    features: Mapping[str, float] = field(default_factory=dict)
    logit: float | None = None
    probability: float = 1.0
    followed: bool = True


@dataclass(frozen=True)
class Explanation:
    """A reply with the instructions behind it: :meth:`SimulatedAssistant.explain`."""

    reply: Reply
    instructions: tuple[Instruction, ...]
    rules: Rules
    strength: str

    def _repr_markdown_(self) -> str:
        lines = [
            f"**{self.strength}** assistant replied: {self.reply.text[:200]!r}",
            "",
            "| msg | role | instruction | conflicts with | p(follow) | followed |",
            "|---|---|---|---|---|---|",
        ]
        for ins in self.instructions:
            sentence = ins.sentence.replace("|", "/")[:80]
            lines.append(
                f"| {ins.message} | {ins.role} | {ins.kind}: {sentence} | {ins.conflict or '-'} | "
                f"{ins.probability:.2f} | {'yes' if ins.followed else 'no'} |"
            )
        return "\n".join(lines)
