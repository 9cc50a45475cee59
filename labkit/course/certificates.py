"""Certificates of completion with a verification code the instructor can check.

The code is an HMAC-SHA256, under the instructor's secret key, of the learner, the course, its
version and title, the score and the date. It is printed on the PDF and stored in the PDF's
metadata. :func:`verify_code` checks a code; :func:`verify_pdf` also checks that the text on the
page is exactly the text the code vouches for, so a PDF whose name, score or date was edited is
rejected even when its code was left alone.

The key comes from ``LABKIT_CERT_KEY_FILE`` (a file holding the secret) or ``LABKIT_CERT_KEY``
(the secret itself); at least 16 bytes. Without a key nothing is signed or verified. Anyone with
the key can issue certificates: keep it off the grading machine's shared folders, and never in
the course repository.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from labkit.course.manifest import Course

__all__ = [
    "Certificate",
    "CertificateError",
    "Decision",
    "certify",
    "decide",
    "load_key",
    "sign",
    "verify",
    "verify_code",
    "verify_pdf",
    "write_certificate",
]

PREFIX = "LK1"
MIN_KEY_BYTES = 16


class CertificateError(ValueError):
    """A missing key, an unreadable grades file, or a certificate that does not verify."""


@dataclass(frozen=True)
class Certificate:
    """What a certificate states (and its code signs)."""

    learner: str
    course: str
    title: str
    version: str
    score: str  # percent with one decimal, e.g. "87.5"
    date: str  # ISO date

    def payload(self) -> bytes:
        fields = {
            "c": self.course,
            "d": self.date,
            "l": self.learner,
            "s": self.score,
            "t": self.title,
            "v": self.version,
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Decision:
    """Whether a learner earns the certificate, and why not."""

    learner: str
    score: float  # overall fraction
    passed: bool
    reason: str


def load_key(key_file: str | os.PathLike[str] | None = None) -> bytes:
    """The signing key: ``key_file``, else ``LABKIT_CERT_KEY_FILE``, else ``LABKIT_CERT_KEY``."""
    path = key_file or os.environ.get("LABKIT_CERT_KEY_FILE")
    if path:
        try:
            key = Path(path).read_bytes().strip()
        except OSError as err:
            raise CertificateError(f"cannot read the key file {path}: {err.strerror}") from None
        where = f"the key file {path}"
    else:
        key = os.environ.get("LABKIT_CERT_KEY", "").encode()
        where = "LABKIT_CERT_KEY"
        if not key:
            raise CertificateError(
                "no signing key: set LABKIT_CERT_KEY_FILE to a file holding a secret of at least "
                f"{MIN_KEY_BYTES} bytes (or LABKIT_CERT_KEY to the secret), or pass --key-file"
            )
    if len(key) < MIN_KEY_BYTES:
        raise CertificateError(
            f"{where} holds {len(key)} bytes; expected a secret of at least {MIN_KEY_BYTES}"
        )
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(cert: Certificate, key: bytes) -> str:
    """The verification code of ``cert``: ``LK1.<fields>.<HMAC-SHA256>``, URL-safe base64.

    Examples
    --------
    >>> cert = Certificate("ada", "demo", "Demo", "1.0", "90.0", "2025-01-31")
    >>> code = sign(cert, b"0123456789abcdef")
    >>> verify_code(code, b"0123456789abcdef") == cert
    True
    """
    payload = cert.payload()
    mac = hmac.new(key, payload, hashlib.sha256).digest()
    return f"{PREFIX}.{_b64(payload)}.{_b64(mac)}"


def verify_code(code: str, key: bytes) -> Certificate:
    """The certificate a code vouches for; raises :class:`CertificateError` if it does not verify."""
    parts = code.strip().split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise CertificateError(f"not a labkit verification code (expected {PREFIX}.<fields>.<signature>)")
    try:
        payload, mac = _unb64(parts[1]), _unb64(parts[2])
        fields = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise CertificateError("the code is damaged: its parts are not valid base64/JSON") from None
    expected = hmac.new(key, payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise CertificateError(
            "the signature does not match: the code was altered or signed with another key"
        )
    try:
        return Certificate(
            learner=fields["l"],
            course=fields["c"],
            title=fields["t"],
            version=fields["v"],
            score=fields["s"],
            date=fields["d"],
        )
    except (KeyError, TypeError):
        raise CertificateError("the code is signed but lacks fields; it was not made by labkit") from None


def _lines(cert: Certificate, code: str) -> list[str]:
    """Every piece of text on the certificate page, in order."""
    return [
        "Certificate of completion",
        cert.title,
        "awarded to",
        cert.learner,
        f"for completing the course {cert.course} (version {cert.version})",
        f"with an overall score of {cert.score}%",
        f"Date: {cert.date}",
        "Verification code (check with: labkit verify CODE):",
        *[code[i : i + 96] for i in range(0, len(code), 96)],
    ]


def write_certificate(cert: Certificate, code: str, path: str | Path) -> Path:
    """Draw the certificate as a one-page PDF (A4 landscape) with the code in its metadata."""
    import matplotlib

    matplotlib.use("agg", force=False)
    import matplotlib.pyplot as plt

    try:
        "".join(_lines(cert, code)).encode("cp1252")
    except UnicodeEncodeError:
        raise CertificateError(
            f"learner or course name {cert.learner!r} has characters the PDF's standard fonts cannot show"
        ) from None
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = _lines(cert, code)
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    with matplotlib.rc_context():
        matplotlib.rcParams["pdf.use14corefonts"] = True  # text stays readable for verify_pdf
        matplotlib.rcParams["pdf.compression"] = 0
        matplotlib.rcParams["font.family"] = "sans-serif"
        fig = plt.figure(figsize=(11.69, 8.27))
        try:
            fig.patches.append(
                matplotlib.patches.Rectangle(
                    (0.03, 0.04),
                    0.94,
                    0.92,
                    transform=fig.transFigure,
                    fill=False,
                    linewidth=3,
                    edgecolor="#1f4e79",
                )
            )
            layout = [
                (0.84, 30),
                (0.74, 22),
                (0.63, 14),
                (0.55, 30),
                (0.45, 14),
                (0.40, 14),
                (0.30, 12),
                (0.18, 9),
            ]
            for (y, size), text in zip(layout, lines[:8], strict=True):
                fig.text(0.5, y, text, ha="center", va="center", fontsize=size)
            for i, chunk in enumerate(lines[8:]):
                fig.text(
                    0.5, 0.14 - 0.035 * i, chunk, ha="center", va="center", fontsize=8, family="monospace"
                )
            fig.savefig(
                out,
                format="pdf",
                metadata={
                    "Title": f"{cert.title}: certificate",
                    "Author": cert.course,
                    "Keywords": code,
                    "CreationDate": None,
                },
            )
        finally:
            plt.close(fig)
    return out


_STRING = re.compile(rb"\((?:\\.|[^\\)])*\)", re.S)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def _unescape(raw: bytes) -> str:
    out = bytearray()
    i = 0
    while i < len(raw):
        ch = raw[i : i + 1]
        if ch == b"\\" and i + 1 < len(raw):
            nxt = raw[i + 1 : i + 2]
            octal = re.match(rb"[0-7]{1,3}", raw[i + 1 : i + 4])
            if octal:
                out.append(int(octal.group(), 8) & 0xFF)
                i += 1 + len(octal.group())
                continue
            out += _ESCAPES.get(nxt, nxt)
            i += 2
            continue
        out += ch
        i += 1
    return out.decode("cp1252", errors="replace")


def _pdf_streams(data: bytes) -> list[bytes]:
    streams = []
    for match in re.finditer(rb"<<(.*?)>>\s*stream\r?\n(.*?)endstream", data, re.S):
        head, body = match.group(1), match.group(2)
        if b"FlateDecode" in head:
            try:
                body = zlib.decompress(body)
            except zlib.error:
                continue
        streams.append(body)
    return streams


def pdf_text(data: bytes) -> list[str]:
    """Text strings drawn on the page (``Tj`` and ``TJ`` operators of every content stream)."""
    texts = []
    for stream in _pdf_streams(data):
        for op in re.finditer(
            rb"(\((?:\\.|[^\\)])*\))\s*Tj|\[((?:[^\]\\]|\\.)*)\]\s*TJ|(\((?:\\.|[^\\)])*\))\s*'", stream, re.S
        ):
            if op.group(2) is not None:
                texts.append("".join(_unescape(s[1:-1]) for s in _STRING.findall(op.group(2))))
            else:
                chunk = op.group(1) or op.group(3)
                texts.append(_unescape(chunk[1:-1]))
    return texts


def _pdf_code(data: bytes) -> str:
    match = re.search(rb"/Keywords\s*(\((?:\\.|[^\\)])*\))", data)
    if not match:
        raise CertificateError("no verification code in the PDF's metadata: not a labkit certificate")
    return _unescape(match.group(1)[1:-1])


def verify_pdf(path: str | Path, key: bytes) -> Certificate:
    """Verify a certificate PDF: its code, and that the page shows exactly what the code signs."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise CertificateError(f"cannot read {path}: {err.strerror}") from None
    if not data.startswith(b"%PDF"):
        raise CertificateError(f"{path} is not a PDF file")
    code = _pdf_code(data)
    cert = verify_code(code, key)
    shown = pdf_text(data)
    expected = _lines(cert, code)
    if sorted(shown) != sorted(expected):
        changed = sorted(set(shown) ^ set(expected))[:3]
        raise CertificateError(
            "the text on the page differs from what the code signs (edited PDF); differing text: "
            + "; ".join(repr(c) for c in changed)
        )
    return cert


