"""The instructor and learner documents in docs/ agree with course.yml and labkit.atlas."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import labkit as lk

ATLAS_ID = re.compile(r"\bAML\.[TM]\d{4}(?:\.\d{3})?\b")
LESSON_HEADING = re.compile(r"^## Lesson (\d{2}) · (.+)$", re.MULTILINE)


def _sections(text: str, marker: str) -> dict[str, str]:
    """Split markdown at headings that start with ``marker``: {heading text: body}."""
    parts = re.split(rf"^{re.escape(marker)} (.+)$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.fixture
def docs(root: Path) -> dict[str, str]:
    return {
        name: (root / "docs" / f"{name}.md").read_text(encoding="utf-8")
        for name in ("glossary", "reading-list", "instructor-guide")
    }


def _concept_lessons(course: lk.course.Course) -> dict[str, set[str]]:
    tagged: dict[str, set[str]] = {}
    for lesson in course.lessons:
        for concept in lesson.concepts:
            tagged.setdefault(concept.lower(), set()).add(lesson.id)
    return tagged


def test_glossary_has_an_entry_for_every_concept_tag(docs: dict[str, str], course: lk.course.Course) -> None:
    entries = {heading.lower() for heading in _sections(docs["glossary"], "###")}
    missing = sorted(set(_concept_lessons(course)) - entries)
    assert not missing, (
        f"docs/glossary.md has no '### <concept>' entry for the course.yml concept tags {missing}"
    )


def test_glossary_entries_name_known_atlas_ids_and_a_lesson_that_teaches_them(
    docs: dict[str, str], course: lk.course.Course
) -> None:
    known = set(lk.atlas.TECHNIQUES) | set(lk.atlas.MITIGATIONS)
    tagged = _concept_lessons(course)
    lesson_ids = {lesson.id for lesson in course.lessons}
    for concept, body in _sections(docs["glossary"], "###").items():
        ids = set(ATLAS_ID.findall(body))
        assert ids, f"glossary entry {concept!r} names no ATLAS id"
        unknown = sorted(ids - known)
        assert not unknown, (
            f"glossary entry {concept!r} names ATLAS ids that labkit.atlas does not know: {unknown}"
        )
        taught = re.search(r"\*\*Taught in:\*\*(.+?)(?:\n\n|\Z)", body, flags=re.DOTALL)
        assert taught, f"glossary entry {concept!r} has no '**Taught in:**' line"
        named = set(re.findall(r"\b(\d{2})\b", taught.group(1)))
        assert named <= lesson_ids, (
            f"glossary entry {concept!r} names lessons that do not exist: {sorted(named - lesson_ids)}"
        )
        if concept.lower() in tagged:
            assert named & tagged[concept.lower()], (
                f"glossary entry {concept!r} names lessons {sorted(named)}, none of which course.yml "
                f"tags with it ({sorted(tagged[concept.lower()])})"
            )


def test_every_atlas_id_in_the_docs_is_known(docs: dict[str, str]) -> None:
    known = set(lk.atlas.TECHNIQUES) | set(lk.atlas.MITIGATIONS)
    for name, text in docs.items():
        unknown = sorted(set(ATLAS_ID.findall(text)) - known)
        assert not unknown, f"docs/{name}.md names ATLAS ids that labkit.atlas does not know: {unknown}"


@pytest.mark.parametrize("name", ["reading-list", "instructor-guide"])
def test_every_lesson_has_an_entry(docs: dict[str, str], course: lk.course.Course, name: str) -> None:
    found = dict(LESSON_HEADING.findall(docs[name]))
    for lesson in course.lessons:
        assert lesson.id in found, f"docs/{name}.md has no '## Lesson {lesson.id} · ...' section"
        assert found[lesson.id].strip() == lesson.title, (
            f"docs/{name}.md calls lesson {lesson.id} {found[lesson.id]!r}; course.yml calls it {lesson.title!r}"
        )
    extra = sorted(set(found) - {lesson.id for lesson in course.lessons})
    assert not extra, f"docs/{name}.md has sections for lessons that course.yml does not list: {extra}"


def test_instructor_guide_covers_timing_misconception_prompts_and_written_answers(
    docs: dict[str, str],
) -> None:
    for heading, body in _sections(docs["instructor-guide"], "##").items():
        if not heading.startswith("Lesson "):
            continue
        for field in ("**Plan for:**", "**Misconception:**", "**Discussion prompts", "**Written answer"):
            assert field in body, f"docs/instructor-guide.md, {heading}: no {field} entry"


def test_readme_links_the_docs(root: Path) -> None:
    readme = (root / "README.md").read_text(encoding="utf-8")
    for name in ("glossary", "reading-list", "instructor-guide"):
        assert f"docs/{name}.md" in readme, f"README.md does not link docs/{name}.md"
