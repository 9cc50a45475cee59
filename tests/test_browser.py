"""The learner's first minutes, in a real browser: `make lab`, the lessons, nbgrader, lesson 00.

Starts JupyterLab exactly as ``make lab`` does (on loopback, with a token, no browser), then
drives headless Chromium through Selenium: the server lands on lessons/ and the file browser
lists them, the nbgrader menu opens the assignment list (working, with this machine's exchange),
formgrader lists the course's lessons, and lesson 00 opens and runs its first cell in the
course's kernel. The gradebook and the exchange go to a scratch folder, not the checkout. Chromium comes from the Debian packages ``chromium`` and ``chromium-driver`` (``make
test`` installs them when it runs as root); where they are missing the test is skipped and says
how to install them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from labkit.course import load_course

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="headless Chromium is not installed: `apt-get install chromium chromium-driver` "
        "(make test does this when run as root)",
    ),
]
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is in the test extra: pip install -e .[test]"
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Every wait polls and returns as soon as its condition holds, so long limits cost nothing on a
# quiet machine. They are sized for a busy 2-core one (load average 8 and more: starting a kernel
# and importing torch there took minutes), and stretch further with LABKIT_BROWSER_TIMEOUT_SCALE.
SCALE = float(os.environ.get("LABKIT_BROWSER_TIMEOUT_SCALE", "1"))


def _wait(what: str, check: Callable[[], Any], timeout: float, seen: Callable[[], str] | None = None) -> Any:
    """Poll ``check`` until it returns something true; on time-out say what was awaited and seen."""
    timeout *= SCALE
    start = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - start < timeout:
        try:
            result = check()
            if result:
                return result
        except AssertionError:  # a check that asserts has seen something that will not get better
            raise
        except Exception as error:  # the page is still loading
            last = error
        time.sleep(0.5)
    detail = f"timed out after {timeout:.0f} s waiting for {what}"
    if last is not None:
        detail += f"; last error: {type(last).__name__}: {str(last).splitlines()[0] if str(last) else ''}"
    if seen is not None:
        try:
            detail += f"; the page showed: {seen()}"
        except Exception as error:
            detail += f"; the page could not be read ({type(error).__name__})"
    try:
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        detail += f"; load average {load} on {os.cpu_count()} cores"
    except OSError:
        pass
    raise AssertionError(detail)


class Lab:
    """The running `make lab` server: its base URL, token and a fresh workspace for this run."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token
        # a fresh workspace, so no layout saved by an earlier run is restored
        self.workspace = f"{base}/lab/workspaces/test-{token[:8]}"

    def tree(self, path: str, *, reset: bool = False) -> str:
        """The lab URL that opens ``path`` (relative to the course root) in the fresh workspace."""
        return f"{self.workspace}/tree/{path}?{'reset&' if reset else ''}token={self.token}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """`make lab` on a free loopback port; yields the server, stops it afterwards.

    JupyterLab's user settings and workspaces go to a temporary folder, with autosave off, so
    running a cell never writes into the learner copy of lesson 00; nbgrader's gradebook and
    exchange go there too (LABKIT_GRADEBOOK, LABKIT_EXCHANGE), so formgrader leaves the checkout alone.
    """
    port, token = _free_port(), secrets.token_hex(16)
    home = tmp_path_factory.mktemp("jupyterlab")
    settings = home / "settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text('{"autosave": false}', encoding="utf-8")
    env = {
        **os.environ,
        "MAKEFLAGS": "",
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "LABKIT_GRADEBOOK": str(home / "gradebook.db"),
        "LABKIT_EXCHANGE": str(home / "exchange"),
    }
    args = f"--no-browser --port={port} --ServerApp.ip=127.0.0.1 --IdentityProvider.token={token}"
    log = (ROOT / ".cache").resolve()
    log.mkdir(exist_ok=True)
    with open(log / "browser-test-lab.log", "w") as out:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "lab", f"LAB_ARGS={args}"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        try:

            def up() -> bool:
                assert proc.poll() is None, (
                    f"make lab exited with {proc.returncode}; see .cache/browser-test-lab.log"
                )
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    return bool(r.status == 200)

            _wait("JupyterLab to answer (make lab: install check, learner copies, server start)", up, 600)
            yield Lab(base, token)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(DRIVER)), options=options)
    try:
        yield driver
    finally:
        shot = ROOT / ".cache" / "browser-test.png"
        driver.save_screenshot(str(shot))  # what the page looked like at the end, for a failed run
        driver.quit()


def open_assignment_list(browser: Any) -> None:
    """Click nbgrader's menu, then its Assignment List item (the hub test uses this too)."""
    menu = _wait(
        "nbgrader's menu",
        lambda: [
            e for e in browser.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel") if e.text == "Nbgrader"
        ],
        timeout=300,
        seen=lambda: ", ".join(_texts(browser, ".lm-MenuBar-itemLabel")),
    )
    menu[0].click()
    item = _wait(
        "the Assignment List item",
        lambda: [
            e
            for e in browser.find_elements(By.CSS_SELECTOR, ".lm-Menu-itemLabel")
            if e.text == "Assignment List"
        ],
        timeout=60,
        seen=lambda: ", ".join(_texts(browser, ".lm-Menu-itemLabel")),
    )
    item[0].click()


