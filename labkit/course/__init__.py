"""Course tooling: the manifest, building learner notebooks, answer checks for graded cells,
grading a class in sandboxes, certificates."""

from labkit.course.answers import answer_hash, check_answer, check_number, expect_raises, number_hash
from labkit.course.certificates import (
    Certificate,
    CertificateError,
    certify,
    load_key,
    verify,
    verify_code,
    verify_pdf,
)
from labkit.course.classroom import ClassGrades, LessonGrade, grade_class, merge_into_gradebook
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
from labkit.course.sandbox import Limits, isolation_support
from labkit.course.submissions import (
    Submission,
    SubmissionError,
    check_submission,
    find_submissions,
    student_id,
)

__all__ = [
    "CellScore",
    "Certificate",
    "CertificateError",
    "Certification",
    "ClassGrades",
    "Course",
    "CourseError",
    "GradingError",
    "Lesson",
    "LessonGrade",
    "Limits",
    "Profile",
    "Submission",
    "SubmissionError",
    "SubmissionResult",
    "answer_hash",
    "autograde",
    "build_lessons",
    "certify",
    "check_answer",
    "check_number",
    "check_submission",
    "expect_raises",
    "find_course_file",
    "find_submissions",
    "grade_class",
    "isolation_support",
    "load_course",
    "load_key",
    "merge_into_gradebook",
    "nbgrader_config",
    "number_hash",
    "student_id",
    "verify",
    "verify_code",
    "verify_pdf",
]
