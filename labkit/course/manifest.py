"""Load and validate ``course.yml``, the single course manifest."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labkit.speed import SpeedConfig

__all__ = [
    "Certification",
    "Course",
    "CourseError",
    "Lesson",
    "Profile",
    "find_course_file",
    "load_course",
]

ATLAS_ID = re.compile(r"^AML\.(T|M)\d{4}(\.\d{3})?$")
SLUG = re.compile(r"^[0-9]{2}-[a-z0-9-]+$")
STATUSES = ("ready", "planned")
PROFILE_NAMES = ("ci", "laptop", "gpu")


class CourseError(ValueError):
    """``course.yml`` is missing, unreadable or does not follow the schema."""


@dataclass(frozen=True)
class Lesson:
    """One lesson of the course."""

    id: str
    slug: str
    title: str
    status: str
    points: float
    minutes: int
    atlas: tuple[str, ...]
    concepts: tuple[str, ...]
    notebook: str | None = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"


@dataclass(frozen=True)
class Profile:
    """Run sizes for one profile (``ci``, ``laptop`` or ``gpu``)."""

    name: str
    description: str
    cell_timeout: int
    batch_size: int
    eval_size: int
    datasets: Mapping[str, Mapping[str, int]]
    epochs: Mapping[str, int]
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    """Opt-in speed features (:mod:`labkit.speed`); everything off unless the profile says."""

    def size(self, dataset: str, split: str) -> int | None:
        """Number of examples of ``dataset``'s ``split`` under this profile (None: all)."""
        return self.datasets.get(dataset, {}).get(split)


@dataclass(frozen=True)
class Certification:
    pass_mark: float
    min_per_lesson: float
    required_lessons: tuple[str, ...]


@dataclass(frozen=True)
class Course:
    """The validated manifest."""

    path: Path
    title: str
    course_id: str
    version: str
    lessons: tuple[Lesson, ...]
    profiles: Mapping[str, Profile]
    default_profile: str
    certification: Certification
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def ready_lessons(self) -> tuple[Lesson, ...]:
        return tuple(lesson for lesson in self.lessons if lesson.ready)

    def lesson(self, key: str) -> Lesson:
        """Find a lesson by id (``"00"``) or slug (``"00-welcome"``)."""
        for lesson in self.lessons:
            if key in (lesson.id, lesson.slug):
                return lesson
        known = ", ".join(lesson.slug for lesson in self.lessons)
        raise KeyError(f"no lesson {key!r} in {self.path.name}; known lessons: {known}")

    def profile(self, name: str | None = None) -> Profile:
        """The named profile, else ``LABKIT_PROFILE``, else the manifest's default."""
        chosen = name or os.environ.get("LABKIT_PROFILE") or self.default_profile
        if chosen not in self.profiles:
            raise ValueError(
                f"unknown profile {chosen!r}; {self.path.name} defines {', '.join(self.profiles)}"
            )
        return self.profiles[chosen]


