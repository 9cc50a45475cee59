"""How a graded notebook is run and scored: nbgrader's steps as ``labkit grade`` runs them.

The worker (:mod:`labkit.course.sandbox`) builds nbgrader's autograde pipeline from these:

* :func:`guarded_execute_class`: the Execute step with two kernels (the learner's, in the
  sandbox, and the trusted checker that runs the test cells, :mod:`labkit.course.cellplan`), an
  output cap over every message type, the execute reply of each graded cell recorded for the
  scorer, advisory integrity checks (:mod:`labkit.course.integrity`) and timeouts that restart
  a kernel which ignores the interrupt, keeping the points earned before;
* :func:`strict_grades_class` with :func:`strict_score`: a test cell scores only when its reply
  is ``ok`` with no error output; stderr costs nothing and a non-numeric ``execute_result``
  never scores;
* :func:`test_feedback_class`: feedback that shows the released tests and a pass/fail line,
  never what hidden test code printed or a traceback through it.

:data:`EVENTS` collects what happened to the submission (for its result), :data:`REPLIES` the
execute reply of each graded cell. Both belong to the one submission a worker grades.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

__all__ = [
    "ANSI",
    "CHECKER_KERNEL",
    "EVENTS",
    "REPLIES",
    "error_line",
    "error_output",
    "guarded_execute_class",
    "strict_grades_class",
    "strict_score",
    "test_feedback_class",
]


#: The kernel spec name of the trusted checker kernel.
CHECKER_KERNEL = "labkit-checker"


EVENTS: list[str] = []


# Per graded cell: the status of the kernel's execute reply ("ok", "error", "aborted", or
# "none" when no reply came), filled in by the guarded Execute and read by the strict scorer.
REPLIES: dict[str, str] = {}


def error_output(ename: str, evalue: str) -> Any:
    from nbformat.notebooknode import NotebookNode

    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def guarded_execute_class(
    output_bytes: int, *, plan: Any = None, restart_grace: float = 5.0, guard_seconds: int = 60
) -> type:
    """nbgrader's Execute preprocessor with two kernels, an output cap over every message type,
    the execute reply of each graded cell recorded for the scorer, and timeouts that restart a
    kernel which does not stop when interrupted.

    With ``plan`` (:func:`labkit.course.cellplan.plan_cells` of the released notebook) every
    test cell runs in the trusted checker kernel, after the lesson's trusted cells and with the
    learner names it reads bound from the learner's kernel (:mod:`labkit.course.remote`); the
    learner's kernel runs every other cell, then the visible part of each test cell (its
    outcome ignored) so that later cells see the names they saw before. Without ``plan`` every
    cell runs in the learner's kernel (the old single-kernel grading, for tests).
    """
    import asyncio
    from queue import Empty

    from jupyter_client.manager import AsyncKernelManager
    from nbclient.exceptions import DeadKernelError
    from nbclient.util import ensure_async, run_sync
    from nbformat.notebooknode import NotebookNode
    from nbgrader.preprocessors import Execute

    class KernelStuck(Exception):
        """The cell ran past its time limit and the kernel did not answer the interrupt."""

    class GuardedExecute(Execute):
        km: Any
        kc: Any
        _snapshot_taken = False
        _dead = False
        _tampered: str | None = None
        _out_bytes = 0
        _interrupted = False
        _interrupt_task: Any = None
        # The trusted checker kernel
        _t_km: Any = None
        _t_kc: Any = None
        _t_ready: Any = None
        _t_dead = False
        _t_done: set[str] = set()  # noqa: RUF012 - replaced per instance
        _t_history: list[str] = []  # noqa: RUF012 - replaced per instance
        _t_segment: Any = None

        async def async_start_new_kernel(self, **kwargs: Any) -> None:
            await super().async_start_new_kernel(**kwargs)
            if plan is None:
                return
            # The checker starts while the learner's kernel does; it runs the trusted cells
            # before the first test in the background while the learner's cells run.
            self._t_done, self._t_history = set(), []
            # The checker listens on Unix sockets in a folder of the worker's that the learner's
            # sandbox does not hold, not on the loopback it shares with the learner's kernel:
            # anyone on that loopback could subscribe to its IOPub channel and read the source
            # of every test it runs (hidden tests included) and what they print.
            ipc = Path(os.environ.get("JUPYTER_RUNTIME_DIR", ".")).parent / "checker-ipc"
            ipc.mkdir(mode=0o700, exist_ok=True)
            self._t_km = AsyncKernelManager(kernel_name=CHECKER_KERNEL, transport="ipc", ip=str(ipc / "k"))
            env = {**os.environ, "LABKIT_PEER_CONNECTION": str(self.km.connection_file)}
            await ensure_async(self._t_km.start_kernel(env=env))
            self._t_kc = self._t_km.client()
            self._t_kc.start_channels()
            self._t_ready = asyncio.ensure_future(self._t_kc.wait_for_ready(timeout=self.startup_timeout))
            self._t_segment = asyncio.ensure_future(self._t_catch_up(None))

        async def _async_cleanup_kernel(self) -> None:
            if self._t_km is not None:
                with contextlib.suppress(Exception):
                    if self._t_segment is not None:
                        self._t_segment.cancel()
                    self._t_kc.stop_channels()
                    await ensure_async(self._t_km.shutdown_kernel(now=True))
                self._t_km = self._t_kc = None
            await super()._async_cleanup_kernel()

        async def _quiet(self, kc: Any, km: Any, code: str, timeout: float) -> tuple[str, str]:
            """Run ``code`` in a kernel, its output discarded: (reply status, first error)."""
            errors: list[str] = []

            def hook(msg: dict[str, Any]) -> None:
                if msg.get("msg_type") == "error" and not errors:
                    content = msg.get("content", {})
                    errors.append(f"{content.get('ename')}: {str(content.get('evalue'))[:200]}")

            try:
                reply = await kc.execute_interactive(
                    code, store_history=False, allow_stdin=False, output_hook=hook, timeout=timeout
                )
            except TimeoutError:
                await ensure_async(km.interrupt_kernel())
                try:
                    await kc.execute_interactive("", silent=True, timeout=restart_grace, output_hook=hook)
                except TimeoutError:
                    raise KernelStuck() from None
                return "timeout", f"stopped after {timeout:.0f} s"
            return str(reply.get("content", {}).get("status")), (errors[0] if errors else "")

        async def _t_run_trusted(self, source: str) -> None:
            # The lesson's own code, not the learner's: on a busy machine its setup (loading data,
            # training a small model) can take longer than a learner's cell may, so it gets the
            # kernel start-up allowance when that is longer; the job's wall limit still bounds it.
            timeout = max(float(self.timeout or 600), float(self.startup_timeout))
            try:
                status, error = await self._quiet(self._t_kc, self._t_km, source, timeout)
            except KernelStuck:
                status, error = "stuck", "deaf to the interrupt"
            self._t_history.append(source)
            if status != "ok":
                EVENTS.append(f"checker: a lesson cell failed in the trusted kernel ({error or status})")

        async def _t_catch_up(self, upto: str | None) -> None:
            """Run the trusted cells the checker has not run yet, up to the test ``upto`` (or
            those before the first test when ``None``)."""
            await self._t_ready
            for grade_id in plan.order:
                if grade_id not in self._t_done:
                    self._t_done.add(grade_id)
                    for source in plan.tests[grade_id].trusted_before:
                        await self._t_run_trusted(source)
                if grade_id == upto or upto is None:
                    return

        async def _t_restart(self) -> None:
            """Restart a deaf checker and run again the trusted cells it had run."""
            await ensure_async(self._t_km.restart_kernel(now=True))
            await ensure_async(self._t_kc.wait_for_ready(timeout=self.startup_timeout))
            history, self._t_history = self._t_history, []
            for source in history:
                await self._t_run_trusted(source)

        async def _settle_learner(self) -> None:
            """After a test, the learner's kernel must be idle (a learner function the test
            called may still run there): interrupt it, and restart it if it does not stop."""
            try:
                await self.kc.execute_interactive("", silent=True, timeout=1, output_hook=lambda m: None)
                return
            except TimeoutError:
                pass
            try:
                await self._quiet(self.kc, self.km, "", restart_grace)
            except KernelStuck:
                EVENTS.append("the learner's kernel ignored the interrupt after a test; it was restarted")
                await self._restart()

        async def _guard(self, snapshot: bool) -> str | None:
            expr = (
                "__import__('labkit.course.integrity', fromlist=['check'])."
                f"check(get_ipython(), snapshot={snapshot})"
            )
            try:
                reply = await self.kc.execute_interactive(
                    "",
                    silent=True,
                    store_history=False,
                    user_expressions={"g": expr},
                    timeout=guard_seconds,
                    output_hook=lambda msg: None,
                )
            except TimeoutError:
                # Advisory only: a kernel too slow to answer (a tracer on every line) is not held
                # up for it, and the check stops.
                await ensure_async(self.km.interrupt_kernel())
                self._tampered = self._tampered or "(the integrity check timed out)"
                return f"the integrity check did not answer within {guard_seconds} s"
            content = reply.get("content", {})
            value = content.get("user_expressions", {}).get("g", {})
            if value.get("status") != "ok":
                return f"the integrity check could not run ({value.get('ename', content.get('status'))})"
            text = value.get("data", {}).get("text/plain", "")
            return None if text in ("''", '""') else "the submission replaced " + text.strip("'\"")

        async def _async_handle_timeout(
            self, timeout: int, cell: NotebookNode | None = None
        ) -> dict[str, Any] | None:
            # Interrupt, then wait a little for the cell's real reply; a kernel that ignores the
            # interrupt (a learner's SIGINT handler) is restarted instead of blocking every cell after.
            await ensure_async(self.km.interrupt_kernel())
            end = time.monotonic() + restart_grace
            while (left := end - time.monotonic()) > 0:
                try:
                    msg: dict[str, Any] = await ensure_async(self.kc.shell_channel.get_msg(timeout=left))
                except Empty:
                    break
                if msg.get("msg_type") == "execute_reply":
                    return msg
            raise KernelStuck()

        async def _restart(self) -> None:
            await ensure_async(self.km.restart_kernel(now=True))
            await ensure_async(self.kc.wait_for_ready(timeout=self.startup_timeout))
            self._snapshot_taken = False

        async def _check_raise_for_error(
            self, cell: NotebookNode, cell_index: int, exec_reply: dict[str, Any] | None
        ) -> None:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if grade_id:
                REPLIES[grade_id] = str((exec_reply or {}).get("content", {}).get("status", "none"))
            await super()._check_raise_for_error(cell, cell_index, exec_reply)

        async def _run_counted(
            self, cell: NotebookNode, cell_index: int, execution_count: int | None, store_history: bool
        ) -> NotebookNode:
            """Execute ``cell`` in the kernel of ``self.kc``, output capped, deaf kernels restarted."""
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", f"cell {cell_index}")
            self._out_bytes = 0
            self._interrupted = False
            try:
                result: NotebookNode = await super().async_execute_cell(
                    cell, cell_index, execution_count, store_history
                )
            except KernelStuck:
                EVENTS.append(
                    f"{grade_id}: over the {self.timeout} s cell time limit and deaf to the interrupt; "
                    "the kernel was restarted (later cells ran in a fresh kernel)"
                )
                cell.outputs.append(
                    error_output("CellTimeoutError", f"stopped after {self.timeout} s; kernel restarted")
                )
                await self._restart()
                return cell
            if self._interrupted:
                EVENTS.append(f"{grade_id}: output over {output_bytes // 1024} KiB, cell interrupted")
                cell.outputs.append(
                    error_output("OutputLimitExceeded", f"more than {output_bytes // 1024} KiB of output")
                )
            return result

        async def _run_test_in_checker(
            self, cell: NotebookNode, cell_index: int, execution_count: int | None, store_history: bool
        ) -> NotebookNode:
            grade_id = cell.metadata["nbgrader"]["grade_id"]
            step = plan.tests.get(grade_id)
            if step is None:
                cell.outputs = [error_output("NotATest", "not a test cell of this lesson; not run")]
                return cell
            if self._t_dead:
                cell.outputs = [error_output("KernelDied", "not run: the checker kernel stopped earlier")]
                return cell
            if self._t_segment is not None:
                await self._t_segment
                self._t_segment = None
            await self._t_catch_up(grade_id)
            if step.learner_names or step.shared_names:
                call = f"bind({step.learner_names!r}, {step.shared_names!r})"
                status, error = await self._quiet(
                    self._t_kc,
                    self._t_km,
                    f"__import__('labkit.course.remote', fromlist=['bind']).{call}",
                    self.timeout or 600,
                )
                if status != "ok":
                    EVENTS.append(
                        f"checker: {grade_id}: learner names could not be bound ({error or status})"
                    )
            learner = (self.km, self.kc)
            self.km, self.kc = self._t_km, self._t_kc
            try:
                result = await self._run_counted(cell, cell_index, execution_count, store_history)
                if any(o.get("ename") == "CellTimeoutError" for o in cell.outputs):
                    await self._t_restart()
            except DeadKernelError:
                self._t_dead = True
                EVENTS.append(f"the checker kernel stopped in {grade_id}")
                cell.outputs = [error_output("KernelDied", "the checker kernel stopped")]
                result = cell
            finally:
                self.km, self.kc = learner
            await self._settle_learner()
            # The learner's kernel runs the visible tests too (outcome ignored): later cells may
            # read names they assign, as they did when everything ran in one kernel.
            visible = step.source.split("### BEGIN HIDDEN TESTS")[0]
            if visible.strip() and not self._dead:
                with contextlib.suppress(KernelStuck):
                    await self._quiet(self.kc, self.km, visible, self.timeout or 600)
            self._t_segment = asyncio.ensure_future(self._t_catch_up(self._next_test(grade_id)))
            return result

        @staticmethod
        def _next_test(grade_id: str) -> str | None:
            order = list(plan.order)
            i = order.index(grade_id) + 1
            return order[i] if i < len(order) else ""

        async def async_execute_cell(
            self,
            cell: NotebookNode,
            cell_index: int,
            execution_count: int | None = None,
            store_history: bool = True,
        ) -> NotebookNode:
            if cell.cell_type != "code" or not cell.source.strip():
                return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
            meta = cell.metadata.get("nbgrader", {})
            grade_id = meta.get("grade_id", f"cell {cell_index}")
            REPLIES.pop(grade_id, None)
            is_test = bool(meta.get("grade")) and not meta.get("solution")
            if self._dead:
                cell.outputs = [error_output("KernelDied", "not run: the kernel stopped earlier")]
                return cell
            try:
                if not self._snapshot_taken:
                    self._snapshot_taken = True
                    await self._guard(snapshot=True)
                if is_test and self._tampered is None:
                    found = await self._guard(snapshot=False)
                    if found:
                        # Advisory only: the score comes from the checker kernel either way.
                        self._tampered = found
                        EVENTS.append(f"advisory, in-kernel check before {grade_id}: {found}")
                if is_test and plan is not None and grade_id in plan.tests:
                    return await self._run_test_in_checker(cell, cell_index, execution_count, store_history)
                if is_test and self._tampered is not None:
                    cell.outputs = [
                        error_output("IntegrityError", f"not run: the submission replaced {self._tampered}")
                    ]
                    return cell
                return await self._run_counted(cell, cell_index, execution_count, store_history)
            except DeadKernelError:
                self._dead = True
                EVENTS.append(f"kernel stopped in {grade_id} (CPU-time, memory or process limit)")
                cell.outputs = [error_output("KernelDied", "the kernel stopped (a resource limit was hit)")]
                return cell

        # nbclient binds its synchronous wrappers to the base class's coroutines: rebind them.
        execute_cell = run_sync(async_execute_cell)
        start_new_kernel = run_sync(async_start_new_kernel)
        _cleanup_kernel = run_sync(_async_cleanup_kernel)

        def process_message(
            self, msg: dict[str, Any], cell: NotebookNode, cell_index: int
        ) -> NotebookNode | None:
            # Every message that can add or change output counts (streams, display_data,
            # update_display_data, execute_result, errors, comm messages).
            if msg.get("msg_type") not in ("status", "execute_input"):
                self._out_bytes += len(json.dumps(msg.get("content", {}), default=str))
                if self._out_bytes > output_bytes:
                    if not self._interrupted:
                        self._interrupted = True
                        self._interrupt_task = asyncio.ensure_future(self.km.interrupt_kernel())
                    return None
            out: NotebookNode | None = super().process_message(msg, cell, cell_index)
            return out

    return GuardedExecute


def strict_score(cell: Any, reply: str | None) -> float:
    """Points of an autograded test cell, decided by the grader, not by what the cell printed.

    Full points only when the kernel's execute reply was ``ok`` and no error output was
    recorded, whatever else the cell showed: output on stderr (a warning from correct code)
    costs nothing, and an ``execute_result`` that is not a number (a learner's
    ``sys.displayhook('x')``) neither scores nor costs, unlike nbgrader, which gives full
    points for the first non-numeric result even when an error follows. A number is partial
    credit (clipped to the cell's points) only when the test cell itself ends in an expression
    (the instructor asking for partial credit) and is the cell's only result.
    """
    import ast
    import math

    top = float(cell.metadata["nbgrader"]["points"])
    if reply != "ok":
        return 0.0
    outputs = list(cell.get("outputs", []))
    if any(o.get("output_type") == "error" for o in outputs):
        return 0.0
    results = [o for o in outputs if o.get("output_type") == "execute_result"]
    numbers = [v for v in (_as_number(o) for o in results) if v is not None]
    if not numbers:
        return top  # no result, or values that are not numbers: they neither score nor cost
    try:
        body = ast.parse(cell.source).body
        asks_partial = bool(body) and isinstance(body[-1], ast.Expr)
    except SyntaxError:
        asks_partial = False
    if not asks_partial:
        return top  # a number the test cell does not compute (a learner's displayhook) is ignored
    if len(results) != 1 or len(numbers) != 1 or not math.isfinite(numbers[0]):
        return 0.0  # more than one result from a partial-credit cell: not the instructor's
    return min(max(numbers[0], 0.0), top)


def _as_number(output: Any) -> float | None:
    text = output.get("data", {}).get("text/plain", "")
    text = "".join(text) if isinstance(text, list) else str(text)
    try:
        return float(text.strip())
    except ValueError:
        return None


def strict_grades_class() -> type:
    """nbgrader's SaveAutoGrades with :func:`strict_score` for autograded test cells."""
    from nbgrader import utils
    from nbgrader.preprocessors import SaveAutoGrades

    class StrictSaveAutoGrades(SaveAutoGrades):
        def _add_score(self, cell: Any, resources: Any) -> None:
            grade_id = cell.metadata["nbgrader"]["grade_id"]
            grade = self.gradebook.find_grade(grade_id, self.notebook_id, self.assignment_id, self.student_id)
            if cell.cell_type == "code" and not utils.is_solution(cell):
                grade.auto_score = strict_score(cell, REPLIES.get(grade_id))
            else:
                grade.auto_score, _ = utils.determine_grade(cell, self.log)
            grade.needs_manual_grade = grade.manual_score is not None or grade.auto_score is None
            self.gradebook.db.commit()

    return StrictSaveAutoGrades


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


_DELIMITER = re.compile(r"(BEGIN HIDDEN|END HIDDEN) (TESTS)")


def test_feedback_class() -> type:
    """A feedback preprocessor (before ClearHiddenTests) for autograded test cells.

    A test cell with hidden tests shows no output at all (what hidden code printed is hidden
    too) and, when it failed, one line: the error's name and message when the failing line is in
    the visible part, only its name when it is in the hidden part. Other test cells keep their
    output with errors cut to ``name: message`` (traceback context would quote test code).
    """
    from nbconvert.preprocessors import Preprocessor
    from nbformat.notebooknode import NotebookNode
    from traitlets import Bool

    class TestFeedback(Preprocessor):
        # nbconvert's preprocessors are off unless enabled: without this the feedback keeps
        # whole tracebacks, which quote the hidden tests next to a failing visible line.
        enabled = Bool(True)

        def preprocess_cell(self, cell: Any, resources: Any, index: int) -> tuple[Any, Any]:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
                # The learner's own cell: a hidden-test marker written there would make the step
                # after this one cut the cell or fail the whole feedback; shown with a no-break space.
                cell.source = _DELIMITER.sub(lambda m: m.group(1) + "\u00a0" + m.group(2), cell.source)
                return cell, resources
            lines = cell.source.splitlines()
            hidden = next((i + 1 for i, ln in enumerate(lines) if "BEGIN HIDDEN TESTS" in ln), None)
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            if hidden is None:
                for out in errors:
                    out["traceback"] = [f"{out.get('ename')}: {out.get('evalue')}"]
                return cell, resources
            cell.outputs = []
            if errors:
                ename = str(errors[0].get("ename", "Error"))
                text = error_line(cell, errors[0])
                cell.outputs = [NotebookNode(output_type="error", ename=ename, evalue="", traceback=[text])]
            return cell, resources

    return TestFeedback


def error_line(cell: Any, err: Any) -> str:
    """``name: message`` of an error, or only its name when it was raised in the hidden part of a
    test cell (a hidden assertion's message or line may give the answer away)."""
    ename = str(err.get("ename", "Error"))
    lines = cell.source.splitlines()
    hidden = next((i + 1 for i, ln in enumerate(lines) if "BEGIN HIDDEN TESTS" in ln), None)
    if hidden is not None:
        where = re.findall(
            rf"Cell In\[{cell.get('execution_count')}\], line (\d+)",
            ANSI.sub("", "\n".join(err.get("traceback", []))),
        )
        if not where or int(where[-1]) >= hidden:
            return f"{ename} in a hidden test"
    return f"{ename}: {str(err.get('evalue', ''))[:200]}"
