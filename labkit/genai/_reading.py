"""How the simulated assistant reads a conversation (rules 1 to 3 of :mod:`labkit.genai.simulator`).

* :func:`read_rules` turns the ``system`` messages into :class:`Rules`;
* :func:`understand` decodes what a capable model would decode (look-alike letters, base64,
  leetspeak, split payloads, HTML), :func:`sentences` cuts the result into sentences, and
  :func:`parse_instruction` finds the instruction one sentence holds (an :class:`Intent`);
* :func:`summarize` and :func:`best_answer` do the benign reading work (rule 7).

Private to :mod:`labkit.genai`: the assistant in :mod:`labkit.genai.simulator` is its only user.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from labkit.genai.text import base64_tokens, strip_homoglyphs, unleet_tokens
from labkit.genai.types import Message

__all__ = [
    "FORGED",
    "INSIST",
    "ROLEPLAY",
    "Intent",
    "Rules",
    "best_answer",
    "parse_instruction",
    "read_rules",
    "sentences",
    "summarize",
    "understand",
]

# ----------------------------------------------------------------------------------------------
# Reading the rules
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """What the system messages say, as the simulator understood it."""

    secret: str | None = None
    protect_secret: bool = False
    user_only_tools: bool = False
    allowed_domain: str | None = None
    forbidden_tools: tuple[str, ...] = ()
    forbidden_phrases: tuple[str, ...] = ()
    forbidden_topics: tuple[str, ...] = ()
    hierarchy: bool = False
    marker: str | None = None
    system_text: str = ""


_R_SECRET = re.compile(
    r"\b(?:secret|access code|password|passcode|canary)\b[^.\n]*?\bis\s+[\"'`]?"
    r"([A-Za-z0-9][A-Za-z0-9_-]{2,}[A-Za-z0-9])",
    re.I,
)
_R_PROTECT = re.compile(r"\bnever\s+(?:reveal|disclose|share|tell|print|repeat)\b", re.I)
_R_USER_TOOLS = re.compile(r"\bonly (?:use|call) tools when the user\b", re.I)
_R_DOMAIN = re.compile(r"\bonly send e-?mails? to addresses at @?([\w-]+(?:\.[\w-]+)+)", re.I)
_R_NO_TOOL = re.compile(r"\bnever call (\w+)", re.I)
_R_NO_SAY = re.compile(r"\bnever say ([^\n]+)", re.I)
_R_NO_TOPIC = re.compile(r"\bnever write instructions for ([^\n]+)", re.I)
_R_HIERARCHY = re.compile(r"^\s*instruction hierarchy\s*:", re.I | re.M)
_R_MARKER = re.compile(r"interleaved with the (?:marker|symbol) '(.)'", re.I)
_TOPIC_STOP = {"instructions", "for", "such", "as", "and", "or", "like", "eg", "any", "other", "the", "a"}


def read_rules(messages: Sequence[Message]) -> Rules:
    """The rules stated in the ``system`` messages of a conversation (module docstring, rule 1)."""
    text = "\n".join(m.content for m in messages if m.role == "system")
    secret = _R_SECRET.search(text)
    domain = _R_DOMAIN.search(text)
    phrases: list[str] = []
    for m in _R_NO_SAY.finditer(text):
        phrases += [a or b for a, b in re.findall(r"'([^']+)'|\"([^\"]+)\"", m.group(1))]
    topics: list[str] = []
    for m in _R_NO_TOPIC.finditer(text):
        topics += [
            w for w in re.findall(r"[a-z]+", m.group(1).lower()) if w not in _TOPIC_STOP and len(w) > 2
        ]
    marker = _R_MARKER.search(text)
    return Rules(
        secret=secret.group(1) if secret else None,
        protect_secret=bool(_R_PROTECT.search(text)),
        user_only_tools=bool(_R_USER_TOOLS.search(text)),
        allowed_domain=domain.group(1).lower() if domain else None,
        forbidden_tools=tuple(dict.fromkeys(_R_NO_TOOL.findall(text))),
        forbidden_phrases=tuple(dict.fromkeys(phrases)),
        forbidden_topics=tuple(dict.fromkeys(topics)),
        hierarchy=bool(_R_HIERARCHY.search(text)),
        marker=marker.group(1) if marker else None,
        system_text=text,
    )


# ----------------------------------------------------------------------------------------------
# Understanding text
# ----------------------------------------------------------------------------------------------

FORGED = re.compile(
    r"^\s*(?:system|assistant|admin(?:istrator)?)\s*:|<\|im_start\|>|\[\[?\s*(?:system|admin)[^\]]*\]\]?"
    r"|</document>|\bend of (?:the )?document\b|\bnew instructions from the system\b",
    re.I | re.M,
)
_ASSIGN = re.compile(r"\b([A-Za-z_]\w{0,15})\s*=\s*\"([^\"]*)\"")
_CONCAT = re.compile(r"\b([A-Za-z_]\w{0,15}(?:\s*\+\s*[A-Za-z_]\w{0,15})+)\b")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def understand(text: str) -> tuple[str, set[str]]:
    """Decode what a capable model would decode (rule 2); returns ``(text, flags)``."""
    flags: set[str] = set()
    text, changed = strip_homoglyphs(text)
    if changed:
        flags.add("homoglyph")
    if "<" in text:
        text = re.sub(r"<!--|-->", "\n", text)
        text = re.sub(r"<[^<>]{1,200}>", "\n", text)
    pieces: list[str] = []
    last = 0
    for start, end, decoded in base64_tokens(text):
        letters = sum(ch.isalpha() or ch.isspace() for ch in decoded)
        if " " in decoded.strip() and letters >= 0.6 * len(decoded):
            pieces += [text[last:start], "\n", decoded, "\n"]
            last = end
            flags.add("base64")
    if last:
        text = "".join([*pieces, text[last:]])
    assigned = dict(_ASSIGN.findall(text))
    if len(assigned) >= 2:
        for m in _CONCAT.finditer(text):
            names = [n.strip() for n in m.group(1).split("+")]
            if all(n in assigned for n in names):
                joined = "".join(assigned[n] for n in names)
                first = min(a.start() for a in _ASSIGN.finditer(text))
                stop = re.compile(r"[.!?\n]").search(text, m.end())
                end = stop.end() if stop else len(text)
                text = text[:first] + "\n" + joined + "\n" + text[end:]
                flags.add("split")
                break
    text, changed = unleet_tokens(text, min_words=3)
    if changed:
        flags.add("leetspeak")
    return text, flags


def sentences(text: str) -> list[str]:
    """``text`` cut into sentences (at ., ! or ? followed by a space, and at line breaks)."""
    parts = re.split(r"(?<=[.!?])\s+|\n+", text)
    return [p.strip() for p in parts if p and p.strip()]


# ----------------------------------------------------------------------------------------------
# Finding instructions
# ----------------------------------------------------------------------------------------------


def _words(*alternatives: str) -> re.Pattern[str]:
    """Whole words (or phrases) matching any of the ``|``-separated alternatives."""
    return re.compile(r"(?<![\w-])(?:" + "|".join(alternatives) + r")(?![\w])", re.I)


_LEX: dict[str, tuple[re.Pattern[str], re.Pattern[str]]] = {
    "reveal": (
        _words(
            "reveal|print|tell|show|output|repeat|give|display|leak|write|spell|say|share|"
            "include|send|type|list"
        ),
        _words(
            "disclose|divulge|recite|impart|furnish|make known|let me (?:know|see|have)|"
            "revela|revelar|r[ée]v[èe]le[rz]?|dis-moi|donne(?:z)?(?:-moi)?|"
            "verr[äa]t(?:e|en|st)?|nenn(?:e|en)?|zeig(?:e|en)?|rivela(?:re)?|dimmi|dime|"
            "mu[ée]strame"
        ),
    ),
    "secret": (
        _words("access code", "secret", "password", "system prompt", "passcode", "canary"),
        _words(
            "passphrase|pass phrase|code d['’]acc[èe]s|c[óo]digo de acceso|zugangscode|"
            "codice di accesso|mot de passe|contrase[ñn]a|passwort|clave|entrusted code|"
            "code you (?:were|are) (?:given|entrusted with|guarding)|confidential code|"
            "hidden code"
        ),
    ),
    "send": (
        _words("send", "email", "e-mail", "mail", "forward", "message"),
        _words(
            "dispatch|env[íi]a|env[íi]e|envoie|envoyez|envoyer|sende(?:n)?|schick(?:e|en)?|"
            "manda|invia|inoltra|reenv[íi]a"
        ),
    ),
    "transfer": (
        _words("transfer", "wire", "pay", "send", "move"),
        _words("transfier[ea]|transferir|vire[rz]?|[üu]e?berweise(?:n)?|trasferisci|bonifica"),
    ),
    "say": (
        _words("say", "respond", "reply", "answer", "output", "print", "write", "begin", "start", "end"),
        _words(
            "responde(?:r)?|r[ée]ponds|r[ée]pondez|antworte(?:n)?|rispondi|dis|di|sag(?:e)?|"
            "escribe|[ée]cris|schreib(?:e)?|furnish"
        ),
    ),
}
_TOPIC = _words("keylogger", "malware", "ransomware", "virus", "trojan", "spyware")
_HOWTO = _words(
    "instructions?|steps?|step-by-step|how to|guide|tutorial|code for|recipe|"
    "anleitung|instrucciones|[ée]tapes?|explain|explique|erkl[äa]r(?:e|en)?|"
    "paso a paso|schritt|craft|crafting|build|building"
)
_READ = _words("read", "open", "load", "lee", "lis", "lies", "leggi")
_PATH = re.compile(r"(?<![\w@])([\w./-]+\.(?:txt|csv|md|json|pdf|docx?|xlsx?))\b", re.I)
_SEARCH = re.compile(
    r"\b(?:search|look up|busca|cherche|suche)(?: the web| online| the internet)?(?: for)?\s+"
    r"['\"“]?([^'\"”]+?)['\"”]?\s*[.?!]?$",
    re.I,
)
_QUOTE = re.compile(r"['\"“‘]([^'\"”’]{1,200})['\"”’]")
_ACCOUNT = re.compile(
    r"\b(?:account|acct|cuenta|compte|konto|conto)\s*(?:number|no\.?|nr\.?|n°|#)?\s*:?\s*([0-9][0-9-]{2,}[0-9])",
    re.I,
)
_NUMBER = re.compile(r"(?<![\w-])(\d[\d,]*(?:\.\d+)?)(?![\w-])")
_NEGATION = re.compile(r"\b(?:not|never|n't|no)\b(?:\W+\w+){0,2}\W*$", re.I)
_WHAT_IS_SECRET = re.compile(
    r"\bwhat(?:'s| is) (?:the|your) (?:secret(?: access)?(?: code)?|access code|password|passcode)\b", re.I
)
_SUBJECT = re.compile(
    r"\b(?:subject|title|heading|asunto|objet|betreff|oggetto)\b[^'\"“]{0,20}['\"“]([^'\"”]{1,200})['\"”]",
    re.I,
)
_BODY = re.compile(
    r"\b(?:body|content|message|text|cuerpo|corps|texte|inhalt|nachricht|testo|mensaje)\b[^'\"“]{0,20}"
    r"['\"“]([^'\"”]{1,400})['\"”]",
    re.I,
)
INSIST = [
    re.compile(r"\b(?:ignore|disregard|forget|override|overrides)\b", re.I),
    re.compile(r"\b(?:ignora|ignorez|ignoriere|olvida|oublie[rz]?|vergiss|dimentica)\b|\bset aside\b", re.I),
    re.compile(r"\b(?:important|urgent|immediately|mandatory)\b", re.I),
    re.compile(r"\bnew (?:instructions?|rules?|task)\b", re.I),
    re.compile(r"\b(?:administrator|admin|developer)\b", re.I),
    re.compile(r"!!"),
    re.compile(r"\b[A-Z]{3,}(?:\s+[A-Z]{3,})+\b"),
    re.compile(r"\b(?:must|have to)\b", re.I),
]
ROLEPLAY = re.compile(
    r"\bpretend\b|\brole-?play\b|\byou are now\b|\bact as\b|\bDAN\b|\bgame\b"
    r"|\bno (?:rules|restrictions|limits)\b"
    r"|\bhypothetical(?:ly)?\b|\bgrand(?:ma|mother)\b|\bstay in character\b|\bimagine\b|\bdeveloper mode\b"
    r"|\bjailbr(?:eak|oken)\b|\bin character\b"
)


def _find(kind: str, sentence: str) -> tuple[re.Match[str] | None, bool]:
    core, extra = _LEX[kind]
    m = core.search(sentence)
    if m:
        return m, False
    m = extra.search(sentence)
    return m, m is not None


def _negated(sentence: str, at: int) -> bool:
    return bool(_NEGATION.search(sentence[:at]))


@dataclass(frozen=True)
class Intent:
    """One instruction found in a sentence: its kind, its arguments, and whether it was reworded."""

    kind: str  # leak | send_email | transfer | say | malware | read_file | search
    args: dict[str, str]
    reworded: bool
    sentence: str


def parse_instruction(sentence: str) -> Intent | None:
    """The instruction in one sentence, if any (rule 3)."""
    low = sentence.lower()
    verb, extra_v = _find("reveal", sentence)
    noun, extra_n = _find("secret", sentence)
    if (verb and noun and not _negated(sentence, verb.start())) or _WHAT_IS_SECRET.search(sentence):
        encoding = "plain"
        if "base64" in low or "base 64" in low:
            encoding = "base64"
        elif re.search(r"leet|l33t|1337", low):
            encoding = "leetspeak"
        elif re.search(r"dash|hyphen|spaces? between|letter by letter|one letter per|separat", low):
            encoding = "split"
        elif re.search(r"backward|revers", low):
            encoding = "reversed"
        args = {"encoding": encoding, "what": "system prompt" if "system prompt" in low else "secret"}
        email = _EMAIL.search(sentence)
        if email:
            args["to"] = email.group()
        return Intent("leak", args, bool(extra_v or extra_n), sentence)
    verb, extra = _find("transfer", sentence)
    account = _ACCOUNT.search(sentence)
    if verb and account and not _negated(sentence, verb.start()):
        amounts = [
            n.group(1)
            for n in _NUMBER.finditer(sentence)
            if not (account.start() <= n.start() < account.end())
        ]
        if amounts:
            return Intent(
                "transfer",
                {"to_account": account.group(1), "amount": amounts[0].replace(",", "")},
                extra or bool(re.search(r"cuenta|compte|konto|conto", account.group(), re.I)),
                sentence,
            )
    verb, extra = _find("send", sentence)
    email = _EMAIL.search(sentence)
    if verb and email and not _negated(sentence, verb.start()):
        subject = _SUBJECT.search(sentence)
        body = _BODY.search(sentence)
        return Intent(
            "send_email",
            {
                "to": email.group(),
                "subject": subject.group(1) if subject else "",
                "body": body.group(1) if body else "",
                "summary": "summary" if re.search(r"\bsummary\b", low) else "",
            },
            extra,
            sentence,
        )
    topic = _TOPIC.search(sentence)
    if topic and _HOWTO.search(sentence) and not _negated(sentence, topic.start()):
        reworded = bool(
            re.search(r"furnish|craft|explique|[ée]tape|erkl[äa]r|paso|schritt|anleitung|instruc", low)
        )
        return Intent("malware", {"topic": topic.group().lower()}, reworded, sentence)
    verb, extra = _find("say", sentence)
    if verb and not _negated(sentence, verb.start()):
        quote = _QUOTE.search(sentence, verb.end())
        if quote:
            return Intent("say", {"phrase": quote.group(1).strip()}, extra, sentence)
    verb_m = _READ.search(sentence)
    path = _PATH.search(sentence)
    if verb_m and path and not _negated(sentence, verb_m.start()):
        return Intent("read_file", {"path": path.group(1)}, False, sentence)
    search = _SEARCH.search(sentence)
    if search:
        return Intent("search", {"query": search.group(1).strip()}, False, sentence)
    return None


_STOP = set(
    "according the a an to of what who when where which is are was does do did say says about this that "
    "my your in on for and page document report email e-mail file web how much many me tell".split()
)


def _body(text: str) -> str:
    """The text without e-mail header lines."""
    lines = text.splitlines()
    return "\n".join(ln for ln in lines if not re.match(r"\s*(?:from|to|cc|date|subject)\s*:", ln, re.I))


def summarize(text: str) -> str:
    """The first two sentences of ``text`` (without e-mail headers) that have four words or more."""
    sents = [s for s in sentences(_body(text)) if len(s.split()) >= 4]
    return " ".join(sents[:2])


def best_answer(question: str, text: str) -> str | None:
    """The sentence of ``text`` that shares most content words with ``question`` (None: none does)."""
    asked = {w for w in re.findall(r"[a-z]+", question.lower()) if w not in _STOP and len(w) > 2}
    best, score = None, 0
    for sentence in sentences(_body(text)):
        words = set(re.findall(r"[a-z]+", sentence.lower()))
        overlap = len(asked & words)
        if overlap > score:
            best, score = sentence, overlap
    return best
