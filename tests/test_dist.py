"""The learner distribution holds no answer material, and ``make lab`` still works from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labkit.cli import main
from labkit.course import answers, load_course
from labkit.course.dist import (
    LEARNER_PATHS,
    DistError,
    add_solutions_to_feedback,
    build_learner_dist,
    scan_for_answer_material,
)

ROOT = Path(__file__).resolve().parents[1]
SECRET = "a-cohort-secret-for-the-dist-test-" + "7" * 16
MARKERS = ("### BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "Rubric for graders", "labkit-answer-key/1")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("learner") / "course"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(answers.SECRET_ENV, SECRET)
        build_learner_dist(ROOT, out)
    return out


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_the_dist_has_the_learner_paths_only(dist: Path) -> None:
    top = {p.name for p in dist.iterdir()}
    assert top <= set(LEARNER_PATHS), f"unexpected: {top - set(LEARNER_PATHS)}"
    assert {"lessons", "labkit", "course.yml", "Makefile", "pyproject.toml", "uv.lock"} <= top
    for absent in ("solutions", "instructor", ".labkit", ".git", "tests", "gradebook.db", "deploy"):
        assert not (dist / absent).exists(), f"{absent} is instructor material"
    for lesson in load_course(ROOT / "course.yml").ready_lessons:
        copy = dist / "lessons" / lesson.slug / str(lesson.notebook)
        assert copy.read_bytes() == (ROOT / "lessons" / lesson.slug / str(lesson.notebook)).read_bytes()
    assert not [p for p in _files(dist) if ".backup-" in p.name or "__pycache__" in p.parts]


def test_no_file_of_the_dist_holds_answer_material(dist: Path) -> None:
    """An independent grep of every file, beside the scan the build itself ran."""
    leaks = []
    for path in _files(dist):
        text = path.read_text(encoding="utf-8", errors="replace")
        rel = path.relative_to(dist)
        leaks += [f"{rel}: {m}" for m in MARKERS if m in text and path.suffix in (".ipynb", ".yml", ".json")]
        leaks += [f"{rel}: the cohort secret" for _ in [0] if SECRET in text]
        if path.suffix == ".ipynb":
            for cell in nbformat.read(path, as_version=4).cells:
                if "check_answer(" in cell.source or "check_number(" in cell.source:
                    leaks.append(f"{rel}: a hidden answer check")
                if cell.metadata.get("nbgrader", {}).get("solution") and cell.cell_type == "code":
                    if "NotImplementedError" not in cell.source:
                        leaks.append(f"{rel}: a solution cell without its stub")
        if path.name in ("answer_key.yml", "cohort.key") or path.name.startswith("answer-key-"):
            leaks.append(f"{rel}: a key file")
    assert not leaks, leaks
    assert scan_for_answer_material(dist, course_root=ROOT) == []


def test_the_scan_finds_planted_answer_material(
    dist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planted = tmp_path / "planted"
    shutil.copytree(dist / "lessons" / "00-welcome", planted / "lessons" / "00-welcome")
    assert scan_for_answer_material(planted) == [], "a clean learner copy passes"
    nb_path = planted / "lessons" / "00-welcome" / "welcome.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    cell = nbformat.v4.new_code_cell("### BEGIN SOLUTION\nq1 = 'b'\n### END SOLUTION")
    cell.metadata["nbgrader"] = {"solution": True, "grade": False, "grade_id": "planted", "locked": False}
    nb.cells.append(cell)
    nbformat.write(nb, nb_path)
    (planted / "labkit").mkdir()
    (planted / "labkit" / "quiz.py").write_text('assert check_answer("00-q1", q1, "8bd99c505f316dfe")\n')
    (planted / "notes.txt").write_text(f"secret: {SECRET}\n")
    (planted / "instructor").mkdir()
    shutil.copy(answers.answer_key_path(ROOT), planted / "instructor" / "answer_key.yml")
    (planted / "solutions").mkdir()
    (planted / "solutions" / "x.ipynb").write_text("{}")
    monkeypatch.setenv(answers.SECRET_ENV, SECRET)
    found = [str(f) for f in scan_for_answer_material(planted, course_root=ROOT)]
    expected = [
        "lessons/00-welcome/welcome.ipynb: an nbgrader region marker",
        f"lessons/00-welcome/welcome.ipynb: cell {len(nb.cells) - 1} (planted) is a solution cell without its stub",
        "labkit/quiz.py: a check that carries its answer's hash",
        "notes.txt: the cohort secret or a lesson key derived from it",
        "instructor/answer_key.yml: an answer key or cohort secret file",
        "instructor/answer_key.yml: the content of an answer key",
        "solutions/x.ipynb: a solutions/ folder",
    ]
    missed = [e for e in expected if not any(f.startswith(e) for f in found)]
    assert not missed, f"the scan missed {missed}; it found {found}"


def _small_course(tmp_path: Path) -> Path:
    course = tmp_path / "src"
    course.mkdir()
    shutil.copy(ROOT / "course.yml", course / "course.yml")
    for lesson in load_course(ROOT / "course.yml").ready_lessons:
        target = course / "lessons" / lesson.slug
        target.mkdir(parents=True)
        shutil.copy(ROOT / "lessons" / lesson.slug / str(lesson.notebook), target)
    return course


def test_a_build_with_answer_material_fails_and_leaves_nothing(tmp_path: Path) -> None:
    course = _small_course(tmp_path)
    (course / "README.md").write_text("# A course\n\n### BEGIN HIDDEN TESTS\nassert q1 == 'b'\n")
    out = tmp_path / "out"
    with pytest.raises(DistError, match=r"README.md: an nbgrader region marker"):
        build_learner_dist(course, out)
    assert not out.exists(), "a distribution that failed the scan is removed"


def test_a_missing_learner_copy_or_a_used_folder_is_refused(tmp_path: Path) -> None:
    course = _small_course(tmp_path)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(DistError, match="is not empty"):
        build_learner_dist(course, tmp_path / "used")
    shutil.rmtree(course / "lessons" / "00-welcome")
    with pytest.raises(DistError, match="learner copies missing.*00-welcome/welcome.ipynb"):
        build_learner_dist(course, tmp_path / "out")


def test_make_lab_needs_no_solutions_in_the_dist(dist: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``make lab`` runs ``labkit build --missing`` (the lessons target): nothing to build there."""
    assert "$(BIN)/labkit build --missing" in (dist / "Makefile").read_text()
    assert main(["build", "--missing", "--course", str(dist)]) == 0
    assert "nothing to build" in capsys.readouterr().out


