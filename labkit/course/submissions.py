"""Find learners' notebooks in a folder or a zip, and check them before grading.

Accepted layouts (``SOURCE`` is a folder or a ``.zip`` of one):

=====================================================  =======================================
layout                                                 learner and lesson
=====================================================  =======================================
``[submitted/]<learner>/<lesson slug>/<notebook>``      nbgrader's own (``nbgrader collect``)
``<learner>/<notebook file of a lesson>``               lesson from the notebook's file name
``<learner>--<lesson id or slug>.ipynb``                lesson from the part after ``--``
``<learner>.ipynb``                                     the one lesson given with ``lesson=``
=====================================================  =======================================

Learner names become nbgrader student ids: letters, digits, ``.``, ``_``, ``@`` and ``-`` are
kept, anything else (spaces included) turns into ``_``, so ``Ada Lovelace.ipynb`` grades as
``Ada_Lovelace``. Two files that map to the same learner and lesson are an error.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from labkit.course.manifest import Course, Lesson

__all__ = ["Submission", "SubmissionError", "check_submission", "find_submissions", "student_id"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]+")
_IGNORED = ("__MACOSX", ".ipynb_checkpoints", ".git")
MAX_ZIP_BYTES = 2 * 1024**3
LAYOUTS = (
    "<learner>/<lesson slug>/<notebook> (nbgrader's submitted/ folder), <learner>/<notebook>, "
    "<learner>--<lesson>.ipynb or <learner>.ipynb"
)
"""The layouts :func:`find_submissions` reads, for error messages."""


class SubmissionError(ValueError):
    """The submissions folder or archive cannot be read as described."""


@dataclass
class Submission:
    """One learner's notebook for one lesson."""

    student: str
    lesson: str
    path: Path
    warnings: list[str] = field(default_factory=list)


def student_id(name: str) -> str:
    """The nbgrader student id for a learner's name.

    Examples
    --------
    >>> student_id("Ada Lovelace")
    'Ada_Lovelace'
    >>> student_id("  b.o'brien@uni ")
    'b.o_brien@uni'
    """
    cleaned = _UNSAFE.sub("_", name.strip()).strip("_")
    if not cleaned or cleaned.startswith("."):
        raise SubmissionError(f"cannot make a learner id from {name!r}: expected letters or digits in it")
    return cleaned


