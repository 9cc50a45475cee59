"""Course tooling: the manifest, building learner notebooks, answer checks for graded cells."""

from labkit.course.answers import answer_hash, check_answer
from labkit.course.manifest import (
    Certification,
    Course,
    CourseError,
    Lesson,
    Profile,
    find_course_file,
    load_course,
)

__all__ = [
    "Certification",
    "Course",
    "CourseError",
    "Lesson",
    "Profile",
    "answer_hash",
    "check_answer",
    "find_course_file",
    "load_course",
]
