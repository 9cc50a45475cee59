"""Verify a credential offline with only the issuer's public key.

A credential is VALID when its Ed25519 signature verifies with the issuer's key, it names that
issuer, today lies between its ``validFrom`` and ``validUntil``, the issuer's status list (when
given) does not mark it revoked, and, for a PDF, the page shows exactly what the credential
states with the credential's own QR code. Otherwise it is INVALID, with the reason.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.course.credentials import pdf as pdfs
from labkit.course.credentials import status as bitstring
from labkit.course.credentials.errors import CredentialError
from labkit.course.credentials.keys import PublicIssuer, load_public
from labkit.course.credentials.model import Statement, statement
from labkit.course.credentials.proof import ProofError, verify_signature

__all__ = ["REASONS", "Verification", "read_token", "verify_credential"]

_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

#: Why a credential can be INVALID.
REASONS = ("format", "signature", "issuer", "tampered", "expired", "not yet valid", "revoked", "status")


@dataclass
class Verification:
    """The verdict on one credential: VALID with what it states, or INVALID with the reason."""

    valid: bool
    reason: str = ""  # one of REASONS when invalid
    message: str = ""
    statement: Statement | None = None
    credential: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.valid:
            return f"INVALID ({self.reason}): {self.message}"
        st = self.statement
        assert st is not None
        lines = [
            f"VALID: {st.learner} completed {st.title} ({st.course} version {st.version}) with "
            f"{st.score}% on {st.date}",
            f"  issuer: {st.issuer} ({st.issuer_id})",
            f"  credential: {st.credential_id}"
            + (f", valid until {st.valid_until}" if st.valid_until else ""),
            f"  evidence: {st.evidence} graded submission(s) named by SHA-256 digest",
        ]
        lines += [f"  {name}: {value}%" for name, value in st.lessons]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _repr_markdown_(self) -> str:
        return "```\n" + self.summary() + "\n```"


def _invalid(reason: str, message: str, **kw: Any) -> Verification:
    return Verification(False, reason, message, **kw)


def read_token(source: str | Path) -> tuple[str, pdfs.PdfContents | None]:
    """The VC-JWT in ``source``: a compact JWT, or a file holding one (``.jwt``, an
    ``EnvelopedVerifiableCredential`` ``.json``, or a certificate PDF)."""
    text = str(source).strip()
    if _JWT.fullmatch(text):
        return text, None
    path = Path(text).expanduser()
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CredentialError(f"cannot read {path}: {err.strerror}") from None
    if data.startswith(b"%PDF"):
        contents = pdfs.read_pdf(path)
        return contents.token, contents
    body = data.decode("utf-8", errors="replace").strip()
    if body.startswith("{"):
        try:
            doc = json.loads(body)
        except ValueError:
            raise CredentialError(f"{path} is not valid JSON") from None
        ident = str(doc.get("id", "")) if isinstance(doc, Mapping) else ""
        if ident.startswith("data:application/vc+jwt,"):
            return ident.split(",", 1)[1], None
        raise CredentialError(
            f"{path} is the readable copy of a credential and carries no proof: verify the .jwt "
            "file or the PDF next to it"
        )
    return body, None


def _when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def _check_status(
    credential: Mapping[str, Any], issuer: PublicIssuer, status_list: str | Path | None
) -> tuple[Verification | None, list[str]]:
    entry = credential.get("credentialStatus")
    if not entry:
        return None, ["the credential carries no status entry: it cannot be revoked"]
    url = entry.get("statusListCredential", "")
    if status_list is None:
        return None, [f"revocation not checked: pass --status with the issuer's status list ({url})"]
    token, _ = read_token(status_list)
    try:
        listed = verify_signature(token, issuer)
    except ProofError as err:
        return _invalid("status", f"the status list does not verify: {err}"), []
    if listed.get("id") != url:
        return _invalid(
            "status", f"the status list given is {listed.get('id')!r}; the credential points at {url!r}"
        ), []
    subject = listed.get("credentialSubject", {})
    if subject.get("statusPurpose") != entry.get("statusPurpose"):
        return _invalid(
            "status",
            f"the status list is for {subject.get('statusPurpose')!r}, not {entry.get('statusPurpose')!r}",
        ), []
    try:
        bits = bitstring.decode_list(subject["encodedList"])
        revoked = bitstring.is_set(bits, int(entry["statusListIndex"]))
    except (KeyError, ValueError) as err:
        return _invalid("status", f"the status list cannot be read: {err}"), []
    if revoked:
        return _invalid(
            "revoked",
            f"the issuer revoked this credential (status list {url}, index "
            f"{entry['statusListIndex']}, as of {listed.get('validFrom')})",
        ), []
    return None, [f"not revoked according to the status list of {listed.get('validFrom')}"]


def verify_credential(
    source: str | Path,
    issuer: PublicIssuer | str | Path,
    *,
    status: str | Path | None = None,
    now: dt.datetime | None = None,
) -> Verification:
    """Verify a credential (VC-JWT string or file, or certificate PDF) with the issuer's public key.

    Parameters
    ----------
    source:
        A compact VC-JWT, a ``.jwt`` file, or a certificate PDF.
    issuer:
        The issuer's public key: a :class:`PublicIssuer`, a ``did:key``, or a file holding one
        (``issuer.jwks.json``, ``issuer.did``, a PEM public key).
    status:
        The issuer's published status list (``status-list.jwt``); revocation is checked only then.
    now:
        The moment to judge expiry at (default: now).

    Raises :class:`CredentialError` only when ``source`` or ``issuer`` cannot be read at all.
    """
    trusted = issuer if isinstance(issuer, PublicIssuer) else load_public(issuer)
    moment = now or dt.datetime.now(dt.UTC)
    try:
        token, contents = read_token(source)
    except CredentialError as err:
        if Path(str(source)).exists():
            return _invalid("format", str(err))
        raise
    try:
        credential = verify_signature(token, trusted)
    except ProofError as err:
        return _invalid(err.reason, str(err))
    try:
        st = statement(credential)
    except ValueError as err:
        return _invalid("format", str(err), credential=credential)
    if "OpenBadgeCredential" not in credential.get("type", []):
        return _invalid("format", "signed, but not an OpenBadgeCredential", credential=credential)
    if contents is not None:
        problem = pdfs.check_pdf(contents, st)
        if problem:
            return _invalid("tampered", problem, statement=st, credential=credential)
    try:
        if _when(credential["validFrom"]) > moment:
            return _invalid(
                "not yet valid", f"valid from {credential['validFrom']}", statement=st, credential=credential
            )
        if "validUntil" in credential and _when(credential["validUntil"]) < moment:
            return _invalid(
                "expired", f"expired on {credential['validUntil']}", statement=st, credential=credential
            )
    except ValueError as err:
        return _invalid("format", f"unreadable date: {err}", credential=credential)
    problem_status, notes = _check_status(credential, trusted, status)
    if problem_status is not None:
        problem_status.statement, problem_status.credential = st, credential
        return problem_status
    return Verification(True, statement=st, credential=credential, notes=notes)
