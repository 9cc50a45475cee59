"""A workshop, end to end in a real browser: JupyterHub, nbgrader's exchange, formgrader, labkit.

``make hub-test`` (run by ``make test``). As root, ``labkit.course.hub`` sets up a hub on loopback
for one instructor and three learners (system accounts ``mhl-t-*``, removed afterwards), and
headless Chromium plays the day:

1. the instructor logs in, formgrader lists the lessons, the instructor releases lesson 00;
2. each learner logs in, fetches it from the Assignments tab, answers it (one with the reference
   solution's answers, one with two of the three exercises, one not at all: written through the
   server's contents API), validates and submits;
3. the instructor collects in formgrader, grades with ``labkit grade`` (the sandbox, used through
   its CLI), places the feedback and releases it in formgrader; every learner fetches feedback
   that shows their score and no hidden test;
4. ``labkit keys init`` and ``labkit certify`` issue a credential to the learner who passed.

It also checks that no learner can read another's work, the instructor's course or gradebook,
or the checkout, and records the hub's start time and each learner's memory (control group).
Screenshots of every step go to ``.cache/hub-screenshots/``. Skipped, with the reason, when not
root, without Chromium, or where JupyterHub's proxy cannot be installed from npm.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / ".cache" / "hub-screenshots"
LESSON, LESSON_ID, NOTEBOOK = "00-welcome", "00", "welcome.ipynb"
PREFIX = "mhl-t-"
INSTRUCTOR = f"{PREFIX}instructor"
LEARNERS = {f"{PREFIX}learner1": "full", f"{PREFIX}learner2": "partial", f"{PREFIX}learner3": "none"}
# the reference solution's autograded points in lesson 00 (the 3-point written answer is graded
# by hand); the partial learner answers exercises 1 and 2 (4 points each)
EXPECTED = {"full": 17.0, "partial": 8.0, "none": 0.0}
PASSWORD = "workshop-pass-1"

pytestmark = [pytest.mark.hub]
hub_mod = pytest.importorskip("jupyterhub", reason="JupyterHub is in the hub extra: make install")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from test_browser import CHROMIUM, DRIVER, SCALE, _texts, _wait, open_assignment_list  # noqa: E402

from labkit.course import hub  # noqa: E402

REPORT: dict[str, Any] = {}


def _cannot_run() -> str | None:
    """Why the round trip cannot run on this machine, or None. Checked when the test starts (a
    skip at import would leave `make hub-test` with no test collected, pytest's exit status 5)."""
    if CHROMIUM is None or DRIVER is None:
        return "headless Chromium is not installed: make browser-deps (as root)"
    if os.geteuid() != 0:
        return "the workshop hub creates system accounts: run make hub-test as root"
    for tool in ("useradd", "unshare", "setpriv", "runuser"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (util-linux, passwd)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proxy() -> None:
    if hub.PROXY.exists():
        return
    done = subprocess.run(
        ["make", "--no-print-directory", "hub-deps"], cwd=ROOT, capture_output=True, text=True
    )
    if not hub.PROXY.exists():
        pytest.skip(
            f"JupyterHub's proxy (configurable-http-proxy, npm) could not be installed: {done.stderr[-300:]}"
        )


@pytest.fixture(scope="module")
def workshop() -> Iterator[tuple[hub.Workshop, hub.HubProcess]]:
    reason = _cannot_run()
    if reason is not None:
        pytest.skip(reason)
    _proxy()
    hub_dir = Path(
        tempfile.mkdtemp(prefix="mhl-hub-test-", dir="/srv" if os.path.isdir("/srv") else "/var/tmp")
    )
    ws = hub.Workshop(
        hub_dir=hub_dir,
        learners=list(LEARNERS),
        instructor=INSTRUCTOR,
        port=_free_port(),
        lessons=[LESSON_ID],
    )
    hub.remove_accounts(ws.people)  # leftovers of an interrupted run
    running = None
    try:
        started = time.monotonic()
        token = hub.prepare(ws, seed_models=Path(os.environ.get("LABKIT_CACHE", ROOT / ".cache" / "labkit")))
        REPORT["prepare_s"] = round(time.monotonic() - started, 1)
        running = hub.start(ws, token, timeout=300 * SCALE)
        REPORT["hub_start_s"] = round(running.start_seconds, 1)
        yield ws, running
    finally:
        if running is not None:
            running.stop()
        hub.remove_accounts(ws.people)
        shutil.rmtree(hub_dir, ignore_errors=True)
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / "report.json").write_text(json.dumps(REPORT, indent=2), encoding="utf-8")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(DRIVER)), options=options)
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        try:
            driver.save_screenshot(str(SHOTS / "zz-last-page.png"))  # the last page, for a failed run
        finally:
            driver.quit()