def _texts(browser: Any, css: str) -> list[str]:
    return [e.text.strip() for e in browser.find_elements(By.CSS_SELECTOR, css)]


def test_lab_lands_on_lessons(lab: Lab) -> None:
    """The server's root is the course root (for nbgrader), and its front page opens lessons/."""
    with urllib.request.urlopen(f"{lab.base}/?token={lab.token}", timeout=60) as r:
        landed = r.geturl()
    assert landed.split("?")[0].endswith("/lab/tree/lessons"), (
        f"make lab should land on lessons/, got {landed}"
    )


def test_formgrader_lists_the_course_lessons(lab: Lab, browser: Any) -> None:
    """Formgrader loads (nbgrader's config found, alembic on PATH) and lists every ready lesson."""
    ready = {lesson.slug for lesson in load_course(ROOT / "course.yml").ready_lessons}
    browser.get(f"{lab.base}/formgrader?token={lab.token}")

    def listed() -> set[str]:
        return {e.text.strip() for e in browser.find_elements(By.CSS_SELECTOR, "#main_table td a, td")}

    _wait(
        "formgrader's Manage Assignments table to list every ready lesson of course.yml",
        lambda: ready <= listed(),
        timeout=300,
        seen=lambda: browser.find_element(By.TAG_NAME, "body").text[:400],
    )
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Loading, please wait" not in body


def test_lab_lists_lessons_opens_nbgrader_and_runs_lesson_00(lab: Lab, browser: Any) -> None:
    """The file browser shows the lessons, nbgrader's assignment list opens, lesson 00 runs its first cell."""
    browser.get(lab.tree("lessons", reset=True))
    expected = {"00-welcome", "01-adversarial-examples"}
    _wait(
        "the lessons in the file browser",
        lambda: expected <= set(_texts(browser, ".jp-DirListing-itemText")),
        timeout=300,
        seen=lambda: ", ".join(_texts(browser, ".jp-DirListing-itemText")) or "no files listed",
    )

    # nbgrader's own menu, then its assignment list panel
    open_assignment_list(browser)
    panel = ".lm-DockPanel-widget, .lm-Widget"
    _wait(
        "the assignment list panel",
        lambda: any("Released assignments" in t for t in _texts(browser, panel)),
        timeout=300,
    )
    # With this machine's exchange it settles on an empty list, not on an error.
    _wait(
        "the assignment list to finish loading (no lesson released to the scratch exchange)",
        lambda: any("There are no assignments to fetch" in t for t in _texts(browser, panel)),
        timeout=300,
        seen=lambda: " | ".join(t for t in _texts(browser, panel) if "assignment" in t.lower())[:400],
    )
    shown = " ".join(_texts(browser, panel))
    assert "Error fetching courses" not in shown and "does not exist" not in shown, shown[:400]

    # lesson 00: open it, run the first code cell in the kernel
    browser.get(lab.tree("lessons/00-welcome/welcome.ipynb"))
    first_cell = ".jp-Notebook .jp-CodeCell .cm-content"
    _wait(
        "lesson 00's first code cell", lambda: browser.find_elements(By.CSS_SELECTOR, first_cell), timeout=300
    )

    def status() -> str:
        prompts = " ".join(t for t in _texts(browser, ".jp-CodeCell .jp-InputPrompt") if t) or "no prompts"
        kernel = [t for t in _texts(browser, ".jp-StatusBar-TextItem, .jp-Toolbar-kernelStatus") if t]
        return f"cell prompts: {prompts}; status bar: {' | '.join(kernel) or 'empty'}"

    # Starting the kernel and importing torch can take minutes on a busy machine.
    _wait("the kernel to be idle", lambda: "Idle" in browser.page_source, timeout=600, seen=status)

    def prompts() -> list[str]:
        return [t for t in _texts(browser, ".jp-CodeCell .jp-InputPrompt") if t]

    def run_first_cell() -> bool:
        """Shift+Enter on the first cell, until the notebook shows it queued or run.

        The notebook re-renders while it settles, which can swallow a key press: find the cell
        afresh and press again, rather than wait for a run that was never asked for.
        """
        cell = browser.find_elements(By.CSS_SELECTOR, first_cell)[0]
        cell.click()
        cell.send_keys(Keys.SHIFT, Keys.ENTER)
        accepted = time.monotonic() + 20 * SCALE
        while time.monotonic() < accepted:
            if any(t.startswith(("[*]", "[1]")) for t in prompts()):
                return True
            time.sleep(0.5)
        return False

    _wait("the first cell to be queued (Shift+Enter)", run_first_cell, timeout=300, seen=status)
    prompt = _wait(
        "the first cell to finish running (its prompt to read [1])",
        lambda: [t for t in prompts() if t.startswith("[1]")],
        timeout=600,
        seen=status,
    )
    assert prompt
    outputs = " ".join(_texts(browser, ".jp-CodeCell .jp-OutputArea-output"))
    assert "profile:" in outputs, f"the first cell should print the device and profile, got {outputs!r}"
    assert "Error" not in outputs