class _Checker:
    """Reads fields out of the raw YAML and raises errors that name the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, expected: str, got: object) -> CourseError:
        shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
        return CourseError(f"{self.path}: {where}: expected {expected}, got {shown}")

    def mapping(self, obj: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(obj, dict):
            raise self.fail(where, "a mapping of keys to values", obj)
        return obj

    def get(self, obj: Mapping[str, Any], key: str, where: str) -> Any:
        if key not in obj:
            raise CourseError(f"{self.path}: {where}: missing required field {key!r}")
        return obj[key]

    def text(self, obj: Mapping[str, Any], key: str, where: str) -> str:
        value = self.get(obj, key, where)
        if isinstance(value, bool) or not isinstance(value, str | int | float) or str(value) == "":
            raise self.fail(f"{where}.{key}", "a non-empty string", value)
        return str(value)

    def number(
        self, obj: Mapping[str, Any], key: str, where: str, *, low: float, high: float | None = None
    ) -> float:
        value = self.get(obj, key, where)
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{where}.{key}", f"a number {bound}", value)
        if value < low or (high is not None and value > high):
            raise self.fail(f"{where}.{key}", f"a number {bound}", value)
        return float(value)

    def integer(self, obj: Mapping[str, Any], key: str, where: str, *, low: int = 1) -> int:
        value = self.get(obj, key, where)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(f"{where}.{key}", f"an integer >= {low}", value)
        return int(value)

    def strings(self, obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = self.get(obj, key, where)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{where}.{key}", "a non-empty list of strings", value)
        return tuple(value)


def find_course_file(start: str | os.PathLike[str] | None = None) -> Path | None:
    """Locate ``course.yml``: ``LABKIT_COURSE``, then ``start`` (default: the working directory)
    and its parents, then the checkout labkit was installed from. ``None`` if there is none."""
    env = os.environ.get("LABKIT_COURSE")
    if env:
        return Path(env)
    here = Path(start) if start is not None else Path.cwd()
    for folder in (here, *here.resolve().parents):
        candidate = folder / "course.yml"
        if candidate.is_file():
            return candidate
    packaged = Path(__file__).resolve().parents[2] / "course.yml"
    return packaged if packaged.is_file() else None


def load_course(path: str | os.PathLike[str] | None = None) -> Course:
    """Read and validate ``course.yml``.

    Every problem raises :class:`CourseError` naming the file, the field (for example
    ``lessons[3].points``) and what was expected.

    Examples
    --------
    >>> course = load_course()
    >>> course.lesson("00").slug
    '00-welcome'
    """
    if path is None:
        found = find_course_file()
        if found is None:
            raise CourseError(
                "course.yml not found in the working directory or its parents; set LABKIT_COURSE to its path"
            )
        path = found
    file = Path(path)
    check = _Checker(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CourseError(f"{file}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CourseError(f"{file}: cannot read the file ({err})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise CourseError(f"{file}: not valid YAML: {err}") from None
    top = check.mapping(raw, "top level")

    lessons_raw = check.get(top, "lessons", "top level")
    if not isinstance(lessons_raw, list) or not lessons_raw:
        raise check.fail("lessons", "a non-empty list of lessons", lessons_raw)
    lessons = []
    seen: dict[str, str] = {}
    for i, item in enumerate(lessons_raw):
        where = f"lessons[{i}]"
        entry = check.mapping(item, where)
        lesson_id = check.text(entry, "id", where)
        if not re.fullmatch(r"\d{2}", lesson_id):
            raise check.fail(f"{where}.id", "a two-digit string such as '03'", entry["id"])
        slug = check.text(entry, "slug", where)
        if not SLUG.match(slug) or not slug.startswith(lesson_id + "-"):
            raise check.fail(f"{where}.slug", f"'{lesson_id}-' followed by lowercase words and dashes", slug)
        for key in (lesson_id, slug):
            if key in seen:
                raise CourseError(f"{file}: {where}: duplicate lesson {key!r} (also {seen[key]})")
            seen[key] = where
        status = check.text(entry, "status", where)
        if status not in STATUSES:
            raise check.fail(f"{where}.status", " or ".join(STATUSES), status)
        notebook = entry.get("notebook")
        if status == "ready":
            notebook = check.text(entry, "notebook", where)
            if not notebook.endswith(".ipynb") or "/" in notebook:
                raise check.fail(f"{where}.notebook", "a file name ending in .ipynb", notebook)
        atlas = check.strings(entry, "atlas", where)
        for tid in atlas:
            if not ATLAS_ID.match(tid):
                raise check.fail(f"{where}.atlas", "ATLAS ids like AML.T0043.000 or AML.M0003", tid)
        lessons.append(
            Lesson(
                id=lesson_id,
                slug=slug,
                title=check.text(entry, "title", where),
                status=status,
                points=check.number(entry, "points", where, low=1),
                minutes=check.integer(entry, "minutes", where),
                atlas=atlas,
                concepts=check.strings(entry, "concepts", where),
                notebook=notebook,
            )
        )

    profiles_raw = check.mapping(check.get(top, "profiles", "top level"), "profiles")
    default = check.text(profiles_raw, "default", "profiles")
    profiles: dict[str, Profile] = {}
    for name, body in profiles_raw.items():
        if name == "default":
            continue
        where = f"profiles.{name}"
        if name not in PROFILE_NAMES:
            raise check.fail("profiles", f"profile names among {', '.join(PROFILE_NAMES)}", name)
        entry = check.mapping(body, where)
        datasets = check.mapping(check.get(entry, "datasets", where), f"{where}.datasets")
        sizes: dict[str, dict[str, int]] = {}
        for ds, splits in datasets.items():
            split_map = check.mapping(splits, f"{where}.datasets.{ds}")
            sizes[str(ds)] = {
                str(s): check.integer(split_map, s, f"{where}.datasets.{ds}") for s in split_map
            }
        epochs_raw = check.mapping(check.get(entry, "epochs", where), f"{where}.epochs")
        epochs = {str(k): check.integer(epochs_raw, k, f"{where}.epochs") for k in epochs_raw}
        try:
            speed = SpeedConfig.from_mapping(entry.get("speed"), where=f"{where}.speed")
        except (TypeError, ValueError) as err:
            raise CourseError(f"{file}: {err}") from None
        profiles[name] = Profile(
            name=name,
            description=str(entry.get("description", "")),
            cell_timeout=check.integer(entry, "cell_timeout", where),
            batch_size=check.integer(entry, "batch_size", where),
            eval_size=check.integer(entry, "eval_size", where),
            datasets=sizes,
            epochs=epochs,
            speed=speed,
        )
    if not profiles:
        raise check.fail("profiles", "at least one profile (ci, laptop, gpu)", profiles_raw)
    if default not in profiles:
        raise check.fail("profiles.default", f"one of {', '.join(profiles)}", default)

    cert = check.mapping(check.get(top, "certification", "top level"), "certification")
    required = cert.get("required_lessons", "all")
    if required == "all":
        required_ids = tuple(lesson.id for lesson in lessons)
    elif isinstance(required, list) and all(str(r) in seen for r in required):
        required_ids = tuple(str(r) for r in required)
    else:
        raise check.fail("certification.required_lessons", "'all' or a list of lesson ids", required)
    certification = Certification(
        pass_mark=check.number(cert, "pass_mark", "certification", low=0, high=1),
        min_per_lesson=check.number(cert, "min_per_lesson", "certification", low=0, high=1),
        required_lessons=required_ids,
    )
    return Course(
        path=file,
        title=check.text(top, "title", "top level"),
        course_id=check.text(top, "course_id", "top level"),
        version=check.text(top, "version", "top level"),
        lessons=tuple(lessons),
        profiles=profiles,
        default_profile=default,
        certification=certification,
        raw=top,
    )
