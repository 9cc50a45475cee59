"""Red-team tests of ``labkit grade``: one submission (or entry) per class of attack.

Each asserts the attack is contained: the score is an honest copy's or zero, nothing is written
outside the job, no answer material is readable from inside the sandbox, and the class completes.
The slow test grades one class of lesson 00 holding every attack that needs a kernel; the
others check the pieces (scoring rules, the sandbox's view, submissions, CSV, feedback) alone.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from html import unescape
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml

import labkit as lk
from labkit.course.classroom import ClassGrades, LessonGrade
from labkit.course.jail import _sandbox_env
from labkit.course.sandbox import (
    Limits,
    kernel_sandbox_argv,
    sandbox_problem,
    seccomp_filter,
)
from labkit.course.scoring import strict_score, test_feedback_class
from labkit.course.submissions import MAX_NOTEBOOK_BYTES, Problem

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_grade import COHORT_SECRET, NOTEBOOK, ROOT, SLUG, TESTS, _solutions, learner_notebook, write

FULL = float(sum(TESTS.values()))


def _need_sandbox() -> None:
    problem = sandbox_problem()
    if problem is not None:
        pytest.skip(
            f"needs a bubblewrap sandbox: {problem}. Install the Debian package bubblewrap "
            "(make grader-deps does it as root) on a host with user namespaces"
        )


# --------------------------------------------------------------------------------------------
# Scoring rules (nbgrader's determine_grade gets these wrong)


def _cell(source: str, outputs: list[dict[str, Any]], points: int = 4) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "t", "points": points}
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    return cell


def _result(text: str) -> dict[str, Any]:
    return {
        "output_type": "execute_result",
        "data": {"text/plain": text},
        "metadata": {},
        "execution_count": 1,
    }


ERROR = {"output_type": "error", "ename": "AssertionError", "evalue": "", "traceback": []}
STDERR = {"output_type": "stream", "name": "stderr", "text": "UserWarning: harmless\n"}


@pytest.mark.parametrize(
    ("source", "outputs", "reply", "score"),
    [
        ("assert f() == 1", [], "ok", 4.0),
        # a correct cell whose code printed a warning keeps its points (nbgrader: 0)
        ("assert f() == 1", [STDERR], "ok", 4.0),
        # a learner's sys.displayhook('x') before a failing test (nbgrader: full points)
        ("assert f() == 1", [_result("'x'"), ERROR], "error", 0.0),
        ("assert f() == 1", [_result("'x'")], "error", 0.0),
        # a result that is not a number neither scores nor costs when the tests passed
        ("assert f() == 1\nf", [_result("'x'")], "ok", 4.0),
        # a number only counts where the test cell itself ends in an expression
        ("assert f() == 1", [_result("0.5")], "ok", 4.0),
        ("score = 2.5\nscore", [_result("2.5")], "ok", 2.5),
        ("score = 2.5\nscore", [_result("99")], "ok", 4.0),
        ("score = 2.5\nscore", [_result("1"), _result("4")], "ok", 0.0),
        # no reply, an aborted or failed one, or an error output: zero
        ("assert f() == 1", [], None, 0.0),
        ("assert f() == 1", [], "aborted", 0.0),
        ("assert f() == 1", [ERROR], "ok", 0.0),
    ],
)
def test_test_cells_score_on_the_reply_not_on_what_they_show(
    source: str, outputs: list[dict[str, Any]], reply: str | None, score: float
) -> None:
    assert strict_score(_cell(source, outputs), reply) == score


def test_feedback_cuts_tracebacks_at_the_hidden_boundary() -> None:
    secret = "the-answer-is-42"
    source = f"assert f() == 1, 'visible'\n### BEGIN HIDDEN TESTS\nassert g() == 2, '{secret}'\n### END HIDDEN TESTS"
    hidden_fail = _cell(
        source,
        [
            {"output_type": "stream", "name": "stdout", "text": f"printed by hidden code: {secret}\n"},
            {
                "output_type": "error",
                "ename": "AssertionError",
                "evalue": secret,
                "traceback": ["Cell In[7], line 3", f"----> 3 assert g() == 2, '{secret}'", secret],
            },
        ],
    )
    hidden_fail.execution_count = 7
    visible_fail = _cell(
        source,
        [
            {
                "output_type": "error",
                "ename": "AssertionError",
                "evalue": "visible",
                "traceback": ["Cell In[8], line 1"],
            }
        ],
    )
    visible_fail.execution_count = 8
    pre = test_feedback_class()()
    # nbconvert runs a preprocessor only when it is enabled: a disabled one would leave whole
    # tracebacks in the feedback, and the feedback would then be withheld from every failing learner.
    assert pre.enabled
    out, _ = pre.preprocess_cell(hidden_fail, {}, 0)
    assert secret not in str(out.outputs) and "AssertionError in a hidden test" in str(out.outputs)
    out, _ = pre.preprocess_cell(visible_fail, {}, 0)
    assert "AssertionError: visible" in str(out.outputs)


def test_a_hidden_test_marker_in_a_learner_cell_costs_no_feedback() -> None:
    from nbgrader.preprocessors import ClearHiddenTests

    learner = nbformat.v4.new_code_cell('print("### BEGIN HIDDEN TESTS")  # mine\nx = 1')
    learner.metadata["nbgrader"] = {"solution": True, "grade": False, "grade_id": "mine", "locked": False}
    nb = nbformat.v4.new_notebook(cells=[learner])
    nb, _ = test_feedback_class()().preprocess(nb, {})
    nb, _ = ClearHiddenTests().preprocess(nb, {})  # raised "No end hidden tests statement found"
    assert nb.cells[0].source == 'print("### BEGIN HIDDEN\u00a0TESTS")  # mine\nx = 1'


# --------------------------------------------------------------------------------------------
# The sandbox's view, from inside


PROBE_VIEW = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
found = {}
for path in sys.argv[1:]:
    try:
        open(path, "rb").read(16)
        found[path] = "read"
    except OSError as err:
        found[path] = type(err).__name__
for call, args in (("ptrace", (0, 0, 0, 0)), ("unshare", (0x10000000,)), ("mount", (b"x", b"/tmp", b"tmpfs", 0, None))):
    found[call] = "ok" if getattr(libc, call)(*args) == 0 else os.strerror(ctypes.get_errno())
for path in ("/newfile", "/usr/newfile", os.environ["HOME"] + "/ok", "/tmp/ok"):
    try:
        open(path, "w").write("x")
        found["write " + path] = "written"
    except OSError as err:
        found["write " + path] = type(err).__name__
found["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
found["uid"] = os.getuid()
found["env"] = sorted(os.environ)
print(repr(found))
"""


