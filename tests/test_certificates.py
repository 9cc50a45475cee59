"""labkit certify / verify: the certification policy, signed codes, and forged certificates."""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

import pytest

import labkit as lk
from labkit.cli import main
from labkit.course.certificates import (
    Certificate,
    certify,
    decide,
    pdf_text,
    sign,
    verify_code,
    verify_pdf,
)

KEY = b"a-long-instructor-secret-0123456789"
CERT = Certificate("ada", "model-hardening-lab", "Model Hardening Lab", "0.1.0", "91.3", "2025-06-30")


def grades_csv(course: lk.course.Course, path: Path, rows: dict[str, float | dict[str, float]]) -> Path:
    """A grades CSV as labkit grade writes it: one fraction per ready lesson."""
    slugs = [ls.slug for ls in course.ready_lessons]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["student", "points", *[f"lesson:{s}" for s in slugs]])
        for student, value in rows.items():
            fracs = {s: value for s in slugs} if isinstance(value, float) else value
            writer.writerow([student, 0, *[fracs.get(s, "") for s in slugs]])
    return path


def test_code_round_trip_and_every_field_is_signed() -> None:
    code = sign(CERT, KEY)
    assert verify_code(code, KEY) == CERT
    for field in ("learner", "course", "title", "version", "score", "date"):
        forged = Certificate(**{**CERT.__dict__, field: "tampered"})
        head, _, mac = code.split(".")
        forged_payload = sign(forged, b"attacker-guessed-key-0000").split(".")[1]
        with pytest.raises(lk.course.CertificateError, match="signature does not match"):
            verify_code(f"{head}.{forged_payload}.{mac}", KEY)


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda c: c.replace("LK1.", "LK2."), "not a labkit verification code"),
        (lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"), "signature does not match"),
        (lambda c: c + ".extra", "not a labkit verification code"),
        (lambda c: "LK1.%%%.%%%", "damaged"),
        (lambda c: "", "not a labkit verification code"),
    ],
)
def test_damaged_codes_are_rejected(mangle, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(lk.course.CertificateError, match=match):
        verify_code(mangle(sign(CERT, KEY)), KEY)


def test_code_from_another_key_is_rejected() -> None:
    with pytest.raises(lk.course.CertificateError, match="another key"):
        verify_code(sign(CERT, b"some-other-instructor-key"), KEY)


def test_policy_pass_mark_and_minimum_per_lesson(course: lk.course.Course, tmp_path: Path) -> None:
    ready = [ls.slug for ls in course.ready_lessons]
    policy = course.certification
    weak_one = {s: 1.0 for s in ready}
    weak_one[ready[0]] = policy.min_per_lesson / 2
    path = grades_csv(
        course,
        tmp_path / "grades.csv",
        {"top": 1.0, "pass": policy.pass_mark + 0.01, "low": policy.pass_mark - 0.05, "gap": weak_one},
    )
    decisions = {d.learner: d for d in decide(course, path)}
    assert decisions["top"].passed and decisions["top"].score == pytest.approx(1.0)
    assert decisions["pass"].passed
    assert not decisions["low"].passed and "pass mark" in decisions["low"].reason
    assert not decisions["gap"].passed and ready[0] in decisions["gap"].reason


def test_bad_grades_file_names_line_and_column(course: lk.course.Course, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("student,lesson:00-welcome\nada,lots\n")
    with pytest.raises(
        lk.course.CertificateError, match=r"line 2, column 'lesson:00-welcome': expected a number"
    ):
        decide(course, bad)
    bad.write_text("name,score\nada,1\n")
    with pytest.raises(lk.course.CertificateError, match="'student' column"):
        decide(course, bad)
    bad.write_text("student,lesson:00-welcome\nada,1.7\n")
    with pytest.raises(lk.course.CertificateError, match=r"fraction in \[0, 1\]"):
        decide(course, bad)


def test_key_is_required_and_long_enough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABKIT_CERT_KEY", raising=False)
    monkeypatch.delenv("LABKIT_CERT_KEY_FILE", raising=False)
    with pytest.raises(lk.course.CertificateError, match="no signing key"):
        lk.course.load_key()
    monkeypatch.setenv("LABKIT_CERT_KEY", "short")
    with pytest.raises(lk.course.CertificateError, match="at least 16"):
        lk.course.load_key()
    key_file = tmp_path / "cert.key"
    key_file.write_bytes(KEY + b"\n")
    assert lk.course.load_key(key_file) == KEY
    with pytest.raises(lk.course.CertificateError, match="cannot read the key file"):
        lk.course.load_key(tmp_path / "missing.key")


def _edit_pdf(data: bytes, old: str, new: str) -> bytes:
    assert old.encode() in data
    return data.replace(old.encode(), new.encode())


def test_certify_writes_pdfs_that_verify_and_edited_pdfs_fail(
    course: lk.course.Course,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_file = tmp_path / "cert.key"
    key_file.write_bytes(KEY)
    monkeypatch.delenv("LABKIT_CERT_KEY", raising=False)
    monkeypatch.setenv("LABKIT_CERT_KEY_FILE", str(key_file))
    path = grades_csv(course, tmp_path / "grades.csv", {"ada": 0.95, "bob": 0.2})
    out = tmp_path / "certs"
    # labkit certify now issues Open Badges credentials; old HMAC certificates still verify.
    results = certify(course, path, out=out, key=KEY, date="2025-06-30")
    assert sum(1 for d, _, _ in results if d.passed) == 1
    assert not (out / "bob.pdf").exists()
    pdf = out / "ada.pdf"
    cert = verify_pdf(pdf, KEY)
    assert (cert.learner, cert.score, cert.date, cert.course) == (
        "ada",
        "95.0",
        "2025-06-30",
        course.course_id,
    )
    listed = list(csv.DictReader((out / "certificates.csv").read_text().splitlines()))
    code = next(r["code"] for r in listed if r["learner"] == "ada")
    assert main(["verify", code]) == 0
    captured = capsys.readouterr()
    assert "VALID: ada" in captured.out and "deprecated" in captured.err
    assert main(["verify", str(pdf)]) == 0

    data = pdf.read_bytes()
    for old, new in [("(ada)", "(eve)"), ("95.0%", "99.0%"), ("Date: 2025-06-30", "Date: 2026-06-30")]:
        forged = tmp_path / "forged.pdf"
        forged.write_bytes(_edit_pdf(data, old, new))
        with pytest.raises(lk.course.CertificateError, match="differs from what the code signs"):
            verify_pdf(forged, KEY)
        assert main(["verify", str(forged)]) == 1
        assert "INVALID" in capsys.readouterr().out
    # A matching edit of the page and of the code's fields breaks the signature instead.
    eve = sign(Certificate(**{**cert.__dict__, "learner": "eve"}), b"not-the-instructor-key!").split(".")[1]
    head, _, mac = code.split(".")
    forged_code = f"{head}.{eve}.{mac}"
    forged = tmp_path / "forged-code.pdf"
    forged.write_bytes(data.replace(code.encode(), forged_code.encode()).replace(b"(ada)", b"(eve)"))
    with pytest.raises(lk.course.CertificateError, match="signature does not match"):
        verify_pdf(forged, KEY)
    # Extra text drawn on the page (a compressed overlay) is caught too.
    overlay = zlib.compress(b"BT /F1 30 Tf 100 100 Td (Grade: A+) Tj ET")
    extra = (
        b"99 0 obj\n<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(overlay)
        + overlay
        + b"\nendstream\n"
    )
    forged.write_bytes(data.replace(b"%%EOF", extra + b"%%EOF"))
    with pytest.raises(lk.course.CertificateError, match="Grade: A"):
        verify_pdf(forged, KEY)
    not_pdf = tmp_path / "note.pdf"
    not_pdf.write_text("hello")
    with pytest.raises(lk.course.CertificateError, match="not a PDF"):
        verify_pdf(not_pdf, KEY)


def test_pdf_text_reads_escaped_strings() -> None:
    stream = rb"BT (a \(b\) c\\d \101) Tj [(x) -20 (y)] TJ ET"
    data = b"<< /Length 1 >>\nstream\n" + stream + b"\nendstream"
    assert pdf_text(data) == ["a (b) c\\d A", "xy"]


def test_certify_refuses_without_key(
    course: lk.course.Course,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("LABKIT_CERT_KEY", raising=False)
    monkeypatch.delenv("LABKIT_CERT_KEY_FILE", raising=False)
    monkeypatch.setenv("LABKIT_ISSUER_DIR", str(tmp_path / "no-issuer"))
    path = grades_csv(course, tmp_path / "grades.csv", {"ada": 1.0})
    assert main(["certify", str(path), "--out", str(tmp_path / "c"), "--course", str(course.path)]) == 2
    assert "no issuer key" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    assert main(["verify", "LK1.x.y"]) == 2
    assert "no signing key" in capsys.readouterr().err