def _extract(archive: Path, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(archive) as zf:
            total = 0
            for info in zf.infolist():
                name = Path(info.filename)
                if name.is_absolute() or ".." in name.parts:
                    raise SubmissionError(f"{archive}: unsafe path {info.filename!r} in the archive")
                total += info.file_size
                if total > MAX_ZIP_BYTES:
                    raise SubmissionError(f"{archive}: more than {MAX_ZIP_BYTES >> 30} GiB once unpacked")
            zf.extractall(dest)
    except zipfile.BadZipFile as err:
        raise SubmissionError(f"{archive}: not a zip archive ({err})") from None
    return dest


def _skip(path: Path) -> bool:
    return any(part in _IGNORED or part.startswith(".") for part in path.parts)


def find_submissions(
    course: Course,
    source: str | Path,
    *,
    lesson: str | None = None,
    workdir: str | Path | None = None,
) -> list[Submission]:
    """Every learner notebook under ``source`` (a folder or a zip; see the module docs).

    Parameters
    ----------
    course:
        The manifest (lesson slugs and notebook names).
    source:
        Folder or ``.zip`` file.
    lesson:
        Lesson id or slug for files named only by learner (``<learner>.ipynb``); also limits
        the result to that lesson.
    workdir:
        Where to unpack a zip (required for a zip).
    """
    src = Path(source)
    if not src.exists():
        raise SubmissionError(f"{src}: no such file or folder; expected a folder or a .zip of notebooks")
    only: Lesson | None = course.lesson(lesson) if lesson else None
    if only is not None and not only.ready:
        raise SubmissionError(f"lesson {only.slug} is planned, not ready: nothing to grade")
    if src.is_file():
        if src.suffix.lower() != ".zip":
            raise SubmissionError(
                f"{src}: expected a folder or a .zip file, got a {src.suffix or 'plain'} file"
            )
        if workdir is None:
            raise SubmissionError("a workdir is needed to unpack a zip of submissions")
        src = _extract(src, Path(workdir) / "unpacked")
        entries = [p for p in src.iterdir() if not _skip(p.relative_to(src))]
        if len(entries) == 1 and entries[0].is_dir() and not _looks_like_learner_dir(course, entries[0]):
            src = entries[0]  # a zip of one top folder
    if (src / "submitted").is_dir():
        src = src / "submitted"
    ready = {ls.slug: ls for ls in course.ready_lessons}
    by_notebook = {str(ls.notebook): ls for ls in course.ready_lessons}
    found: dict[tuple[str, str], Submission] = {}

    def add(name: str, ls: Lesson, path: Path, warnings: list[str]) -> None:
        if only is not None and ls.slug != only.slug:
            return
        sid = student_id(name)
        if sid != name:
            warnings.append(f"learner name {name!r} graded as {sid!r}")
        key = (sid, ls.slug)
        if key in found:
            raise SubmissionError(
                f"two notebooks for learner {sid!r} and lesson {ls.slug}: {found[key].path} and {path}"
            )
        found[key] = Submission(student=sid, lesson=ls.slug, path=path, warnings=warnings)

    for path in sorted(src.rglob("*.ipynb")):
        rel = path.relative_to(src)
        if _skip(rel):
            continue
        parts = rel.parts
        if len(parts) == 3 and parts[1] in ready:
            ls = ready[parts[1]]
            warnings = []
            notebooks = [p for p in path.parent.glob("*.ipynb") if not p.name.startswith(".")]
            if path.name != ls.notebook:
                if (path.parent / str(ls.notebook)).exists():
                    continue  # the expected notebook is there too: grade that one
                if len(notebooks) > 1:
                    raise SubmissionError(
                        f"{path.parent}: several notebooks and none named {ls.notebook}; "
                        "keep only the learner's"
                    )
                warnings.append(f"notebook renamed to {path.name}; graded as {ls.notebook}")
            add(parts[0], ls, path, warnings)
        elif len(parts) == 2 and parts[1] in by_notebook:
            add(parts[0], by_notebook[parts[1]], path, [])
        elif len(parts) == 1 and "--" in path.stem:
            name, _, key = path.stem.rpartition("--")
            try:
                ls = course.lesson(key)
            except KeyError:
                raise SubmissionError(f"{path.name}: no lesson {key!r} (after '--') in course.yml") from None
            add(name, ls, path, [])
        elif len(parts) == 1:
            if only is None:
                raise SubmissionError(
                    f"{path.name}: a notebook named by learner only; say which lesson it is for (--lesson)"
                )
            add(path.stem, only, path, [])
        else:
            raise SubmissionError(f"{rel}: not a layout labkit knows; expected {LAYOUTS}")
    return sorted(found.values(), key=lambda s: (s.lesson, s.student))


def _looks_like_learner_dir(course: Course, folder: Path) -> bool:
    names = {str(ls.notebook) for ls in course.ready_lessons} | {ls.slug for ls in course.ready_lessons}
    return any(child.name in names for child in folder.iterdir())


def check_submission(path: Path, release: Path) -> tuple[bool, list[str]]:
    """Read a submitted notebook and compare it with the learner copy it came from.

    Returns ``(readable, warnings)``: ``readable`` is False for a file that is not a notebook;
    the warnings name test cells that were edited (nbgrader restores them) or deleted (they
    score zero), and a notebook without nbgrader metadata (pasted into a fresh notebook).
    """
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # nbformat raises many kinds of errors for a broken file
        return False, [f"not a readable notebook ({type(err).__name__})"]
    ref = nbformat.read(release, as_version=4)
    theirs = {
        c.metadata["nbgrader"]["grade_id"]: c
        for c in nb.cells
        if isinstance(c.get("metadata", {}).get("nbgrader"), dict) and "grade_id" in c.metadata["nbgrader"]
    }
    warnings: list[str] = []
    if not theirs:
        return True, ["no nbgrader metadata: pasted into a fresh notebook? Every graded cell scores 0"]
    for cell in ref.cells:
        meta = cell.metadata.get("nbgrader", {})
        if not (meta.get("grade") or meta.get("locked")) or meta.get("solution"):
            continue
        mine = theirs.get(meta["grade_id"])
        if mine is None:
            if meta.get("grade"):
                warnings.append(f"test cell {meta['grade_id']} deleted")
        elif mine.source != cell.source and meta.get("grade"):
            warnings.append(f"test cell {meta['grade_id']} edited (restored from the gradebook)")
    return True, warnings


def copy_notebook(path: Path, dest: Path) -> None:
    """Copy a submission (only the notebook: supporting files are not graded)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, dest)
