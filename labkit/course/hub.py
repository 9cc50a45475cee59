"""A workshop on one machine: JupyterHub for an instructor and a room of learners, with nbgrader.

``make hub`` (``python -m labkit.course.hub up``) runs as root and sets up, under one folder
(``HUB_DIR``, default ``/srv/mhl-hub``):

* one system account per person (``useradd``; homes are private, mode 0700): the instructor and
  ``N`` learners. Each single-user server runs under its owner's account, so the kernel of one
  learner cannot read another's files;
* the instructor's course folder, ``~<instructor>/course`` (a copy of ``course.yml``,
  ``nbgrader_config.py``, ``solutions/`` and ``lessons/``), where formgrader, ``nbgrader
  collect`` and ``labkit grade`` run; learners' servers do not see the instructor's home;
* nbgrader's exchange (``exchange/``), whose course folder belongs to the instructor, so only
  the instructor releases; learners fetch, submit and fetch feedback from the Assignments tab;
* the course's environment, ``venv/``, installed from ``uv.lock`` (``uv sync --locked
  --no-editable``) with a Python every account can run (default ``/usr/bin/python3``);
* the zoo models, pretrained once by ``labkit pretrain`` into ``models/`` (``LABKIT_CACHE``),
  read-only for the learners;
* JupyterHub on loopback with the first-use authenticator (each person sets a password at the
  first login; only the names on the roster can log in) and
  :class:`~labkit.course.spawner.WorkshopSpawner`: local
  processes under the person's account, each in a control group with a memory, CPU and process
  limit, with a private ``/tmp`` and the course checkout hidden (it holds the reference
  solutions and the repository history).

Learners get JupyterLab with the Assignments tab only; the instructor also gets formgrader and
the Create Assignment toolbar. See the README, "Workshops", for the day's order of work.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labkit.course.spawner import cgroup_dirs

__all__ = [
    "HubProcess",
    "Workshop",
    "cgroup_dirs",
    "prepare",
    "publish_feedback",
    "remove_accounts",
    "start",
]

CHECKOUT = Path(__file__).resolve().parents[2]
PROXY = CHECKOUT / ".cache" / "node" / "node_modules" / ".bin" / "configurable-http-proxy"

# nbgrader's parts a learner does not need: formgrader and the instructor's course list.
LEARNER_SERVER_EXTENSIONS_OFF = (
    "nbgrader.server_extensions.formgrader",
    "nbgrader.server_extensions.course_list",
)
LEARNER_LAB_EXTENSIONS_OFF = (
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:course-list",
    "@jupyter/nbgrader:create-assignment",
)


@dataclass
class Workshop:
    """Who takes part, where the hub keeps its files, and what each server may use.

    Parameters
    ----------
    hub_dir:
        The hub's folder (state, exchange, models, Jupyter configuration); not inside the checkout.
    learners:
        Account names of the learners (system accounts, created when missing).
    instructor:
        Account name of the instructor (JupyterHub admin, owns the course folder and the exchange).
    port:
        Where the hub listens on 127.0.0.1.
    lessons:
        Lesson ids this workshop teaches; the instructor's course marks the others ``planned``,
        so grades and certificates cover what was taught. Empty: every ready lesson.
    mem_mb, cpus, pids:
        Per-person limits (control groups): memory in MiB, CPUs, processes and threads.
    profile:
        ``LABKIT_PROFILE`` of every server (``ci`` for a laptop-sized room, ``gpu`` on GPU nodes).
    python:
        The interpreter of the hub's environment; every account must be able to run it.
    """

    hub_dir: Path
    learners: list[str]
    instructor: str = "mhl-instructor"
    port: int = 8000
    lessons: list[str] = field(default_factory=list)
    mem_mb: int = 3072
    cpus: float = 1.0
    pids: int = 512
    profile: str = "ci"
    checkout: Path = CHECKOUT
    idle_timeout_s: int = 3600
    python: str = "/usr/bin/python3"

    @property
    def exchange(self) -> Path:
        return self.hub_dir / "exchange"

    @property
    def models(self) -> Path:
        return self.hub_dir / "models"

    @property
    def state(self) -> Path:
        return self.hub_dir / "state"

    @property
    def course_dir(self) -> Path:
        return Path(pwd.getpwnam(self.instructor).pw_dir) / "course"

    @property
    def course_id(self) -> str:
        from labkit.course import load_course

        return load_course(self.checkout / "course.yml").course_id

    @property
    def venv_bin(self) -> Path:
        return self.hub_dir / "venv" / "bin"

    @property
    def people(self) -> list[str]:
        return [self.instructor, *self.learners]


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, text=True, capture_output=True, **kwargs)


def _ensure_account(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        _run(["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", name])
    home = Path(pwd.getpwnam(name).pw_dir)
    home.mkdir(exist_ok=True)
    shutil.chown(home, user=name, group=name)
    home.chmod(0o700)


def remove_accounts(names: Iterable[str]) -> None:
    """Delete the accounts and their homes (the course folder and the learners' work go too)."""
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        subprocess.run(["pkill", "-KILL", "-u", name], check=False, capture_output=True)
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


def _copy_course(workshop: Workshop) -> None:
    """The instructor's course folder: the manifest, nbgrader's config, sources, releases and the
    answer key."""
    dest = workshop.course_dir
    dest.mkdir(exist_ok=True)
    for name in ("solutions", "lessons", "instructor"):
        shutil.copytree(workshop.checkout / name, dest / name, dirs_exist_ok=True)
    # The answer key is instructor material: readable by the instructor only (the grader reads it
    # before any learner code starts, and hands the checker one lesson's sealed key).
    (dest / "instructor").chmod(0o700)
    # This workshop's cohort secret keys the answer checks (kept across restarts of the hub).
    from labkit.course.answers import init_cohort_secret, secret_path

    if not secret_path(dest).exists():
        init_cohort_secret(dest)
    shutil.copy2(workshop.checkout / "nbgrader_config.py", dest / "nbgrader_config.py")
    manifest = yaml.safe_load((workshop.checkout / "course.yml").read_text(encoding="utf-8"))
    if workshop.lessons:
        for lesson in manifest["lessons"]:
            if lesson["id"] not in workshop.lessons and lesson.get("status") == "ready":
                lesson["status"] = "planned"
    (dest / "course.yml").write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    _run(["chown", "-R", f"{workshop.instructor}:{workshop.instructor}", str(dest)])
    # labkit grade runs each kernel under an account of its own, which must reach the course;
    # learners' servers never see the instructor's home (WorkshopSpawner hides it).
    dest.chmod(0o755)
    dest.parent.chmod(0o711)


def _nbgrader_configs(workshop: Workshop) -> None:
    """Jupyter configuration per role: learners see the Assignments tab only."""
    etc = workshop.hub_dir / "etc"
    learner, instructor = etc / "learner", etc / "instructor"
    for folder in (learner / "labconfig", instructor):
        folder.mkdir(parents=True, exist_ok=True)
    (learner / "nbgrader_config.py").write_text(
        "c = get_config()  # noqa: F821\n"
        f"c.CourseDirectory.course_id = {workshop.course_id!r}\n"
        f"c.Exchange.root = {str(workshop.exchange)!r}\n",
        encoding="utf-8",
    )
    (learner / "jupyter_server_config.json").write_text(
        json.dumps(
            {"ServerApp": {"jpserver_extensions": dict.fromkeys(LEARNER_SERVER_EXTENSIONS_OFF, False)}}
        ),
        encoding="utf-8",
    )
    (learner / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": dict.fromkeys(LEARNER_LAB_EXTENSIONS_OFF, True)}), encoding="utf-8"
    )
    # formgrader reads nbgrader's config from the server's working directory (the home) and the
    # Jupyter config path: load the course's own config from the course folder.
    (instructor / "nbgrader_config.py").write_text(
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig('nbgrader_config.py', path={str(workshop.course_dir)!r})  # noqa: F821\n",
        encoding="utf-8",
    )
    _run(["chmod", "-R", "a+rX", str(etc)])


def _exchange(workshop: Workshop) -> None:
    """nbgrader's exchange: its course folder belongs to the instructor, so only they release.

    nbgrader wants the exchange's root writable by everyone; with the sticky bit nobody but the
    instructor can remove or replace the course folder made here before anyone logs in.
    """
    workshop.exchange.mkdir(parents=True, exist_ok=True)
    workshop.exchange.chmod(0o1777)
    course = workshop.exchange / workshop.course_id
    course.mkdir(exist_ok=True)
    shutil.chown(course, user=workshop.instructor, group=workshop.instructor)
    course.chmod(0o755)


def _environment(workshop: Workshop) -> None:
    """The course's locked environment for every server, installed the way make install does."""
    here = Path(sys.executable).parent
    uv = str(here / "uv") if (here / "uv").exists() else shutil.which("uv")
    if uv is None:
        raise FileNotFoundError("uv is not installed: run make install (it installs the locked uv)")
    for parent in [Path(workshop.python), *Path(workshop.python).parents]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            raise PermissionError(
                f"{workshop.python}: {parent} is closed to other accounts; pick another Python"
            )
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(workshop.hub_dir / "venv"),
        "UV_PYTHON_DOWNLOADS": "never",
    }
    args = ["sync", "--locked", "--no-editable", "--reinstall-package", "labkit", "--extra", "hub"]
    args += ["--python", workshop.python]
    _run([uv, *args], cwd=workshop.checkout, env=env)
    _run(["chmod", "-R", "a+rX,go-w", str(workshop.hub_dir / "venv")])


