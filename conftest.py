"""Repository-wide pytest hooks: report how long each notebook took when nbval runs them."""

from __future__ import annotations

from collections import defaultdict

import pytest

_NOTEBOOK_SECONDS: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _NOTEBOOK_SECONDS[path] += report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _NOTEBOOK_SECONDS:
        return
    terminalreporter.section("notebook run times (all cells, kernel start excluded)")
    for path, seconds in sorted(_NOTEBOOK_SECONDS.items()):
        terminalreporter.write_line(f"{seconds:6.1f} s  {path}")
