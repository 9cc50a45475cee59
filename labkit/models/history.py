"""The per-epoch record of a training run: a table and a plot."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["History"]


@dataclass
class History:
    """What happened in each epoch of training (a table and a plot)."""

    rows: list[dict[str, float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: str) -> list[float]:
        return [row[key] for row in self.rows if key in row]

    @property
    def final(self) -> dict[str, float]:
        return self.rows[-1] if self.rows else {}

    def _repr_markdown_(self) -> str:
        if not self.rows:
            return "*no epochs run*"
        keys = list(self.rows[0])
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for row in self.rows:
            lines.append("| " + " | ".join(_fmt(row.get(k)) for k in keys) + " |")
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """Loss and accuracy per epoch."""
        from labkit.plot import curves

        series = {k: self[k] for k in self.rows[0] if k != "epoch" and k != "seconds"}
        return curves(self["epoch"], series, xlabel="epoch", ylabel="value", title="training history", ax=ax)


def _fmt(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)
