"""Graded robustness cells cannot be passed by masking gradients.

For each ``tests/wrong_answers/<slug>.masking.yml``, the reference notebook is graded with its
``cell`` replaced by every answer of ``masking`` (squeezing, a rounding layer, distillation at
T = 100, input noise, logits times 1e6) and of ``honest`` (adversarial training). Each masking
answer must lose the points of every cell in ``lose``; each honest answer must keep them.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml

import labkit as lk

ROOT = Path(__file__).resolve().parents[1]
COURSE = lk.course.load_course(ROOT / "course.yml")
SPECS = sorted((ROOT / "tests" / "wrong_answers").glob("*.masking.yml"))


def _variant(slug: str, cell: str, source: str, dest: Path) -> Path:
    lesson = COURSE.lesson(slug)
    nb = nbformat.read(ROOT / "solutions" / slug / str(lesson.notebook), as_version=4)
    cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == cell]
    assert len(cells) == 1, f"{slug}: no single solution cell {cell!r}"
    cells[0].source = source
    nbformat.write(nb, dest)
    return dest


def test_every_masking_spec_names_a_ready_lesson() -> None:
    ready = {lesson.slug for lesson in COURSE.ready_lessons}
    assert SPECS, "no masking answers found"
    for spec in SPECS:
        assert spec.name.removesuffix(".masking.yml") in ready, f"{spec.name}: no such ready lesson"
        data = yaml.safe_load(spec.read_text(encoding="utf-8"))
        assert data["masking"] and data["honest"] and data["lose"], f"{spec.name}: incomplete"


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=[s.name.removesuffix(".masking.yml") for s in SPECS])
def test_masking_answers_fail_and_honest_answers_pass(spec: Path, tmp_path: Path) -> None:
    slug = spec.name.removesuffix(".masking.yml")
    data = yaml.safe_load(spec.read_text(encoding="utf-8"))
    answers = {
        **{f"masking-{k}": v for k, v in data["masking"].items()},
        **{f"honest-{k}": v for k, v in data["honest"].items()},
    }
    submissions = {
        who: _variant(slug, data["cell"], source, tmp_path / f"{who}.ipynb")
        for who, source in answers.items()
    }
    results = lk.course.autograde(COURSE, slug, submissions)
    for who, result in results.items():
        scores = ", ".join(f"{g}={result.score_of(g):g}" for g in data["lose"])
        print(f"\n{slug} {who}: {scores}")
    for who, result in results.items():
        for grade_id in data["lose"]:
            full = next(c.max_score for c in result.cells if c.grade_id == grade_id)
            if who.startswith("masking-"):
                assert result.score_of(grade_id) < full, f"{slug}: the masking answer {who} keeps {grade_id}"
            else:
                assert result.score_of(grade_id) == full, f"{slug}: the honest answer {who} loses {grade_id}"
