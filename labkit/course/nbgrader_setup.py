"""nbgrader settings derived from course.yml, shared by nbgrader_config.py and the CLI."""

from __future__ import annotations

from pathlib import Path

from traitlets.config import Config

from labkit.course.manifest import Course

__all__ = ["nbgrader_config"]

CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"


def nbgrader_config(
    course: Course,
    *,
    root: str | Path | None = None,
    db_path: str | Path | None = None,
    profile: str | None = None,
) -> Config:
    """An nbgrader configuration for this course.

    Parameters
    ----------
    course:
        The validated manifest.
    root:
        Course directory holding ``solutions/`` and ``lessons/`` (default: course.yml's folder).
    db_path:
        Gradebook file (default ``<root>/gradebook.db``).
    profile:
        Run profile whose ``cell_timeout`` becomes nbgrader's execution timeout.
    """
    root = Path(root) if root is not None else course.root
    cfg = Config()
    cfg.CourseDirectory.root = str(root)
    cfg.CourseDirectory.course_id = course.course_id
    cfg.CourseDirectory.source_directory = "solutions"
    cfg.CourseDirectory.release_directory = "lessons"
    cfg.CourseDirectory.db_url = f"sqlite:///{Path(db_path) if db_path else root / 'gradebook.db'}"
    cfg.CourseDirectory.ignore = [
        ".ipynb_checkpoints",
        "*.pyc",
        "__pycache__",
        "feedback",
        ".virtual_documents",
        "*.py",
        "*.md.bak",
    ]
    cfg.Execute.timeout = course.profile(profile).cell_timeout
    cfg.Execute.interrupt_on_timeout = True
    cfg.ClearSolutions.code_stub = {"python": CODE_STUB}
    cfg.ClearSolutions.text_stub = "YOUR ANSWER HERE"
    # Feedback must not reveal hidden tests (nbgrader shows them by default).
    cfg.GenerateFeedback.preprocessors = [
        "nbgrader.preprocessors.GetGrades",
        "nbgrader.preprocessors.ClearHiddenTests",
        "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    ]
    cfg.ClearHiddenTests.enforce_metadata = True
    return cfg
