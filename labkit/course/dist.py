"""The learner distribution: what a learner clones or installs to run ``make lab``.

The course repository is the instructor's: it holds the nbgrader sources with their solutions
and hidden tests (``solutions/``), the answer key (``instructor/``), the cohort secret
(``.labkit/``, never committed) and the gradebook. :func:`build_learner_dist` copies only what a
learner needs (the learner notebooks in ``lessons/``, the ``labkit`` package, the manifest, the
Makefile, the lock file and the project's documents) and then :func:`scan_for_answer_material`
reads every copied file for anything that gives answers away; a finding aborts the build.

Only files that git does not ignore are copied when the course is a git checkout (no caches,
backups, virtual environments or local secrets); the copy has no ``.git`` folder, so none of the
instructor's history comes with it. Publish it as a fresh repository or an archive.

Self-study learners may see a lesson's worked solution after they submit it:
:func:`add_solutions_to_feedback` appends it to their nbgrader feedback (never for an exam).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nbformat

from labkit.course.answers import cohort_secret, lesson_key

__all__ = [
    "LEARNER_PATHS",
    "DistError",
    "Finding",
    "add_solutions_to_feedback",
    "build_learner_dist",
    "render_solution",
    "scan_for_answer_material",
]

# What a learner gets, relative to the course root. Everything else stays with the instructor.
LEARNER_PATHS: tuple[str, ...] = (
    "lessons",
    "labkit",
    "course.yml",
    "nbgrader_config.py",
    "Makefile",
    "pyproject.toml",
    "uv.lock",
    ".gitignore",
    "README.md",
    "LICENSE",
    "CITATION.cff",
    "CHANGELOG.md",
    "SECURITY.md",
)

# Files that are never copied even from a learner path (editor and build leftovers, backups of
# learner notebooks, which may hold someone's work).
_SKIP = re.compile(r"(^|/)(__pycache__|\.ipynb_checkpoints)(/|$)|\.py[cod]$|\.backup-[^/]*$|\.egg-info(/|$)")

# A solution or hidden-test region as nbgrader marks it: the marker alone on its line.
_REGION = re.compile(r"^[ \t]*#+[ \t]*(BEGIN|END) (SOLUTION|HIDDEN TESTS)[ \t]*$", re.MULTILINE)
# A check that carries its answer's hash (the old public-salt form).
_HASHED_CHECK = re.compile(r"check_(?:answer|number)\([^)\n]*[\"'][0-9a-f]{16}[\"']")
# The answer key and the sealed keys, by their first meaningful line.
_KEY_DOCUMENT = re.compile(
    r"^format:\s*labkit-answer-key/|^\{\"format\": \"labkit-sealed-answer-key/", re.MULTILINE
)
_KEY_NAMES = re.compile(r"(^|/)(answer_key\.ya?ml|answer-key-[^/]*\.json|cohort\.key)$")
# Markdown written only for graders (the exam's written questions carry a rubric).
_RUBRIC = re.compile(r"Rubric for[ \t]+graders")  # a pattern, so this file does not match itself


class DistError(RuntimeError):
    """The learner distribution could not be built, or would give answers away."""


@dataclass(frozen=True)
class Finding:
    """One piece of answer material found in a distribution: the file and what it holds."""

    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


def _tracked(root: Path, paths: tuple[str, ...]) -> list[str] | None:
    """Files under ``paths`` that git does not ignore in ``root`` (tracked, or new and not yet
    added), or None where ``root`` is no checkout."""
    if not (root / ".git").exists() or shutil.which("git") is None:
        return None
    done = subprocess.run(
        [
            "git",
            "-C",
            str(root),
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            *paths,
        ],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    return [p for p in done.stdout.decode().split("\0") if p and (root / p).is_file()]


def _walk(root: Path, paths: tuple[str, ...]) -> list[str]:
    files = []
    for name in paths:
        top = root / name
        if top.is_file():
            files.append(name)
        elif top.is_dir():
            files.extend(str(p.relative_to(root)) for p in sorted(top.rglob("*")) if p.is_file())
    return files


def _secrets_of(course_root: Path | None) -> list[str]:
    """The cohort secret and the lesson keys derived from it, as they would appear in a file."""
    try:
        secret = cohort_secret(course_root)
    except RuntimeError:
        return []
    if secret is None:
        return []
    shown = [secret.hex(), secret.decode("latin-1")]
    shown += [lesson_key(secret, f"{i:02d}").hex() for i in range(100)]
    return [s for s in shown if len(s) >= 16]


def _scan_notebook(text: str, rel: str) -> list[Finding]:
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception:  # not a notebook after all: the text checks still ran
        return []
    found = []
    for i, cell in enumerate(nb.cells):
        grading = cell.metadata.get("nbgrader", {})
        if grading.get("solution") and cell.cell_type == "code" and "NotImplementedError" not in cell.source:
            found.append(
                Finding(rel, f"cell {i} ({grading.get('grade_id')}) is a solution cell without its stub")
            )
        if cell.cell_type == "code" and cell.get("outputs"):
            found.append(Finding(rel, f"cell {i} has stored outputs (they may show a solution's results)"))
    return found


def scan_for_answer_material(
    dest: str | os.PathLike[str], *, course_root: Path | None = None
) -> list[Finding]:
    """Everything under ``dest`` that gives answers away; ``[]`` when the folder is clean.

    Looks for nbgrader solution and hidden-test regions, graders' rubrics, checks that carry an
    answer hash, solution cells that still hold their solution, notebooks with outputs, the
    answer key and sealed keys (by name and by content), a ``solutions/`` folder, and the cohort
    secret of ``course_root`` (and every lesson key derived from it) in any file.
    """
    base = Path(dest)
    needles = _secrets_of(course_root)
    found: list[Finding] = []
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        rel = path.relative_to(base).as_posix()
        if rel.startswith("solutions/") or "/solutions/" in f"/{rel}":
            found.append(Finding(rel, "a solutions/ folder (nbgrader sources)"))
        if _KEY_NAMES.search(rel):
            found.append(Finding(rel, "an answer key or cohort secret file"))
        data = path.read_bytes()
        text = data.decode("utf-8", errors="replace")
        if path.suffix == ".ipynb":
            # in a notebook's JSON every line of a cell is a string: look at the cells' text
            try:
                cells = nbformat.reads(text, as_version=4).cells
                text = "\n".join([text, *(c.source for c in cells)])
            except Exception:  # an unreadable notebook is still scanned as text
                pass
            found.extend(_scan_notebook(data.decode("utf-8", errors="replace"), rel))
        if m := _REGION.search(text):
            found.append(Finding(rel, f"an nbgrader region marker ({m.group(0).strip()!r})"))
        if _RUBRIC.search(text):
            found.append(Finding(rel, "a grader's rubric"))
        if m := _HASHED_CHECK.search(text):
            found.append(Finding(rel, f"a check that carries its answer's hash ({m.group(0)!r})"))
        if _KEY_DOCUMENT.search(text):
            found.append(Finding(rel, "the content of an answer key"))
        if any(n in text for n in needles):
            found.append(Finding(rel, "the cohort secret or a lesson key derived from it"))
    return found


def build_learner_dist(course_root: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Copy the learner's part of the course at ``course_root`` into the new folder ``dest``.

    Returns the files written. Raises :class:`DistError` when ``dest`` exists and is not empty,
    when a learner notebook is missing (``labkit build`` first: ``make lab`` in the copy cannot
    build one without ``solutions/``), or when the scan finds answer material (the copy is then
    removed and every finding is listed).
    """
    from labkit.course.manifest import load_course

    root = Path(course_root).resolve()
    course = load_course(root / "course.yml")
    out = Path(dest).resolve()
    if out == root or (root in out.parents and out.relative_to(root).parts[0] in LEARNER_PATHS):
        raise DistError(f"{out}: choose a folder outside the course's learner paths")
    if out.exists() and any(out.iterdir()):
        raise DistError(f"{out} is not empty; choose a new folder for the learner distribution")
    missing = [
        f"lessons/{ls.slug}/{ls.notebook}"
        for ls in course.ready_lessons
        if not (root / "lessons" / ls.slug / str(ls.notebook)).is_file()
    ]
    if missing:
        raise DistError(f"learner copies missing (run 'labkit build' first): {', '.join(missing)}")
    files = _tracked(root, LEARNER_PATHS)
    files = _walk(root, LEARNER_PATHS) if files is None else files
    written = []
    for rel in files:
        if _SKIP.search(rel) or (root / rel).is_symlink():
            continue
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, target)
        shutil.copymode(root / rel, target)
        written.append(target)
    findings = scan_for_answer_material(out, course_root=root)
    if findings:
        shutil.rmtree(out)
        raise DistError(
            f"the learner distribution would give answers away ({len(findings)} finding(s)), so it was "
            "removed: " + "; ".join(map(str, findings))
        )
    return written