def _pretrain(workshop: Workshop, *, seed_from: Path | None = None) -> None:
    """Train the zoo models once into the shared cache, then make it read-only for everyone."""
    if seed_from is not None and (seed_from / "models").is_dir():
        shutil.copytree(seed_from / "models", workshop.models / "models", dirs_exist_ok=True)
    env = {**os.environ, "LABKIT_CACHE": str(workshop.models), "LABKIT_PROFILE": workshop.profile}
    _run([str(workshop.venv_bin / "labkit"), "pretrain", "--quiet"], env=env)
    _run(["chown", "-R", "root:root", str(workshop.models)])
    _run(["chmod", "-R", "a+rX,go-w", str(workshop.models)])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hub_config(workshop: Workshop, api_token: str) -> str:
    """jupyterhub_config.py for this workshop (kept in the hub's private state folder)."""
    python = str(workshop.venv_bin / "python")
    settings = {
        "ip": "127.0.0.1",
        "port": workshop.port,
        "hub_port": _free_port(),
        "proxy_api_port": _free_port(),
        "state": str(workshop.state),
        "proxy": str(PROXY),
        "people": workshop.people,
        "instructor": workshop.instructor,
        "singleuser": str(workshop.venv_bin / "jupyterhub-singleuser"),
        "python": python,
        "api_token": api_token,
        "idle_timeout_s": workshop.idle_timeout_s,
        "environment": {
            "PATH": f"{workshop.venv_bin}:/usr/local/bin:/usr/bin:/bin",
            "LABKIT_CACHE": str(workshop.models),
            "LABKIT_PROFILE": workshop.profile,
            "LABKIT_EXCHANGE": str(workshop.exchange),
            "OMP_NUM_THREADS": str(max(1, int(workshop.cpus))),
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        },
        "limits": {"mem_mb": workshop.mem_mb, "cpus": workshop.cpus, "pids": workshop.pids},
        "etc": str(workshop.hub_dir / "etc"),
        "hide": [str(workshop.checkout), str(workshop.state)],
        "hide_from_learners": [str(workshop.course_dir.parent)],
    }
    return f"""# Generated by labkit.course.hub for one workshop; regenerate with make hub.
settings = {settings!r}
c = get_config()  # noqa: F821
c.JupyterHub.ip = settings["ip"]
c.JupyterHub.port = settings["port"]
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = settings["hub_port"]
c.ConfigurableHTTPProxy.command = [settings["proxy"]]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{{settings['proxy_api_port']}}"
c.ConfigurableHTTPProxy.pid_file = settings["state"] + "/proxy.pid"
c.JupyterHub.db_url = "sqlite:///" + settings["state"] + "/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = settings["state"] + "/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = settings["state"] + "/jupyterhub.pid"
# First use sets the password; only the roster can log in; the instructor is the admin.
c.JupyterHub.authenticator_class = "firstuseauthenticator.FirstUseAuthenticator"
c.FirstUseAuthenticator.dbm_path = settings["state"] + "/passwords.dbm"
c.FirstUseAuthenticator.create_users = False
c.FirstUseAuthenticator.min_password_length = 8
c.Authenticator.allowed_users = set(settings["people"])
c.Authenticator.admin_users = {{settings["instructor"]}}
c.JupyterHub.spawner_class = "labkit.course.spawner.WorkshopSpawner"
c.Spawner.cmd = [settings["singleuser"]]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.environment = settings["environment"]
c.Spawner.mem_limit = f"{{settings['limits']['mem_mb']}}M"
c.Spawner.cpu_limit = settings["limits"]["cpus"]
# A busy machine needs minutes to import torch and start a server.
c.Spawner.start_timeout = 600
c.Spawner.http_timeout = 600
c.WorkshopSpawner.pids_limit = settings["limits"]["pids"]
c.WorkshopSpawner.etc_dir = settings["etc"]
c.WorkshopSpawner.instructor = settings["instructor"]
c.WorkshopSpawner.hide_dirs = settings["hide"]
c.WorkshopSpawner.learner_hide_dirs = settings["hide_from_learners"]
c.JupyterHub.services = [
    {{"name": "workshop-admin", "api_token": settings["api_token"]}},
    {{
        "name": "idle-culler",
        "command": [settings["python"], "-m", "jupyterhub_idle_culler",
                    f"--timeout={{settings['idle_timeout_s']}}"],
    }},
]
c.JupyterHub.load_roles = [
    {{
        "name": "workshop-admin",
        "scopes": ["admin:users", "admin:servers", "tokens", "access:servers", "read:users"],
        "services": ["workshop-admin"],
    }},
    {{
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }},
]
"""


