"""Messages, tools, tool calls and replies: what flows between an application and an assistant.

A *target* is anything callable as ``target(messages, *, tools) -> Reply``: the simulated
assistant, a Hugging Face model behind :class:`~labkit.genai.hf.HuggingFaceTarget`, or a
:class:`~labkit.genai.defenses.DefenseStack` wrapped around either. Everything that enters a
target is checked here, so that empty, enormous, binary or malformed input fails with a clear
message instead of reaching the model.

Roles
-----
``system``
    The developer's instructions (trusted).
``user``
    The person the assistant works for (trusted to ask, not to override ``system``).
``assistant``
    Earlier replies.
``document`` and ``tool``
    Retrieved content: files, web pages, e-mails, tool outputs. *Data*, not instructions;
    whatever text they hold, an attacker may have written it. ``source`` says where it came
    from (``"file"``, ``"web"``, ``"email"``, ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "DATA_ROLES",
    "DEFAULT_TOOLS",
    "MAX_CHARS",
    "MAX_TOTAL_CHARS",
    "ROLES",
    "Message",
    "Reply",
    "Target",
    "Tool",
    "ToolCall",
    "check_text",
    "check_tool_call",
    "parse_tool_calls",
    "validate_messages",
    "validate_tools",
]

ROLES = ("system", "user", "assistant", "tool", "document")
#: Roles whose content is data that anyone may have written.
DATA_ROLES = ("tool", "document")
#: Longest content one message may have, in characters.
MAX_CHARS = 100_000
#: Longest conversation, all messages together, in characters.
MAX_TOTAL_CHARS = 400_000

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def check_text(text: object, *, name: str, max_chars: int = MAX_CHARS, allow_empty: bool = False) -> str:
    """Return ``text`` if it is printable Unicode text of a sensible length; raise otherwise.

    Parameters
    ----------
    text:
        The value to check.
    name:
        How to refer to it in error messages.
    max_chars:
        Longest accepted text.
    allow_empty:
        Accept ``""`` and whitespace.

    Raises
    ------
    TypeError
        ``text`` is bytes (decode it first) or not a string.
    ValueError
        It is empty, longer than ``max_chars``, not valid UTF-8 (lone surrogates), or looks like
        binary data (control characters, or many U+FFFD replacement characters left by a lossy
        decode).

    Examples
    --------
    >>> check_text("hello", name="greeting")
    'hello'
    >>> check_text(b"hello", name="greeting")
    Traceback (most recent call last):
    ...
    TypeError: greeting must be str, got bytes: decode it first (e.g. data.decode('utf-8'))
    """
    if isinstance(text, bytes | bytearray | memoryview):
        raise TypeError(
            f"{name} must be str, got {type(text).__name__}: decode it first (e.g. data.decode('utf-8'))"
        )
    if not isinstance(text, str):
        raise TypeError(f"{name} must be str, got {type(text).__name__}")
    if not allow_empty and not text.strip():
        raise ValueError(f"{name} is empty; expected non-empty text")
    if len(text) > max_chars:
        raise ValueError(
            f"{name} has {len(text):,} characters, more than the limit of {max_chars:,}; shorten or split it"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{name} is not valid UTF-8 text (unpaired surrogate at position {err.start}); "
            "was binary data decoded with errors='surrogateescape'?"
        ) from None
    bad = _CONTROL.search(text)
    if bad:
        raise ValueError(
            f"{name} looks like binary data: control character U+{ord(bad.group()):04X} at position "
            f"{bad.start()}; expected printable text"
        )
    replaced = text.count("\ufffd")
    if replaced >= 4 and replaced > 0.1 * len(text):
        raise ValueError(
            f"{name} holds {replaced} U+FFFD replacement characters: it looks like non-UTF-8 data "
            "decoded with errors='replace'; expected text"
        )
    return text


@dataclass(frozen=True)
class Message:
    """One turn of a conversation.

    Parameters
    ----------
    role:
        One of :data:`ROLES`.
    content:
        Printable text of at most :data:`MAX_CHARS` characters; empty only for ``assistant``
        and ``tool`` messages.
    source:
        Where retrieved content came from (``"file"``, ``"web"``, ``"email"``); free text.

    Examples
    --------
    >>> Message("user", "Summarise the attached report.").trusted
    True
    >>> Message("document", "Revenue grew by 8%.", source="file").trusted
    False
    """

    role: str
    content: str
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.role, str):
            raise TypeError(f"role must be str, got {type(self.role).__name__}")
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of {', '.join(ROLES)}")
        check_text(
            self.content,
            name=f"content of the {self.role} message",
            allow_empty=self.role in ("assistant", "tool"),
        )
        if not isinstance(self.source, str):
            raise TypeError(f"source must be str, got {type(self.source).__name__}")

    @property
    def trusted(self) -> bool:
        """Whether the content comes from the developer or the user rather than from data."""
        return self.role in ("system", "user")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """A message from ``{"role": ..., "content": ..., "source": ...}`` (source optional)."""
        unknown = set(data) - {"role", "content", "source"}
        missing = {"role", "content"} - set(data)
        if missing:
            raise ValueError(f"a message dict needs keys 'role' and 'content'; missing {sorted(missing)}")
        if unknown:
            raise ValueError(f"unknown message keys {sorted(unknown)}; expected role, content, source")
        return cls(data["role"], data["content"], data.get("source", ""))


@dataclass(frozen=True)
class Tool:
    """A tool the assistant may call.

    Parameters
    ----------
    name:
        An identifier (``send_email``).
    description:
        One line for the model.
    parameters:
        Names of the (string) arguments; all are required.
    risky:
        Whether a call has effects outside the conversation (sends, pays, deletes): the calls
        that :class:`~labkit.genai.defenses.HumanConfirmation` asks about.
    """

    name: str
    description: str
    parameters: tuple[str, ...] = ()
    risky: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _IDENT.fullmatch(self.name):
            raise ValueError(f"tool name must be an identifier such as 'send_email', got {self.name!r}")
        if not isinstance(self.description, str):
            raise TypeError(f"tool description must be str, got {type(self.description).__name__}")
        params = tuple(self.parameters)
        for p in params:
            if not isinstance(p, str) or not _IDENT.fullmatch(p):
                raise ValueError(f"parameter names of tool {self.name!r} must be identifiers, got {p!r}")
        if len(set(params)) != len(params):
            raise ValueError(f"tool {self.name!r} lists a parameter twice: {params}")
        object.__setattr__(self, "parameters", params)

    def signature(self) -> str:
        """``send_email(to, subject, body)``."""
        return f"{self.name}({', '.join(self.parameters)})"


#: The tools of the lab's e-mail and document assistant. Only ``send_email`` and
#: ``transfer_funds`` act on the world.
DEFAULT_TOOLS: tuple[Tool, ...] = (
    Tool("send_email", "Send an e-mail.", ("to", "subject", "body"), risky=True),
    Tool("read_file", "Read a file from the user's drive.", ("path",)),
    Tool("search_web", "Search the web.", ("query",)),
    Tool("transfer_funds", "Transfer money from the company account.", ("to_account", "amount"), risky=True),
)


@dataclass(frozen=True)
class ToolCall:
    """A request from the assistant to run a tool: a name and string arguments.

    Examples
    --------
    >>> ToolCall("send_email", {"to": "bob@acme.example", "subject": "Hi", "body": "Lunch?"}).name
    'send_email'
    >>> ToolCall("send_email", {"to": 3})
    Traceback (most recent call last):
    ...
    TypeError: argument 'to' of tool call 'send_email' must be str, got int
    """

    name: str
    arguments: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"tool call name must be str, got {type(self.name).__name__}")
        if not _IDENT.fullmatch(self.name):
            raise ValueError(f"tool call name must be an identifier such as 'send_email', got {self.name!r}")
        if not isinstance(self.arguments, Mapping):
            raise TypeError(
                f"arguments of tool call {self.name!r} must be a mapping of str to str, "
                f"got {type(self.arguments).__name__}"
            )
        args: dict[str, str] = {}
        for key, value in self.arguments.items():
            if not isinstance(key, str) or not _IDENT.fullmatch(key):
                raise ValueError(
                    f"argument names of tool call {self.name!r} must be identifiers, got {key!r}"
                )
            if not isinstance(value, str):
                raise TypeError(
                    f"argument {key!r} of tool call {self.name!r} must be str, got {type(value).__name__}"
                )
            check_text(value, name=f"argument {key!r} of tool call {self.name!r}", allow_empty=True)
            args[key] = value
        object.__setattr__(self, "arguments", args)

    def matches(self, pattern: ToolCall) -> bool:
        """Same tool, and every argument ``pattern`` names has the same value (ignoring case)."""
        return self.name == pattern.name and all(
            self.arguments.get(k, "").strip().lower() == v.strip().lower()
            for k, v in pattern.arguments.items()
        )

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        return f"{self.name}({args})"


@dataclass(frozen=True)
class Reply:
    """What a target answers: text, tool calls, and how the defenses treated the request.

    Parameters
    ----------
    text:
        The answer shown to the user (may be empty when the reply is only tool calls).
    tool_calls:
        Calls the assistant wants to run, in order.
    refused:
        The assistant (or a defense) declined the request.
    blocked_by:
        Name of the first defense layer that blocked or changed the reply, if any.
    notes:
        Remarks for the person studying the system (which layer removed what, parse errors).
    """

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    refused: bool = False
    blocked_by: str | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_text(self.text, name="reply text", allow_empty=True, max_chars=MAX_TOTAL_CHARS)
        if isinstance(self.tool_calls, str | bytes | Mapping) or not isinstance(self.tool_calls, Iterable):
            raise TypeError(
                f"tool_calls must be a sequence of ToolCall, got {type(self.tool_calls).__name__}"
            )
        calls = tuple(self.tool_calls)
        for i, call in enumerate(calls):
            if not isinstance(call, ToolCall):
                raise TypeError(f"tool_calls[{i}] must be a ToolCall, got {type(call).__name__}")
        object.__setattr__(self, "tool_calls", calls)
        if isinstance(self.notes, str) or not isinstance(self.notes, Iterable):
            raise TypeError(f"notes must be a sequence of str, got {type(self.notes).__name__}")
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes))
        if not isinstance(self.refused, bool):
            raise TypeError(f"refused must be bool, got {type(self.refused).__name__}")

    def _repr_markdown_(self) -> str:
        lines = [self.text or "*(no text)*"]
        lines += [f"- tool call `{call}`" for call in self.tool_calls]
        if self.blocked_by:
            lines.append(f"- *blocked by {self.blocked_by}*")
        lines += [f"- *{note}*" for note in self.notes]
        return "\n".join(lines)


@runtime_checkable
class Target(Protocol):
    """Anything that answers a conversation: ``target(messages, *, tools) -> Reply``."""

    def __call__(self, messages: Sequence[Message], *, tools: Sequence[Tool] = ...) -> Reply: ...


def validate_messages(
    messages: object, *, max_chars: int = MAX_CHARS, max_total_chars: int = MAX_TOTAL_CHARS
) -> tuple[Message, ...]:
    """Check a conversation and return it as a tuple of :class:`Message`.

    Accepts :class:`Message` objects and dicts with ``role``, ``content`` and optional
    ``source``. The conversation must hold at least one ``user`` message.

    Raises
    ------
    TypeError
        ``messages`` is not a list of messages (a bare string, bytes, a dict, a number), or an
        element is neither a Message nor a dict, or content is bytes.
    ValueError
        The list is empty, has no user message, is too long, or a message is empty, binary or
        not valid UTF-8. The message names the offending index.

    Examples
    --------
    >>> validate_messages([{"role": "user", "content": "Hi"}])[0].role
    'user'
    >>> validate_messages([])
    Traceback (most recent call last):
    ...
    ValueError: messages is empty; expected at least one user message
    """
    if isinstance(messages, str | bytes | bytearray | Message | Mapping) or not isinstance(
        messages, Iterable
    ):
        raise TypeError(
            "messages must be a list of Message (or of dicts with 'role' and 'content'), "
            f"got {type(messages).__name__}"
        )
    out: list[Message] = []
    for i, item in enumerate(messages):
        try:
            if isinstance(item, Message):
                if len(item.content) > max_chars:
                    raise ValueError(
                        f"content has {len(item.content):,} characters, more than the limit of {max_chars:,}"
                    )
                out.append(item)
            elif isinstance(item, Mapping):
                msg = Message.from_dict(item)
                if len(msg.content) > max_chars:
                    raise ValueError(
                        f"content has {len(msg.content):,} characters, more than the limit of {max_chars:,}"
                    )
                out.append(msg)
            else:
                raise TypeError(f"expected a Message or a dict, got {type(item).__name__}")
        except (TypeError, ValueError) as err:
            raise type(err)(f"messages[{i}]: {err}") from None
    if not out:
        raise ValueError("messages is empty; expected at least one user message")
    if not any(m.role == "user" for m in out):
        raise ValueError("messages has no user message; expected at least one")
    total = sum(len(m.content) for m in out)
    if total > max_total_chars:
        raise ValueError(
            f"the conversation has {total:,} characters, more than the limit of {max_total_chars:,}"
        )
    return tuple(out)


def validate_tools(tools: object) -> tuple[Tool, ...]:
    """Check a tool list: :class:`Tool` objects (or dicts of their fields) with unique names."""
    if isinstance(tools, str | bytes | Mapping | Tool) or not isinstance(tools, Iterable):
        raise TypeError(f"tools must be a list of Tool, got {type(tools).__name__}")
    out: list[Tool] = []
    for i, item in enumerate(tools):
        if isinstance(item, Tool):
            out.append(item)
        elif isinstance(item, Mapping):
            try:
                out.append(Tool(**item))
            except TypeError as err:
                raise TypeError(f"tools[{i}]: {err}") from None
        else:
            raise TypeError(f"tools[{i}] must be a Tool, got {type(item).__name__}")
    names = [t.name for t in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"tools lists {dupes} more than once")
    return tuple(out)


def check_tool_call(call: object, tools: Sequence[Tool]) -> ToolCall:
    """Return ``call`` if it names one of ``tools`` with exactly its parameters; raise otherwise.

    Raises
    ------
    TypeError
        ``call`` is not a :class:`ToolCall`.
    ValueError
        Unknown tool, missing or unexpected arguments.
    """
    if not isinstance(call, ToolCall):
        raise TypeError(f"expected a ToolCall, got {type(call).__name__}")
    known = {t.name: t for t in tools}
    if call.name not in known:
        raise ValueError(f"unknown tool {call.name!r}; available: {', '.join(known) or 'none'}")
    tool = known[call.name]
    missing = [p for p in tool.parameters if p not in call.arguments]
    extra = [a for a in call.arguments if a not in tool.parameters]
    if missing or extra:
        raise ValueError(
            f"tool call {call.name!r} does not match {tool.signature()}: "
            f"missing {missing or 'nothing'}, unexpected {extra or 'nothing'}"
        )
    return call


_CALL_LINE = re.compile(r"^\s*CALL\s+(\S+)\s*(.*)$")


def parse_tool_calls(text: str, tools: Sequence[Tool]) -> tuple[str, tuple[ToolCall, ...], tuple[str, ...]]:
    """Split model output into text and tool calls written as ``CALL name {"arg": "value"}`` lines.

    Malformed calls (bad JSON, non-string arguments, unknown tools, wrong arguments) are not
    run: they are dropped and described in the returned notes, so that a confused or attacked
    model fails safe.

    Returns
    -------
    text, calls, notes

    Examples
    --------
    >>> tools = [Tool("search_web", "Search.", ("query",))]
    >>> text, calls, notes = parse_tool_calls('Sure.\\nCALL search_web {"query": "ATLAS"}', tools)
    >>> text, [str(c) for c in calls], notes
    ('Sure.', ["search_web(query='ATLAS')"], ())
    >>> parse_tool_calls("CALL rm_rf {}", tools)[2]
    ("dropped malformed tool call 'rm_rf': unknown tool 'rm_rf'; available: search_web",)
    """
    kept: list[str] = []
    calls: list[ToolCall] = []
    notes: list[str] = []
    for line in text.splitlines():
        m = _CALL_LINE.match(line)
        if not m:
            kept.append(line)
            continue
        name, raw = m.group(1), m.group(2).strip() or "{}"
        try:
            args = json.loads(raw)
            if not isinstance(args, dict):
                raise ValueError(f"arguments must be a JSON object, got {type(args).__name__}")
            calls.append(check_tool_call(ToolCall(name, args), tools))
        except (ValueError, TypeError) as err:
            notes.append(f"dropped malformed tool call {name[:40]!r}: {err}")
    return "\n".join(kept).strip(), tuple(calls), tuple(notes)
