"""labkit grade: finding submissions, validating workers' results, and grading a class in sandboxes.

The slow test grades a class of lesson 00 (the fastest lesson) with good, partial, broken and
malicious submissions, and checks every grade, every reason, and that nothing outside each
sandbox changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml

import labkit as lk
from labkit.course import integrity
from labkit.course.classroom import ClassGrades, LessonGrade, _Template, _validate
from labkit.course.grading import CellScore
from labkit.course.sandbox import Limits
from labkit.course.submissions import Submission

ROOT = Path(__file__).resolve().parents[1]
SLUG = "00-welcome"
NOTEBOOK = "welcome.ipynb"
# The cohort secret the grading tests seal the answer key with (the checker kernel gets the key).
COHORT_SECRET = "5e" * 32
TESTS = {  # lesson 00's autograded test cells and their points
    "check_batch_tests": 4,
    "accuracy_tests": 4,
    "wrap_tests": 4,
    "quiz_format": 1,
    "quiz_q2_q3": 2,
    "quiz_q4_q5": 2,
}


def _solutions() -> dict[str, str]:
    nb = nbformat.read(ROOT / "solutions" / SLUG / NOTEBOOK, as_version=4)
    found = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and cell.cell_type == "code":
            found[meta["grade_id"]] = re.sub(r"[ \t]*### (BEGIN|END) SOLUTION\n?", "", cell.source)
    return found


def learner_notebook(answers: dict[str, str] | None = None, *, solved: bool = True) -> nbformat.NotebookNode:
    """The learner copy of lesson 00 with the reference answers (or blank), some replaced."""
    nb = nbformat.read(ROOT / "lessons" / SLUG / NOTEBOOK, as_version=4)
    ref = _solutions() if solved else {}
    ref.update(answers or {})
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in ref:
            cell.source = ref[gid]
    return nb


def write(nb: nbformat.NotebookNode, folder: Path, student: str) -> Path:
    path = folder / student / SLUG / NOTEBOOK
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


# --------------------------------------------------------------------------------------------
# Finding submissions


def test_nbgrader_layout_and_renamed_notebook(course: lk.course.Course, tmp_path: Path) -> None:
    write(learner_notebook(), tmp_path / "submitted", "alice")
    other = tmp_path / "submitted" / "bob" / SLUG / "welcome (1).ipynb"
    other.parent.mkdir(parents=True)
    nbformat.write(learner_notebook(), other)
    found = lk.course.find_submissions(course, tmp_path)
    assert [(s.student, s.lesson) for s in found] == [("alice", SLUG), ("bob", SLUG)]
    assert found[0].warnings == []
    assert any("renamed" in w for w in found[1].warnings)


def test_flat_layouts_map_names_to_learner_ids(course: lk.course.Course, tmp_path: Path) -> None:
    nbformat.write(learner_notebook(), tmp_path / "Ada Lovelace.ipynb")
    nbformat.write(learner_notebook(), tmp_path / "grace--00.ipynb")
    found = lk.course.find_submissions(course, tmp_path, lesson="00")
    assert {s.student for s in found} == {"Ada_Lovelace", "grace"}
    ada = next(s for s in found if s.student == "Ada_Lovelace")
    assert any("graded as 'Ada_Lovelace'" in w for w in ada.warnings)
    with pytest.raises(lk.course.SubmissionError, match="--lesson"):
        lk.course.find_submissions(course, tmp_path)


def test_learner_folder_and_zip(course: lk.course.Course, tmp_path: Path) -> None:
    folder = tmp_path / "class"
    (folder / "carol").mkdir(parents=True)
    nbformat.write(learner_notebook(), folder / "carol" / NOTEBOOK)
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(folder / "carol" / NOTEBOOK, f"class/carol/{NOTEBOOK}")
        zf.writestr("__MACOSX/._junk.ipynb", "junk")
    work = tmp_path / "work"
    work.mkdir()
    found = lk.course.find_submissions(course, archive, workdir=work)
    assert [(s.student, s.lesson) for s in found] == [("carol", SLUG)]


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("missing", "no such file or folder"),
        ("text", "expected a folder or a .zip"),
        ("zipslip", "unsafe path"),
        ("badzip", "not a zip archive"),
        ("duplicate", "two notebooks for learner 'dave'"),
        ("deep", "not a layout labkit knows"),
        ("badlesson", "no lesson '99'"),
    ],
)
def test_bad_submission_sources_say_what_was_expected(
    course: lk.course.Course, tmp_path: Path, setup: str, match: str
) -> None:
    src: Path = tmp_path / "src"
    src.mkdir()
    if setup == "missing":
        src = tmp_path / "nowhere"
    elif setup == "text":
        src = tmp_path / "grades.txt"
        src.write_text("x")
    elif setup == "zipslip":
        src = tmp_path / "evil.zip"
        with zipfile.ZipFile(src, "w") as zf:
            zf.writestr("../../escaped.ipynb", "{}")
    elif setup == "badzip":
        src = tmp_path / "broken.zip"
        src.write_bytes(b"PK\x03\x04 not really")
    elif setup == "duplicate":
        nbformat.write(learner_notebook(), src / "dave--00.ipynb")
        (src / "dave").mkdir()
        nbformat.write(learner_notebook(), src / "dave" / NOTEBOOK)
    elif setup == "deep":
        (src / "a" / "b" / "c").mkdir(parents=True)
        nbformat.write(learner_notebook(), src / "a" / "b" / "c" / "x.ipynb")
    elif setup == "badlesson":
        nbformat.write(learner_notebook(), src / "erin--99.ipynb")
    with pytest.raises(lk.course.SubmissionError, match=match):
        lk.course.find_submissions(course, src, workdir=tmp_path)


def test_check_submission_flags_edited_deleted_and_metadata_free(tmp_path: Path) -> None:
    release = ROOT / "lessons" / SLUG / NOTEBOOK
    nb = learner_notebook()
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "check_batch_tests":
            cell.source = "pass"
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "quiz_q4_q5"]
    nbformat.write(nb, tmp_path / "a.ipynb")
    ok, warnings = lk.course.check_submission(tmp_path / "a.ipynb", release)
    assert ok
    assert any("check_batch_tests edited" in w for w in warnings)
    assert any("quiz_q4_q5 deleted" in w for w in warnings)
    fresh = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("q1 = 'b'")])
    nbformat.write(fresh, tmp_path / "b.ipynb")
    assert lk.course.check_submission(tmp_path / "b.ipynb", release) == (
        True,
        ["no nbgrader metadata: pasted into a fresh notebook? Every graded cell scores 0"],
    )
    (tmp_path / "c.ipynb").write_text('{"cells": [')
    ok, warnings = lk.course.check_submission(tmp_path / "c.ipynb", release)
    assert not ok and "not a readable notebook" in warnings[0]


# --------------------------------------------------------------------------------------------
# What the parent accepts from a worker


def _template(course: lk.course.Course) -> _Template:
    cells = {gid: (float(pts), True) for gid, pts in TESTS.items()}
    cells["threat_model_answer"] = (3.0, False)
    return _Template(lesson=course.lesson("00"), root=ROOT, cells=cells)


def _raw(**changes: Any) -> dict[str, Any]:
    cells = [
        {"grade_id": g, "score": float(p), "max_score": float(p), "autograded": True}
        for g, p in TESTS.items()
    ]
    cells.append({"grade_id": "threat_model_answer", "score": 0.0, "max_score": 3.0, "autograded": False})
    raw: dict[str, Any] = {
        "status": "graded",
        "student": "alice",
        "lesson": SLUG,
        "cells": cells,
        "seconds": 3.0,
    }
    raw.update(changes)
    return raw


def test_validate_accepts_a_well_formed_result(course: lk.course.Course) -> None:
    sub = Submission("alice", SLUG, Path("x.ipynb"))
    grade = _validate(_raw(), sub, _template(course))
    assert grade.status == "graded"
    assert grade.score == sum(TESTS.values())
    assert grade.max_score == sum(TESTS.values()) + 3


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"student": "mallory"}, "wrong learner"),
        ({"lesson": "01-adversarial-examples"}, "wrong learner"),
        ({"cells": "all of them"}, "no cells"),
        ({"score_of": ("wrap_tests", 40.0)}, "score 40.0 for wrap_tests"),
        ({"score_of": ("wrap_tests", float("nan"))}, "score nan"),
        ({"score_of": ("wrap_tests", -1.0)}, "score -1.0"),
        ({"drop": "quiz_q4_q5"}, "missing cells quiz_q4_q5"),
        ({"extra": "bonus_points"}, "unexpected cell 'bonus_points'"),
        ({"duplicate": "wrap_tests"}, "unexpected cell 'wrap_tests'"),
    ],
)
def test_validate_rejects_forged_or_broken_results(
    course: lk.course.Course, change: dict[str, Any], match: str
) -> None:
    raw = _raw()
    change = dict(change)
    if "score_of" in change:
        gid, value = change.pop("score_of")
        next(c for c in raw["cells"] if c["grade_id"] == gid)["score"] = value
    if "drop" in change:
        dropped = change.pop("drop")
        raw["cells"] = [c for c in raw["cells"] if c["grade_id"] != dropped]
    if "extra" in change:
        raw["cells"].append({"grade_id": change.pop("extra"), "score": 100.0, "max_score": 100.0})
    if "duplicate" in change:
        again = change.pop("duplicate")
        raw["cells"].append(dict(next(c for c in raw["cells"] if c["grade_id"] == again)))
    raw.update(change)
    grade = _validate(raw, Submission("alice", SLUG, Path("x.ipynb")), _template(course))
    assert grade.status == "error"
    assert grade.score == 0
    assert match in grade.reason


def test_validate_withholds_feedback_that_shows_hidden_tests(course: lk.course.Course) -> None:
    raw = _raw(feedback_html="<pre>### BEGIN HIDDEN TESTS\nassert q1 == 'b'</pre>")
    grade = _validate(raw, Submission("alice", SLUG, Path("x.ipynb")), _template(course))
    assert grade.feedback_html == ""
    assert any("withheld" in w for w in grade.warnings)


def test_limits_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="Limits.cpu_seconds must be a positive integer"):
        Limits(cpu_seconds=0)
    with pytest.raises(ValueError, match="memory_mb must be at least 512"):
        Limits(memory_mb=100)
    with pytest.raises(ValueError, match="cell_seconds"):
        Limits(cell_seconds=-5)


def test_grades_csv_has_lesson_and_concept_columns(course: lk.course.Course, tmp_path: Path) -> None:
    lesson = course.lesson("00")
    results = [
        LessonGrade("ann", SLUG, "graded", 15.0, 20.0, cells=[CellScore("x", 15.0, 20.0, True)]),
        LessonGrade("ben", SLUG, "error", 0.0, 20.0, reason="corrupt .ipynb: not a readable notebook"),
    ]
    grades = ClassGrades(course=course, lessons=[lesson], results=results)
    path = grades.write_csv(tmp_path / "grades.csv")
    import csv

    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert rows[0]["student"] == "ann" and float(rows[0]["lesson:00-welcome"]) == 0.75
    for concept in lesson.concepts:
        assert float(rows[0][f"concept:{concept}"]) == 0.75
    assert float(rows[1]["percent"]) == 0.0 and "corrupt" in rows[1]["notes"]
    table = grades.summary()
    assert "| 00-welcome | 1 | 1 | 38% |" in table


# --------------------------------------------------------------------------------------------
# Integrity checks (run in-process on a stand-in for the IPython shell)


class _Shell:
    def __init__(self) -> None:
        self.custom_exceptions: tuple[type, ...] = ()
        self.ast_transformers: list[Any] = []
        self.user_ns: dict[str, Any] = {}
        self.kernel = None

    def run_cell(self) -> None:  # the methods the check looks at on the class
        pass


def test_integrity_check_spots_replaced_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    import torch

    shell = _Shell()
    shell.user_ns.update({"lk": lk, "np": np, "torch": torch})
    assert integrity.check(shell, snapshot=True) == ""
    assert integrity.check(shell) == ""
    monkeypatch.setattr(np, "allclose", lambda *a, **k: True)
    assert "numpy.allclose" in integrity.check(shell)
    monkeypatch.undo()
    assert integrity.check(shell) == ""
    monkeypatch.setattr(lk.course, "check_answer", lambda *a, **k: True)
    assert "labkit.course.check_answer" in integrity.check(shell)
    monkeypatch.undo()
    import builtins

    monkeypatch.setattr(builtins, "AssertionError", type("AssertionError", (Exception,), {}))
    assert "builtins.AssertionError" in integrity.check(shell)
    monkeypatch.undo()
    shell.user_ns["lk"] = object()
    assert "the name 'lk'" in integrity.check(shell)
    shell.user_ns["lk"] = lk
    shell.custom_exceptions = (Exception,)
    assert "set_custom_exc" in integrity.check(shell)


# --------------------------------------------------------------------------------------------
# A class with malicious submissions, graded in sandboxes


# Markers are printed from pieces so that the notebook's source (shown in the feedback too)
# never contains them: only output does.
PROBE = """
import os, socket
def _say(*parts):
    print("".join(parts))
