"""The cases of the prompt-injection lab: techniques, goals, channels, and one conversation with
its ground truth (:class:`Case`). The corpora that build them are in :mod:`labkit.genai.corpus`,
which re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from labkit.genai.types import Message, ToolCall

__all__ = ["CHANNELS", "GOALS", "TECHNIQUES", "Case", "Technique"]

GOALS = ("leak_secret", "call_tool", "policy_violation")
CHANNELS = ("direct", "document", "web", "email")


@dataclass(frozen=True)
class Technique:
    """An attack technique of the corpus."""

    name: str
    atlas_id: str
    family: Literal["plain", "obfuscation", "jailbreak"]
    description: str


TECHNIQUES: dict[str, Technique] = {
    t.name: t
    for t in [
        Technique("direct", "AML.T0051", "plain", "injection in the user turn"),
        Technique("indirect_document", "AML.T0051", "plain", "injection inside a retrieved file"),
        Technique("indirect_web", "AML.T0051", "plain", "injection hidden in a web page"),
        Technique("indirect_email", "AML.T0051", "plain", "injection inside an e-mail"),
        Technique("forged_turn", "AML.T0051", "plain", "retrieved text fakes a new system turn"),
        Technique("base64", "AML.T0051", "obfuscation", "payload encoded in base64"),
        Technique("leetspeak", "AML.T0051", "obfuscation", "digits for letters (1gn0r3)"),
        Technique("homoglyph", "AML.T0051", "obfuscation", "Cyrillic look-alike letters"),
        Technique("payload_splitting", "AML.T0051", "obfuscation", "payload split into joined strings"),
        Technique("rewording", "AML.T0051", "obfuscation", "paraphrased or translated payload"),
        Technique("roleplay", "AML.T0054", "jailbreak", "role-play jailbreak framing"),
    ]
}


@dataclass(frozen=True)
class Case:
    """One conversation of a corpus, with its ground truth.

    Attributes
    ----------
    id:
        Unique within the corpus (``"base64-07"``, ``"benign-12"``).
    messages:
        The conversation sent to the target.
    kind:
        ``"attack"`` or ``"benign"``.
    technique, atlas_id, goal, channel:
        What the attack is (``technique="benign"`` and ``goal=None`` for benign cases).
    payload:
        The injected text as sent (obfuscated where the technique obfuscates).
    plain_payload:
        The same instruction before obfuscation.
    carrier:
        Index in ``messages`` of the message that holds the payload (``-1`` for benign cases).
    authorised:
        Tool calls the user asked for; any other call is unauthorised. A pattern matches a call
        with the same tool and the same values for the arguments it names.
    expect_text:
        For benign cases: strings the reply must contain (ignoring case).
    expect_calls:
        For benign cases: tool calls the reply must make.
    """

    id: str
    messages: tuple[Message, ...]
    kind: Literal["attack", "benign"]
    technique: str
    atlas_id: str | None
    goal: str | None
    channel: str
    payload: str = ""
    plain_payload: str = ""
    carrier: int = -1
    authorised: tuple[ToolCall, ...] = ()
    expect_text: tuple[str, ...] = ()
    expect_calls: tuple[ToolCall, ...] = ()

    @property
    def obfuscated(self) -> bool:
        """Whether the technique rewrites the payload (anything but a plain injection)."""
        return self.kind == "attack" and TECHNIQUES[self.technique].family != "plain"

    def _repr_markdown_(self) -> str:
        head = f"**{self.id}** ({self.kind}"
        if self.kind == "attack":
            head += f", {self.technique} {self.atlas_id}, goal {self.goal}, via {self.channel}"
        lines = [head + ")", ""]
        for i, m in enumerate(self.messages):
            mark = " ⚠" if i == self.carrier else ""
            content = m.content if len(m.content) < 400 else m.content[:400] + " ..."
            lines.append(f"- **{m.role}**{f' ({m.source})' if m.source else ''}{mark}: {content!r}")
        return "\n".join(lines)