def prepare(workshop: Workshop, *, seed_models: Path | None = None) -> str:
    """Accounts, the instructor's course, the exchange, models and configuration; returns the API token.

    Needs root. ``seed_models`` is a LABKIT_CACHE whose weights are copied before ``labkit
    pretrain`` runs (which then only checks them), e.g. the test cache of ``make test``.
    """
    if os.geteuid() != 0:
        raise PermissionError("a workshop hub needs root: it creates one system account per person")
    if not PROXY.exists():
        raise FileNotFoundError(f"JupyterHub's proxy is not installed at {PROXY}: run `make hub-deps`")
    if workshop.hub_dir.resolve().is_relative_to(workshop.checkout.resolve()):
        raise ValueError(f"hub_dir must be outside the course checkout {workshop.checkout}")
    workshop.hub_dir.mkdir(parents=True, exist_ok=True)
    workshop.hub_dir.chmod(0o755)
    for name in workshop.people:
        _ensure_account(name)
    workshop.state.mkdir(exist_ok=True)
    workshop.state.chmod(0o700)
    _copy_course(workshop)
    _exchange(workshop)
    _nbgrader_configs(workshop)
    _environment(workshop)
    _pretrain(workshop, seed_from=seed_models)
    token = secrets.token_hex(32)
    config = workshop.state / "jupyterhub_config.py"
    config.write_text(_hub_config(workshop, token), encoding="utf-8")
    config.chmod(0o600)
    return token