def test_a_hidden_check_on_a_learner_machine_says_what_is_missing(dist: Path) -> None:
    """labkit imported from the dist, no course key anywhere: a clear message, not a crash."""
    code = (
        "import labkit.course.answers as a, sys\n"
        "assert a.__file__.startswith(sys.argv[1]), a.__file__\n"
        "try:\n    a.check_answer('00-q1', 'b')\n"
        "except a.AnswerKeyError as err:\n    print('AnswerKeyError:', err)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKIT_")}
    env["PYTHONPATH"] = str(dist)
    done = subprocess.run(
        [sys.executable, "-c", code, str(dist)],
        cwd=dist,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "AnswerKeyError: 00-q1 is checked against the instructor's answer key" in done.stdout


def test_worked_solutions_go_into_lesson_feedback_but_never_the_exam(tmp_path: Path) -> None:
    page = "<html><body><p>your feedback</p></body></html>"
    lesson = tmp_path / "feedback" / "alice" / "00-welcome" / "welcome.html"
    exam = tmp_path / "feedback" / "alice" / "17-certification-exam" / "certification_exam.html"
    for path in (lesson, exam):
        path.parent.mkdir(parents=True)
        path.write_text(page)
    assert main(["feedback", "solutions", str(tmp_path / "feedback"), "--course", str(ROOT)]) == 0
    assert exam.read_text() == page, "the exam's solutions are never released"
    text = lesson.read_text()
    assert text.startswith("<html><body><p>your feedback</p>") and text.endswith("</body></html>")
    assert 'id="labkit-worked-solution"' in text and "prompt injection" in text, "the quiz answers are there"
    for leak in ("BEGIN HIDDEN TESTS", "BEGIN SOLUTION", "check_answer("):
        assert leak not in text, leak
    # a written question's rubric and model answer are part of the worked solution; nothing else may be
    scanned = [
        str(f) for f in scan_for_answer_material(lesson.parent) if not f.what.startswith("a grader's rubric")
    ]
    assert scanned == [], scanned
    assert add_solutions_to_feedback(ROOT, tmp_path / "feedback") == [], "a second run changes nothing"
