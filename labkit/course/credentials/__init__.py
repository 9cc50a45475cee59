"""Open Badges 3.0 credentials that anyone can verify with the issuer's public key.

``labkit keys init`` makes the issuer's Ed25519 key pair (:mod:`.keys`), ``labkit certify`` issues
signed ``OpenBadgeCredential``s (:mod:`.model`, :mod:`.proof`, :mod:`.issue`) with a printed PDF
(:mod:`.pdf`), ``labkit verify`` checks one offline (:mod:`.verify`) and ``labkit revoke`` flips its
bit in the issuer's Bitstring Status List (:mod:`.status`).

Examples
--------
>>> import tempfile, datetime as dt
>>> from labkit.course import load_course
>>> issuer = init_keys(tempfile.mkdtemp() + "/issuer", name="Demo school")
>>> course = load_course()
>>> cred = build_credential(course, issuer=issuer.profile, learner="Nguyễn Văn An", score=0.9,
...                         lessons={}, issued=dt.datetime(2025, 6, 30, tzinfo=dt.UTC))
>>> result = verify_credential(sign(cred, issuer), issuer.did)
>>> result.valid, result.statement.learner
(True, 'Nguyễn Văn An')
"""

from labkit.course.credentials.errors import CredentialError
from labkit.course.credentials.issue import Issued, issue, publish_status, revoke, submission_evidence
from labkit.course.credentials.keys import (
    Issuer,
    PublicIssuer,
    default_issuer_dir,
    did_from_key,
    init_keys,
    key_from_did,
    load_issuer,
    load_public,
)
from labkit.course.credentials.model import Evidence, Statement, build_credential, statement
from labkit.course.credentials.pdf import read_pdf, write_pdf
from labkit.course.credentials.proof import sign
from labkit.course.credentials.verify import REASONS, Verification, verify_credential

__all__ = [
    "REASONS",
    "CredentialError",
    "Evidence",
    "Issued",
    "Issuer",
    "PublicIssuer",
    "Statement",
    "Verification",
    "build_credential",
    "default_issuer_dir",
    "did_from_key",
    "init_keys",
    "issue",
    "key_from_did",
    "load_issuer",
    "load_public",
    "publish_status",
    "read_pdf",
    "revoke",
    "sign",
    "statement",
    "submission_evidence",
    "verify_credential",
    "write_pdf",
]
