"""Course tooling: the manifest, building learner notebooks, answer checks for graded cells."""

from labkit.course.answers import answer_hash, check_answer, check_number, expect_raises, number_hash
from labkit.course.grading import (
    CellScore,
    GradingError,
    SubmissionResult,
    autograde,
    build_lessons,
)
from labkit.course.manifest import (
    Certification,
    Course,
    CourseError,
    Lesson,
    Profile,
    find_course_file,
    load_course,
)
from labkit.course.nbgrader_setup import nbgrader_config

__all__ = [
    "CellScore",
    "Certification",
    "Course",
    "CourseError",
    "GradingError",
    "Lesson",
    "Profile",
    "SubmissionResult",
    "answer_hash",
    "autograde",
    "build_lessons",
    "check_answer",
    "check_number",
    "expect_raises",
    "find_course_file",
    "load_course",
    "nbgrader_config",
    "number_hash",
]
