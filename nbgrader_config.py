"""nbgrader configuration for this course, derived from course.yml.

Run nbgrader from this folder (the course root). The folder names, course id, execution
timeout and feedback settings all come from labkit.course.nbgrader_config, so course.yml stays
the single source of truth.
"""

from pathlib import Path

from labkit.course import load_course, nbgrader_config

c = get_config()  # type: ignore[name-defined]  # noqa: F821
c.merge(nbgrader_config(load_course(Path(__file__).resolve().parent / "course.yml")))
