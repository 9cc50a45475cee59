"""course.yml: validation with clear errors, profiles, and agreement with the notebooks."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml

import labkit as lk
from labkit.config import FALLBACK_PROFILE
from labkit.course import CourseError, load_course


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "course.yml"
    path.write_text(
        yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data, encoding="utf-8"
    )
    return path


@pytest.fixture
def raw(root: Path) -> dict[str, Any]:
    return yaml.safe_load((root / "course.yml").read_text(encoding="utf-8"))


def test_real_manifest_loads(course: lk.course.Course) -> None:
    assert course.title and course.version
    ids = [lesson.id for lesson in course.lessons]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    assert course.lesson("00").ready and course.lesson("00-welcome").notebook == "welcome.ipynb"
    assert set(course.profiles) == {"ci", "laptop", "gpu"}
    assert 0 < course.certification.pass_mark <= 1


def test_every_ready_lesson_has_its_notebook_with_matching_points(course: lk.course.Course) -> None:
    for lesson in course.ready_lessons:
        path = course.root / "solutions" / lesson.slug / str(lesson.notebook)
        assert path.is_file(), f"{lesson.slug}: missing {path}"
        nb = nbformat.read(path, as_version=4)
        points = sum(
            c.metadata["nbgrader"].get("points", 0)
            for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade")
        )
        assert points == lesson.points, (
            f"{lesson.slug}: notebook has {points} points, course.yml {lesson.points}"
        )


def test_fallback_profile_matches_manifest_ci(course: lk.course.Course) -> None:
    ci = course.profile("ci")
    assert dict(ci.datasets) == dict(FALLBACK_PROFILE.datasets)
    assert dict(ci.epochs) == dict(FALLBACK_PROFILE.epochs)
    assert (ci.batch_size, ci.eval_size, ci.cell_timeout) == (
        FALLBACK_PROFILE.batch_size,
        FALLBACK_PROFILE.eval_size,
        FALLBACK_PROFILE.cell_timeout,
    )


def test_profile_selection(course: lk.course.Course, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABKIT_PROFILE", raising=False)
    assert course.profile().name == course.default_profile
    monkeypatch.setenv("LABKIT_PROFILE", "laptop")
    assert course.profile().name == "laptop"
    assert course.profile("gpu").name == "gpu"
    with pytest.raises(ValueError, match="unknown profile 'huge'.*ci, laptop, gpu"):
        course.profile("huge")


def test_profiles_grow_from_ci_to_gpu(course: lk.course.Course) -> None:
    ci, laptop, gpu = (course.profile(n) for n in ("ci", "laptop", "gpu"))
    for name in ("signs", "transactions"):
        assert ci.size(name, "train") <= laptop.size(name, "train") <= gpu.size(name, "train")


def _mutate(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is _DELETE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("lessons.0.points", "ten", r"lessons\[0\]\.points: expected a number >= 1, got 'ten'"),
        ("lessons.0.points", 0, r"lessons\[0\]\.points"),
        ("lessons.1.id", "1", r"lessons\[1\]\.id: expected a two-digit string"),
        ("lessons.0.slug", "welcome", r"lessons\[0\]\.slug: expected '00-'"),
        ("lessons.0.status", "done", r"lessons\[0\]\.status: expected ready or planned"),
        ("lessons.0.notebook", _DELETE, r"lessons\[0\]: missing required field 'notebook'"),
        (
            "lessons.0.notebook",
            "welcome.py",
            r"lessons\[0\]\.notebook: expected a file name ending in \.ipynb",
        ),
        ("lessons.0.atlas", ["T0015"], r"lessons\[0\]\.atlas: expected ATLAS ids"),
        ("lessons.0.atlas", [], r"lessons\[0\]\.atlas: expected a non-empty list"),
        ("lessons.0.minutes", -5, r"lessons\[0\]\.minutes: expected an integer >= 1"),
        ("lessons.0.title", _DELETE, r"lessons\[0\]: missing required field 'title'"),
        ("lessons", [], r"lessons: expected a non-empty list"),
        ("profiles.default", "fast", r"profiles\.default: expected one of ci, laptop, gpu"),
        ("profiles.ci.batch_size", 0, r"profiles\.ci\.batch_size: expected an integer >= 1"),
        ("profiles.ci.datasets.signs.train", "many", r"profiles\.ci\.datasets\.signs\.train"),
        ("profiles.ci.epochs", [1, 2], r"profiles\.ci\.epochs: expected a mapping"),
        (
            "profiles.turbo",
            {},
            r"profiles\.turbo: unknown key 'turbo'; expected keys among default, ci, laptop, gpu",
        ),
        ("certification.pass_mark", 70, r"certification\.pass_mark: expected a number between 0 and 1"),
        ("certification.required_lessons", ["99"], r"certification\.required_lessons"),
        ("certification", _DELETE, r"missing required field 'certification'"),
    ],
)
def test_broken_manifest_names_file_field_and_expectation(
    tmp_path: Path, raw: dict[str, Any], path: str, value: Any, match: str
) -> None:
    broken = _write(tmp_path, _mutate(raw, path, value))
    with pytest.raises(CourseError, match=match) as info:
        load_course(broken)
    assert str(broken) in str(info.value), "the error must name the file"


def _rename(raw: dict[str, Any], path: str, new_key: str) -> dict[str, Any]:
    data = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[new_key] = node.pop(last)
    return data


@pytest.mark.parametrize(
    ("path", "typo", "match"),
    [
        (
            "lessons.3.minutes",
            "minuts",
            r"lessons\[3\]\.minuts: unknown key 'minuts' \(did you mean 'minutes'\?\); expected keys "
            r"among id, slug, title, status, notebook, points, minutes, atlas, concepts",
        ),
        (
            "certification.pass_mark",
            "pass_mrk",
            r"certification\.pass_mrk: unknown key 'pass_mrk' \(did you mean 'pass_mark'\?\); expected keys "
            r"among pass_mark, min_per_lesson, required_lessons",
        ),
        (
            "title",
            "titel",
            r": titel: unknown key 'titel' \(did you mean 'title'\?\); expected keys among title,",
        ),
        ("profiles.gpu.eval_size", "evalsize", r"profiles\.gpu\.evalsize: unknown key 'evalsize'"),
        ("profiles.ci.description", "descripton", r"profiles\.ci\.descripton: unknown key 'descripton'"),
    ],
)
def test_misspelt_key_is_refused_with_the_keys_allowed_there(
    tmp_path: Path, raw: dict[str, Any], path: str, typo: str, match: str
) -> None:
    """A misspelt key is not silently ignored (nor its intended key silently defaulted)."""
    broken = _write(tmp_path, _rename(raw, path, typo))
    with pytest.raises(CourseError, match=match) as info:
        load_course(broken)
    assert str(info.value).startswith(f"{broken}: "), "the error must name the file first"


def test_an_extra_key_is_refused(tmp_path: Path, raw: dict[str, Any]) -> None:
    """A key the schema does not know is an error too, not a note the tools silently skip."""
    raw["lessons"][0]["hint"] = "extra"
    with pytest.raises(CourseError, match=r"lessons\[0\]\.hint: unknown key 'hint'; expected keys among id,"):
        load_course(_write(tmp_path, raw))


def test_duplicate_lesson(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["lessons"].append(copy.deepcopy(raw["lessons"][0]))
    with pytest.raises(CourseError, match=r"lessons\[\d+\]: duplicate lesson '00' \(also lessons\[0\]\)"):
        load_course(_write(tmp_path, raw))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("title: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "top level: expected a mapping"),
        ("", "top level: expected a mapping"),
    ],
)
def test_unparseable_manifest(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(CourseError, match=match):
        load_course(_write(tmp_path, text))


def test_missing_and_binary_manifest(tmp_path: Path) -> None:
    with pytest.raises(CourseError, match="file not found"):
        load_course(tmp_path / "nope.yml")
    bad = tmp_path / "course.yml"
    bad.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(CourseError, match="cannot read"):
        load_course(bad)


def test_course_lookup_errors(course: lk.course.Course) -> None:
    with pytest.raises(KeyError, match="no lesson '42'"):
        course.lesson("42")


def test_nbgrader_config_reads_manifest(course: lk.course.Course) -> None:
    cfg = lk.course.nbgrader_config(course, profile="ci")
    assert cfg.CourseDirectory.source_directory == "solutions"
    assert cfg.CourseDirectory.release_directory == "lessons"
    assert cfg.Execute.timeout == course.profile("ci").cell_timeout
    assert "nbgrader.preprocessors.ClearHiddenTests" in cfg.GenerateFeedback.preprocessors


def test_answer_hash_normalises() -> None:
    h = lk.course.answer_hash
    assert h("q", "  B ") == h("q", "b")
    assert h("q", ["x", "Y"]) == h("q", {"y", "x"})
    assert h("q", "b") != h("other", "b")
    assert lk.course.check_answer("q", "b", h("q", "b"))
    assert not lk.course.check_answer("q", "c", h("q", "b"))


def test_expect_raises_reports_clearly() -> None:
    err = lk.course.expect_raises(ValueError, int, "x")
    assert isinstance(err, ValueError)
    with pytest.raises(AssertionError, match="returned normally"):
        lk.course.expect_raises(ValueError, int, "3")
    with pytest.raises(AssertionError, match="raised TypeError"):
        lk.course.expect_raises(ValueError, int, None)
    with pytest.raises(AssertionError, match="does not mention"):
        lk.course.expect_raises(ValueError, int, "x", match="banana")
