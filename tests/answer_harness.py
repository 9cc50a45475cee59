"""Try many answers to a lesson's solution cells in one run of its reference notebook.

Grading a wrong answer by executing the whole notebook costs the whole notebook, once per
answer. This harness runs the reference notebook once, in one Jupyter kernel, and tries the
answers to a solution cell just before that cell runs: for each answer the kernel process forks
(``os.fork`` inside the kernel), and the child runs the answer and then the cells that grade it,
from a copy of the namespace the reference built so far. The parent waits (a child that runs past
its timeout is killed, and the answer counts as failed), then the reference cell runs and the walk
goes on.

A test cell passes iff it raises nothing, which is what nbgrader scores (its other trap, stderr
output, is recorded in :attr:`CellOutcome.stderr` but does not decide).

What the child runs after the answer: the cells between the solution cell and the next solution
cell, up to the last graded test cell among them (or up to ``through``), non-graded cells included
because test cells read what they compute (``hardened = harden(...)``). Hidden tests run too: they
are plain comments-delimited code in the reference source.

Example
-------
>>> answer = Answer("accuracy", "train-mode", "def accuracy(m, x, y): ...")
>>> run_answers("00-welcome", [answer])[0].failed  # doctest: +SKIP
['accuracy_tests']
"""

from __future__ import annotations

import json
import os
import tempfile
import textwrap
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml
from IPython.core.inputtransformer2 import TransformerManager
from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parents[1]
#: The cohort secret the autograding tests use, so quiz cells can check the answer key.
TEST_COHORT_SECRET = "c0" * 32
#: Seconds one answer (its source and the cells that grade it) may run before it is killed.
DEFAULT_ANSWER_TIMEOUT = 240.0
#: Seconds one reference cell may run.
REFERENCE_CELL_TIMEOUT = 900.0


class HarnessError(RuntimeError):
    """The harness could not do its walk: a bad answer spec, a kernel that died, a reference
    cell that failed (then every result after it would be meaningless)."""


@dataclass(frozen=True)
class Answer:
    """One answer to try in place of the solution cell ``cell`` of a lesson.

    ``through`` names the last cell (a grade id) that the child runs after the answer; by default
    the last graded test cell before the next solution cell.
    """

    cell: str
    name: str
    source: str
    through: str | None = None


@dataclass(frozen=True)
class CellOutcome:
    """What one cell did after an answer: passed (raised nothing) or the first line of its error."""

    grade_id: str
    graded: bool
    passed: bool
    error: str = ""
    stderr: str = ""