# --------------------------------------------------------------------------- worked solutions

SOLUTION_SECTION = "labkit-worked-solution"
_SOLUTION_MARK = re.compile(r"^[ \t]*#+[ \t]*(BEGIN|END) SOLUTION[ \t]*\n?", re.MULTILINE)


def render_solution(course_root: str | os.PathLike[str], lesson: str) -> str:
    """The reference solution of ``lesson`` as an HTML fragment, for a learner who submitted.

    Hidden tests and mark schemes are removed (nbgrader's own ``ClearHiddenTests`` and
    ``ClearMarkScheme``), and so are the solution-region markers. An exam (a notebook whose
    cells carry ``exam`` metadata) raises :class:`DistError`: its solutions are never released.
    """
    from nbconvert import HTMLExporter
    from nbgrader.preprocessors import ClearHiddenTests, ClearMarkScheme

    from labkit.course.manifest import load_course

    course = load_course(Path(course_root) / "course.yml")
    try:
        found = course.lesson(lesson)
    except KeyError as err:
        raise DistError(str(err.args[0])) from None
    path = course.root / "solutions" / found.slug / str(found.notebook)
    nb = nbformat.read(path, as_version=4)
    if any("exam" in cell.metadata for cell in nb.cells):
        raise DistError(f"{found.slug} is an exam: its solutions are never released to learners")
    for step in (ClearHiddenTests(), ClearMarkScheme()):
        nb, _ = step.preprocess(nb, {})
    for cell in nb.cells:
        cell.source = _SOLUTION_MARK.sub("", cell.source)
    body, _ = HTMLExporter(template_name="basic").from_notebook_node(nb)
    if _REGION.search(body) or _HASHED_CHECK.search(body) or "HIDDEN TESTS" in body:
        raise DistError(f"{found.slug}: the rendered solution still holds hidden-test material")
    return body


