"""The ATLAS catalogue and the threat map."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest

import labkit as lk
from labkit import atlas


def test_every_lesson_atlas_id_is_catalogued(course: lk.course.Course) -> None:
    known = set(atlas.TECHNIQUES) | set(atlas.MITIGATIONS)
    for lesson in course.lessons:
        for tid in lesson.atlas:
            assert tid in known, f"{lesson.slug}: {tid} missing from labkit.atlas"


def test_describe() -> None:
    assert atlas.describe("AML.T0015") == "AML.T0015 Evade AI Model"
    assert atlas.describe("AML.M0006") == "AML.M0006 Use Ensemble Methods"
    with pytest.raises(ValueError, match="unknown ATLAS id 'AML.T9999'"):
        atlas.describe("AML.T9999")


def test_mitigation_lists_follow_the_source_documents() -> None:
    hardening = {t for t, e in atlas.TECHNIQUES.items() if "AML.M0003" in e.mitigated_by}
    ensembles = {t for t, e in atlas.TECHNIQUES.items() if "AML.M0006" in e.mitigated_by}
    assert len(hardening) == 8 and len(ensembles) == 11


def test_threat_map_places_every_technique(course: lk.course.Course) -> None:
    fig = atlas.threat_map(course)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    for tid in atlas.TECHNIQUES:
        assert tid in texts
    taught = atlas.lessons_by_technique(course)
    assert "01" in taught["AML.T0043.000"] and "07" in taught["AML.T0051"]
