"""Open Badges 3.0 credentials: issuer keys, signing, verification by anyone, revocation, the PDF."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import nbformat
import pytest

import labkit as lk
from labkit.course.credentials import (
    CredentialError,
    Issuer,
    build_credential,
    init_keys,
    issue,
    load_issuer,
    load_public,
    read_pdf,
    revoke,
    sign,
    statement,
    verify_credential,
    write_pdf,
)
from labkit.course.credentials.pdf import _missing, qr_text
from tests.test_certificates import grades_csv

SCHEMA = json.loads((Path(__file__).parent / "data" / "ob3_required.schema.json").read_text())
DAY = dt.datetime(2025, 6, 30, tzinfo=dt.UTC)
NAMES = {
    "latin": "Łukasz Nowak",
    "vietnamese": "Nguyễn Văn An",
    "chinese": "王小明",
    "arabic": "فاطمة الزهراء",
    "devanagari": "अनन्या शर्मा",
}
HAS_CJK = not _missing(NAMES["chinese"])


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    return init_keys(tmp_path / "keys" / "issuer", name="Model Hardening Lab instructors")


def _credential(course: lk.course.Course, issuer: Issuer, learner: str = "ada", **kw: Any) -> dict[str, Any]:
    return build_credential(
        course,
        issuer=issuer.profile,
        learner=learner,
        score=kw.pop("score", 0.913),
        lessons={ls.slug: 0.9 for ls in course.ready_lessons},
        evidence=[lk.course.credentials.Evidence.of_file("00-welcome", "welcome.ipynb", b"{}")],
        issued=kw.pop("issued", DAY),
        **kw,
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _edit_payload(token: str, edit: Callable[[dict[str, Any]], None]) -> str:
    """The token with its payload edited and its header and signature kept (a forger's edit)."""
    head, body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    edit(payload)
    return f"{head}.{_b64(json.dumps(payload).encode())}.{sig}"


def _set_name(p: dict[str, Any]) -> None:
    p["credentialSubject"]["identifier"][0]["identityHash"] = "Eve Forger"


def _set_score(p: dict[str, Any]) -> None:
    p["credentialSubject"]["result"][0]["value"] = "99.0"


def _set_date(p: dict[str, Any]) -> None:
    p["validFrom"] = "2024-01-01T00:00:00Z"


def _set_achievement(p: dict[str, Any]) -> None:
    p["credentialSubject"]["achievement"]["name"] = "Advanced Model Hardening"


def _set_evidence(p: dict[str, Any]) -> None:
    p["evidence"][0]["id"] = "ni:///sha-256;" + _b64(b"\0" * 32)


@pytest.mark.parametrize(
    "edit",
    [_set_name, _set_score, _set_date, _set_achievement, _set_evidence],
    ids=["name", "score", "date", "achievement", "evidence"],
)
def test_an_edited_field_breaks_the_signature(course: lk.course.Course, issuer: Issuer, edit: Any) -> None:
    """Editing any signed field of a VC-JWT makes it INVALID for its signature."""
    token = sign(_credential(course, issuer), issuer)
    assert verify_credential(token, issuer.did).valid
    result = verify_credential(_edit_payload(token, edit), issuer.did)
    assert (result.valid, result.reason) == (False, "signature")
    assert "altered after signing" in result.message


def test_another_key_is_rejected_as_issuer_or_signature(
    course: lk.course.Course, issuer: Issuer, tmp_path: Path
) -> None:
    """A credential signed by another key: named as another issuer, or forged to name ours."""
    other = init_keys(tmp_path / "other", name="Diploma mill")
    forged = sign(_credential(course, other), other)
    result = verify_credential(forged, issuer.did)
    assert (result.valid, result.reason) == (False, "issuer")
    assert other.did in result.message and issuer.did in result.message
    # The forger claims to be our issuer in the header and the claims, but signs with its key.
    pretend = Issuer(other.directory, other.private_key, issuer.profile, issuer.status_list_url)
    cred = _credential(course, issuer)
    _head, body, sig = sign(cred, pretend).split(".")
    header = {"alg": "EdDSA", "kid": issuer.public.kid, "typ": "JWT"}
    disguised = f"{_b64(json.dumps(header).encode())}.{body}.{sig}"
    result = verify_credential(disguised, issuer.did)
    assert (result.valid, result.reason) == (False, "signature")


def test_expired_and_not_yet_valid(course: lk.course.Course, issuer: Issuer) -> None:
    cred = _credential(course, issuer, valid_until=DAY + dt.timedelta(days=365))
    token = sign(cred, issuer)
    assert verify_credential(token, issuer.did, now=DAY + dt.timedelta(days=1)).valid
    late = verify_credential(token, issuer.did, now=DAY + dt.timedelta(days=400))
    assert (late.valid, late.reason) == (False, "expired")
    early = verify_credential(token, issuer.did, now=DAY - dt.timedelta(days=1))
    assert (early.valid, early.reason) == (False, "not yet valid")


def test_credential_json_has_the_required_open_badges_fields(
    course: lk.course.Course, issuer: Issuer
) -> None:
    cred = _credential(course, issuer, valid_until=DAY + dt.timedelta(days=30))
    jsonschema.validate(cred, SCHEMA)
    subject = cred["credentialSubject"]
    atlas = {a["targetCode"] for a in subject["achievement"]["alignment"]}
    assert atlas == {a for ls in course.ready_lessons for a in ls.atlas}
    assert subject["achievement"]["version"] == course.version
    assert len(subject["result"]) == 1 + len(course.ready_lessons)
    assert cred["evidence"][0]["id"].startswith("ni:///sha-256;")
    broken = json.loads(json.dumps(cred))
    del broken["credentialSubject"]["achievement"]["criteria"]
    with pytest.raises(jsonschema.ValidationError, match="criteria"):
        jsonschema.validate(broken, SCHEMA)


def test_keys_init_protects_the_private_key(course: lk.course.Course, tmp_path: Path) -> None:
    issuer = init_keys(tmp_path / "issuer", name="School")
    key = issuer.directory / "issuer.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE" in key.read_text()
    assert "PRIVATE" not in (issuer.directory / "issuer.jwks.json").read_text()
    jwks = json.loads((issuer.directory / "issuer.jwks.json").read_text())
    assert jwks["keys"][0]["kty"] == "OKP" and "d" not in jwks["keys"][0]
    for source in (issuer.did, issuer.directory / "issuer.jwks.json", issuer.directory / "issuer.did"):
        assert load_public(source).did == issuer.did
    with pytest.raises(CredentialError, match="exists already"):
        init_keys(tmp_path / "issuer", name="School")
    with pytest.raises(CredentialError, match="outside the course"):
        init_keys(course.root / "issuer-keys", name="School", forbidden=[course.root])
    assert not (course.root / "issuer-keys").exists()
    os.chmod(key, 0o644)
    with pytest.raises(CredentialError, match="chmod 600"):
        load_issuer(issuer.directory)
    private_jwk = tmp_path / "private.json"
    private_jwk.write_text(json.dumps({"kty": "OKP", "crv": "Ed25519", "x": "AA", "d": "AA"}))
    with pytest.raises(CredentialError, match="private JWK"):
        load_public(private_jwk)


def _unicode_names() -> list[Any]:
    marks = {"chinese": pytest.mark.skipif(not HAS_CJK, reason="no CJK font (Debian: fonts-droid-fallback)")}
    return [pytest.param(name, id=script, marks=marks.get(script, ())) for script, name in NAMES.items()]


@pytest.mark.parametrize("name", _unicode_names())
def test_unicode_names_round_trip_through_credential_pdf_and_qr(
    course: lk.course.Course, issuer: Issuer, tmp_path: Path, name: str
) -> None:
    """A name in any script is signed, printed, read back by pypdf, and its QR code decodes."""
    import zxingcpp

    token = sign(_credential(course, issuer, learner=name), issuer)
    pdf = write_pdf(
        statement(verify_credential(token, issuer.did).credential or {}), token, tmp_path / "c.pdf"
    )
    result = verify_credential(pdf, issuer.did)
    assert result.valid, result.message
    assert result.statement is not None and result.statement.learner == name
    contents = read_pdf(pdf)
    assert name in contents.lines
    decoded = zxingcpp.read_barcodes(contents.qr_image)
    assert [d.text for d in decoded] == [qr_text(result.statement.credential_id, token)]


def test_edited_pdfs_and_swapped_qr_codes_are_rejected(
    course: lk.course.Course, issuer: Issuer, tmp_path: Path
) -> None:
    ada = sign(_credential(course, issuer, learner="Ada Lovelace"), issuer)
    bob = sign(_credential(course, issuer, learner="Bob Babbage"), issuer)
    st = statement(verify_credential(ada, issuer.did).credential or {})
    genuine = write_pdf(st, ada, tmp_path / "ada.pdf")
    assert verify_credential(genuine, issuer.did).valid
    cases = {
        "name": (dict(learner="Eve Forger"), "learner's name"),
        "score": (dict(score="99.9"), "the score"),
        "date": (dict(date="2020-01-01"), "the issuer and date"),
        "course": (dict(title="Advanced Model Hardening"), "course title"),
    }
    for field, (change, reason) in cases.items():
        forged = write_pdf(st.__class__(**{**st.__dict__, **change}), ada, tmp_path / f"{field}.pdf")
        result = verify_credential(forged, issuer.did)
        assert (result.valid, result.reason) == (False, "tampered"), field
        assert reason in result.message, (field, result.message)
    bob_st = statement(verify_credential(bob, issuer.did).credential or {})
    swapped = write_pdf(st, ada, tmp_path / "swapped.pdf", qr_picture=qr_text(bob_st.credential_id, bob))
    result = verify_credential(swapped, issuer.did)
    assert (result.valid, result.reason) == (False, "tampered")
    assert "QR code is not this credential's" in result.message
    # Bob's credential inside a page that prints Ada's name: the page no longer matches.
    inside = write_pdf(st, bob, tmp_path / "inside.pdf")
    result = verify_credential(inside, issuer.did)
    assert (result.valid, result.reason) == (False, "tampered")
    # A stamp added onto the genuine page with pypdf.
    from fpdf import FPDF
    from pypdf import PdfReader, PdfWriter

    stamp = FPDF(orientation="L", format="A4")
    stamp.add_page()
    stamp.set_font("helvetica", size=20)
    stamp.text(20, 20, "Grade: A+ with distinction")
    writer = PdfWriter(clone_from=PdfReader(genuine))
    writer.pages[0].merge_page(PdfReader(io.BytesIO(bytes(stamp.output()))).pages[0])
    stamped = tmp_path / "stamped.pdf"
    writer.write(stamped)
    result = verify_credential(stamped, issuer.did)
    assert (result.valid, result.reason) == (False, "tampered")
    assert "Grade: A+" in result.message


def _submissions(course: lk.course.Course, root: Path, learners: list[str]) -> Path:
    """nbgrader's submitted/ layout: <learner>/<lesson slug>/<notebook>."""
    for learner in learners:
        for ls in course.ready_lessons[:3]:
            path = root / learner / ls.slug / str(ls.notebook)
            path.parent.mkdir(parents=True)
            nb = nbformat.v4.new_notebook()
            nb.cells.append(nbformat.v4.new_code_cell(f"answer = {learner!r}"))
            nbformat.write(nb, path)
    return root


def test_class_round_trip_issue_verify_revoke(
    course: lk.course.Course, issuer: Issuer, tmp_path: Path
) -> None:
    """Issue to a class, verify with only the published public key, revoke one, verify again."""
    grades = grades_csv(course, tmp_path / "grades.csv", {"ada": 0.95, "nguyen": 0.8, "bob": 0.2})
    subs = _submissions(course, tmp_path / "submitted", ["ada", "nguyen", "bob"])
    out = tmp_path / "credentials"
    results = issue(course, grades, issuer=issuer, out=out, submissions=subs, date="2025-06-30")
    assert [r.decision.learner for r in results if r.credential] == ["ada", "nguyen"]
    for name in ("issuer.jwks.json", "issuer.did", "status-list.jwt", "credentials.csv"):
        assert (out / name).is_file()
    assert not list(out.glob("issuer.key*")) and not (out / "bob.jwt").exists()
    public = load_public(out / "issuer.jwks.json")  # what an employer has
    ada_json = json.loads((out / "ada.json").read_text())
    jsonschema.validate(ada_json, SCHEMA)
    digest = (
        subs / "ada" / course.ready_lessons[0].slug / str(course.ready_lessons[0].notebook)
    ).read_bytes()
    assert any(hashlib.sha256(digest).hexdigest() in e["description"] for e in ada_json["evidence"])
    for path in (out / "ada.jwt", out / "ada.pdf"):
        result = verify_credential(path, public, status=out / "status-list.jwt")
        assert result.valid, result.message
        assert result.statement is not None and result.statement.score == "95.0"
        assert result.statement.evidence == 3
    revoked = revoke("ada", issuer=issuer)
    assert [e["learner"] for e in revoked] == ["ada"]
    status = issuer.status_list_path
    for path in (out / "ada.jwt", out / "ada.pdf"):
        result = verify_credential(path, public, status=status)
        assert (result.valid, result.reason) == (False, "revoked"), path
    assert verify_credential(out / "nguyen.jwt", public, status=status).valid
    # The old list still says "not revoked": the verifier needs the issuer's current list.
    assert verify_credential(out / "ada.jwt", public, status=out / "status-list.jwt").valid
    # A status list signed by someone else does not count.
    other = init_keys(tmp_path / "other", name="Other")
    fake = tmp_path / "fake-status.jwt"
    fake.write_text(sign({**json.loads(json.dumps(_status_payload(status))), "issuer": other.profile}, other))
    result = verify_credential(out / "nguyen.jwt", public, status=fake)
    assert (result.valid, result.reason) == (False, "status")
    with pytest.raises(CredentialError, match="no credential was issued to 'zoe'"):
        revoke("zoe", issuer=issuer)
    result = verify_credential(out / "ada.json", public)
    assert (result.valid, result.reason) == (False, "format")
    assert "no proof" in result.message


def _status_payload(path: Path) -> dict[str, Any]:
    from labkit.course.credentials.proof import credential_of, unverified

    return credential_of(unverified(path.read_text().strip())[1])


def test_issue_refuses_a_name_no_font_can_print(
    course: lk.course.Course, issuer: Issuer, tmp_path: Path
) -> None:
    grades = grades_csv(course, tmp_path / "grades.csv", {"\U0001d538\U00013000": 1.0})
    with pytest.raises(CredentialError, match="no font has"):
        issue(course, grades, issuer=issuer, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_round_trip_keys_certify_verify_revoke(
    course: lk.course.Course,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """labkit keys init, certify, verify with only the public key, revoke, verify again."""
    from labkit.cli import main

    monkeypatch.setenv("LABKIT_ISSUER_DIR", str(tmp_path / "issuer"))
    assert main(["keys", "init", "--name", "Example University"]) == 0
    assert "did:key:z6Mk" in capsys.readouterr().out
    assert main(["keys", "init", "--name", "Again"]) == 2
    assert "labkit: error: " in capsys.readouterr().err
    grades = grades_csv(course, tmp_path / "grades.csv", {NAMES["vietnamese"]: 0.9, "bob": 0.3})
    subs = _submissions(course, tmp_path / "submitted", ["bob"])
    out = tmp_path / "credentials"
    args = [
        "certify",
        str(grades),
        "--out",
        str(out),
        "--course",
        str(course.path),
        "--submissions",
        str(subs),
    ]
    assert main(args) == 0
    assert "1 of 2 learner(s) certified" in capsys.readouterr().out
    pdf = next(out.glob("*.pdf"))
    did = (out / "issuer.did").read_text().strip()
    status = ["--status", str(out / "status-list.jwt")]
    assert main(["verify", str(pdf), "--issuer", did, *status]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"VALID: {NAMES['vietnamese']} completed {course.title}")
    assert main(["revoke", NAMES["vietnamese"]]) == 0
    capsys.readouterr()
    status = ["--status", str(tmp_path / "issuer" / "status-list.jwt")]
    assert main(["verify", str(pdf), "--issuer", str(out / "issuer.jwks.json"), *status]) == 1
    assert capsys.readouterr().out.startswith("INVALID (revoked)")
    assert main(["verify", str(pdf)]) == 2
    assert "--issuer is required" in capsys.readouterr().err
    assert main(["revoke", "nobody"]) == 2
    assert "no credential was issued to 'nobody'" in capsys.readouterr().err