@dataclass
class HubProcess:
    """A running hub: its process, URL, admin API token and how long it took to answer."""

    proc: subprocess.Popen[bytes]
    url: str
    api_token: str
    start_seconds: float
    log: Path

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the hub's REST API as the workshop-admin service."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.url}/hub/api{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.api_token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read().decode()
        return json.loads(text) if text else None

    def stop(self) -> None:
        """Stop the hub, the proxy and every single-user server."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def start(workshop: Workshop, api_token: str, *, timeout: float = 300) -> HubProcess:
    """Start JupyterHub (and its proxy) in the background and wait until it answers."""
    log = workshop.state / "jupyterhub.log"
    started = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(workshop.venv_bin / "jupyterhub"), "-f", str(workshop.state / "jupyterhub_config.py")],
            cwd=workshop.state,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PATH": f"{workshop.venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"},
        )
    url = f"http://127.0.0.1:{workshop.port}"
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterHub exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/hub/health", timeout=2) as r:
                if r.status == 200:
                    return HubProcess(proc, url, api_token, time.monotonic() - started, log)
        except OSError:
            pass
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise TimeoutError(f"JupyterHub did not answer on {url} within {timeout:.0f} s; see {log}")


def publish_feedback(course_dir: Path, lesson: str, *, grades: Path | None = None) -> list[str]:
    """Put ``labkit grade``'s feedback where ``nbgrader release_feedback`` looks for it.

    ``labkit grade`` writes ``grades/feedback/<learner>/<lesson>/<notebook>.html`` (hidden tests
    removed); nbgrader releases ``feedback/<learner>/<lesson>/`` with the submission's
    ``timestamp.txt`` and ``submission_secret.txt`` beside it, which name the file in the exchange
    that only that learner's submission matches. Returns the learners whose feedback was placed.
    """
    grades = grades or course_dir / "grades"
    placed = []
    for html_dir in sorted((grades / "feedback").glob(f"*/{lesson}")):
        learner = html_dir.parent.name
        submitted = course_dir / "submitted" / learner / lesson
        if not (submitted / "timestamp.txt").exists():
            continue
        dest = course_dir / "feedback" / learner / lesson
        dest.mkdir(parents=True, exist_ok=True)
        for html in html_dir.glob("*.html"):
            shutil.copy2(html, dest / html.name)
        for name in ("timestamp.txt", "submission_secret.txt"):
            if (submitted / name).exists():
                shutil.copy2(submitted / name, dest / name)
        placed.append(learner)
    return placed


def main(argv: list[str] | None = None) -> int:
    """``make hub``: set up the workshop and run its hub until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m labkit.course.hub", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="create accounts, course, exchange, models; run the hub (root)")
    up.add_argument("--hub-dir", type=Path, default=Path(os.environ.get("HUB_DIR", "/srv/mhl-hub")))
    up.add_argument("--learners", type=int, default=3, help="learner accounts mhl-learner1..N")
    up.add_argument("--prefix", default="mhl-", help="account name prefix")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--lessons", default="", help="lesson ids taught, comma-separated (default: all)")
    up.add_argument("--mem-mb", type=int, default=3072)
    up.add_argument("--cpus", type=float, default=1.0)
    up.add_argument("--profile", default=os.environ.get("LABKIT_PROFILE", "ci"))
    fb = sub.add_parser("feedback", help="place labkit grade's feedback for nbgrader release_feedback")
    fb.add_argument("lesson", help="lesson slug, e.g. 00-welcome")
    fb.add_argument("--course", type=Path, default=Path.cwd())
    down = sub.add_parser("down", help="delete the workshop's accounts and their homes (root)")
    down.add_argument("--learners", type=int, default=3)
    down.add_argument("--prefix", default="mhl-")
    args = parser.parse_args(argv)
    if args.command == "feedback":
        placed = publish_feedback(args.course, args.lesson)
        sys.stdout.write(f"feedback placed for {len(placed)} learners: {', '.join(placed)}\n")
        sys.stdout.write(f"now: nbgrader release_feedback {args.lesson} (or formgrader's envelope button)\n")
        return 0
    learners = [f"{args.prefix}learner{i}" for i in range(1, args.learners + 1)]
    if args.command == "down":
        remove_accounts([f"{args.prefix}instructor", *learners])
        return 0
    workshop = Workshop(
        hub_dir=args.hub_dir,
        learners=learners,
        instructor=f"{args.prefix}instructor",
        port=args.port,
        lessons=[x for x in args.lessons.split(",") if x],
        mem_mb=args.mem_mb,
        cpus=args.cpus,
        profile=args.profile,
    )
    token = prepare(workshop)
    hub = start(workshop, token)
    sys.stdout.write(
        f"JupyterHub answered after {hub.start_seconds:.1f} s at {hub.url} (log: {hub.log}).\n"
        f"Accounts: {', '.join(workshop.people)}; each sets a password at the first login.\n"
        f"Instructor's course: {workshop.course_dir}. Ctrl-C stops the hub.\n"
    )
    try:
        hub.proc.wait()
    except KeyboardInterrupt:
        hub.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
