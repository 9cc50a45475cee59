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
``Ada_Lovelace``. Two files that map to the same learner and lesson, and two learner names that
map to the same id, are errors for those learners (the rest of the class is graded).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from labkit.course.manifest import Course, Lesson

__all__ = ["Problem", "Submission", "SubmissionError", "check_submission", "find_submissions", "student_id"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]+")
_IGNORED = ("__MACOSX", ".ipynb_checkpoints", ".git")
_COURSE_FOLDERS = ("source", "release", "autograded", "feedback", "solutions", "lessons", "exchange")
MAX_ZIP_BYTES = 1024**3
"""Most bytes the notebooks of one zip of submissions may unpack to."""
MAX_ZIP_RATIO = 200
"""Largest compression ratio of one member of a zip (notebooks compress about 5 to 20 times)."""
MAX_NOTEBOOK_BYTES = 32 * 1024**2
"""Largest notebook graded."""
LAYOUTS = (
    "<learner>/<lesson slug>/<notebook> (nbgrader's submitted/ folder), <learner>/<notebook>, "
    "<learner>--<lesson>.ipynb or <learner>.ipynb"
)
"""The layouts :func:`find_submissions` reads, for error messages."""


class SubmissionError(ValueError):
    """The submissions folder or archive cannot be read as described."""


@dataclass(frozen=True)
class Problem:
    """An entry of the submissions that cannot be graded, and why."""

    student: str
    entry: str
    reason: str


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


def _extract(archive: Path, dest: Path, problems: list[Problem] | None) -> Path:
    """Unpack the notebooks of ``archive`` into ``dest`` in a child process with limits.

    Sizes and compression ratios are checked from the archive's directory before anything is
    unpacked; a member over them is skipped with a reason (or raises without ``problems``), an
    archive whose notebooks add up to more than ``MAX_ZIP_BYTES`` is refused whole. The child
    counts what it writes too (a lying directory stops there) and runs with caps on memory,
    file size and CPU time, so a zip bomb cannot exhaust the grading host.
    """
    import json
    import subprocess
    import sys

    from labkit.course.jail import LAUNCHER

    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", ";".join(LAUNCHER), "unzip", str(archive), str(dest)]
    cmd += [str(MAX_NOTEBOOK_BYTES), str(MAX_ZIP_BYTES), str(MAX_ZIP_RATIO)]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        raise SubmissionError(f"{archive}: unpacking took more than 300 s; not graded") from None
    try:
        report = json.loads(done.stdout.decode() or "{}")
    except ValueError:
        report = {}
    if done.returncode != 0 or "error" in report:
        why = report.get("error") or done.stderr.decode(errors="replace").strip()[-300:] or "unknown"
        raise SubmissionError(f"{archive}: {why}")
    for name, reason in report.get("skipped", []):
        first = Path(name).parts[0] if Path(name).parts else name
        learner = Path(first).stem.partition("--")[0] if first.endswith(".ipynb") else first
        problem = Problem(learner, name, reason)
        if problems is None:
            raise SubmissionError(f"{archive}: {name}: {reason}")
        problems.append(problem)
    return dest


def _skip(path: Path) -> bool:
    return any(part in _IGNORED or part.startswith(".") for part in path.parts)


def _walk(src: Path) -> tuple[list[Path], list[Path]]:
    """Notebook files under ``src`` (no links followed), and the links met on the way."""
    notebooks: list[Path] = []
    links: list[Path] = []
    for root, dirs, files in os.walk(src, followlinks=False):
        here = Path(root)
        keep = []
        for d in sorted(dirs):
            rel = (here / d).relative_to(src)
            if _skip(rel):
                continue
            if (here / d).is_symlink():
                links.append(here / d)
            else:
                keep.append(d)
        dirs[:] = keep
        for name in sorted(files):
            path = here / name
            if _skip(path.relative_to(src)):
                continue
            if path.is_symlink():
                links.append(path)
            elif name.endswith(".ipynb"):
                notebooks.append(path)
    return notebooks, links


def _nbgrader_root(src: Path) -> bool:
    """True when ``src/submitted`` is nbgrader's folder of submissions rather than a learner
    who happens to be called ``submitted``: nothing else at the top holds learner notebooks."""
    if not (src / "submitted").is_dir() or (src / "submitted").is_symlink():
        return False
    for entry in src.iterdir():
        if entry.name == "submitted" or _skip(Path(entry.name)) or entry.name in _COURSE_FOLDERS:
            continue
        if entry.name.endswith(".ipynb") or (entry.is_dir() and any(entry.rglob("*.ipynb"))):
            return False
    return True