def add_solutions_to_feedback(
    course_root: str | os.PathLike[str], feedback: str | os.PathLike[str]
) -> list[Path]:
    """Append the worked solution to every feedback HTML of a non-exam lesson under ``feedback``.

    ``feedback`` is laid out ``<learner>/<lesson slug or id>/<notebook>.html`` (nbgrader's
    ``feedback/`` and ``labkit grade``'s ``grades/feedback/``). nbgrader's ``release_feedback``
    ships exactly those files, so the solution travels inside them. Files that already have
    the solution, and exam lessons, are left alone. Returns the files changed.
    """
    from labkit.course.manifest import load_course

    course = load_course(Path(course_root) / "course.yml")
    rendered: dict[str, str | None] = {}
    changed = []
    for html in sorted(Path(feedback).glob("*/*/*.html")):
        try:
            lesson = course.lesson(html.parent.name)
        except KeyError:
            continue
        if lesson.slug not in rendered:
            try:
                rendered[lesson.slug] = render_solution(course.root, lesson.slug)
            except DistError:
                rendered[lesson.slug] = None  # the exam
        body = rendered[lesson.slug]
        text = html.read_text(encoding="utf-8")
        if body is None or SOLUTION_SECTION in text or html.stem != Path(str(lesson.notebook)).stem:
            continue
        section = f'<section id="{SOLUTION_SECTION}"><h1>Worked solution</h1>\n{body}\n</section>\n'
        cut = text.lower().rfind("</body>")
        html.write_text(text[:cut] + section + text[cut:] if cut >= 0 else text + section, encoding="utf-8")
        changed.append(html)
    return changed
