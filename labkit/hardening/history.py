"""What a run of adversarial training records: :class:`AdversarialHistory`, one row per epoch.

:class:`CatastrophicOverfittingWarning` is raised when robust accuracy on the monitor batch
collapses during single-step training (see :func:`~labkit.hardening.adversarial_training`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from labkit.models.training import History


class CatastrophicOverfittingWarning(UserWarning):
    """Robust accuracy against PGD collapsed during single-step adversarial training."""


# --------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------


@dataclass
class AdversarialHistory(History):
    """One row per epoch of adversarial training, a table and a plot.

    Columns: ``epoch``, ``loss``, ``train_acc`` (on the clean training batches),
    ``train_adv_acc`` (on the examples the training attack made), ``clean_acc`` and
    ``robust_acc`` (on the held-out monitor batch, against ``monitor_attack``), ``attack_acc``
    (on the monitor batch against the training attack; only when ``overfit_gap`` is set), ``lr``
    and ``seconds``. ``overfit_epoch`` is the first epoch at which catastrophic overfitting was
    detected (``None`` if never), ``overfit_reason`` says which alarm fired and why, and
    ``restored_epoch`` is the epoch whose weights were kept.
    """

    overfit_epoch: int | None = None
    overfit_reason: str | None = None
    restored_epoch: int | None = None
    train_seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def catastrophic_overfitting(self) -> bool:
        """Whether robust accuracy collapsed during training (see :func:`adversarial_training`)."""
        return self.overfit_epoch is not None

    def _repr_markdown_(self) -> str:
        table = super()._repr_markdown_()
        lines = [table, "", f"training time: {self.train_seconds:.1f} s"]
        if self.overfit_epoch is not None:
            kept = (
                f"weights of epoch {self.restored_epoch} kept"
                if self.restored_epoch is not None
                else "training went on"
            )
            lines.append(
                f"**catastrophic overfitting at epoch {self.overfit_epoch}**: {self.overfit_reason}; {kept}"
            )
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """Clean and robust accuracy on the monitor batch per epoch (and on the training batches)."""
        from labkit.plot import curves

        if not self.rows:
            raise ValueError("no epochs to plot")
        keys = [
            k
            for k in ("clean_acc", "robust_acc", "attack_acc", "train_acc", "train_adv_acc")
            if k in self.rows[0]
        ]
        fig = curves(
            self["epoch"],
            {k: self[k] for k in keys},
            xlabel="epoch",
            ylabel="accuracy",
            title="adversarial training",
            ax=ax,
        )
        if self.overfit_epoch is not None:
            fig.axes[0].axvline(self.overfit_epoch, color="crimson", linestyle="--", alpha=0.6)
        return fig
