"""Check-your-understanding quizzes cannot be passed without knowing the answers.

Every lettered question of the source notebooks (a question ``**Qn**`` in a Markdown cell whose
options are written ``(a) ... (b) ...``, inline or as a list, and whose hidden test checks
``check_answer("<lesson>-qn", qn)``) is parsed here; its right letter is read from the
instructor's answer key (``instructor/answer_key.yml``, the key the checks are sealed from), and
checked through the keyed :func:`labkit.course.check_answer` itself. Then every content-free
strategy (always a, b, c or d; always the longest option; always the shortest option; and, so
that rewriting the options cannot overshoot, one of the options that are neither the longest nor
the shortest) is scored.

Scores are in points. A question is worth its test cell's nbgrader ``points`` divided by the
number of quiz questions that cell checks (one point each in every notebook today). nbgrader
scores a cell all or nothing, so this per-question split is an upper bound of what a strategy
really earns. Free-form questions (ids, numbers, lists) count towards a lesson's quiz points, and
a content-free strategy earns nothing on them. When several options tie for longest (or
shortest), or several sit in the middle, the strategy picks one of them at random: it earns the
expected share.

Each strategy may score at most chance (the sum of ``points / k`` over the lettered questions,
``k`` options each) plus 10% of the quiz points:

* per lesson, for every lesson with at least three lettered questions;
* for the lessons 00-16 pooled as one course-wide quiz, which also covers the lessons with only
  one or two lettered questions (lesson 12 has one: any letter strategy either gets it or not,
  so a per-lesson bound would be meaningless there);
* for the certification exam (lesson 17) on its own.

Course-wide (lessons and exam together), the right option is the longest one in at most about
``1/k`` of the questions (plus a margin of 5% of the questions), and the shortest one likewise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from labkit.course.answers import Expected, check_answer, load_answer_key

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "solutions").glob("*/*.ipynb"))
EXAM = "17"
MARGIN = 0.10  # of the quiz points, above chance
LENGTH_MARGIN = 0.05  # of the questions, above 1/k, for "the right option is the longest"
MIN_LETTERED = 3  # a lesson with fewer lettered questions is judged with the course as a whole

STRATEGIES = ("always a", "always b", "always c", "always d", "longest", "shortest", "middle")

_HEADER = re.compile(r"\*\*Q(\d+)\.?\*\*")
_OPTION = re.compile(r"(?:^|(?<=\s))(?:-\s+)?\(([a-z])\)\s")
_CHECK = re.compile(r"check_(?:answer|number)\(\s*\"(\d\d)-q(\d+)\",\s*([^,()]+?)\s*[,)]")
KEY = load_answer_key(ROOT)


@dataclass(frozen=True)
class Question:
    """One lettered question: its options in order, the right letter and its worth in points."""

    lesson: str
    number: int
    options: tuple[str, ...]
    answer: str
    points: float = 1.0

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple("abcdefgh"[: len(self.options)])

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(len(_plain(o)) for o in self.options)


@dataclass(frozen=True)
class Quiz:
    """The quiz of one notebook: its lettered questions and all its quiz points."""

    lesson: str
    questions: tuple[Question, ...]
    points: float


def _plain(text: str) -> str:
    """An option as a reader sees it: no Markdown marks, single spaces, no closing punctuation."""
    return " ".join(re.sub(r"[`*_]", "", text).split()).rstrip(";.,")


def parse_options(block: str) -> list[str]:
    """The options ``(a) ... (b) ...`` of one question's text, or ``[]`` if it has none.

    The options run from the first ``(a)`` to the first blank line after it, inline or as a list.
    """
    first = next((m for m in _OPTION.finditer(block) if m.group(1) == "a"), None)
    if first is None:
        return []
    body = re.split(r"\n\s*\n", block[first.start() :], maxsplit=1)[0]
    marks = list(_OPTION.finditer(body))
    if [m.group(1) for m in marks] != list("abcdefgh"[: len(marks)]) or len(marks) < 2:
        return []
    ends = [m.start() for m in marks[1:]] + [len(body)]
    return [body[m.end() : end].strip() for m, end in zip(marks, ends, strict=True)]


def parse_markdown(text: str) -> dict[int, list[str]]:
    """Question number -> its options, for every ``**Qn**`` question with lettered options."""
    heads = list(_HEADER.finditer(text))
    found = {}
    ends = [h.start() for h in heads[1:]] + [len(text)] if heads else []
    for head, end in zip(heads, ends, strict=True):
        options = parse_options(text[head.end() : end])
        if options:
            found[int(head.group(1))] = options
    return found


def parse_notebook(nb: nbformat.NotebookNode, lesson: str, key: dict[str, Expected] | None = None) -> Quiz:
    """The quiz of one source notebook (see the module docstring for what counts), its right
    letters read from ``key`` (default: the course's answer key)."""
    key = KEY if key is None else key
    options: dict[int, list[str]] = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            options.update(parse_markdown(cell.source))
    questions, total = [], 0.0
    for cell in nb.cells:
        grading = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not grading.get("grade"):
            continue
        checks = [m for m in _CHECK.finditer(cell.source) if m.group(1) == lesson]
        if not checks:
            continue
        total += grading.get("points", 0)
        share = grading.get("points", 0) / len(checks)
        for m in checks:
            number, expr, qid = int(m.group(2)), m.group(3).strip(), f"{m.group(1)}-q{m.group(2)}"
            opts = options.get(number)
            if not opts or not re.fullmatch(r"q\d+", expr) or qid not in key:
                continue
            right = [x for x in "abcdefgh"[: len(opts)] if str(key[qid].value).strip().lower() == x]
            if len(right) == 1:
                questions.append(Question(lesson, number, tuple(opts), right[0], share))
    return Quiz(lesson, tuple(sorted(questions, key=lambda q: q.number)), total)


def _pick(question: Question, strategy: str) -> float:
    """The expected share of the question's points that a content-free strategy earns."""
    if strategy.startswith("always "):
        return float(strategy[-1] == question.answer)
    lengths = question.lengths
    if strategy == "middle":
        tied = [x for x, n in zip(question.letters, lengths, strict=True) if min(lengths) < n < max(lengths)]
        tied = tied or list(question.letters)
    else:
        target = max(lengths) if strategy == "longest" else min(lengths)
        tied = [x for x, n in zip(question.letters, lengths, strict=True) if n == target]
    return (question.answer in tied) / len(tied)


def strategy_scores(questions: Iterable[Question]) -> dict[str, float]:
    """Points each content-free strategy earns on ``questions``, and ``chance``."""
    qs = list(questions)
    scores = {s: sum(q.points * _pick(q, s) for q in qs) for s in STRATEGIES}
    scores["chance"] = sum(q.points / len(q.options) for q in qs)
    return scores


def bound(questions: Sequence[Question], quiz_points: float) -> float:
    """The most a content-free strategy may score: chance plus MARGIN of the quiz points."""
    return sum(q.points / len(q.options) for q in questions) + MARGIN * quiz_points


def load_quizzes(paths: Iterable[Path] = SOURCES) -> dict[str, Quiz]:
    """Lesson id -> its quiz, for the given source notebooks."""
    quizzes = {}
    for path in paths:
        lesson = path.parent.name[:2]
        quizzes[lesson] = parse_notebook(nbformat.read(path, as_version=4), lesson)
    return quizzes


QUIZZES = load_quizzes()
LESSONS = sorted(k for k in QUIZZES if k != EXAM)


def _groups() -> dict[str, tuple[list[Question], float]]:
    """The groups that are held to the bound: big-enough lessons, all lessons, the exam."""
    groups = {
        k: (list(q.questions), q.points)
        for k, q in QUIZZES.items()
        if k != EXAM and len(q.questions) >= MIN_LETTERED
    }
    groups["lessons 00-16"] = (
        [x for k in LESSONS for x in QUIZZES[k].questions],
        sum(QUIZZES[k].points for k in LESSONS),
    )
    groups["exam"] = (list(QUIZZES[EXAM].questions), QUIZZES[EXAM].points)
    return groups


def _too_high(questions: Sequence[Question], quiz_points: float) -> dict[str, float]:
    limit = bound(questions, quiz_points)
    scores = strategy_scores(questions)
    return {s: scores[s] for s in STRATEGIES if scores[s] > limit + 1e-9}


def test_the_parser_finds_the_quizzes() -> None:
    assert QUIZZES[EXAM].points == 32, "the exam has 32 one-point quiz questions"
    assert len(QUIZZES[EXAM].questions) == 24, "the exam has 24 lettered questions"
    lettered = sum(len(QUIZZES[k].questions) for k in LESSONS)
    assert lettered >= 50, f"only {lettered} lettered questions found in the lessons"
    for quiz in QUIZZES.values():
        for q in quiz.questions:
            assert len(q.options) == 4, f"{q.lesson}-q{q.number}: {len(q.options)} options"
            assert all(len(_plain(o)) >= 1 for o in q.options), f"{q.lesson}-q{q.number}: an empty option"


@pytest.mark.parametrize("group", sorted(_groups()))
def test_content_free_strategies_score_at_most_chance_plus_margin(group: str) -> None:
    questions, quiz_points = _groups()[group]
    limit = bound(questions, quiz_points)
    assert not _too_high(questions, quiz_points), (
        f"{group}: content-free strategies score {_too_high(questions, quiz_points)} of "
        f"{quiz_points:g} quiz points, above chance + {MARGIN:.0%} = {limit:.2f}"
    )


@pytest.mark.parametrize("which", ["longest", "shortest"])
def test_the_right_option_is_not_singled_out_by_its_length(which: str) -> None:
    questions = [q for quiz in QUIZZES.values() for q in quiz.questions]
    pick = max if which == "longest" else min
    hits = [
        f"{q.lesson}-q{q.number}"
        for q in questions
        if q.lengths["abcdefgh".index(q.answer)] == pick(q.lengths)
    ]
    limit = sum(1 / len(q.options) for q in questions) + LENGTH_MARGIN * len(questions)
    assert len(hits) <= limit, (
        f"the right option is the {which} (or tied for it) in {len(hits)} of {len(questions)} "
        f"questions, more than {limit:.1f}: {hits}"
    )


def test_the_scorer_reports_a_length_biased_quiz() -> None:
    """A synthetic quiz where the right option is always the longest must fail the checks."""
    biased = [
        Question("99", n, ("short", "a bit longer", "the right answer, the longest of all", "mid one"), "c")
        for n in range(1, 9)
    ]
    scores = strategy_scores(biased)
    assert scores["longest"] == 8 and scores["always c"] == 8 and scores["shortest"] == 0
    assert scores["middle"] == 0 and scores["chance"] == 2
    assert set(_too_high(biased, quiz_points=8)) == {"longest", "always c"}
    # the same quiz with the right option moved to the middle by length: now the middle strategy wins
    hedged = [Question("99", q.number, q.options, "b") for q in biased]
    assert set(_too_high(hedged, quiz_points=8)) == {"always b", "middle"}
    balanced = [
        Question("99", n, ("one", "two two", "three three", "four four four"), "abcd"[n % 4])
        for n in range(8)
    ]
    assert not _too_high(balanced, quiz_points=8)


def test_the_parser_reads_inline_and_listed_options() -> None:
    inline = "**Q1.** Which?\n(a) one (b) two, with (e.g.) brackets\n(c) three (d) four\n\nA later paragraph."
    listed = "**Q2** · Which?\n\n- (a) one\n- (b) two\n- (c) three\n- (d) four\n\n**Q3** · Give a number."
    assert parse_markdown(inline) == {1: ["one", "two, with (e.g.) brackets", "three", "four"]}
    assert parse_markdown(listed) == {2: ["one", "two", "three", "four"]}
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(inline),
        nbformat.v4.new_code_cell('assert check_answer("99-q1", q1), "Q1 is not right"'),
    ]
    nb.cells[1].metadata["nbgrader"] = {"grade": True, "points": 1}
    (q,) = parse_notebook(nb, "99", {"99-q1": Expected("C")}).questions
    assert (q.answer, q.points) == ("c", 1)
    assert q.lengths == (3, 25, 5, 4)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.parent.name)