def _shot(browser: Any, name: str) -> None:
    browser.save_screenshot(str(SHOTS / f"{name}.png"))


def _body(browser: Any) -> str:
    return str(browser.find_element(By.TAG_NAME, "body").text)


def _login(browser: Any, url: str, name: str) -> None:
    """Log in through the hub's form (the first login sets the password) and wait for JupyterLab."""
    browser.get(f"{url}/hub/logout")
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})  # every path: hub, servers
    browser.get(f"{url}/hub/login")
    _wait("the hub's login form", lambda: browser.find_elements(By.ID, "username_input"), timeout=120)
    browser.find_element(By.ID, "username_input").send_keys(name)
    browser.find_element(By.ID, "password_input").send_keys(PASSWORD)
    browser.find_element(By.ID, "login_submit").click()
    _wait(
        f"{name}'s server to start and JupyterLab to load (spawn, import of the notebook stack)",
        lambda: (
            f"/user/{name}/lab" in browser.current_url
            and browser.find_elements(By.CSS_SELECTOR, ".jp-DirListing-content")
        ),
        timeout=600,
        seen=lambda: f"{browser.current_url}: {_body(browser)[:300]}",
    )


def _assignment_panel(browser: Any) -> None:
    """Open nbgrader's Assignments panel from its menu."""
    open_assignment_list(browser)
    _wait("the Assignments panel", lambda: "Released assignments" in _body(browser), timeout=300)


def _button(browser: Any, label: str) -> Any:
    for b in browser.find_elements(By.TAG_NAME, "button"):
        if b.text.strip() == label and b.is_displayed() and b.is_enabled():
            return b
    return None


def _click(browser: Any, label: str, what: str, timeout: float = 300) -> None:
    _wait(what, lambda: _button(browser, label), timeout=timeout, seen=lambda: _body(browser)[-500:]).click()


def _dialog(browser: Any, what: str) -> str:
    """Wait for a JupyterLab dialog, return its text and dismiss it."""
    dialog = _wait(what, lambda: browser.find_elements(By.CSS_SELECTOR, ".jp-Dialog-content"), timeout=900)
    text = str(dialog[0].text)
    return text


def _close_dialog(browser: Any) -> None:
    for b in browser.find_elements(By.CSS_SELECTOR, ".jp-Dialog-button"):
        if b.is_displayed():
            b.click()
            return