@dataclass
class AnswerResult:
    """The outcome of one :class:`Answer`: one :class:`CellOutcome` per cell the child ran."""

    lesson: str
    answer: Answer
    cells: list[CellOutcome] = field(default_factory=list)
    problem: str = ""
    """Why the child reported nothing (timeout, crash); then every graded cell counts as failed."""
    seconds: float = 0.0
    graded_ids: tuple[str, ...] = ()
    """The graded test cells that judge this answer."""

    @property
    def tests(self) -> dict[str, CellOutcome]:
        """The graded test cells by grade id."""
        return {c.grade_id: c for c in self.cells if c.graded}

    @property
    def failed(self) -> list[str]:
        """Grade ids of the graded cells this answer failed (all of them if the child died)."""
        if self.problem:
            return list(self.graded_ids)
        return [c.grade_id for c in self.cells if c.graded and not c.passed]

    def describe(self) -> str:
        """A line per cell, for failure messages: which cell, passed or the error it raised."""
        head = f"lesson {self.lesson}, cell {self.answer.cell!r}, answer {self.answer.name!r}"
        if self.problem:
            return f"{head}: {self.problem}"
        lines = [head + ":"]
        for c in self.cells:
            kind = "test" if c.graded else "cell"
            state = "passed" if c.passed else f"FAILED: {c.error}"
            lines.append(f"  {kind} {c.grade_id}: {state}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Step:
    grade_id: str
    graded: bool
    source: str


def _nbgrader(cell: Any) -> dict[str, Any]:
    meta: dict[str, Any] = cell.get("metadata", {}).get("nbgrader", {})
    return meta


def notebook_path(slug: str) -> Path:
    """The reference notebook of a lesson (the one ``.ipynb`` in ``solutions/<slug>``)."""
    found = sorted((ROOT / "solutions" / slug).glob("*.ipynb"))
    if len(found) != 1:
        raise HarnessError(f"lesson {slug}: expected one notebook in solutions/{slug}, found {len(found)}")
    return found[0]


def graded_spans(slug: str) -> dict[str, list[str]]:
    """For each solution cell, the grade ids of the graded test cells that follow it before the
    next solution cell (the cells an answer to it is judged by)."""
    nb = nbformat.read(notebook_path(slug), as_version=4)
    spans: dict[str, list[str]] = {}
    current: str | None = None
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if cell.cell_type != "code":
            continue
        if meta.get("solution"):
            current = str(meta["grade_id"])
            spans[current] = []
        elif meta.get("grade") and current is not None:
            spans[current].append(str(meta["grade_id"]))
    return spans


def cell_answers(spec: Path) -> list[Answer]:
    """The answers of a ``tests/wrong_answers/<slug>.cells.yml`` spec: for each solution cell, its
    ``wrong`` and ``valid`` answers, named ``wrong:<name>`` and ``valid:<name>``."""
    data: dict[str, Any] = yaml.safe_load(spec.read_text(encoding="utf-8"))
    answers: list[Answer] = []
    for cell, kinds in data.items():
        unknown = set(kinds) - {"wrong", "valid"}
        if unknown:
            raise HarnessError(
                f"{spec.name}: cell {cell!r} has {sorted(unknown)}; expected only 'wrong' and 'valid'"
            )
        for kind in ("wrong", "valid"):
            answers.extend(
                Answer(cell, f"{kind}:{name}", source) for name, source in (kinds.get(kind) or {}).items()
            )
    return answers


def check_sources(slug: str, answers: Sequence[Answer]) -> None:
    """Raise :class:`HarnessError` unless every answer names a solution cell of the lesson and its
    source is Python that compiles (after IPython's transforms)."""
    spans = graded_spans(slug)
    manager = TransformerManager()
    for answer in answers:
        where = f"lesson {slug}, cell {answer.cell!r}, answer {answer.name!r}"
        if answer.cell not in spans:
            raise HarnessError(f"{where}: no such solution cell (expected one of {sorted(spans)})")
        if not spans[answer.cell] and answer.through is None:
            raise HarnessError(
                f"{where}: no graded test cell follows this cell before the next solution cell"
            )
        try:
            compile(manager.transform_cell(answer.source), f"<{answer.name}>", "exec")
        except SyntaxError as err:
            raise HarnessError(f"{where}: the answer is not valid Python ({err})") from None


def _plan(nb: Any, index: int, answer: Answer) -> list[_Step]:
    """The cells the child runs after ``answer`` replaces the solution cell at ``index``."""
    steps: list[_Step] = []
    last_graded = -1
    for cell in nb.cells[index + 1 :]:
        if cell.cell_type != "code":
            continue
        meta = _nbgrader(cell)
        if meta.get("solution"):
            break
        grade_id = str(meta.get("grade_id", f"cell {len(steps) + index + 1}"))
        graded = bool(meta.get("grade"))
        steps.append(_Step(grade_id, graded, cell.source))
        if graded:
            last_graded = len(steps) - 1
        if answer.through is not None and grade_id == answer.through:
            return steps
    if answer.through is not None:
        raise HarnessError(
            f"cell {answer.cell!r}: {answer.through!r} does not follow it before the next solution cell"
        )
    return steps[: last_graded + 1]


# Runs inside the kernel: defines the function that forks and tries one answer. The child never
# touches the kernel's sockets: its stdout/stderr go to per-step buffers and a log file, display
# calls are dropped, and it leaves with os._exit.
_KERNEL_HELPER = textwrap.dedent(
    """
    def _labkit_try_answer(plan_json, timeout):
        import io, json, os, signal, sys, time, traceback
        plan = json.loads(plan_json)
        sys.stdout.flush()
        sys.stderr.flush()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            results = []
            try:
                log = open(plan["log"], "w")
                os.dup2(log.fileno(), 1)
                os.dup2(log.fileno(), 2)
                ip = get_ipython()
                ip.display_pub.publish = lambda *a, **k: None
                sys.displayhook = lambda value: None
                for step in plan["steps"]:
                    buffer = io.StringIO()
                    sys.stdout, sys.stderr = log, buffer
                    try:
                        code = compile(ip.transform_cell(step["source"]), "<" + step["grade_id"] + ">", "exec")
                        exec(code, ip.user_ns)
                        passed, error = True, ""
                    except BaseException as err:
                        passed = False
                        lines = traceback.format_exception_only(type(err), err)
                        error = (lines[-1] if lines else repr(err)).strip().splitlines()[0]
                    results.append({"grade_id": step["grade_id"], "graded": step["graded"], "passed": passed,
                                    "error": error, "stderr": buffer.getvalue()[-2000:]})
                tmp = plan["result"] + ".tmp"
                with open(tmp, "w") as out:
                    json.dump(results, out)
                os.replace(tmp, plan["result"])
            finally:
                os._exit(0)
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return -1.0
            time.sleep(0.02)
    """
)


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"LABKIT_PROFILE": "ci", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"})
    env.setdefault("LABKIT_COHORT_SECRET", TEST_COHORT_SECRET)
    env.pop("JPY_PARENT_PID", None)
    return env


class _Kernel:
    """A started kernel and its client, executing code and raising on errors."""

    def __init__(self, cwd: Path) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=_kernel_env(), cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)

    def run(self, code: str, *, timeout: float, what: str) -> None:
        errors: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "error":
                errors.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")

        try:
            reply = self.client.execute_interactive(
                code, timeout=timeout, output_hook=hook, store_history=False
            )
        except TimeoutError:
            raise HarnessError(f"{what}: did not finish within {timeout:g} s") from None
        if reply["content"]["status"] != "ok":
            raise HarnessError(f"{what} raised {errors[0] if errors else reply['content'].get('ename')}")

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def run_answers(
    slug: str, answers: Sequence[Answer], *, timeout: float = DEFAULT_ANSWER_TIMEOUT
) -> list[AnswerResult]:
    """Walk the reference notebook of ``slug`` once and try every answer before its cell.

    Returns one :class:`AnswerResult` per answer, in the order given. Raises
    :class:`HarnessError` if an answer does not compile or names no solution cell, or if a
    reference cell fails.
    """
    check_sources(slug, answers)
    path = notebook_path(slug)
    nb = nbformat.read(path, as_version=4)
    by_cell: dict[str, list[Answer]] = {}
    for answer in answers:
        by_cell.setdefault(answer.cell, []).append(answer)
    spans = graded_spans(slug)
    results: dict[tuple[str, str], AnswerResult] = {}
    kernel = _Kernel(path.parent)
    try:
        with tempfile.TemporaryDirectory(prefix="answers-") as scratch:
            kernel.run(_KERNEL_HELPER, timeout=60, what="the harness helper")
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                grade_id = _nbgrader(cell).get("grade_id")
                for number, answer in enumerate(by_cell.get(str(grade_id), []) if grade_id else []):
                    result = _try(
                        kernel, slug, nb, index, answer, Path(scratch) / f"{grade_id}-{number}", timeout
                    )
                    result.graded_ids = tuple(spans[answer.cell])
                    results[(answer.cell, answer.name)] = result
                kernel.run(
                    cell.source,
                    timeout=REFERENCE_CELL_TIMEOUT,
                    what=f"lesson {slug}, reference cell {index} ({grade_id or 'ungraded'})",
                )
                if by_cell and all((a.cell, a.name) in results for a in answers):
                    break
    finally:
        kernel.close()
    return [results[(a.cell, a.name)] for a in answers]


