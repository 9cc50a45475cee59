"""What every ``labkit`` command shares: :func:`course_to_write` (which course a writing command may
act on), :func:`check_lessons` and :class:`UsageError` (a mistake in how a command was called).

Kept apart from the subcommands so that :mod:`labkit.course.commands` and
:mod:`labkit.course.credentials.commands` both use it without importing each other.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labkit.course.manifest import Course

__all__ = ["UsageError", "check_lessons", "course_to_write"]


class UsageError(Exception):
    """A command was called wrongly; ``labkit`` prints the message and exits with status 2."""


def course_to_write(option: str | None) -> Course:
    """The course a command that writes may act on: ``--course``, ``LABKIT_COURSE``, or the
    ``course.yml`` of the working directory or one of its parents.

    Unlike reading commands, a writing one never falls back to the checkout labkit was
    installed from: ``labkit build`` run from another folder must not rebuild someone else's
    learner copies. Naming that course with ``--course`` (or ``LABKIT_COURSE``) still works.
    The returned course has an absolute path, so every path printed from it is absolute.
    """
    from labkit.course.manifest import find_course_file, installed_course_file, load_course

    if option:
        path = Path(option).expanduser()
        if path.is_dir():
            path = path / "course.yml"
    else:
        found = find_course_file(installed=False)
        if found is None:
            installed = installed_course_file()
            hint = (
                f"; labkit is installed from the course at {installed.parent}: "
                f"pass --course {installed} to act on that one"
                if installed is not None
                else ""
            )
            raise UsageError(
                f"no course.yml in {Path.cwd()} or its parents: run this command inside the course "
                f"folder, or name the course with --course PATH (or LABKIT_COURSE){hint}"
            )
        path = found
    return load_course(path.resolve())


def check_lessons(course: Course, keys: Iterable[str]) -> None:
    """Raise :class:`UsageError` for a lesson id or slug the course does not have."""
    for key in keys:
        try:
            course.lesson(key)
        except KeyError as err:
            raise UsageError(str(err.args[0])) from None
