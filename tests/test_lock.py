"""The environment is the locked one: uv.lock agrees with pyproject.toml, the installed
versions are the locked ones, and every tool targets the same Python versions."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCK = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
# A name can be locked at several versions, one per range of Python versions (numpy, scipy...).
LOCKED: dict[str, set[str]] = {}
for _package in LOCK["package"]:
    LOCKED.setdefault(canonicalize_name(_package["name"]), set()).add(_package["version"])


def _uv() -> str:
    found = Path(sys.executable).with_name("uv")
    if found.exists():
        return str(found)
    which = shutil.which("uv")
    if which is None:
        pytest.fail("uv is not installed: the lock cannot be checked (make install provides it)")
    return which


def _lock_check(pyproject: str, folder: Path, *, offline: bool = True) -> subprocess.CompletedProcess[str]:
    """``uv lock --check`` on a copy of the lock beside ``pyproject`` in ``folder``.

    A copy, so the check never touches the checkout; offline by default, so the lock alone must
    answer.
    """
    (folder / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    shutil.copy(ROOT / "uv.lock", folder / "uv.lock")
    (folder / "README.md").write_text("copy\n", encoding="utf-8")
    return subprocess.run(
        [_uv(), "lock", "--check", *(["--offline"] if offline else []), "--python", sys.executable],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_lock_agrees_with_pyproject(tmp_path: Path) -> None:
    done = _lock_check((ROOT / "pyproject.toml").read_text(encoding="utf-8"), tmp_path)
    assert done.returncode == 0, f"uv.lock is out of date with pyproject.toml (run make lock):\n{done.stderr}"


def test_lock_check_notices_a_new_dependency(tmp_path: Path) -> None:
    """The check above can fail: a dependency added to pyproject.toml alone is caught."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    changed = text.replace("dependencies = [\n", 'dependencies = [\n    "rich>=13",\n', 1)
    assert changed != text
    done = _lock_check(changed, tmp_path)
    if "network was disabled" in done.stderr:
        # Offline, uv can re-resolve a changed pyproject only from package metadata in its own
        # cache, which a fresh account does not have: ask the registry (as make install does).
        done = _lock_check(changed, tmp_path, offline=False)
    assert done.returncode != 0
    assert "needs to be updated" in done.stderr, done.stderr


def test_installed_versions_are_the_locked_ones() -> None:
    import setuptools  # noqa: F401  # puts its vendored copies on sys.path: they must not count

    # What the environment holds: its site-packages only. sys.path can also hold copies that a
    # package vendors for itself (setuptools puts its _vendor folder there once imported).
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in importlib.metadata.distributions(path=site)
        if d.metadata["Name"]
    }
    project = canonicalize_name(PYPROJECT["project"]["name"])
    wanted = ["torch", "torchvision", "numpy", "nbgrader", "jupyterlab", "pydantic", "uv", "torchattacks"]
    for name in wanted:
        assert name in installed, f"{name} is not installed (make install installs the lock)"
    drift = []
    for name, version in installed.items():
        if name == project or name not in LOCKED:
            continue
        locked = LOCKED[name]
        # A local tag (+cu132, +cpu) names the build of the same release; uv.lock writes the
        # normalised version (a wheel's 2.012 is locked as 2.12), so compare parsed releases.
        if Version(version).public not in {Version(v).public for v in locked}:
            drift.append(f"{name}: installed {version}, locked {' or '.join(sorted(locked))}")
    assert not drift, "installed packages differ from uv.lock (run make install):\n" + "\n".join(drift)


def test_torch_is_pinned_to_the_measured_versions() -> None:
    deps = PYPROJECT["project"]["dependencies"]
    pins = {re.split(r"[=<>!~ ]", d)[0]: d for d in deps}
    assert re.fullmatch(r"torch==[\d.]+", pins["torch"]), "torch must be pinned exactly in pyproject.toml"
    assert re.fullmatch(r"torchvision==[\d.]+", pins["torchvision"])
    assert LOCKED["torch"] == {pins["torch"].split("==")[1]}
    assert LOCKED["torchvision"] == {pins["torchvision"].split("==")[1]}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    minor = ".".join(pins["torch"].split("==")[1].split(".")[:2])
    assert f"torch {minor}" in readme, f"the README's figures should name the locked torch {minor}"


def test_python_versions_agree() -> None:
    declared = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert SpecifierSet(LOCK["requires-python"]) == declared, (
        "uv.lock was made for other Python versions than pyproject.toml declares"
    )
    floor = PYPROJECT["tool"]["mypy"]["python_version"]
    assert f"{floor}.0" in declared, f"mypy targets {floor}, outside requires-python {declared}"
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py" + floor.replace(".", "")
    # mypy and ruff target the oldest Python allowed, so nothing newer slips in.
    major, minor_ = (int(p) for p in floor.split("."))
    assert f"{major}.{minor_ - 1}.99" not in declared, "mypy/ruff should target the oldest allowed Python"
    here = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    assert here in declared, f"this Python ({here}) is outside requires-python {declared}"


def test_makefile_bootstraps_the_locked_uv() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(r"^UV_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert match, "the Makefile should name the uv version it bootstraps"
    assert LOCKED["uv"] == {match.group(1)}, "Makefile's UV_VERSION differs from uv.lock"
    assert "--locked" in makefile, "make install must refuse a lock that is out of date"
