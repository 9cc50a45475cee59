"""Load and validate ``course.yml``, the single course manifest.

The schema is a set of pydantic models (:class:`CourseSpec` and the models it holds) that forbid
unknown keys, so a misspelt ``pass_mrk`` or ``minuts`` is an error rather than a silent default.
Every problem becomes a :class:`CourseError` naming the file, the key path (``lessons[3].minuts``)
and what was expected there (for an unknown key: the keys allowed there).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from labkit.config import Profile  # the plain-data profile lives in the core; re-exported here
from labkit.speed import SpeedConfig

__all__ = [
    "Certification",
    "Course",
    "CourseError",
    "CourseSpec",
    "Lesson",
    "Profile",
    "find_course_file",
    "installed_course_file",
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
    # Test cells scored in the learner's own kernel (strict scoring and the in-kernel integrity
    # check) instead of the grader's trusted checker, because what they pass to or get back from
    # learner code does not cross the checker's serialised interface yet.
    kernel_tests: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.status == "ready"


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


# --------------------------------------------------------------------------------------------
# The schema: pydantic models with extra="forbid", so a misspelt key is an error, not a default
# --------------------------------------------------------------------------------------------

_NOT_GIVEN = object()


def _expected(what: str, got: object = _NOT_GIVEN, *, at: tuple[str, ...] = ()) -> PydanticCustomError:
    """An error that reads ``<where>: expected <what>, got <value>`` once named by :func:`_message`."""
    ctx: dict[str, Any] = {"expected": what, "at": at}
    if got is not _NOT_GIVEN:
        ctx["got"] = got
    return PydanticCustomError("labkit_expected", "expected {expected}", ctx)


def _problem(message: str, *, at: tuple[str | int, ...] = ()) -> PydanticCustomError:
    """An error that reads ``<where>: <message>``."""
    return PydanticCustomError("labkit_problem", "{message}", {"message": message, "at": at})


def _text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float) or str(value) == "":
        raise _expected("a non-empty string")
    return str(value)


def _number(low: float, high: float | None = None) -> Callable[[object], float]:
    bound = f">= {low:g}" if high is None else f"between {low:g} and {high:g}"

    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _expected(f"a number {bound}")
        if value < low or (high is not None and value > high):
            raise _expected(f"a number {bound}")
        return float(value)

    return check


def _integer(low: int = 1) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise _expected(f"an integer >= {low}")
        return int(value)

    return check


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _expected("a non-empty list of strings")
    return tuple(value)


def _lesson_id(value: object) -> str:
    text = _text(value)
    if not re.fullmatch(r"\d{2}", text):
        raise _expected("a two-digit string such as '03'")
    return text


def _status(value: object) -> str:
    text = _text(value)
    if text not in STATUSES:
        raise _expected(" or ".join(STATUSES))
    return text


def _notebook(value: object) -> str:
    text = _text(value)
    if not text.endswith(".ipynb") or "/" in text:
        raise _expected("a file name ending in .ipynb")
    return text


def _atlas(value: object) -> tuple[str, ...]:
    ids = _strings(value)
    for tid in ids:
        if not ATLAS_ID.match(tid):
            raise _expected("ATLAS ids like AML.T0043.000 or AML.M0003", tid)
    return ids


def _lessons(value: object) -> object:
    if not isinstance(value, list) or not value:
        raise _expected("a non-empty list of lessons")
    return value


def _key(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _expected("a name")
    return str(value)


def _speed(value: object) -> SpeedConfig:
    try:
        return SpeedConfig.from_mapping(value, where="speed")
    except (TypeError, ValueError) as err:
        raise _problem(str(err).removeprefix("speed: ")) from None


def _required(value: object) -> str | tuple[str, ...]:
    if value == "all":
        return "all"
    if isinstance(value, list) and value and all(isinstance(v, str | int) for v in value):
        return tuple(str(v) for v in value)
    raise _expected("'all' or a list of lesson ids")


Text = Annotated[str, PlainValidator(_text)]
Count = Annotated[int, PlainValidator(_integer(1))]
Key = Annotated[str, PlainValidator(_key)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class LessonSpec(_Spec):
    """One entry of ``lessons:`` in ``course.yml``."""

    id: Annotated[str, PlainValidator(_lesson_id)]
    slug: Text
    title: Text
    status: Annotated[str, PlainValidator(_status)]
    notebook: Annotated[str, PlainValidator(_notebook)] | None = None
    points: Annotated[float, PlainValidator(_number(1))]
    minutes: Count
    atlas: Annotated[tuple[str, ...], PlainValidator(_atlas)]
    concepts: Annotated[tuple[str, ...], PlainValidator(_strings)]
    kernel_tests: Annotated[tuple[str, ...], PlainValidator(_strings)] = ()

    @field_validator("slug")
    @classmethod
    def _slug_follows_id(cls, slug: str, info: ValidationInfo) -> str:
        lesson_id = info.data.get("id", r"\d{2}")
        if not SLUG.match(slug) or not re.match(f"{lesson_id}-", slug):
            shown = f"'{lesson_id}-'" if "id" in info.data else "the lesson id and '-'"
            raise _expected(f"{shown} followed by lowercase words and dashes")
        return slug

    @model_validator(mode="after")
    def _ready_needs_a_notebook(self) -> LessonSpec:
        if self.status == "ready" and self.notebook is None:
            raise _problem("missing required field 'notebook'")
        return self


class ProfileSpec(_Spec):
    """One run profile under ``profiles:``."""

    description: Annotated[str, PlainValidator(str)] = ""
    cell_timeout: Count
    batch_size: Count
    eval_size: Count
    datasets: dict[Key, dict[Key, Count]]
    epochs: dict[Key, Count]
    speed: Annotated[SpeedConfig, PlainValidator(_speed)] = Field(default_factory=SpeedConfig)


class ProfilesSpec(_Spec):
    """``profiles:``: the default profile's name and the profiles themselves."""

    default: Text
    ci: ProfileSpec | None = None
    laptop: ProfileSpec | None = None
    gpu: ProfileSpec | None = None

    def defined(self) -> dict[str, ProfileSpec]:
        return {n: spec for n in PROFILE_NAMES if (spec := getattr(self, n)) is not None}

    @model_validator(mode="after")
    def _default_is_defined(self) -> ProfilesSpec:
        names = list(self.defined())
        if not names:
            raise _expected(f"at least one profile ({', '.join(PROFILE_NAMES)})", {})
        if self.default not in names:
            raise _expected(f"one of {', '.join(names)}", self.default, at=("default",))
        return self


