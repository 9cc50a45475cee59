"""Markdown pieces shared by a finding's own display and the campaign report."""

from __future__ import annotations

import html
import math
import re
from typing import Any

__all__ = ["cost", "fmt", "md"]

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>])")


def md(text: object) -> str:
    """``text`` as inert Markdown: one line, syntax backslash-escaped, HTML entities escaped."""
    flat = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(flat, quote=False))


def fmt(value: Any) -> str:
    """A piece of evidence as short text (floats to 3 digits, infinity as ``never``)."""
    if isinstance(value, float):
        if math.isinf(value):
            return "never"
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def cost(cost: float) -> str:
    """Queries per success, in words."""
    if math.isinf(cost):
        return "never succeeded"
    if cost == 0:
        return "offline (0 queries)"
    return "1 query per success" if cost == 1 else f"{cost:.3g} queries per success"
