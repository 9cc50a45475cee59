"""Habits of the repository: clean source notebooks, learner copies without answers, ignores."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "solutions").glob("*/*.ipynb"))
LEARNER = sorted((ROOT / "lessons").glob("*/*.ipynb"))


def test_there_are_notebooks() -> None:
    assert SOURCES, "no source notebooks in solutions/"
    assert len(LEARNER) == len(SOURCES), "every source notebook needs its learner copy in lessons/"


@pytest.mark.parametrize("path", SOURCES + LEARNER, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebooks_are_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name} cell {i} has stored outputs"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    assert "jupytext" not in nb.metadata


@pytest.mark.parametrize("path", LEARNER, ids=lambda p: str(p.relative_to(ROOT)))
def test_learner_copies_hold_no_solutions_or_hidden_tests(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for marker in (
        "BEGIN SOLUTION",
        "END SOLUTION",
        "BEGIN HIDDEN TESTS",
        "Rubric for graders",
        "check_answer(",
    ):
        assert marker not in text, f"{path.relative_to(ROOT)} leaks {marker!r}"
    nb = nbformat.read(path, as_version=4)
    stubs = [c for c in nb.cells if "raise NotImplementedError()" in c.source]
    assert stubs, "a learner copy should contain the exercise stubs"


def test_gitignore_covers_venv_caches_and_gradebooks() -> None:
    ignored = (ROOT / ".gitignore").read_text().split()
    for entry in (
        ".venv/",
        "__pycache__/",
        ".cache/",
        "gradebook.db",
        "submitted/",
        "autograded/",
        "feedback/",
    ):
        assert entry in ignored, f".gitignore lacks {entry}"


def test_no_paired_text_files_in_sources() -> None:
    leftovers = [p for p in (ROOT / "solutions").rglob("*") if p.suffix in (".py", ".md")]
    assert not leftovers, f"paired text files would ship with the learner copies: {leftovers}"


def test_readme_opens_with_the_two_commands_and_lists_every_lesson() -> None:
    import yaml

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = text.split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make lab", "make test"]
    manifest = yaml.safe_load((ROOT / "course.yml").read_text(encoding="utf-8"))
    for lesson in manifest["lessons"]:
        assert f"| {lesson['id']} | {lesson['title']} |" in text, f"README lacks lesson {lesson['id']}"


def test_ci_runs_make_test() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "make test" in script


def test_project_files_users_expect() -> None:
    """LICENSE matches pyproject.toml, and SECURITY.md, CHANGELOG.md, CITATION.cff are present."""
    import tomllib

    import yaml

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert project["license"] == "Apache-2.0"
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text, "LICENSE should hold the whole licence text"

    security = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    assert "labkit grade" in security and "Report a vulnerability" in security

    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## {project['version']} - " in changelog, "CHANGELOG.md lacks the current version"

    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["cff-version"] == "1.2.0"
    assert citation["version"] == project["version"], "CITATION.cff names another version"
    assert citation["license"] == project["license"]
    for key in ("title", "authors", "message"):
        assert citation.get(key), f"CITATION.cff lacks {key}"