class CertificationSpec(_Spec):
    """``certification:``: who earns the certificate."""

    pass_mark: Annotated[float, PlainValidator(_number(0, 1))]
    min_per_lesson: Annotated[float, PlainValidator(_number(0, 1))]
    required_lessons: Annotated[str | tuple[str, ...], PlainValidator(_required)] = "all"


class CourseSpec(_Spec):
    """The whole of ``course.yml``, as written (see :func:`load_course` for the checked result)."""

    title: Text
    course_id: Text
    version: Text
    lessons: Annotated[list[LessonSpec], BeforeValidator(_lessons)]
    profiles: ProfilesSpec
    certification: CertificationSpec

    @model_validator(mode="after")
    def _lessons_are_unique_and_required_ones_exist(self) -> CourseSpec:
        seen: dict[str, str] = {}
        for i, lesson in enumerate(self.lessons):
            for key in (lesson.id, lesson.slug):
                if key in seen:
                    raise _problem(f"duplicate lesson {key!r} (also {seen[key]})", at=("lessons", i))
                seen[key] = f"lessons[{i}]"
        required = self.certification.required_lessons
        if required != "all" and not all(r in seen for r in required):
            raise _expected(
                "'all' or a list of lesson ids", list(required), at=("certification", "required_lessons")
            )
        return self


