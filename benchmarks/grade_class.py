"""Grading a big class: ``labkit grade`` on N submissions of lesson 00, seconds per submission.

    python benchmarks/grade_class.py                 # 30 learners, --jobs 2
    python benchmarks/grade_class.py --learners 8 --jobs 4

A third of the class hands in the reference solution's answers, a third two of the three
exercises, a third the untouched learner copy (what a workshop's class looks like). The class
is graded in a scratch copy of the course with its own gradebook, through the CLI only, as an
instructor would: ``labkit pretrain`` of the lesson's model first (untimed; without it every
kernel of every submission trains the model), then ``labkit grade submitted --lesson 00 --jobs
J``. Prints the wall clock, the seconds per submission, the load average and the score counts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LESSON, NOTEBOOK = "00-welcome", "welcome.ipynb"
MODELS = ("digits-cnn",)  # the zoo models lesson 00 loads


def answered(kind: str) -> dict:
    """Lesson 00's learner copy with the reference answers in all, two or none of its exercises."""
    release = json.loads((ROOT / "lessons" / LESSON / NOTEBOOK).read_text(encoding="utf-8"))
    ref = json.loads((ROOT / "solutions" / LESSON / NOTEBOOK).read_text(encoding="utf-8"))
    keep = {"full": None, "partial": {"check_batch", "accuracy"}, "none": set()}[kind]
    answers = {}
    for cell in ref["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if (
            cell["cell_type"] == "code"
            and meta.get("solution")
            and (keep is None or meta["grade_id"] in keep)
        ):
            lines = "".join(cell["source"]).splitlines()
            answers[meta["grade_id"]] = "\n".join(
                x for x in lines if "### BEGIN SOLUTION" not in x and "### END SOLUTION" not in x
            )
    for cell in release["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell["source"] = answers[grade_id]
    return release


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--learners", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    labkit = Path(sys.executable).parent / "labkit"
    with tempfile.TemporaryDirectory(prefix="grade-class-") as tmp:
        # labkit grade runs each kernel under an account of its own, which must reach the course
        Path(tmp).chmod(0o755)
        course = Path(tmp) / "course"
        course.mkdir()
        for name in ("course.yml", "nbgrader_config.py"):
            shutil.copy2(ROOT / name, course / name)
        for name in ("solutions", "lessons"):
            shutil.copytree(ROOT / name / LESSON, course / name / LESSON)
        shutil.copytree(ROOT / "instructor", course / "instructor")  # the answer key
        kinds = ["full", "partial", "none"]
        notebooks = {kind: json.dumps(answered(kind)) for kind in kinds}
        for i in range(args.learners):
            folder = course / "submitted" / f"learner{i:02d}" / LESSON
            folder.mkdir(parents=True)
            (folder / NOTEBOOK).write_text(notebooks[kinds[i % 3]], encoding="utf-8")
        env = {**os.environ, "LABKIT_PROFILE": os.environ.get("LABKIT_PROFILE", "ci"), "OMP_NUM_THREADS": "1"}
        # An instructor caches the course's models before grading (a no-op when they are there).
        pretrain = [str(labkit), "pretrain", *MODELS, "--quiet"]
        subprocess.run(pretrain, env=env, check=True, capture_output=True)
        started = time.monotonic()
        done = subprocess.run(
            [
                str(labkit),
                "grade",
                "submitted",
                "--lesson",
                "00",
                "--jobs",
                str(args.jobs),
                "--quiet",
                "--gradebook",
                str(Path(tmp) / "gradebook.db"),
            ],
            cwd=course,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.monotonic() - started
        load = os.getloadavg()
        if os.environ.get("GRADE_CLASS_KEEP"):
            shutil.copytree(course / "grades", os.environ["GRADE_CLASS_KEEP"], dirs_exist_ok=True)
        if done.returncode != 0:
            sys.exit(
                f"labkit grade failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
        with open(course / "grades" / "grades.csv", newline="", encoding="utf-8") as fh:
            points = Counter(row["points"] for row in csv.DictReader(fh))
    print(
        f"{args.learners} submissions of {LESSON}, --jobs {args.jobs}: {seconds:.0f} s, "
        f"{seconds / args.learners:.1f} s per submission; load average "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores; "
        f"points: {dict(sorted(points.items()))}"
    )


if __name__ == "__main__":
    main()