def _try(
    kernel: _Kernel, slug: str, nb: Any, index: int, answer: Answer, stem: Path, timeout: float
) -> AnswerResult:
    steps = [_Step(answer.cell, False, answer.source), *_plan(nb, index, answer)]
    result_path, log_path = stem.with_suffix(".json"), stem.with_suffix(".log")
    plan = {
        "steps": [{"grade_id": s.grade_id, "graded": s.graded, "source": s.source} for s in steps],
        "result": str(result_path),
        "log": str(log_path),
    }
    code = f"_labkit_try_answer({json.dumps(json.dumps(plan))}, {float(timeout)!r})"
    started = time.perf_counter()
    kernel.run(code, timeout=timeout + 60, what=f"lesson {slug}, forking for answer {answer.name!r}")
    result = AnswerResult(lesson=slug, answer=answer, seconds=time.perf_counter() - started)
    if not result_path.exists():
        tail = log_path.read_text(errors="replace")[-500:] if log_path.exists() else ""
        result.problem = (
            f"the answer reported nothing (ran past {timeout:g} s or crashed){': ' + tail if tail else ''}"
        )
        return result
    outcomes: list[Mapping[str, Any]] = json.loads(result_path.read_text())
    result.cells = [CellOutcome(**o) for o in outcomes]
    return result