def _where(loc: Sequence[str | int]) -> str:
    """``("lessons", 3, "minuts")`` -> ``lessons[3].minuts``; the empty path is the top level."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "top level"


def _shown(value: object) -> str:
    return type(value).__name__ if isinstance(value, dict | list) else repr(value)


def _spec_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The schema model that validates the mapping found at ``loc`` (for the keys allowed there)."""
    node: Any = CourseSpec
    for part in loc:
        args = [a for a in get_args(node) if a is not type(None)]
        if get_origin(node) in (Union, UnionType) and len(args) == 1:
            node = args[0]
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            if field is None:
                return None
            node = field.annotation
        elif get_origin(node) in (list, dict):
            node = get_args(node)[-1]
        else:
            return None
    args = [a for a in get_args(node) if a is not type(None)]
    if get_origin(node) in (Union, UnionType) and len(args) == 1:
        node = args[0]
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _message(error: ErrorDetails) -> str:
    """One pydantic error as ``<key path>: <what was wrong and what was expected>``."""
    kind, loc, ctx = error["type"], tuple(error["loc"]), error.get("ctx") or {}
    if kind in ("labkit_expected", "labkit_problem"):
        where = _where((*loc, *ctx.get("at", ())))
        if kind == "labkit_problem":
            return f"{where}: {ctx['message']}"
        return f"{where}: expected {ctx['expected']}, got {_shown(ctx.get('got', error['input']))}"
    if kind == "missing":
        return f"{_where(loc[:-1])}: missing required field {loc[-1]!r}"
    if kind == "extra_forbidden":
        spec = _spec_at(loc[:-1])
        allowed = list(spec.model_fields) if spec is not None else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        keys = ", ".join(allowed) or "none"
        return f"{_where(loc)}: unknown key {loc[-1]!r}{hint}; expected keys among {keys}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{_where(loc)}: expected a mapping of keys to values, got {_shown(error['input'])}"
    return f"{_where(loc)}: {error['msg']}"


def _course_error(file: Path, err: ValidationError, *, shown: int = 3) -> CourseError:
    """All of pydantic's errors in one line; unknown keys first, as a misspelt key also shows up
    as the missing key it was meant to be."""
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    problems = [_message(e) for e in errors]
    more = f"; and {len(problems) - shown} more problem(s)" if len(problems) > shown else ""
    return CourseError(f"{file}: {'; '.join(problems[:shown])}{more}")


def find_course_file(start: str | os.PathLike[str] | None = None, *, installed: bool = True) -> Path | None:
    """Locate ``course.yml``: ``LABKIT_COURSE``, then ``start`` (default: the working directory)
    and its parents, then (unless ``installed=False``) the checkout labkit was installed from.
    ``None`` if there is none.

    Commands that write into a course pass ``installed=False``: a course found only through the
    installation is someone else's checkout, not the one the user stands in.
    """
    env = os.environ.get("LABKIT_COURSE")
    if env:
        return Path(env)
    here = Path(start) if start is not None else Path.cwd()
    for folder in (here, *here.resolve().parents):
        candidate = folder / "course.yml"
        if candidate.is_file():
            return candidate
    packaged = installed_course_file()
    return packaged if installed else None


def installed_course_file() -> Path | None:
    """The ``course.yml`` of the checkout labkit was installed from, if there is one."""
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
    try:
        spec = CourseSpec.model_validate(raw)
    except ValidationError as err:
        raise _course_error(file, err) from None
    lessons = tuple(
        Lesson(
            id=ls.id,
            slug=ls.slug,
            title=ls.title,
            status=ls.status,
            points=ls.points,
            minutes=ls.minutes,
            atlas=ls.atlas,
            concepts=ls.concepts,
            notebook=ls.notebook,
            kernel_tests=ls.kernel_tests,
        )
        for ls in spec.lessons
    )
    profiles = {
        name: Profile(
            name=name,
            description=p.description,
            cell_timeout=p.cell_timeout,
            batch_size=p.batch_size,
            eval_size=p.eval_size,
            datasets={ds: dict(splits) for ds, splits in p.datasets.items()},
            epochs=dict(p.epochs),
            speed=p.speed,
        )
        for name, p in spec.profiles.defined().items()
    }
    required = spec.certification.required_lessons
    return Course(
        path=file,
        title=spec.title,
        course_id=spec.course_id,
        version=spec.version,
        lessons=lessons,
        profiles=profiles,
        default_profile=spec.profiles.default,
        certification=Certification(
            pass_mark=spec.certification.pass_mark,
            min_per_lesson=spec.certification.min_per_lesson,
            required_lessons=tuple(ls.id for ls in lessons) if required == "all" else tuple(required),
        ),
        raw=raw,
    )