def test_the_reference_solution_picks_the_letters_the_hidden_tests_accept(path: Path) -> None:
    """A cheap guard for rewritten options: the solution cell and the stored hash agree."""
    lesson = path.parent.name[:2]
    nb = nbformat.read(path, as_version=4)
    solved: dict[str, str] = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source:
            body = cell.source.split("### BEGIN SOLUTION", 1)[1]
            solved.update(re.findall(r"^q(\d+)\s*=\s*[\"']([a-z])[\"']", body, flags=re.M))
    for q in QUIZZES[lesson].questions:
        assert solved.get(str(q.number)) == q.answer, (
            f"{lesson}-q{q.number}: the solution cell disagrees with the hash"
        )


def test_the_keyed_check_accepts_exactly_the_letter_the_scores_are_computed_from() -> None:
    """The letters scored above are the ones the hidden tests accept, through the sealed key."""
    for quiz in QUIZZES.values():
        for q in quiz.questions:
            qid = next(i for i in (f"{q.lesson}-q{q.number}", f"{q.lesson}-q{q.number:02d}") if i in KEY)
            accepted = [x for x in q.letters if check_answer(qid, x)]
            assert accepted == [q.answer], (
                f"{qid}: the keyed check accepts {accepted}, the key says {q.answer}"
            )
