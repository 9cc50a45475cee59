"""What makes grading a submission start faster, and that it changes nothing graded.

The worker enters ``labkit`` as a bare package (no PyTorch), reads no manifest (the parent hands
it the course's settings), and never loads jsonschema's IRI checker; the checker kernel skips
trusted cells that only draw.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labkit.course import sandbox
from labkit.course.cellplan import display_only, plan_cells
from labkit.course.manifest import load_course
from labkit.course.nbgrader_setup import nbgrader_config

ROOT = Path(__file__).resolve().parents[1]
SLUG = "00-welcome"


def _plan(*cells: str) -> list[str]:
    """The trusted cells the checker runs before the one test (the last cell)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.cells[-1].metadata["nbgrader"] = {"grade": True, "grade_id": "t", "points": 1}
    return plan_cells(nb).tests["t"].trusted_before


def test_the_worker_imports_what_it_grades_with_but_not_pytorch() -> None:
    code = "\n".join(
        [
            *sandbox.BARE_PACKAGES,
            "from labkit.course import sandbox",
            "sandbox.skip_iri_format_checker()",
            "from labkit.course import cellplan, scoring",
            "import nbformat, nbgrader.apps, nbgrader.preprocessors, jsonschema",
            "scoring.guarded_execute_class(1024, plan=None); scoring.strict_grades_class()",
            "print(sorted(m for m in ('torch', 'labkit.config', 'rfc3987_syntax') if sys.modules.get(m)))",
        ]
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_the_parent_hands_the_worker_the_settings_nbgrader_config_makes(tmp_path: Path) -> None:
    course_file = ROOT / "course.yml"
    setup = sandbox.course_setup(course_file, "00", "ci")
    course = load_course(course_file)
    lesson = course.lesson("00")
    assert setup["slug"] == lesson.slug == SLUG
    assert setup["notebook"] == str(lesson.notebook)
    assert setup["kernel_tests"] == list(lesson.kernel_tests)
    assert setup["cell_seconds"] == course.profile("ci").cell_timeout
    json.dumps(setup)  # crosses to the worker as JSON
    from traitlets.config import Config

    again = Config(json.loads(json.dumps(setup)))["nbgrader"]
    want = nbgrader_config(course, root=ROOT, profile="ci")
    assert Config(again) == want


def test_a_cell_that_only_draws_is_not_run_by_the_checker() -> None:
    imports = "import torch\nimport labkit as lk\nfrom labkit.plot import curves"
    draws = ["lk.atlas.threat_map();", 'curves(report, title="t")\nlk.plot.image_grid(x[:4], labels=y)']
    test = "assert lk.models is not None and report and x is not None and y is not None"
    before = _plan(imports, "report, x, y = 1, 2, 3", *draws, test)
    assert before == [imports, "report, x, y = 1, 2, 3"]


@pytest.mark.parametrize(
    ("cell", "why"),
    [
        ("model.eval()", "a method of an object the test reads may change it"),
        ("lk.plot.image_grid(model(x))", "an argument that calls code (model's state may change)"),
        ("torch.manual_seed(0)", "not a drawing function: global state the test may depend on"),
        ("lk.plot.image_grid(x)\nmodel.eval()", "one statement that is not a drawing"),
        ("lk.plot.image_grid(x, hook=lambda: model.eval())", "an argument that may be called"),
    ],
)
def test_a_cell_that_may_change_what_a_test_reads_is_still_run(cell: str, why: str) -> None:
    imports = "import torch\nimport labkit as lk"
    before = _plan(imports, "model, x = object(), 1", cell, "assert model and x and torch and lk")
    assert cell in before, why


def test_a_drawing_name_rebound_is_not_a_drawing_any_more() -> None:
    assert display_only("lk.plot.image_grid(x)", {"lk": "labkit"})
    assert not display_only("lk.plot.image_grid(x)", {}), "lk not bound by an import"
    imports, rebind = "import labkit as lk", "lk = make_lab()"
    before = _plan(imports, rebind, "lk.plot.image_grid(1)", "assert lk")
    assert "lk.plot.image_grid(1)" in before


def test_lesson_00_checker_skips_the_threat_map_and_keeps_what_tests_read() -> None:
    nb = nbformat.read(ROOT / "solutions" / SLUG / "welcome.ipynb", as_version=4)
    plan = plan_cells(nb)
    every = [src for step in plan.tests.values() for src in step.trusted_before]
    assert not any("threat_map" in src for src in every)
    for needed in (
        "import labkit as lk",
        'lk.data.load("digits"',
        'pretrained("digits-cnn"',
        "bare = model.net",
    ):
        assert any(needed in src for src in every), needed