def test_sandbox_view_holds_no_answer_material(tmp_path: Path) -> None:
    """From inside the kernel's sandbox: no checkout, .git, solutions, gradebook, home or keys;
    no ptrace, unshare or mount; nothing written outside its tmpfs; only its own processes."""
    _need_sandbox()
    secret = tmp_path / "instructor-key.pem"
    secret.write_text("PRIVATE")
    targets = [
        str(ROOT / ".git" / "HEAD"),
        str(ROOT / "solutions" / SLUG / NOTEBOOK),
        str(ROOT / "course.yml"),
        str(ROOT / "gradebook.db"),
        str(secret),
        os.path.expanduser("~/.bashrc"),
        "/etc/passwd",
        "/etc/shadow",
    ]
    r, w = os.pipe()
    os.write(w, b"{}")
    os.close(w)
    seccomp = seccomp_filter()
    assert seccomp is not None, "no seccomp table for this machine"
    sfd = os.memfd_create("test-seccomp", 0)
    os.write(sfd, seccomp)
    os.lseek(sfd, 0, os.SEEK_SET)
    argv = kernel_sandbox_argv(
        connection_fd=r,
        seccomp_fd=sfd,
        file_mb=4,
        env={**_sandbox_env({}), "LABKIT_CERT_KEY": "must-not-pass"},
        cache_files={},
        work_files={},
        command=[sys.executable, "-c", PROBE_VIEW, *targets],
        bwrap=shutil.which("bwrap") or "/usr/bin/bwrap",
    )
    done = subprocess.run(argv, pass_fds=(r, sfd), capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    found = eval(done.stdout.decode())  # our own probe's repr of plain values
    for path in targets:
        assert found[path] != "read", f"{path} is readable from inside the sandbox"
    assert found["ptrace"] == found["unshare"] == found["mount"] == os.strerror(1)
    assert found["write /newfile"] != "written" and found["write /usr/newfile"] != "written"
    assert found["write /tmp/ok"] == "written"
    assert found["pids"][:2] == [1, 2] and len(found["pids"]) <= 3, found["pids"]
    assert found["uid"] == 1000


# --------------------------------------------------------------------------------------------
# Class sabotage: every bad entry is a per-learner problem, the rest is graded


def _sabotaged_class(folder: Path, outside: Path) -> None:
    write(learner_notebook(), folder, "honest")
    write(learner_notebook(), folder, "submitted")  # a learner really called "submitted"
    extra = folder / "extra" / SLUG / "scratch" / "notes.ipynb"  # an extra notebook in a subfolder
    extra.parent.mkdir(parents=True)
    nbformat.write(learner_notebook(), extra)
    write(learner_notebook(), folder, "extra")
    nbformat.write(learner_notebook(), folder / "Ada Lovelace--00.ipynb")  # two names, one id
    nbformat.write(learner_notebook(), folder / "Ada_Lovelace--00.ipynb")
    (folder / "linker" / SLUG).mkdir(parents=True)
    (folder / "linker" / SLUG / NOTEBOOK).symlink_to(ROOT / "solutions" / SLUG / NOTEBOOK)
    (folder / "dirlink").symlink_to(outside, target_is_directory=True)
    big = learner_notebook()
    big.cells[0].source += "\n" + "x" * (MAX_NOTEBOOK_BYTES + 10)
    write(big, folder, "oversize")


def test_bad_entries_become_per_learner_problems(course: lk.course.Course, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(learner_notebook(), outside, "stranger")
    folder = tmp_path / "class"
    _sabotaged_class(folder, outside)
    problems: list[Problem] = []
    found = lk.course.find_submissions(course, folder, problems=problems)
    assert sorted(s.student for s in found) == ["extra", "honest", "submitted"]
    why = {p.student: p.reason for p in problems}
    assert "not a layout" in why["extra"]
    assert "all map to the id 'Ada_Lovelace'" in why["Ada_Lovelace"]
    assert sum(p.student == "Ada_Lovelace" for p in problems) == 2
    assert "symbolic link" in why["linker"] and "symbolic link" in why["dirlink"]
    assert "larger than" in why["oversize"]
    # Without a list to collect them, the first bad entry still raises (the old behaviour).
    with pytest.raises(lk.course.SubmissionError):
        lk.course.find_submissions(course, folder)


def test_zip_bombs_are_refused_before_unpacking(course: lk.course.Course, tmp_path: Path) -> None:
    archive = tmp_path / "class.zip"
    honest = tmp_path / "honest.ipynb"
    nbformat.write(learner_notebook(), honest)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(honest, f"honest/{NOTEBOOK}")
        zf.writestr(f"bomb/{NOTEBOOK}", b"{" + b" " * (200 * 1024**2) + b"}")  # 200 MiB of blanks
        zf.writestr("bomb/data.bin", b"\0" * (50 * 1024**2))  # not a notebook: never unpacked
    assert archive.stat().st_size < 2 * 1024**2
    problems: list[Problem] = []
    work = tmp_path / "work"
    work.mkdir()
    found = lk.course.find_submissions(course, archive, workdir=work, problems=problems)
    assert [s.student for s in found] == ["honest"]
    assert [p.student for p in problems] == ["bomb"] and "MiB once unpacked" in problems[0].reason
    unpacked = sum(p.stat().st_size for p in work.rglob("*") if p.is_file())
    assert unpacked < 5 * 1024**2, unpacked


# --------------------------------------------------------------------------------------------
# Hygiene: CSV formulas


def test_grades_csv_escapes_formulas(course: lk.course.Course, tmp_path: Path) -> None:
    lesson = course.lesson("00")
    evil = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    results = [LessonGrade(name, SLUG, "graded", 1.0, 20.0, reason="=1+1") for name in evil]
    grades = ClassGrades(
        course=course, lessons=[lesson], results=results, problems=[Problem("=cmd", "x", "-bad")]
    )
    for path in (grades.write_csv(tmp_path / "g.csv"), grades.write_submissions_csv(tmp_path / "s.csv")):
        for row in csv.reader(path.read_text().splitlines()):
            for value in row:
                assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (path.name, value)
    rows = list(csv.DictReader((tmp_path / "g.csv").read_text().splitlines()))
    assert {r["student"] for r in rows} >= {'\'=HYPERLINK("http://x")', "'-2+3", "'=cmd"}


# --------------------------------------------------------------------------------------------
# A class of attacks, graded in sandboxes


PLANT = """
import os
canary = {canary!r}
for name in ("welcome.ipynb", "welcome.html", "result.json", "gradebook.db", "link"):
    for folder in (".", os.path.expanduser("~"), "/tmp"):
        try:
            os.symlink(canary, os.path.join(folder, name))
        except OSError:
            pass
for target in (canary, "../" * 8 + canary.lstrip("/")):
    try:
        with open(target, "a") as fh:
            fh.write("pwned")
    except OSError:
        pass
"""

READ_KEY = """
import glob, os
_found = []
_seen = glob.glob("/work/*/*") + glob.glob("/work/*/.*") + glob.glob("/home/**/*.db", recursive=True)
_seen += glob.glob("/tmp/**/*.db", recursive=True) + glob.glob("/root/*")
for _p in {paths!r} + [p for p in _seen if "gradebook" in p or ".git" in p or "solutions" in p]:
    try:
        with open(_p, "rb") as _f:
            _f.read(16)
        _found.append(_p)
    except OSError:
        pass
print("READ" + "ABLE:", _found)
"""

DISPLAYHOOK = (
    "import sys\n"
    "get_ipython().events.register('pre_run_cell', lambda *a: sys.displayhook('x'))\n"
    "get_ipython().events.register('post_run_cell', lambda *a: sys.displayhook('full marks'))\n"
)

WARNS = """
import warnings
def check_batch(x, *, shape, _inner=check_batch):
    warnings.warn("a harmless warning from correct code", UserWarning)
    return _inner(x, shape=shape)
"""

DISPLAY_FLOOD = """
from IPython.display import display
_h = display("start", display_id=True)
for _i in range(20000):
    _h.update("y" * 2000)
"""

SCRIPT = (
    "from IPython.display import HTML, display\n"
    'display(HTML(\'<script>alert("xss-output")</script><img src=x onerror="alert(1)">\'))\n'
    # nbgrader's feedback step removes hidden tests between these markers in every cell, and
    # fails on one left open: in a learner's own cell they must cost nothing, feedback included
    "# ### BEGIN HIDDEN TESTS\n"
)

DEAF = (
    "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.01)\n"
)

DAEMON = """
import os, time
if os.fork() == 0:
    os.setsid()
    time.sleep(600)  # outlive the kernel, then tamper: the PID namespace must end it first
    os._exit(0)
"""


# Attacks on the scoring from inside the learner's kernel. Each goes in the check_batch cell of a
# blank copy (every other answer left blank), so an honest blank copy's score, zero, is the bar.
WRONG_CHECK_BATCH = "def check_batch(x, *, shape):\n    return None\n"

IN_KERNEL_ATTACKS: dict[str, str | dict[str, str]] = {
    # a tracer that jumps over every assertion and expected-raise line, and hides itself
    "settrace": WRONG_CHECK_BATCH
    + """
import linecache, sys
def _skip(frame, event, arg):
    if event == "line":
        line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
        if line.startswith(("assert", "lk.course.expect_raises")):
            try:
                frame.f_lineno = frame.f_lineno + 1
            except ValueError:
                pass
    return _skip
sys.settrace(_skip)
sys.gettrace = lambda: None
""",
    # a failed cell made to look successful after it ran, its traceback never shown
    "run_cell_events": WRONG_CHECK_BATCH
    + """
_ip = get_ipython()
def _forgive(result):
    result.error_in_exec = None
    result.error_before_exec = None
_ip.events.register("pre_run_cell", lambda info: None)
_ip.events.register("post_run_cell", _forgive)
_ip.showtraceback = lambda *a, **k: None
_ip._showtraceback = lambda *a, **k: None
""",
    # test cells rewritten before they run
    "input_transformer": WRONG_CHECK_BATCH
    + """
def _neuter(lines):
    text = "".join(lines)
    return ["pass\\n"] if ("assert" in text or "expect_raises" in text) else lines
get_ipython().input_transformers_post.append(_neuter)
""",
    # failed assertions turned into something nothing catches, and isinstance always true
    "builtins": WRONG_CHECK_BATCH
    + """
import builtins
builtins.AssertionError = type("AssertionError", (Exception,), {})
builtins.isinstance = lambda *a, **k: True
get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)
""",
    # labkit's checks given the body of a function that accepts everything
    "code_swap": WRONG_CHECK_BATCH
    + """
lk.course.expect_raises.__code__ = (lambda *a, **k: None).__code__
lk.course.check_answer.__code__ = (lambda *a, **k: True).__code__
lk.models.accuracy.__code__ = (lambda *a, **k: 0.5).__code__
""",
    # values that agree with everything, returned by the learner's functions
    "always_equal": {
        "check_batch": """
class _Yes(float):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    def __le__(self, other): return True
    def __gt__(self, other): return True
    def __ge__(self, other): return True
    def __bool__(self): return True
    def __sub__(self, other): return _Yes(0.0)
    def __rsub__(self, other): return _Yes(0.0)
    def __abs__(self): return _Yes(0.0)
    __hash__ = float.__hash__
class _Str(str):
    def __eq__(self, other): return True
    __hash__ = str.__hash__
def check_batch(x, *, shape):
    return _Yes(1.0)
""",
        "accuracy": "def accuracy(model, x, y):\n    return _Yes(0.97)\n",
        "wrap": "def wrap(net):\n    return _Yes(1.0)\n",
        "quiz": "q1 = q3 = q5 = _Str('z')\nq2 = _Str('AML.nothing')\nq4 = [_Str('z')]\n",
    },
    # the learner kernel's server patched to report that every call returned its input
    "fake_server": WRONG_CHECK_BATCH
    + """
import json
import labkit.course.learner_side as _remote
_real = _remote.serve
def _lie(request):
    req = json.loads(request)
    if req.get("op") == "call":
        return json.dumps({"ok": {"value": {"$arg": "a0"}, "changed": {}}})
    return _real(request)
_remote.serve = _lie
""",
    # every error message dropped and every failed reply rewritten as a success
    "rewrite_messages": WRONG_CHECK_BATCH
    + """
_kernel = get_ipython().kernel
_send = _kernel.session.send
def _rewrite(stream, msg_or_type, content=None, *args, **kwargs):
    if msg_or_type == "error":
        return None
    if msg_or_type == "execute_reply" and isinstance(content, dict) and content.get("status") == "error":
        content = {"status": "ok", "execution_count": content.get("execution_count"), "user_expressions": {}, "payload": []}
    return _send(stream, msg_or_type, content, *args, **kwargs)
_kernel.session.send = _rewrite
""",
    # the kernel kills itself in the middle of a test
    "exit_mid_test": "def check_batch(x, *, shape):\n    import os\n    os._exit(0)\n",
    # an exception that is every kind of error at once
    "universal_error": """
class _Universal(AssertionError, ValueError, TypeError):
    def __str__(self):
        return "fine"
def check_batch(x, *, shape):
    raise _Universal()
""",
}

# Subscribes to every listening port on the kernel's loopback (an IOPub channel is a publish
# socket: no key needed) and counts the cells each publisher announces, hidden tests apart.
SNIFF = """
import threading as _th, zmq as _zmq
_sniffed = {"ports": 0, "cells": 0, "hidden": 0}
def _sniff():
    ctx, poller, seen = _zmq.Context(), _zmq.Poller(), set()
    while True:
        for row in open("/proc/net/tcp").read().splitlines()[1:] + open("/proc/net/tcp6").read().splitlines()[1:]:
            f = row.split()
            port = int(f[1].rsplit(":", 1)[1], 16)
            if f[3] == "0A" and port not in seen:
                seen.add(port)
                sock = ctx.socket(_zmq.SUB)
                sock.setsockopt(_zmq.SUBSCRIBE, b"")
                sock.connect(f"tcp://127.0.0.1:{port}")
                poller.register(sock, _zmq.POLLIN)
                _sniffed["ports"] += 1
        for sock, _ in poller.poll(100):
            parts = sock.recv_multipart()
            if any(b"execute_input" in part for part in parts[:6]):
                _sniffed["cells"] += 1
                _sniffed["hidden"] += any(b"HIDDEN TESTS" in part for part in parts)
_th.Thread(target=_sniff, daemon=True).start()
"""
SNIFF_REPORT = """
import time as _t
_t.sleep(1)
print("SNIFFED:", _sniffed)
"""

KEY_HUNT = """
import os, re
_hit = re.compile(r"answer[-_]key|cohort[.]key|peer[.]json")
_found = [k for k in os.environ if re.search(r"ANSWER_KEY|COHORT|PEER", k)]
for _root in ("/run", "/home", "/tmp", "/work", "/root", "/"):
    for _dir, _subs, _files in os.walk(_root):
        if _dir.startswith(("/proc", "/sys", "/usr", "/dev")):
            _subs[:] = []
            continue
        _found += [os.path.join(_dir, f) for f in _files + _subs if _hit.search(f)]
print("KEY" + "HUNT:", sorted(set(_found)))
"""


def _active_learner_html(html: str) -> list[str]:
    """Script elements with a learner's alert, event-handler attributes and javascript: links."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Check(HTMLParser):
        in_script = False

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.in_script = tag == "script"
            for name, value in attrs:
                if name.startswith("on") or (value or "").strip().lower().startswith("javascript:"):
                    found.append(f"<{tag} {name}={value}>")

        def handle_data(self, data: str) -> None:
            if self.in_script and "alert(" in data:
                found.append(data[:80])

    Check().feed(html)
    return found


def _attack_class(folder: Path, canary: Path) -> dict[str, tuple[float, str]]:
    """student -> (expected score, expected text in the reason or warnings)."""
    sol = _solutions()
    wrong = yaml.safe_load((ROOT / "tests" / "wrong_answers" / f"{SLUG}.yml").read_text())["solutions"]
    paths = [
        str(ROOT / ".git" / "HEAD"),
        str(ROOT / "solutions" / SLUG / NOTEBOOK),
        str(ROOT / "gradebook.db"),
        str(folder / "honest" / SLUG / NOTEBOOK),
        "/work/main/.git/HEAD",
    ]
    cases: dict[str, tuple[float, str]] = {}

    def add(student: str, nb: Any, score: float, reason: str = "") -> None:
        write(nb, folder, student)
        cases[student] = (score, reason)

    add("honest", learner_notebook(), FULL)
    add(
        "symlinks",
        learner_notebook({"check_batch": sol["check_batch"] + PLANT.format(canary=str(canary))}),
        FULL,
    )
    add(
        "reads_key",
        learner_notebook({"check_batch": sol["check_batch"] + READ_KEY.format(paths=paths)}),
        FULL,
    )
    add("displayhook", learner_notebook({"check_batch": DISPLAYHOOK}, solved=False), 0.0)
    add("warns", learner_notebook({"check_batch": sol["check_batch"] + WARNS}), FULL)
    add("display_flood", learner_notebook({"wrap": sol["wrap"] + DISPLAY_FLOOD}), FULL, "output over")
    add("script", learner_notebook({"check_batch": sol["check_batch"] + SCRIPT}), FULL)
    add("deaf_timeout", learner_notebook({"quiz": DEAF}), FULL - 5, "kernel was restarted")
    add("daemon", learner_notebook({"check_batch": sol["check_batch"] + DAEMON}), FULL)
    add("hidden_fail", learner_notebook({"wrap": wrong["wrap"]}), FULL - 4, "in a hidden test")
    add("-2_3", learner_notebook(), FULL)  # an id a spreadsheet would take for a formula
    for name, code in IN_KERNEL_ATTACKS.items():
        cells = code if isinstance(code, dict) else {"check_batch": code}
        add(name, learner_notebook(cells, solved=False), 0.0)
    add("key_hunt", learner_notebook({"check_batch": sol["check_batch"] + KEY_HUNT}), FULL)
    add(
        "sniffer",
        learner_notebook({"check_batch": sol["check_batch"] + SNIFF, "wrap": sol["wrap"] + SNIFF_REPORT}),
        FULL,
    )
    # the markdown answer carries HTML too
    nb = learner_notebook()
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "threat_model_answer":
            cell.source = '<script>alert("xss-md")</script><a href="javascript:alert(2)">x</a>'
    write(nb, folder, "script_md")
    cases["script_md"] = (FULL, "")
    return cases


@pytest.mark.slow
def test_grade_a_class_of_attacks(
    course: lk.course.Course, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need_sandbox()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("LABKIT_COHORT_SECRET", COHORT_SECRET)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    canary = Path(tempfile.gettempdir()) / f"labkit-canary-{os.getpid()}.txt"
    canary.write_text("untouched")
    folder = tmp_path / "submitted"
    cases = _attack_class(folder, canary)
    # A second class graded at the same time on this host, with a learner who kills every
    # process it can see: the two runs must not touch each other.
    other = tmp_path / "other"
    write(learner_notebook(), other, "neighbour")
    write(
        learner_notebook(
            {
                "check_batch": _solutions()["check_batch"] + "import os, signal\nfor _ in range(50):\n"
                "    try:\n        os.kill(-1, signal.SIGKILL)\n    except OSError:\n        pass\n"
            }
        ),
        other,
        "killer",
    )
    # Two kernels share the CPU while the lesson's setup runs: 40 s per cell, as in test_grade.py.
    limits = Limits(cell_seconds=40, wall_seconds=600, cpu_seconds=240, output_kb=256)
    # The neighbouring class is graded by another process, as a second `labkit grade` would be.
    command = [
        str(Path(sys.executable).parent / "labkit"),
        "grade",
        str(other),
        "--out",
        str(tmp_path / "out2"),
    ]
    command += ["--no-gradebook", "--course", str(ROOT), "--cell-timeout", "40", "--quiet"]
    neighbour = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        grades = lk.course.grade_class(
            course, folder, out=tmp_path / "out", jobs=2, limits=limits, progress=False
        )
        log, _ = neighbour.communicate(timeout=600)
        assert neighbour.returncode == 0, log
        second = {
            r["student"]: float(r["points"])
            for r in csv.DictReader((tmp_path / "out2" / "grades.csv").open())
        }
        assert second == {"neighbour": FULL, "killer": FULL}, log
        assert canary.read_text() == "untouched", "learner code wrote outside its job"
        wrong: list[tuple[Any, ...]] = []  # every learner checked before failing: one run shows every miss
        for student, (score, reason) in cases.items():
            grade = grades.get(student, SLUG)
            notes = "" if grade is None else grade.reason + "; ".join(grade.warnings)
            if grade is None or grade.status != "graded" or grade.score != score:
                wrong.append((student, None if grade is None else (grade.status, grade.score), score, notes))
            elif reason and reason not in notes:
                wrong.append((student, "reason", reason, notes))
        assert not wrong, wrong
        feedback = {
            p.parent.parent.name: p.read_text() for p in (tmp_path / "out" / "feedback").rglob("*.html")
        }
        assert "READABLE: []" in feedback["reads_key"], re.findall(r"READABLE:[^<]*", feedback["reads_key"])
        # The sealed answer key and the learner kernel's peer file live in the checker's sandbox only.
        assert "KEYHUNT: []" in feedback["key_hunt"], re.findall(r"KEYHUNT:[^<]*", feedback["key_hunt"])
        # The checker's channels are not on the learner's loopback: a subscriber there sees the
        # learner kernel's own cells (so it works) and no hidden test.
        sniffed = re.findall(r"SNIFFED: (\{[^<]*\})", unescape(feedback["sniffer"]))
        assert sniffed, "the sniffer printed nothing"
        counts = ast.literal_eval(sniffed[0])
        assert counts["cells"] > 0 and counts["hidden"] == 0, sniffed
        # Every learner gets feedback, those who failed tests too: it is cut at the hidden boundary,
        # never withheld.
        assert set(cases) <= set(feedback), sorted(set(cases) - set(feedback))
        for student in cases:
            grade = grades.get(student, SLUG)
            assert grade is not None and not any("feedback withheld" in w for w in grade.warnings), student
        for student, html in feedback.items():
            assert "BEGIN HIDDEN TESTS" not in html and "predictions are off" not in html, student
            assert not _active_learner_html(html), (student, _active_learner_html(html))
            assert len(html) < 3 * 1024**2, (student, len(html))
        rows = (tmp_path / "out" / "grades.csv").read_text()
        assert "'-2_3" in rows
        # Nothing of any job survives it.
        deadline = time.monotonic() + 10
        while _orphaned_kernels() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _orphaned_kernels(), "a process of a job outlived it"
    finally:
        canary.unlink(missing_ok=True)


def _orphaned_kernels() -> list[str]:
    """Sandboxed kernel processes whose grading worker is gone: a job's process that outlived it.

    Kernels of another grading run on this host (a test on the other pytest worker) still have
    their worker among their ancestors, and do not count.
    """
    procs: dict[int, tuple[list[str], int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        procs[int(proc.name)] = (argv, ppid)
    orphans = []
    for pid, (argv, _) in procs.items():
        if "kernel-inner" not in argv:
            continue
        seen, current = set(), pid
        while current in procs and current not in seen:
            seen.add(current)
            if procs[current][0][-1:] == ["worker"]:
                break
            current = procs[current][1]
        else:
            orphans.append(" ".join(argv)[:200])
    return orphans


@pytest.mark.slow
def test_a_sabotaged_class_completes(
    course: lk.course.Course, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need_sandbox()
    monkeypatch.setenv("LABKIT_COHORT_SECRET", COHORT_SECRET)
    folder = tmp_path / "class"
    _sabotaged_class(folder, tmp_path / "outside")
    write(learner_notebook(), tmp_path / "outside", "stranger")
    grades = lk.course.grade_class(course, folder, out=tmp_path / "out", progress=False, lesson="00")
    assert {r.student: r.score for r in grades.results} == {"extra": FULL, "honest": FULL, "submitted": FULL}
    assert {p.student for p in grades.problems} == {"extra", "Ada_Lovelace", "linker", "dirlink", "oversize"}
    rows = list(csv.DictReader((tmp_path / "out" / "grades.csv").read_text().splitlines()))
    notes = {r["student"]: r["notes"] for r in rows}
    assert "symbolic link" in notes["linker"] and "all map to the id" in notes["Ada_Lovelace"]
    assert "stranger" not in notes


def test_feedback_html_is_sanitised() -> None:
    from labkit.course.classroom import sanitize_feedback

    evil = (
        '<html><head><script>var x = "</div>";</script><style>p {color: red}</style></head><body>'
        '<p onclick="steal()">text &amp; <b>bold</b></p><script>alert("xss")</script>'
        '<img src="data:image/png;base64,AAAA" onerror="alert(1)"><a href="javascript:alert(2)">j</a>'
        '<a href="data:text/html,<script>alert(3)</script>">d</a><svg onload="alert(4)"></svg>'
        '<iframe src="https://evil.example"></iframe><a href="https://example.org">ok</a></body></html>'
    )
    clean = sanitize_feedback(evil)
    assert not _active_learner_html(clean), _active_learner_html(clean)
    for bad in ("<script", "onclick", "onerror", "onload", "javascript:", "data:text", "<iframe", "<svg"):
        assert bad not in clean, bad
    assert "<b>bold</b>" in clean and 'href="https://example.org"' in clean and "p {color: red}" in clean
    assert 'src="data:image/png;base64,AAAA"' in clean


def test_a_worker_that_cannot_start_is_one_learners_error(
    course: lk.course.Course, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose worker cannot start (its folder gone, no processes left) fails alone."""
    from labkit.course import classroom

    folder = tmp_path / "class"
    for student in ("ada", "bob"):
        write(learner_notebook(), folder, student)

    def refuse(job: Any, *, log_path: Path) -> Any:
        raise FileNotFoundError(2, "No such file or directory", str(log_path))

    monkeypatch.setattr(classroom, "start_worker", refuse)
    grades = lk.course.grade_class(
        course, folder, out=tmp_path / "out", progress=False, lesson="00", trust_submissions=True
    )
    assert {r.student: r.status for r in grades.results} == {"ada": "error", "bob": "error"}
    assert all("could not start" in r.reason for r in grades.results), [r.reason for r in grades.results]
    rows = list(csv.DictReader((tmp_path / "out" / "grades.csv").read_text().splitlines()))
    assert sorted(r["student"] for r in rows) == ["ada", "bob"]


def test_a_kernel_too_slow_to_start_is_graded_once_more(
    course: lk.course.Course, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy machine, not the learner, makes a kernel miss its start: the class grader grades
    that submission a second time, in a fresh job folder, and says so; a second miss is reported."""
    from labkit.course import classroom
    from labkit.course.sandbox import SLOW_START, _autograde_failure

    nbclient_log = "[AutogradeApp | ERROR] RuntimeError: Kernel didn't respond in 240 seconds"
    reason = _autograde_failure(nbclient_log)
    assert reason.startswith(SLOW_START) and "Limits.startup_seconds" in reason, reason
    folder = tmp_path / "class"
    for student in ("ada", "bob"):
        write(learner_notebook(), folder, student)
    folders: list[tuple[str, str]] = []

    def fake_worker(job: Any, *, log_path: Path) -> subprocess.Popen[bytes]:
        folders.append((job.student, Path(job.result_path).parent.name))
        # ada's kernel is late only the first time; bob's both times
        late = job.student == "bob" or sum(s == "ada" for s, _ in folders) == 1
        result = {"status": "error", "reason": reason if late else "the notebook ran out of memory"}
        Path(job.result_path).write_text(json.dumps(result))
        return subprocess.Popen(["true"], start_new_session=True)

    monkeypatch.setattr(classroom, "start_worker", fake_worker)
    grades = lk.course.grade_class(
        course, folder, out=tmp_path / "out", progress=False, lesson="00", trust_submissions=True
    )
    got = {r.student: r for r in grades.results}
    assert sorted(folders) == [("ada", "0"), ("ada", "0-2"), ("bob", "1"), ("bob", "1-2")], folders
    assert got["ada"].reason == "the notebook ran out of memory", got["ada"].reason
    assert got["bob"].reason.startswith(SLOW_START), got["bob"].reason
    for r in got.values():
        assert any(w.startswith("graded twice") for w in r.warnings), r.warnings


@pytest.mark.parametrize(
    "rewriter", ["ast_transformers", "input_transformers_cleanup", "input_transformers_post"]
)
def test_the_integrity_check_sees_every_list_of_rewriters(rewriter: str) -> None:
    """A learner's source or AST rewriter (one that turns a test's asserts into ``pass``) is
    reported, whichever of the shell's lists it joins."""
    from IPython.core.interactiveshell import InteractiveShell

    from labkit.course import integrity

    shell = InteractiveShell.instance()
    try:
        assert integrity.check(shell, snapshot=True) == ""
        assert integrity.check(shell) == ""
        getattr(shell, rewriter).append(lambda lines: ["pass\n"])
        assert rewriter in integrity.check(shell)
    finally:
        getattr(shell, rewriter).pop()
        InteractiveShell.clear_instance()