def verify(code_or_pdf: str, key: bytes) -> Certificate:
    """Verify a code, or a PDF when ``code_or_pdf`` names an existing file."""
    if Path(code_or_pdf).is_file() or code_or_pdf.lower().endswith(".pdf"):
        return verify_pdf(code_or_pdf, key)
    return verify_code(code_or_pdf, key)


def _number(row: Mapping[str, str], column: str, line: int, path: Path) -> float:
    text = (row.get(column) or "").strip()
    if text == "":
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise CertificateError(
            f"{path}, line {line}, column {column!r}: expected a number, got {text!r}"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise CertificateError(
            f"{path}, line {line}, column {column!r}: expected a fraction in [0, 1], got {value}"
        )
    return value


def decide(course: Course, grades_csv: str | Path) -> list[Decision]:
    """Apply course.yml's certification policy to a grades CSV written by ``labkit grade``.

    The overall score weighs each ready lesson's fraction (``lesson:<slug>`` columns) by its
    points; a lesson missing from the file counts as zero. A learner passes with an overall
    score of at least ``pass_mark`` and at least ``min_per_lesson`` in every required lesson
    that is ready.
    """
    path = Path(grades_csv)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise CertificateError(f"cannot read the grades file {path}: {err.strerror}") from None
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "student" not in reader.fieldnames:
        raise CertificateError(f"{path}: expected a CSV with a 'student' column (from labkit grade)")
    ready = course.ready_lessons
    policy = course.certification
    required = [ls for ls in ready if ls.id in policy.required_lessons]
    total = sum(ls.points for ls in ready)
    decisions = []
    for line, row in enumerate(reader, start=2):
        learner = (row.get("student") or "").strip()
        if not learner:
            raise CertificateError(f"{path}, line {line}: empty student name")
        frac = {ls.slug: _number(row, f"lesson:{ls.slug}", line, path) for ls in ready}
        overall = sum(frac[ls.slug] * ls.points for ls in ready) / total if total else 0.0
        reasons = []
        if overall + 1e-9 < policy.pass_mark:
            reasons.append(f"overall {overall:.1%} < pass mark {policy.pass_mark:.0%}")
        low = [ls.slug for ls in required if frac[ls.slug] + 1e-9 < policy.min_per_lesson]
        if low:
            reasons.append(f"below {policy.min_per_lesson:.0%} in {', '.join(low)}")
        decisions.append(Decision(learner, overall, not reasons, "; ".join(reasons)))
    return decisions


def certify(
    course: Course,
    grades_csv: str | Path,
    *,
    out: str | Path,
    key: bytes,
    date: str | None = None,
) -> list[tuple[Decision, Path | None, str]]:
    """A PDF certificate for every learner who passes; returns (decision, pdf, code) for all.

    Also writes ``out/certificates.csv`` (learner, passed, score, reason, code, file).
    """
    day = date or dt.date.today().isoformat()
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        raise CertificateError(f"date {day!r}: expected an ISO date such as 2025-06-30") from None
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[tuple[Decision, Path | None, str]] = []
    for decision in decide(course, grades_csv):
        if not decision.passed:
            results.append((decision, None, ""))
            continue
        cert = Certificate(
            learner=decision.learner,
            course=course.course_id,
            title=course.title,
            version=course.version,
            score=f"{100 * decision.score:.1f}",
            date=day,
        )
        code = sign(cert, key)
        pdf = write_certificate(
            cert, code, out_dir / f"{re.sub(r'[^A-Za-z0-9._@-]', '_', decision.learner)}.pdf"
        )
        results.append((decision, pdf, code))
    with (out_dir / "certificates.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["learner", "passed", "score", "reason", "code", "file"])
        for decision, made, code in results:
            writer.writerow(
                [
                    decision.learner,
                    decision.passed,
                    f"{100 * decision.score:.1f}",
                    decision.reason,
                    code,
                    made.name if made else "",
                ]
            )
    return results