for _p in {paths!r}:
    try:
        with open(_p, "rb") as _f:
            _f.read(64)
        _say("LEAK", "ED:", _p)
    except OSError as _e:
        _say("BLOCK", "ED:", _p, ":", type(_e).__name__)
_say("KEY-", "LEAK" + "ED" if "LABKIT_CERT_KEY" in os.environ else "BLOCK" + "ED")
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
    _say("NET-", "LEAK", "ED")
except OSError as _e:
    _say("NET-", "BLOCK", "ED:", type(_e).__name__)
"""

WRITER = """
for _p in {paths!r}:
    try:
        with open(_p, "a") as _f:
            _f.write("pwned")
        print("WRO" + "TE:" + _p)
    except OSError as _e:
        print("DENI" + "ED:" + _p + ":" + type(_e).__name__)
"""


def _class(folder: Path, extra_paths: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Write the class; returns student -> what to expect (lost cells, reason pattern)."""
    sol = _solutions()
    wrong = yaml.safe_load((ROOT / "tests" / "wrong_answers" / f"{SLUG}.yml").read_text())["solutions"]
    cases: dict[str, dict[str, Any]] = {}

    def add(student: str, nb: Any, lost: set[str], reason: str = "", **more: Any) -> None:
        write(nb, folder, student)
        cases[student] = {"lost": lost, "reason": reason, **more}

    for name in ("good1", "good2"):
        add(name, learner_notebook(), set())
    add(
        "partial",
        learner_notebook({"check_batch": wrong["check_batch"], "wrap": wrong["wrap"]}),
        {"check_batch_tests", "wrap_tests"},
    )
    add("blank", learner_notebook(solved=False), set(TESTS), "NotImplementedError")
    add(
        "infinite_loop",
        learner_notebook({"accuracy": "while True:\n    pass\n" + sol["accuracy"]}),
        {"accuracy_tests"},
        "accuracy_tests",
    )
    add(
        "memory_bomb",
        learner_notebook({"wrap": "hog = bytearray(64 * 1024**3)\n" + sol["wrap"]}),
        {"wrap_tests"},
        "wrap_tests",
    )
    add(
        "fork_bomb",
        learner_notebook({"quiz": "import os\nwhile True:\n    os.fork()\n" + sol["quiz"]}),
        {"quiz_format", "quiz_q2_q3", "quiz_q4_q5"},
        "quiz",
        may_fail=True,  # copies of the kernel can leave nbgrader unable to finish: zero, with a reason
    )
    add(
        "huge_output",
        learner_notebook(
            {"check_batch": "for _ in range(200000):\n    print('spam ' * 40)\n" + sol["check_batch"]}
        ),
        {"check_batch_tests"},
        "output over",
    )
    edited = learner_notebook({"check_batch": "def check_batch(x, *, shape):\n    return x\n"})
    for cell in edited.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "check_batch_tests":
            cell.source = "pass"
            cell.metadata["nbgrader"]["points"] = 100
    add("edited_tests", edited, {"check_batch_tests"}, "", warning="check_batch_tests edited")
    deleted = learner_notebook({"quiz": "q1 = 'a'\nq2 = 'x'\nq3 = 'a'\nq4 = []\nq5 = 'a'\n"})
    deleted.cells = [
        c
        for c in deleted.cells
        if c.metadata.get("nbgrader", {}).get("grade_id") not in ("quiz_q2_q3", "quiz_q4_q5")
    ]
    add(
        "deleted_tests",
        deleted,
        {"quiz_format", "quiz_q2_q3", "quiz_q4_q5"},
        "",
        warning="quiz_q4_q5 deleted",
    )
    add(
        "patched_labkit",
        learner_notebook(
            {
                "quiz": "lk.course.check_answer = lambda *a, **k: True\nq1 = q3 = q5 = 'a'\nq2 = 'AML.M9'\nq4 = []\n"
            }
        ),
        {"quiz_format", "quiz_q2_q3", "quiz_q4_q5"},
        "labkit.course.check_answer",
    )
    add(
        "patched_numpy_torch",
        learner_notebook(
            {
                "wrap": "import numpy\nnumpy.allclose = lambda *a, **k: True\ntorch.equal = lambda *a: True\n"
                + wrong["wrap"]
            }
        ),
        {"wrap_tests"},  # the checker's numpy and torch are its own: the quiz still scores
        "numpy.allclose",
    )
    add(
        "swallowed_errors",
        learner_notebook(
            {
                "check_batch": "import builtins\nbuiltins.AssertionError = type('AssertionError', (Exception,), {})\n"
                "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n"
            },
            solved=False,
        ),
        set(TESTS),
        "builtins.AssertionError",
    )
    add(
        "reads_secrets",
        learner_notebook(
            {
                "check_batch": sol["check_batch"]
                + PROBE.format(paths=extra_paths["read"], port=extra_paths["port"])
            }
        ),
        set(),
    )
    add(
        "writes_outside",
        learner_notebook({"accuracy": sol["accuracy"] + WRITER.format(paths=extra_paths["write"])}),
        set(),
    )
    corrupt = folder / "corrupt" / SLUG / NOTEBOOK
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text('{"cells": [{"cell_type": "code", "source": "q1 =')
    cases["corrupt"] = {"lost": set(TESTS), "reason": "corrupt .ipynb", "status": "error"}
    return cases