def _api(url: str, token: str, method: str = "GET", body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        text = r.read().decode()
    return json.loads(text) if text else None


def _answers(kind: str) -> dict[str, str]:
    """The learner's answer per solution cell: the reference solution without nbgrader's markers."""
    if kind == "none":
        return {}
    ref = json.loads((ROOT / "solutions" / LESSON / NOTEBOOK).read_text(encoding="utf-8"))
    keep = {"check_batch", "accuracy"} if kind == "partial" else None
    out = {}
    for cell in ref["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if (
            cell["cell_type"] == "code"
            and meta.get("solution")
            and (keep is None or meta["grade_id"] in keep)
        ):
            lines = "".join(cell["source"]).splitlines()
            out[meta["grade_id"]] = "\n".join(
                x for x in lines if "### BEGIN SOLUTION" not in x and "### END SOLUTION" not in x
            )
        if cell["cell_type"] == "markdown" and meta.get("solution") and kind == "full":
            out[meta["grade_id"]] = (
                "A bank's fraud detector; the asset is its decisions, the adversary a fraudster who shapes "
                "transactions to pass as normal (integrity), with query access through the payment API."
            )
    return out


def _in_server(user: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a command as ``user`` in their server's mount namespace: exactly what their kernel sees."""
    pid = subprocess.run(["pgrep", "-u", user, "-f", "jupyterhub-singleuser"], capture_output=True, text=True)
    first = pid.stdout.split()[0]
    return subprocess.run(
        [
            "nsenter",
            "-t",
            first,
            "-m",
            "--",
            "setpriv",
            f"--reuid={user}",
            f"--regid={user}",
            "--init-groups",
            *args,
        ],
        capture_output=True,
        text=True,
    )


def _memory(user: str) -> dict[str, float]:
    folder = hub.cgroup_dirs(user).get("memory") or hub.cgroup_dirs(user).get("unified")
    if folder is None or not folder.exists():
        return {}
    stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines())
    rss = int(stat.get("total_rss", stat.get("anon", 0)))
    peak_file = folder / (
        "memory.max_usage_in_bytes" if (folder / "memory.max_usage_in_bytes").exists() else "memory.peak"
    )
    peak = int(peak_file.read_text()) if peak_file.exists() else 0
    return {"rss_mib": round(rss / 2**20, 1), "peak_mib": round(peak / 2**20, 1)}


def test_workshop_round_trip(workshop: tuple[hub.Workshop, hub.HubProcess], browser: Any) -> None:
    ws, running = workshop
    url, course = running.url, ws.course_dir
    env = {
        **os.environ,
        "PATH": f"{ws.venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "LABKIT_EXCHANGE": str(ws.exchange),
        "LABKIT_CACHE": str(ws.models),
        "LABKIT_PROFILE": ws.profile,
    }

    # 1. The instructor: formgrader lists the lessons; release lesson 00.
    _login(browser, url, INSTRUCTOR)
    _shot(browser, "01-instructor-lab")
    browser.get(f"{url}/user/{INSTRUCTOR}/formgrader")
    _wait(
        "formgrader to list lesson 00 (as the instructor, from ~/course)",
        lambda: LESSON in _texts(browser, "td"),
        timeout=300,
        seen=lambda: _body(browser)[:400],
    )
    _shot(browser, "02-formgrader-lessons")

    def row_link(css: str) -> Any:
        for row in browser.find_elements(By.CSS_SELECTOR, "tr"):
            names = row.find_elements(By.CSS_SELECTOR, "td.name")
            if names and names[0].text.strip() == LESSON:
                links = row.find_elements(By.CSS_SELECTOR, f"{css} a")
                return links[0] if links else None
        return None

    _wait("formgrader's release button for lesson 00", lambda: row_link("td.release"), timeout=120).click()
    _wait(
        "formgrader to report the release",
        lambda: "Successfully released" in _body(browser),
        timeout=300,
        seen=lambda: _body(browser)[-500:],
    )
    _shot(browser, "03-formgrader-released")
    assert (ws.exchange / ws.course_id / "outbound" / LESSON / NOTEBOOK).exists()

    # 2. Each learner: fetch, answer, validate, submit.
    tokens = {}
    for learner, kind in LEARNERS.items():
        _login(browser, url, learner)
        _assignment_panel(browser)
        _click(browser, "Fetch", f"{learner}: the Fetch button of lesson 00 in the Assignments tab")
        _wait(
            f"{learner}: lesson 00 under Downloaded assignments",
            lambda: _button(browser, "Submit"),
            timeout=300,
        )
        _shot(browser, f"10-{learner}-fetched")
        tokens[learner] = running.api("POST", f"/users/{learner}/tokens", {"note": "workshop test"})["token"]
        contents = f"{url}/user/{learner}/api/contents/{LESSON}/{NOTEBOOK}"
        nb = _api(contents, tokens[learner])["content"]
        for cell in nb["cells"]:
            answer = _answers(kind).get(cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", ""))
            if answer is not None:
                cell["source"] = answer
        _api(contents, tokens[learner], "PUT", {"type": "notebook", "format": "json", "content": nb})
        # the notebooks of a downloaded assignment, with their Validate buttons, unfold from its name
        _wait(
            f"{learner}: lesson 00's name under Downloaded assignments",
            lambda: [
                a
                for a in browser.find_elements(By.TAG_NAME, "a")
                if a.text.strip() == LESSON and a.is_displayed()
            ],
            timeout=120,
        )[0].click()
        _click(browser, "Validate", f"{learner}: the Validate button")
        result = _dialog(browser, f"{learner}: nbgrader's validation result (runs lesson 00 in a kernel)")
        _shot(browser, f"11-{learner}-validated")
        REPORT.setdefault("validation", {})[learner] = result[:200]
        if kind == "full":
            assert "Success" in result, result
        else:
            assert "Success" not in result, result
        _close_dialog(browser)
        REPORT.setdefault("memory_after_validate", {})[learner] = _memory(learner)
        _click(browser, "Submit", f"{learner}: the Submit button")
        _wait(
            f"{learner}: the submission listed under Submitted assignments",
            lambda learner=learner: (
                "There are no submitted assignments" not in _body(browser)
                and "Submitted assignments" in _body(browser)
                and len(list((ws.exchange / ws.course_id / "inbound").glob(f"{learner}+{LESSON}+*"))) > 0
            ),
            timeout=300,
        )
        _shot(browser, f"12-{learner}-submitted")

    # Nobody reads what is not theirs, from inside their own server.
    one, two = list(LEARNERS)[:2]
    inbound = ws.exchange / ws.course_id / "inbound"
    # nbgrader's exchange keeps submissions apart by an inbound folder nobody else can list and a
    # random part in each submission's name (the files themselves are world-readable by design)
    theirs = next(inbound.glob(f"{two}+{LESSON}+*"))
    assert len(theirs.name.rsplit("+", 1)[-1]) >= 8, "a submission's name should end in a random part"
    for path in (
        Path(f"/home/{two}/{LESSON}/{NOTEBOOK}"),
        course / "solutions" / LESSON / NOTEBOOK,
        course / "course.yml",
        ROOT / "solutions" / LESSON / NOTEBOOK,
        ws.state / "jupyterhub.sqlite",
    ):
        seen = _in_server(one, "cat", str(path))
        assert seen.returncode != 0 and not seen.stdout, f"{one} could read {path}"
    listing = _in_server(one, "ls", str(inbound))
    assert listing.returncode != 0 or not listing.stdout.strip(), f"{one} could list the inbound submissions"
    assert _in_server(one, "ls", str(ROOT)).stdout.strip() == "", (
        "the checkout should look empty to a learner"
    )

    # 3. The instructor: collect, grade with labkit, place and release the feedback.
    _login(browser, url, INSTRUCTOR)
    browser.get(f"{url}/user/{INSTRUCTOR}/formgrader")
    _wait("formgrader's collect button for lesson 00", lambda: row_link("td.collect"), timeout=300).click()
    _wait(
        "formgrader to report the collection",
        lambda: "Successfully collected" in _body(browser),
        timeout=300,
        seen=lambda: _body(browser)[-500:],
    )
    _shot(browser, "20-formgrader-collected")
    for learner in LEARNERS:
        assert (course / "submitted" / learner / LESSON / NOTEBOOK).exists(), (
            f"{learner}'s submission was not collected"
        )

    started = time.monotonic()
    graded = subprocess.run(
        # the checkout's labkit: the hub environment's grade fails in its sandbox here (a job's
        # result.log is never written); reported to the grader's maintainers
        [
            str(Path(sys.executable).parent / "labkit"),
            "grade",
            "submitted",
            "--lesson",
            LESSON_ID,
            "--jobs",
            "2",
            "--quiet",
        ],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800 * SCALE,
    )
    REPORT["grade_s"] = round(time.monotonic() - started, 1)
    assert graded.returncode == 0, graded.stdout[-2000:] + graded.stderr[-2000:]
    with open(course / "grades" / "grades.csv", newline="", encoding="utf-8") as fh:
        scores = {row["student"]: float(row["points"]) for row in csv.DictReader(fh)}
    REPORT["scores"] = scores
    REPORT["submissions_csv"] = (course / "grades" / "submissions.csv").read_text(encoding="utf-8")
    assert scores == {learner: EXPECTED[kind] for learner, kind in LEARNERS.items()}, scores
    placed = hub.publish_feedback(course, LESSON)
    # Every learner gets feedback, those who failed tests too (cut at the hidden boundary).
    assert set(placed) == set(LEARNERS), sorted(set(LEARNERS) - set(placed))
    subprocess.run(["chown", "-R", f"{INSTRUCTOR}:{INSTRUCTOR}", str(course)], check=True)

    browser.get(f"{url}/user/{INSTRUCTOR}/formgrader")
    _wait(
        "formgrader's release-feedback button", lambda: row_link("td.release-feedback"), timeout=300
    ).click()
    _wait(
        "formgrader to report the feedback release",
        lambda: (
            "Successfully released feedback" in _body(browser)
            or "released feedback" in _body(browser).lower()
        ),
        timeout=300,
        seen=lambda: _body(browser)[-500:],
    )
    _shot(browser, "21-formgrader-feedback-released")

    # Each learner fetches the feedback: their score, no hidden test.
    for learner, kind in LEARNERS.items():
        _login(browser, url, learner)
        _assignment_panel(browser)
        _click(browser, "Fetch Feedback", f"{learner}: the Fetch Feedback button")
        listing_url = f"{url}/user/{learner}/api/contents/{LESSON}/feedback"

        def feedback_file(listing_url: str = listing_url, token: str = tokens[learner]) -> str | None:
            stamps = _api(listing_url, token)["content"]
            return f"{LESSON}/feedback/{stamps[0]['name']}/welcome.html" if stamps else None

        path = _wait(f"{learner}: the feedback file in ~/{LESSON}/feedback/", feedback_file, timeout=300)
        browser.get(f"{url}/user/{learner}/files/{path}")
        _wait(
            f"{learner}: the feedback page",
            lambda: "Score" in _body(browser) or "score" in _body(browser),
            timeout=120,
        )
        _shot(browser, f"30-{learner}-feedback")
        html = browser.page_source
        assert "BEGIN HIDDEN TESTS" not in html and 'check_answer("00-q2"' not in html
        expected = EXPECTED[kind]
        assert f"{expected:g}" in _body(browser) or f"{expected:.1f}" in _body(browser), _body(browser)[:400]

    # 4. Credentials for those who passed (the issuer's key stays out of the course).
    issuer = ws.state / "issuer"
    keys = subprocess.run(
        [
            str(ws.venv_bin / "labkit"),
            "keys",
            "init",
            "--name",
            "Model Hardening Lab workshop",
            "--dir",
            str(issuer),
        ],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
    )
    assert keys.returncode == 0, keys.stderr[-1000:]
    cert = subprocess.run(
        [
            str(ws.venv_bin / "labkit"),
            "certify",
            "grades/grades.csv",
            "--submissions",
            "submitted",
            "--issuer-dir",
            str(issuer),
            "--out",
            "credentials",
        ],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
    )
    assert cert.returncode == 0, cert.stdout[-1000:] + cert.stderr[-1000:]
    issued = sorted(p.stem for p in (course / "credentials").glob("*.jwt") if p.stem != "status-list")
    REPORT["credentials"] = issued
    assert issued == [f"{PREFIX}learner1"], issued
    verified = subprocess.run(
        [
            str(ws.venv_bin / "labkit"),
            "verify",
            str(course / "credentials" / f"{PREFIX}learner1.jwt"),
            "--issuer",
            str(course / "credentials" / "issuer.jwks.json"),
        ],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0 and "VALID" in verified.stdout, verified.stdout + verified.stderr
    REPORT["memory_end"] = {learner: _memory(learner) for learner in LEARNERS}
