"""Figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

import labkit as lk


def test_image_grid_marks_wrong_predictions_in_red_and_in_words() -> None:
    x = torch.rand(5, 3, 8, 8)
    fig = lk.plot.image_grid(
        x, labels=[0, 1, 0, 1, 0], preds=[0, 0, 0, 1, 1], class_names=["stop", "yield"], ncols=3
    )
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    assert len(titles) == 5
    colours = [t.get_color() for t in titles]
    assert colours.count("crimson") == 2
    assert titles[1].get_text() == "yield → stop ✗"  # not by colour alone
    assert [t.get_text().endswith("✗") for t in titles] == [c == "crimson" for c in colours]


def test_adversarial_grid_layout_and_validation() -> None:
    x = torch.rand(4, 1, 8, 8)
    fig = lk.plot.adversarial_grid(x, (x + 0.01).clamp(0, 1), n=3)
    assert len(fig.axes) == 9
    with pytest.raises(ValueError, match="differ in shape"):
        lk.plot.adversarial_grid(x, x[:2])


def test_curves_checks_lengths() -> None:
    fig = lk.plot.curves([0, 1, 2], {"a": [1, 0.5, 0.2], "b": [1, 0.9, 0.8]}, xlabel="eps", ylabel="acc")
    assert len(fig.axes[0].lines) == 2
    with pytest.raises(ValueError, match="curve 'a' has 2 points, x has 3"):
        lk.plot.curves([0, 1, 2], {"a": [1, 0.5]}, xlabel="eps", ylabel="acc")
    with pytest.raises(ValueError, match="empty"):
        lk.plot.image_grid(torch.rand(0, 1, 4, 4))
