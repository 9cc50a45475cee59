"""nbgrader configuration for this course, derived from course.yml.

Run nbgrader from this folder (the course root). The folder names, course id, execution
timeout and feedback settings all come from labkit.course.nbgrader_config, so course.yml stays
the single source of truth.

Two settings belong to the machine rather than the course, so they come from the environment:
``LABKIT_EXCHANGE`` is nbgrader's exchange (release, fetch, submit, collect, feedback); a hub
points every server at one shared folder (``make hub`` does), and on one machine (``make lab``)
it defaults to ``.cache/nbgrader-exchange`` in this folder. ``LABKIT_GRADEBOOK`` moves the
gradebook out of the course folder (tests use a scratch one).
"""

import os
from pathlib import Path

from labkit.course import load_course, nbgrader_config

root = Path(__file__).resolve().parent
c = get_config()  # type: ignore[name-defined]  # noqa: F821
c.merge(nbgrader_config(load_course(root / "course.yml"), db_path=os.environ.get("LABKIT_GRADEBOOK") or None))
c.Exchange.root = os.environ.get("LABKIT_EXCHANGE") or str(root / ".cache" / "nbgrader-exchange")
