"""Graded robustness cells cannot be passed by masking gradients.

For each ``tests/wrong_answers/<slug>.masking.yml``, every answer of ``masking`` (squeezing, a
rounding layer, distillation at T = 100, input noise, logits times 1e6) and of ``honest``
(adversarial training) is tried in place of the solution cell ``cell`` of the reference notebook,
graded by the notebook's own test cells (tests/answer_harness.py: one walk of the notebook, one
forked kernel per answer). Each masking answer must fail every cell in ``lose``; each honest
answer must pass them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from answer_harness import Answer, graded_spans, run_answers

import labkit as lk

ROOT = Path(__file__).resolve().parents[1]
COURSE = lk.course.load_course(ROOT / "course.yml")
SPECS = sorted((ROOT / "tests" / "wrong_answers").glob("*.masking.yml"))


def test_every_masking_spec_names_a_ready_lesson() -> None:
    ready = {lesson.slug for lesson in COURSE.ready_lessons}
    assert SPECS, "no masking answers found"
    for spec in SPECS:
        slug = spec.name.removesuffix(".masking.yml")
        assert slug in ready, f"{spec.name}: no such ready lesson"
        data = yaml.safe_load(spec.read_text(encoding="utf-8"))
        assert data["masking"] and data["honest"] and data["lose"], f"{spec.name}: incomplete"
        graded = graded_spans(slug).get(data["cell"])
        assert graded is not None, f"{spec.name}: {data['cell']!r} is not a solution cell of {slug}"
        missing = set(data["lose"]) - set(graded)
        assert not missing, (
            f"{spec.name}: {sorted(missing)} do not grade {data['cell']!r} (expected some of {graded})"
        )


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=[s.name.removesuffix(".masking.yml") for s in SPECS])
def test_masking_answers_fail_and_honest_answers_pass(spec: Path) -> None:
    slug = spec.name.removesuffix(".masking.yml")
    data = yaml.safe_load(spec.read_text(encoding="utf-8"))
    answers = [
        *(Answer(data["cell"], f"masking-{k}", v) for k, v in data["masking"].items()),
        *(Answer(data["cell"], f"honest-{k}", v) for k, v in data["honest"].items()),
    ]
    results = run_answers(slug, answers)
    for result in results:
        print(f"\n{result.describe()} ({result.seconds:.1f} s)")
    for result in results:
        name, failed = result.answer.name, set(result.failed)
        for grade_id in data["lose"]:
            if name.startswith("masking-"):
                assert grade_id in failed, (
                    f"{slug}: the masking answer {name} passes {grade_id}; expected the graded attack "
                    f"suite to see through it\n{result.describe()}"
                )
            else:
                assert grade_id not in failed, (
                    f"{slug}: the honest answer {name} fails {grade_id}; expected full marks\n{result.describe()}"
                )
