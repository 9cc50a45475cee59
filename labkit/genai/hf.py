"""Plug a Hugging Face causal language model you already have into the lab. Never downloads.

The lab runs on :class:`~labkit.genai.simulator.SimulatedAssistant` by default. If you have a
chat model's weights on your own disk, :class:`HuggingFaceTarget` makes it a target like any
other, so the same corpus, judges, defenses and harness run against it::

    from labkit.genai.hf import HuggingFaceTarget
    target = HuggingFaceTarget.from_local("/path/to/a/saved/model")   # a folder, never a hub id
    result = genai.evaluate(target, scenario=s, attacks=attacks, benign=benign, configs=configs)

or, with objects you loaded yourself::

    target = HuggingFaceTarget(model, tokenizer, max_new_tokens=96)

``transformers`` is not a labkit dependency: install it yourself (``pip install transformers``).
Loading always passes ``local_files_only=True``; a path that is not a local folder raises
``FileNotFoundError`` instead of reaching the network.

Tools are described to the model in the system prompt, and the model calls one by writing a
line ``CALL tool_name {"arg": "value"}``. Malformed calls are dropped and described in
``Reply.notes`` (see :func:`~labkit.genai.types.parse_tool_calls`). Small models follow this
format poorly; the judges still see any secret or forbidden phrase in their text.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from labkit.genai.types import (
    DATA_ROLES,
    Message,
    Reply,
    Tool,
    parse_tool_calls,
    validate_messages,
    validate_tools,
)
from labkit.utils import eval_mode

__all__ = ["HuggingFaceTarget", "format_prompt"]

_INSTALL_HINT = (
    "HuggingFaceTarget needs the 'transformers' package, which labkit does not install. "
    "Install it with `pip install transformers`; labkit never downloads weights, "
    "you supply a local model."
)


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return transformers


def _tools_block(tools: Sequence[Tool]) -> str:
    if not tools:
        return ""
    lines = ["You can call these tools:"]
    lines += [f"- {t.signature()}: {t.description}" for t in tools]
    lines.append('To call a tool, write one line: CALL tool_name {"argument": "value", ...}')
    return "\n".join(lines)


def _chat(messages: Sequence[Message], tools: Sequence[Tool]) -> list[dict[str, str]]:
    """Messages as role/content dicts that every chat template accepts (system, user, assistant)."""
    chat: list[dict[str, str]] = []
    block = _tools_block(tools)
    first_system = True
    for m in messages:
        if m.role == "system":
            content = m.content + ("\n\n" + block if block and first_system else "")
            first_system = False
            chat.append({"role": "system", "content": content})
        elif m.role in DATA_ROLES:
            label = m.source or m.role
            chat.append({"role": "user", "content": f"[{m.role} from {label}]\n{m.content}"})
        else:
            chat.append({"role": m.role, "content": m.content})
    if first_system and block:
        chat.insert(0, {"role": "system", "content": block})
    return chat


def format_prompt(messages: Sequence[Message], tools: Sequence[Tool] = (), *, tokenizer: Any = None) -> str:
    """The prompt text for a conversation: the tokenizer's chat template when it has one, otherwise
    ``Role: content`` blocks ending in ``Assistant:``.

    Retrieved content becomes a user turn labelled with its source; the model sees no other
    separation between instructions and data (that is what the defenses add).
    """
    chat = _chat(validate_messages(messages), validate_tools(tools))
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        try:
            return str(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
        except Exception as err:  # chat templates raise anything; fall back to plain text
            warnings.warn(f"the tokenizer's chat template failed ({err}); using a plain prompt", stacklevel=2)
    parts = [f"{turn['role'].title()}: {turn['content']}" for turn in chat]
    return "\n\n".join(parts) + "\n\nAssistant:"


_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")


class HuggingFaceTarget:
    """A local Hugging Face causal LM as a target: ``target(messages, *, tools) -> Reply``.

    Parameters
    ----------
    model:
        A loaded ``transformers`` causal LM (anything with ``generate``).
    tokenizer:
        Its tokenizer.
    max_new_tokens:
        Longest answer, in tokens.
    do_sample:
        Sample instead of greedy decoding. Greedy (the default) makes replies deterministic;
        sampling uses PyTorch's global random state.

    Notes
    -----
    A prompt longer than the model's context is cut from the left (the system prompt goes
    first), with a warning. Generation runs in evaluation mode without gradients on the device
    of the model's parameters; the model's mode is restored afterwards.
    """

    def __init__(
        self, model: Any, tokenizer: Any, *, max_new_tokens: int = 64, do_sample: bool = False
    ) -> None:
        if not callable(getattr(model, "generate", None)):
            raise TypeError(
                f"model must be a transformers causal LM with .generate(), got {type(model).__name__}"
            )
        if not callable(tokenizer) or not callable(getattr(tokenizer, "decode", None)):
            raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.do_sample = bool(do_sample)

    @classmethod
    def from_local(
        cls, path: str | Path, *, device: str | torch.device | None = None, **kwargs: Any
    ) -> HuggingFaceTarget:
        """Load a model and tokenizer saved in a local folder (``save_pretrained``), offline.

        Raises
        ------
        FileNotFoundError
            ``path`` is not a local folder with a ``config.json``: nothing is downloaded.
        ImportError
            ``transformers`` is not installed.
        """
        folder = Path(path).expanduser()
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"no local model folder with a config.json at {str(path)!r}. "
                "HuggingFaceTarget never downloads "
                "weights: pass a folder written by save_pretrained(), or loaded model and tokenizer objects."
            )
        tf = _transformers()
        tokenizer = tf.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = tf.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
        if device is not None:
            model = model.to(device)
        return cls(model.eval(), tokenizer, **kwargs)

    def __repr__(self) -> str:
        return f"HuggingFaceTarget({type(self.model).__name__}, max_new_tokens={self.max_new_tokens})"

    def _context_limit(self) -> int | None:
        config = getattr(self.model, "config", None)
        for key in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        value = getattr(self.tokenizer, "model_max_length", None)
        return value if isinstance(value, int) and 0 < value < 1_000_000 else None

    def __call__(self, messages: Sequence[Message], *, tools: Sequence[Tool] = ()) -> Reply:
        """Generate a reply; tool calls are parsed from ``CALL`` lines."""
        msgs = validate_messages(messages)
        toolset = validate_tools(tools)
        prompt = format_prompt(msgs, toolset, tokenizer=self.tokenizer)
        encoded = self.tokenizer(prompt, return_tensors="pt")
        ids = encoded["input_ids"]
        mask = encoded.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask
        limit = self._context_limit()
        if limit is not None:
            budget = limit - self.max_new_tokens
            if budget < 1:
                raise ValueError(
                    f"max_new_tokens={self.max_new_tokens} leaves no room for the prompt "
                    f"in a context of {limit} tokens"
                )
            if ids.shape[1] > budget:
                warnings.warn(
                    f"the prompt has {ids.shape[1]} tokens, more than the {budget} that fit; "
                    f"keeping the last {budget} "
                    "(the system prompt is cut first)",
                    stacklevel=2,
                )
                ids, mask = ids[:, -budget:], mask[:, -budget:]
        params = getattr(self.model, "parameters", None)
        device = next(iter(params()), torch.empty(0)).device if callable(params) else torch.device("cpu")
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(self.tokenizer, "eos_token_id", None)
        modules = [self.model] if isinstance(self.model, torch.nn.Module) else []
        with torch.no_grad(), eval_mode(*modules):
            out = self.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=self.max_new_tokens,
                do_sample=self.do_sample,
                pad_token_id=pad,
            )
        new_tokens = out[0, ids.shape[1] :]
        raw = str(self.tokenizer.decode(new_tokens, skip_special_tokens=True))
        cleaned = _UNPRINTABLE.sub("", raw)
        text, calls, notes = parse_tool_calls(cleaned, toolset)
        if cleaned != raw:
            notes = (
                *notes,
                f"removed {len(raw) - len(cleaned)} unprintable characters from the model output",
            )
        return Reply(text, calls, notes=notes)

    respond = __call__
