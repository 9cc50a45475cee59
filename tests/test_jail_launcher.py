"""The kernel launcher loads ``labkit/course/jail.py`` alone, by its path, in every grading worker
and inside every kernel sandbox: jail and the two siblings it loads beside it
(``namespaces.py``, ``seccomp.py``) must import nothing outside the standard library."""

from __future__ import annotations

import json
import subprocess
import sys

from labkit.course import jail, namespaces, seccomp


def _launcher_then(*statements: str) -> subprocess.CompletedProcess[str]:
    """Run the launcher's loading steps (not its ``main``), recording the modules loaded by
    ``exec_module``, then ``statements``; ``m`` is the loaded jail, ``new`` the modules."""
    steps = [s for s in jail.LAUNCHER if not s.startswith("sys.exit(")]
    at = next(i for i, s in enumerate(steps) if "exec_module" in s)
    code = [*steps[:at], "before = set(sys.modules)", steps[at], "new = sorted(set(sys.modules) - before)"]
    return subprocess.run(
        [sys.executable, "-c", ";".join([*code, *statements])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_launcher_loads_only_the_standard_library() -> None:
    done = _launcher_then("import json", "print(json.dumps(new))")
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    ours = {"labkit_jail_namespaces", "labkit_jail_seccomp"}
    assert ours <= set(loaded), f"the launcher did not load jail's siblings by path: {loaded}"
    outside = [
        name for name in loaded if name not in ours and name.split(".")[0] not in sys.stdlib_module_names
    ]
    assert outside == [], f"the launcher imported modules outside the standard library: {outside}"


def test_the_launchers_jail_uses_the_same_primitives_as_the_package() -> None:
    """Loaded alone, jail takes the filter and the namespace helpers from the files beside it,
    and they are the package's: the same seccomp program, the same sandbox account."""
    done = _launcher_then(
        "import json",
        "print(json.dumps([m.seccomp_filter().hex(), m.SANDBOX_UID, m.unshare.__module__]))",
    )
    assert done.returncode == 0, done.stderr
    program, uid, home = json.loads(done.stdout)
    expected = seccomp.seccomp_filter()
    assert expected is not None, "no seccomp table for this machine"
    assert bytes.fromhex(program) == expected
    assert uid == namespaces.SANDBOX_UID == jail.SANDBOX_UID
    assert home == "labkit_jail_namespaces"


def test_the_launcher_refuses_an_unknown_command() -> None:
    done = subprocess.run(
        [sys.executable, "-c", ";".join(jail.LAUNCHER), "format-disk"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "expected 'probe UID'" in done.stderr
