"""Issue credentials to a class, keep the issuer's register, and revoke.

:func:`issue` applies course.yml's policy to the grades (:func:`labkit.course.certificates.decide`)
and writes, for each learner who passes, the signed credential (``.jwt``), a readable copy
(``.json``) and the printed certificate (``.pdf``). The issuer's register (``registry.json`` in
the issuer's folder) remembers each credential's index in the status list, so that
:func:`revoke` can flip its bit and re-sign the list.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.course.certificates import Decision, decide
from labkit.course.credentials import proof
from labkit.course.credentials import status as bitstring
from labkit.course.credentials.errors import CredentialError
from labkit.course.credentials.keys import DID, Issuer
from labkit.course.credentials.model import Evidence, build_credential, statement
from labkit.course.credentials.pdf import write_pdf
from labkit.course.manifest import Course

__all__ = ["Issued", "issue", "publish_status", "revoke", "submission_evidence"]


@dataclass
class Issued:
    """One learner's outcome: the policy's decision and, if they passed, the files written."""

    decision: Decision
    credential: dict[str, Any] | None = None
    token: str = ""
    files: dict[str, Path] = field(default_factory=dict)


def _fractions(course: Course, grades_csv: Path) -> dict[str, dict[str, float]]:
    rows = csv.DictReader(grades_csv.read_text(encoding="utf-8").splitlines())
    out = {}
    for row in rows:
        out[(row.get("student") or "").strip()] = {
            ls.slug: float((row.get(f"lesson:{ls.slug}") or "0").strip() or 0) for ls in course.ready_lessons
        }
    return out


def submission_evidence(course: Course, submissions: str | Path) -> dict[str, list[Evidence]]:
    """SHA-256 digests of every submitted notebook under ``submissions`` (as ``labkit grade`` read it)."""
    from labkit.course.submissions import find_submissions

    found: dict[str, list[Evidence]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="labkit-evidence-") as scratch:
        for sub in find_submissions(course, submissions, workdir=scratch):
            found[sub.student].append(Evidence.of_file(sub.lesson, sub.path.name, sub.path.read_bytes()))
    return {k: sorted(v, key=lambda e: e.lesson) for k, v in found.items()}


def _registry(issuer: Issuer) -> dict[str, Any]:
    if issuer.registry_path.is_file():
        return dict(json.loads(issuer.registry_path.read_text(encoding="utf-8")))
    return {"status_list_url": issuer.status_list_url, "bits": bitstring.MIN_BITS, "credentials": []}


def _save(issuer: Issuer, registry: dict[str, Any]) -> None:
    tmp = issuer.registry_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(registry, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(issuer.registry_path)


def publish_status(issuer: Issuer, registry: dict[str, Any], *, now: dt.datetime | None = None) -> Path:
    """Sign the status list for ``registry`` and write it to the issuer's ``status-list.jwt``."""
    bits = bytearray(registry["bits"] // 8)
    for entry in registry["credentials"]:
        if entry.get("revoked"):
            bitstring.set_bit(bits, int(entry["index"]))
    listed = bitstring.list_credential(
        issuer.profile, registry["status_list_url"], bytes(bits), issued=now or dt.datetime.now(dt.UTC)
    )
    issuer.status_list_path.write_text(proof.sign(listed, issuer) + "\n", encoding="utf-8")
    return issuer.status_list_path


def _file_stem(learner: str) -> str:
    return re.sub(r"[^\w.@-]", "_", learner).strip("._") or "learner"


def issue(
    course: Course,
    grades_csv: str | Path,
    *,
    issuer: Issuer,
    out: str | Path,
    submissions: str | Path | None = None,
    date: str | None = None,
    valid_until: str | None = None,
) -> list[Issued]:
    """Issue an Open Badges 3.0 credential to every learner of ``grades_csv`` who passes.

    Writes into ``out``: ``<learner>.jwt`` (the signed VC-JWT), ``<learner>.json`` (readable
    copy), ``<learner>.pdf`` (the printed certificate), ``credentials.csv``, and what verifiers
    need from the issuer: ``issuer.jwks.json``, ``issuer.did`` and ``status-list.jwt``.

    Parameters
    ----------
    submissions:
        The submissions ``labkit grade`` graded; each credential's evidence names them by
        SHA-256 digest. Without it, credentials carry no evidence.
    date:
        Issuance date, ISO (default: now).
    valid_until:
        Expiry date, ISO (default: none).
    """
    grades = Path(grades_csv)

    def day(text: str, what: str) -> dt.datetime:
        try:
            return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), tzinfo=dt.UTC)
        except ValueError:
            raise CredentialError(f"{what} {text!r}: expected an ISO date such as 2025-06-30") from None

    issued_at = day(date, "date") if date else dt.datetime.now(dt.UTC).replace(microsecond=0)
    expires = day(valid_until, "valid-until") if valid_until else None
    if expires is not None and expires <= issued_at:
        raise CredentialError(f"valid-until {valid_until} is not after the issuance date {issued_at.date()}")
    decisions = decide(course, grades)
    fractions = _fractions(course, grades)
    evidence = submission_evidence(course, submissions) if submissions is not None else {}
    passed = [d for d in decisions if d.passed]
    from labkit.course.credentials.pdf import _missing

    for d in passed:  # refuse before signing anything when a name cannot be printed
        if _missing(d.learner):
            missing = "".join(_missing(d.learner))
            raise CredentialError(
                f"no font has {missing!r} for the learner {d.learner!r}: install a font that covers it "
                "(Debian: fonts-droid-fallback for Chinese, Japanese, Korean) or set LABKIT_CERT_FONTS"
            )
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    registry = _registry(issuer)
    results: list[Issued] = []
    for decision in decisions:
        if not decision.passed:
            results.append(Issued(decision))
            continue
        index = len(registry["credentials"])
        while index >= registry["bits"]:
            registry["bits"] += bitstring.MIN_BITS
        credential = build_credential(
            course,
            issuer=issuer.profile,
            learner=decision.learner,
            score=decision.score,
            lessons=fractions.get(decision.learner, {}),
            evidence=evidence.get(decision.learner, []),
            issued=issued_at,
            valid_until=expires,
            status=bitstring.entry(registry["status_list_url"], index),
        )
        token = proof.sign(credential, issuer)
        stem = out_dir / _file_stem(decision.learner)
        files = {
            "jwt": stem.with_suffix(".jwt"),
            "json": stem.with_suffix(".json"),
            "pdf": stem.with_suffix(".pdf"),
        }
        files["jwt"].write_text(token + "\n", encoding="utf-8")
        files["json"].write_text(
            json.dumps(credential, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        write_pdf(statement(credential), token, files["pdf"])
        registry["credentials"].append(
            {
                "id": credential["id"],
                "learner": decision.learner,
                "course": course.course_id,
                "version": course.version,
                "index": index,
                "issued": credential["validFrom"],
                "revoked": False,
            }
        )
        _save(issuer, registry)
        results.append(Issued(decision, credential, token, files))
    publish_status(issuer, registry)
    shutil.copyfile(issuer.status_list_path, out_dir / "status-list.jwt")
    shutil.copyfile(issuer.jwks_path, out_dir / "issuer.jwks.json")
    shutil.copyfile(issuer.directory / DID, out_dir / "issuer.did")
    with (out_dir / "credentials.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["learner", "passed", "score", "reason", "credential", "jwt", "pdf"])
        for r in results:
            writer.writerow(
                [
                    r.decision.learner,
                    r.decision.passed,
                    f"{100 * r.decision.score:.1f}",
                    r.decision.reason,
                    r.credential["id"] if r.credential else "",
                    r.files["jwt"].name if r.files else "",
                    r.files["pdf"].name if r.files else "",
                ]
            )
    return results


def revoke(
    learner: str, *, issuer: Issuer, course_id: str | None = None, now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """Revoke every live credential issued to ``learner`` (of ``course_id`` when given) and re-sign
    the status list; returns the register's entries that were revoked."""
    registry = _registry(issuer)
    mine = [
        e
        for e in registry["credentials"]
        if e["learner"] == learner and (course_id is None or e["course"] == course_id)
    ]
    if not mine:
        known = sorted({e["learner"] for e in registry["credentials"]})
        raise CredentialError(
            f"no credential was issued to {learner!r}"
            + (f" for {course_id}" if course_id else "")
            + (f"; the register lists {', '.join(known[:10])}" if known else "; the register is empty")
        )
    live = [e for e in mine if not e.get("revoked")]
    for e in live:
        e["revoked"] = True
    _save(issuer, registry)
    publish_status(issuer, registry, now=now)
    return live