def find_submissions(
    course: Course,
    source: str | Path,
    *,
    lesson: str | None = None,
    workdir: str | Path | None = None,
    problems: list[Problem] | None = None,
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
    problems:
        Where to collect the entries that cannot be graded (an unknown layout, a link, an
        oversize notebook, two notebooks or two learner names for one id, ...), one
        :class:`Problem` each with its reason, so that one bad entry never stops the class.
        Without it the first such entry raises :class:`SubmissionError`.

    Two learner names that map to one id (``Ada Lovelace`` and ``Ada_Lovelace``) are both
    rejected, with a reason naming both: guessing who is who would give one learner the other's
    grade.
    """
    src = Path(source)
    if not src.exists():
        raise SubmissionError(f"{src}: no such file or folder; expected a folder or a .zip of notebooks")
    only: Lesson | None = course.lesson(lesson) if lesson else None
    if only is not None and not only.ready:
        raise SubmissionError(f"lesson {only.slug} is planned, not ready: nothing to grade")
    if src.is_symlink():
        src = src.resolve()  # the instructor's own link to the folder is fine; links inside are not
    if src.is_file():
        if src.suffix.lower() != ".zip":
            raise SubmissionError(
                f"{src}: expected a folder or a .zip file, got a {src.suffix or 'plain'} file"
            )
        if workdir is None:
            raise SubmissionError("a workdir is needed to unpack a zip of submissions")
        src = _extract(src, Path(workdir) / "unpacked", problems)
        entries = [p for p in src.iterdir() if not _skip(p.relative_to(src))]
        if len(entries) == 1 and entries[0].is_dir() and not _looks_like_learner_dir(course, entries[0]):
            src = entries[0]  # a zip of one top folder
    if _nbgrader_root(src):
        src = src / "submitted"
    ready = {ls.slug: ls for ls in course.ready_lessons}
    by_notebook = {str(ls.notebook): ls for ls in course.ready_lessons}
    found: dict[tuple[str, str], list[tuple[str, Submission]]] = {}
    bad: list[Problem] = []

    def reject(learner: str, path: Path, reason: str) -> None:
        rel = str(path.relative_to(src)) if path.is_relative_to(src) else str(path)
        problem = Problem(learner, rel, reason)
        if problems is None:
            raise SubmissionError(f"{rel}: {reason}" if rel not in reason else reason)
        bad.append(problem)

    def add(name: str, ls: Lesson, path: Path, warnings: list[str]) -> None:
        if only is not None and ls.slug != only.slug:
            return
        try:
            sid = student_id(name)
        except SubmissionError as err:
            reject(name, path, str(err))
            return
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            reject(sid, path, f"notebook larger than {MAX_NOTEBOOK_BYTES >> 20} MiB; not graded")
            return
        if sid != name:
            warnings.append(f"learner name {name!r} graded as {sid!r}")
        found.setdefault((sid, ls.slug), []).append(
            (name, Submission(student=sid, lesson=ls.slug, path=path, warnings=warnings))
        )

    notebooks, links = _walk(src)
    for link in links:
        rel = link.relative_to(src)
        reject(rel.parts[0], link, f"{rel}: a symbolic link; only real files are graded")
    for path in notebooks:
        rel = path.relative_to(src)
        parts = rel.parts
        if len(parts) == 3 and parts[1] in ready:
            ls = ready[parts[1]]
            warnings = []
            siblings = [p for p in path.parent.glob("*.ipynb") if not p.name.startswith(".")]
            if path.name != ls.notebook:
                if (path.parent / str(ls.notebook)).exists():
                    continue  # the expected notebook is there too: grade that one
                if len(siblings) > 1:
                    if path == sorted(siblings)[0]:
                        reject(
                            parts[0],
                            path.parent,
                            f"{path.parent}: several notebooks and none named {ls.notebook}; "
                            "keep only the learner's",
                        )
                    continue
                warnings.append(f"notebook renamed to {path.name}; graded as {ls.notebook}")
            add(parts[0], ls, path, warnings)
        elif len(parts) == 2 and parts[1] in by_notebook:
            add(parts[0], by_notebook[parts[1]], path, [])
        elif len(parts) == 1 and "--" in path.stem:
            name, _, key = path.stem.rpartition("--")
            try:
                ls = course.lesson(key)
            except KeyError:
                reject(name, path, f"{path.name}: no lesson {key!r} (after '--') in course.yml")
                continue
            add(name, ls, path, [])
        elif len(parts) == 1:
            if only is None:
                raise SubmissionError(
                    f"{path.name}: a notebook named by learner only; say which lesson it is for (--lesson)"
                )
            add(path.stem, only, path, [])
        else:
            reject(parts[0], path, f"{rel}: not a layout labkit knows; expected {LAYOUTS}")
    # One id, one person: names that collide are all rejected, whatever lesson they are for.
    names: dict[str, set[str]] = {}
    for (sid, _), items in found.items():
        names.setdefault(sid, set()).update(name for name, _ in items)
    result: list[Submission] = []
    for (sid, slug), items in sorted(found.items()):
        if len(names[sid]) > 1:
            both = " and ".join(repr(n) for n in sorted(names[sid]))
            for _, sub in items:
                reject(sid, sub.path, f"learner names {both} all map to the id {sid!r}; rename one")
        elif len(items) > 1:
            paths = " and ".join(str(sub.path) for _, sub in items)
            for _, sub in items[:1] if problems is None else items:
                reject(sid, sub.path, f"two notebooks for learner {sid!r} and lesson {slug}: {paths}")
        else:
            result.append(items[0][1])
    if problems is not None:
        problems.extend(bad)
    return sorted(result, key=lambda s: (s.lesson, s.student))


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
