"""The workshop hub's spawner: each person's single-user server in a private view, with limits.

:class:`WorkshopSpawner` (a JupyterHub ``LocalProcessSpawner``; it exists where JupyterHub is
installed, the ``hub`` extra) starts every server in its own mount namespace with a private
``/tmp`` and ``/dev/shm`` and the folders it must not see hidden (:data:`ENTER`), then drops to
the person's account; :func:`cgroup_dirs` names the control groups that cap each person's memory,
CPU and processes. :mod:`labkit.course.hub` sets the hub up and points JupyterHub at this class.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

__all__ = ["ENTER", "cgroup_dirs"]

# Runs as root in the server's own mount namespace (``unshare --mount``), then becomes the learner.
ENTER = r"""
mount -t tmpfs -o mode=1777,size=1g,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,size=256m,nosuid,nodev tmpfs /dev/shm
for hide in ${WORKSHOP_HIDE:-}; do
    if [ -d "$hide" ]; then mount -t tmpfs -o ro,mode=0555,size=4k tmpfs "$hide"; fi
done
cd "$HOME"
exec setpriv --reuid="$WORKSHOP_UID" --regid="$WORKSHOP_GID" --init-groups --no-new-privs \
    -- /bin/sh -c "exec $1"
"""


def cgroup_dirs(user: str) -> dict[str, Path]:
    """The control-group folders (cgroup v1 or v2) that hold one person's processes."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for ctrl in controllers.split(",") if controllers else ["unified"]:
            own[ctrl] = path.lstrip("/")
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():  # cgroup v2, unified hierarchy
        return {"unified": root / own.get("unified", "") / "mhl-hub" / user}
    return {ctrl: root / ctrl / own.get(ctrl, "") / "mhl-hub" / user for ctrl in ("memory", "pids", "cpu")}


try:  # the spawner exists only where JupyterHub is installed (the hub extra)
    from jupyterhub.spawner import LocalProcessSpawner
    from traitlets import Integer, List, Unicode
except ImportError:  # pragma: no cover - labkit without the hub extra
    pass
else:

    class WorkshopSpawner(LocalProcessSpawner):
        """Local single-user servers under each person's account, with limits and a private view.

        Every server starts in its own mount namespace (``unshare --mount``) with a private
        ``/tmp`` and ``/dev/shm`` and the course checkout hidden, then drops to the person's
        account with ``setpriv`` (no new privileges).
        Memory (``mem_limit``), CPU (``cpu_limit``) and processes (``pids_limit``) are capped by
        a control group per person, which also gives the per-learner memory the README reports.
        """

        pids_limit = Integer(512, help="processes and threads per person").tag(config=True)
        etc_dir = Unicode(help="the hub's Jupyter configuration, one folder per role").tag(config=True)
        instructor = Unicode(help="the instructor's account (gets formgrader)").tag(config=True)
        hide_dirs = List(Unicode(), help="folders hidden from every server (the checkout)").tag(config=True)
        learner_hide_dirs = List(Unicode(), help="folders hidden from learners (the instructor's home)").tag(
            config=True
        )

        def _limits(self) -> dict[str, dict[str, str]]:
            mem = str(int(self.mem_limit)) if self.mem_limit else "-1"
            quota = str(int(self.cpu_limit * 100_000)) if self.cpu_limit else "-1"
            return {
                "memory": {"memory.limit_in_bytes": mem},
                "pids": {"pids.max": str(self.pids_limit)},
                "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": quota},
                "unified": {
                    "memory.max": mem if mem != "-1" else "max",
                    "pids.max": str(self.pids_limit),
                    "cpu.max": f"{quota if quota != '-1' else 'max'} 100000",
                },
            }

        def _cgroups(self) -> list[Path]:
            """Create this person's control groups with their limits; [] where that is not possible."""
            made = []
            limits = self._limits()
            for ctrl, folder in cgroup_dirs(self.user.name).items():
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    for name, value in limits[ctrl].items():
                        if (folder / name).exists():
                            (folder / name).write_text(value)
                    made.append(folder)
                except OSError as error:
                    self.log.warning("no %s limit for %s: %s", ctrl, self.user.name, error)
            return made

        def get_env(self) -> dict[str, str]:
            env: dict[str, str] = super().get_env()
            role = "instructor" if self.user.name == self.instructor else "learner"
            env["JUPYTER_CONFIG_PATH"] = os.path.join(self.etc_dir, role)
            user = pwd.getpwnam(self.user.name)
            hide = [*self.hide_dirs, *(self.learner_hide_dirs if role == "learner" else [])]
            env.update(
                WORKSHOP_UID=str(user.pw_uid), WORKSHOP_GID=str(user.pw_gid), WORKSHOP_HIDE=" ".join(hide)
            )
            return env

        def make_preexec_fn(self, name: str) -> Any:
            groups = self._cgroups()

            def preexec() -> None:  # runs as root in the child, before unshare starts
                for folder in groups:
                    with open(folder / "cgroup.procs", "w") as f:
                        f.write(str(os.getpid()))

            return preexec

        async def start(self) -> Any:
            self.shell_cmd = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-ec",
                ENTER,
                "enter",
            ]
            return await super().start()

    __all__ += ["WorkshopSpawner"]