@pytest.mark.slow
def test_grade_a_class_with_malicious_submissions(
    course: lk.course.Course, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    problem = lk.course.sandbox.sandbox_problem()
    if problem is not None:
        pytest.skip(f"grading needs a bubblewrap sandbox: {problem} (make grader-deps installs it as root)")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("LABKIT_COHORT_SECRET", COHORT_SECRET)
    # nbgrader's Gradebook runs the `alembic` executable of this environment.
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("LABKIT_CERT_KEY", "instructor-secret-that-must-not-leak")
    subs = tmp_path / "submitted"
    out = tmp_path / "out"
    gradebook = tmp_path / "gradebook.db"
    # A listening socket on the host's loopback: a sandboxed kernel must not reach it.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.5)
    connections: list[Any] = []

    def accept() -> None:
        end = time.monotonic() + 900
        while time.monotonic() < end and server.fileno() != -1:
            try:
                connections.append(server.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    planted = tmp_path / f"outside-{os.getpid()}.txt"
    host_tmp = Path(tempfile.gettempdir()) / f"labkit-test-escape-{os.getpid()}"
    repo_file = ROOT / f".labkit-test-escape-{os.getpid()}"
    paths = {
        "read": [
            str(ROOT / "solutions" / SLUG / NOTEBOOK),
            str(subs / "good1" / SLUG / NOTEBOOK),
            str(gradebook),
            "../../../gradebook.db",
            "../../../solutions/00-welcome/welcome.ipynb",
            os.path.join(
                os.path.dirname(os.environ.get("LABKIT_COURSE", str(ROOT / "course.yml"))), "gradebook.db"
            ),
        ],
        "port": server.getsockname()[1],
        "write": [
            str(gradebook),
            str(subs / "good1" / SLUG / NOTEBOOK),
            str(planted),
            str(host_tmp),
            str(repo_file),
            "../../../gradebook.db",
        ],
    }
    cases = _class(subs, paths)
    # The instructor's gradebook already holds a learner and an assignment that must survive.
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{gradebook}") as gb:
        gb.add_student("zoe", first_name="Zoe")
        gb.add_assignment("earlier-quiz")
    watched = [p for p in subs.rglob("*.ipynb")]
    before = {p: digest(p) for p in watched}
    limits = Limits(cell_seconds=40, wall_seconds=400, cpu_seconds=240, output_kb=256)
    start = time.perf_counter()
    grades = lk.course.grade_class(
        course, subs, out=out, jobs=2, limits=limits, gradebook=gradebook, progress=False
    )
    elapsed = time.perf_counter() - start
    server.close()
    try:
        assert {p: digest(p) for p in watched} == before, "a submission changed on disk"
        for path in (planted, host_tmp, repo_file):
            assert not path.exists(), f"learner code wrote {path}"
        assert not connections, "a kernel reached the host's loopback network"
        full = float(sum(TESTS.values()))
        table = []
        for student, expect in sorted(cases.items()):
            grade = grades.get(student, SLUG)
            assert grade is not None, f"no result for {student}"
            table.append(
                f"{student:<22} {grade.status:<7} {grade.score:>4g}/{grade.max_score:g}  "
                f"{grade.reason or '; '.join(grade.warnings)}"
            )
            if grade.status == "error" and expect.get("may_fail"):
                assert grade.score == 0 and grade.reason, (student, grade.reason)
                continue
            assert grade.status == expect.get("status", "graded"), (student, grade.reason)
            expected = full - sum(TESTS[c] for c in expect["lost"])
            assert grade.score == expected, (student, grade.score, expected, grade.reason, grade.warnings)
            if expect["reason"]:
                assert expect["reason"] in grade.reason, (student, grade.reason)
            if "warning" in expect:
                assert any(expect["warning"] in w for w in grade.warnings), (student, grade.warnings)
            if grade.status == "graded":
                lost = {c.grade_id for c in grade.cells if c.autograded and c.score < c.max_score}
                assert lost == expect["lost"], (student, lost)
        feedback = (out / "feedback" / "reads_secrets" / SLUG / "welcome.html").read_text()
        assert "LEAKED" not in feedback and "KEY-BLOCKED" in feedback and "NET-BLOCKED:" in feedback
        assert len(re.findall(r"(?<!-)BLOCKED:", feedback)) == len(paths["read"])
        written = (out / "feedback" / "writes_outside" / SLUG / "welcome.html").read_text()
        # Only the kernel's private temporary folder takes a write (paths under /tmp, the host
        # checkout's too when it lives there, as in a CI clone), and nothing reaches the host's.
        wrote = re.findall(r"WROTE:([^<\n]*)", written)
        assert all(Path(w).is_relative_to(tempfile.gettempdir()) for w in wrote), wrote
        assert not any(Path(w).exists() for w in wrote), wrote
        assert written.count("DENIED:") + len(wrote) == len(paths["write"])
        for html in (out / "feedback").rglob("*.html"):
            text = html.read_text()
            assert "BEGIN HIDDEN TESTS" not in text and "8bd99c505f316dfe" not in text, html
        # The gradebook holds exactly the validated grades.
        with Gradebook(f"sqlite:///{gradebook}") as gb:
            assert gb.find_student("zoe").first_name == "Zoe"
            gb.find_assignment("earlier-quiz")
            stored = {s.student.id: s.score for s in gb.assignment_submissions(SLUG)}
        merged = {r.student: r.score for r in grades.results if r.status == "graded"}
        assert stored == pytest.approx(merged)
        assert "corrupt" not in stored
        rows = (out / "grades.csv").read_text().splitlines()
        assert len(rows) == len(cases) + 1 and "concept:threat modeling" in rows[0]
        load = os.getloadavg()
        summary = {
            "submissions": len(cases),
            "seconds": round(elapsed, 1),
            "per_submission": round(elapsed / len(cases), 1),
            "load_average": [round(x, 2) for x in load],
            "isolation": grades.isolation,
        }
        print("\n" + "\n".join(table) + "\n" + json.dumps(summary))
        print(grades.summary())
    finally:
        for path in (host_tmp, repo_file):
            if path.exists():
                path.unlink()


def test_grade_command_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from labkit.cli import main

    assert main(["grade", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--no-gradebook"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["grade", str(tmp_path), "--jobs", "0", "--no-gradebook"]) == 2
    assert "jobs must be a positive integer, got 0" in capsys.readouterr().err
    assert main(["grade", str(tmp_path), "--memory", "64", "--no-gradebook"]) == 2
    assert "memory_mb must be at least 512" in capsys.readouterr().err


@pytest.mark.parametrize("lesson", [None, "00"])
def test_grading_an_empty_folder_is_an_error(
    lesson: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty folder is a wrong path, not a class of 0 submissions: exit 2 naming the layouts."""
    from labkit.cli import main

    empty, out = tmp_path / "empty", tmp_path / "out"
    empty.mkdir()
    argv = ["grade", str(empty), "--out", str(out), "--no-gradebook", "--course", str(ROOT)]
    assert main(argv + (["--lesson", lesson] if lesson else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"labkit: error: {empty}: no submissions found")
    assert "expected notebooks laid out as <learner>/<lesson slug>/<notebook>" in err
    assert ("for lesson 00-welcome" in err) == (lesson is not None)
    assert not out.exists()


def test_isolation_support_reports_this_host() -> None:
    support = lk.course.isolation_support()
    assert support["root"] == (hasattr(os, "geteuid") and os.geteuid() == 0)
    assert support["separate_account"] == support["root"]
    if support["root"] and sys.platform.startswith("linux"):
        assert support["namespaces"], "root on Linux should be able to unshare network and mounts"
