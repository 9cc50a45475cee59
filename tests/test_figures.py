"""Every figure in a lesson comes with a one-sentence text summary a screen reader can read.

A figure-producing code cell either prints its summary itself (``print(f"Figure: ...")``, so a
number in it comes from this run's values) or is followed directly by a markdown cell that
opens with ``Figure:`` and describes what the figure is (never a measured result).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "solutions").glob("*/*.ipynb"))

# What draws a figure: pyplot figures, labkit's figure helpers, and any result's ``.plot(...)``.
DRAWS = re.compile(r"plt\.subplots\(|plt\.figure\(|plt\.show\(|lk\.plot\.\w+\(|\.plot\(|\.imshow\(")
PRINTED = re.compile(r"""print\(\s*f?["']Figure: \S""")
STATIC = re.compile(r"^\s*\**_?Figure:_?\**\s+\S")


def draws_figure(source: str) -> bool:
    """Whether a code cell's source draws a figure (comments ignored)."""
    code = "\n".join(line.split("#", 1)[0] for line in source.splitlines())
    return bool(DRAWS.search(code))


def has_summary(cells: list[nbformat.NotebookNode], i: int) -> bool:
    """Whether code cell ``i`` prints a ``Figure:`` line or is followed by a ``Figure:`` markdown cell."""
    if PRINTED.search(cells[i].source):
        return True
    nxt = cells[i + 1] if i + 1 < len(cells) else None
    return nxt is not None and nxt.cell_type == "markdown" and bool(STATIC.match(nxt.source))


def unsummarised(path: Path) -> list[int]:
    """The indices of a notebook's figure cells that have no text summary."""
    cells = nbformat.read(path, as_version=4).cells
    return [
        i
        for i, cell in enumerate(cells)
        if cell.cell_type == "code" and draws_figure(cell.source) and not has_summary(cells, i)
    ]


@pytest.mark.parametrize("path", SOURCES, ids=[p.parent.name for p in SOURCES])
def test_every_figure_has_a_text_summary(path: Path) -> None:
    missing = unsummarised(path)
    assert not missing, (
        f"{path.parent.name}: figures without a text summary in cells {missing}; "
        'print one sentence after the figure (print(f"Figure: ...") with numbers from the computed values) '
        "or follow the cell with a markdown cell that opens with 'Figure:' and says what the figure shows"
    )


def test_the_check_finds_a_figure_without_summary(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt"),
        nbformat.v4.new_code_cell("fig, ax = plt.subplots()\nax.plot([0, 1], [1, 0]);"),
        nbformat.v4.new_code_cell('report.plot()\nprint(f"Figure: accuracy falls to {a:.0%}.")'),
        nbformat.v4.new_code_cell("lk.plot.image_grid(x);"),
        nbformat.v4.new_markdown_cell("Figure: sixteen signs, each captioned with its label."),
        nbformat.v4.new_code_cell("# report.plot() is left to the reader\nreport"),
        nbformat.v4.new_code_cell('lk.plot.curves(x, s, xlabel="e", ylabel="a")\nprint("accuracy", a)'),
    ]
    path = tmp_path / "lesson.ipynb"
    nbformat.write(nb, path)
    assert unsummarised(path) == [1, 6]
