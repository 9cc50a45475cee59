"""Markdown and HTML tables for the reports (shared by stress, resilience, monitoring, validation)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

__all__ = ["fmt", "html_table", "markdown_table"]


def fmt(value: object, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` decimals, NaN as an em dash, the rest via ``str``."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table."""

    def cell(v: object) -> str:
        return fmt(v, digits).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    caption: str | None = None,
    digits: int = 3,
    styles: Sequence[Sequence[str]] | None = None,
) -> str:
    """An HTML table; ``styles[i][j]`` is an optional inline style for cell ``(i, j)``."""
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead>")
    out.append("<tbody>")
    for i, row in enumerate(rows):
        cells = []
        for j, v in enumerate(row):
            style = styles[i][j] if styles is not None and styles[i][j] else ""
            attr = f' style="{html.escape(style)}"' if style else ""
            cells.append(f"<td{attr}>{html.escape(fmt(v, digits))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)
