"""The cell planner's rule for cells that read learner names only inside function bodies.

Such a cell runs in the trusted checker (its functions are the checker's own, and find the
learner's functions as call proxies when a test calls them) only when running the cell itself
cannot run learner code. Every way a cell can run a function body it defines, or evaluate a
learner name while it runs, keeps it a learner cell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest

import labkit as lk
from labkit.course.cellplan import plan_cells, reads_of

ROOT = Path(__file__).resolve().parents[1]


SOLVE = "# solution\ndef solve(v):\n    return v"


def _notebook(*sources: str) -> Any:
    """The plan of a notebook of ``sources``: a source starting ``# solution`` is a solution cell,
    one starting ``assert`` the test cell ``t``, any other an ordinary cell."""
    nb = nbformat.v4.new_notebook()
    for i, source in enumerate(sources):
        cell = nbformat.v4.new_code_cell(source)
        if source.startswith("assert"):
            cell.metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "t", "points": 1}
        elif source.startswith("# solution"):
            cell.metadata["nbgrader"] = {"grade": False, "solution": True, "grade_id": f"s{i}"}
        nb.cells.append(cell)
    return plan_cells(nb)


def _plan(middle: str) -> Any:
    """A solution cell defining ``solve``, the cell under test, a test cell calling ``run``."""
    return _notebook("import math\nbase = 1", SOLVE + " + base", middle, "assert run(0) == 1")


DEFERRED = "def run(seed):\n    return solve(seed) + math.floor(base)"


def test_a_cell_reading_learner_names_only_in_a_function_body_is_the_checkers() -> None:
    plan = _plan(DEFERRED)
    step = plan.tests["t"]
    assert DEFERRED in step.trusted_before, "the checker defines run itself"
    assert "run" in step.shared_names and "run" not in plan.learner
    assert step.learner_names == ["solve"], "the learner name run's body reads is bound before the test"


def test_learner_names_are_bound_through_trusted_functions_that_call_each_other() -> None:
    plan = _notebook(
        SOLVE, "def inner(v):\n    return solve(v)", "def outer(v):\n    return [inner(v)]", "assert outer(1)"
    )
    assert plan.tests["t"].learner_names == ["solve"]
    assert len(plan.tests["t"].trusted_before) == 2


def test_a_trusted_function_defined_before_the_exercise_reads_it_at_test_time() -> None:
    plan = _notebook("def run(v):\n    return solve(v)", SOLVE, "assert run(1) == 1")
    assert plan.tests["t"].learner_names == ["solve"]


@pytest.mark.parametrize(
    ("middle", "why"),
    [
        (DEFERRED + "\n\nfirst = run(0)", "a top-level call of the function it defines"),
        (DEFERRED + "\n\nalias = run", "a top-level alias of it (called who knows when)"),
        (DEFERRED + "\n\nfirst = globals()['run'](0)", "a call by name through globals()"),
        (DEFERRED + "\n\nfirst = eval('run(0)')", "a call through eval"),
        ("@solve\ndef run(seed):\n    return seed", "a learner decorator"),
        (
            "import functools\n\n\n@functools.cache\ndef run(seed):\n    return solve(seed)",
            "a decorator (may call it)",
        ),
        ("def run(seed, f=solve):\n    return f(seed)", "a learner name as a default value"),
        ("def run(seed, f=solve(0)):\n    return f", "a learner call in a default value"),
        ("def run(seed: solve(0)):\n    return seed", "a learner call in an annotation"),
        ("class Runner:\n    value = solve(0)\n\n\nrun = Runner", "a class body runs at once"),
        (
            "class Runner:\n    def __call__(self, v):\n        return solve(v)\n\n\nrun = Runner()",
            "a method",
        ),
        ("run = lambda seed: solve(seed)", "a lambda (an expression: handed on or called)"),
        ("first = (lambda: solve(0))()\nrun = 1", "a lambda called at top level"),
        ("values = sorted([2, 1], key=lambda v: solve(v))\nrun = 1", "a lambda handed to a top-level call"),
        ("values = [solve(v) for v in range(3)]\nrun = 1", "a comprehension"),
        ("values = list(solve(v) for v in range(3))\nrun = 1", "a generator expression"),
        ("run = solve", "a plain top-level read"),
    ],
)
def test_a_cell_that_can_run_learner_code_as_it_runs_stays_a_learner_cell(middle: str, why: str) -> None:
    plan = _plan(middle)
    step = plan.tests["t"]
    assert middle not in step.trusted_before, f"the checker would run learner code: {why}"
    assert "run" in plan.learner, f"run should be the learner kernel's: {why}"
    assert "run" in step.learner_names


def test_a_later_cell_that_calls_a_trusted_function_at_top_level_is_a_learner_cell() -> None:
    run = "def run(v):\n    return solve(v)"
    plan = _notebook(
        SOLVE, run, "first = run(0)", "twice = [run(v) for v in range(2)]", "assert first + run(1)"
    )
    assert plan.tests["t"].trusted_before == [run]
    assert plan.tests["t"].learner_names == ["first", "solve"]
    assert "twice" in plan.learner, "a comprehension calling run at top level runs learner code"


def test_a_trusted_function_redefined_by_a_solution_cell_is_the_learners() -> None:
    redefined = "# solution\ndef run(v):\n    return v"
    plan = _notebook(
        SOLVE, "def run(v):\n    return solve(v)", redefined, "first = run(0)", "assert first == 0"
    )
    assert "first" in plan.learner and plan.tests["t"].learner_names == ["first"]


def test_reads_split_into_top_level_and_function_bodies() -> None:
    reads = reads_of(
        "import torch\n\n\ndef f(x, k=kk):\n    def g():\n        return h(x)\n    return g() + torch.ones(1)\n\n"
        "y = f(1)\nclass C:\n    def m(self):\n        return q\n"
    )
    assert reads.immediate == {"kk", "f"}
    by_name = {d.name: d for d in reads.functions}
    assert by_name["f"].reads == {"h", "torch"} and by_name["f"].deferrable
    assert by_name[None].reads == {"q"} and not by_name[None].deferrable, "a method is not deferrable"


def test_lesson_16_defense_tests_run_in_the_checker_with_defend_as_its_own() -> None:
    lesson = lk.course.load_course(ROOT / "course.yml").lesson("16-capstone")
    nb = nbformat.read(ROOT / "solutions" / lesson.slug / str(lesson.notebook), as_version=4)
    plan = plan_cells(nb, in_kernel=lesson.kernel_tests)
    for grade_id in ("defense_recall_tests", "defense_review_tests", "defense_monitor_api_tests"):
        assert grade_id in plan.tests, f"{grade_id} should be scored by the checker"
        step = plan.tests[grade_id]
        assert {"build_defense", "build_guard", "build_monitor"} <= set(step.learner_names)
        assert "defend" in step.shared_names and "defend" not in step.learner_names
        assert "replay" not in step.learner_names and "campaign" not in step.learner_names
    before = plan.tests["defense_recall_tests"].trusted_before
    assert any(src.startswith("defended = {}") for src in before), "the checker defines defend itself"
    assert "result" in plan.learner, "result = defend(0) runs learner code: the learner kernel's cell"
