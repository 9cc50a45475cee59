"""VC-JWT: a credential signed as a JSON Web Token with EdDSA (Ed25519), by PyJWT.

Open Badges 3.0 section 8.2 (and W3C VC-JOSE-COSE) puts the credential's members at the top of the
JWT payload and adds the registered claims ``iss`` (the issuer's id), ``jti`` (the credential's
id), ``nbf`` (``validFrom``) and ``exp`` (``validUntil``). The JOSE header names the signing key:
``kid`` is the issuer's did:key URL, so a verifier needs nothing but that did or its JWK set.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import jwt

from labkit.course.credentials.keys import Issuer, PublicIssuer

__all__ = ["ProofError", "credential_of", "sign", "unverified", "verify_signature"]

_CLAIMS = ("iss", "jti", "nbf", "exp", "iat", "sub")


class ProofError(Exception):
    """A token that does not verify; ``reason`` is one of format, issuer, signature, tampered."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _seconds(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def sign(credential: Mapping[str, Any], issuer: Issuer) -> str:
    """The compact VC-JWT of ``credential``, signed with the issuer's Ed25519 key."""
    payload = dict(credential)
    payload["iss"] = issuer.did
    payload["jti"] = credential["id"]
    payload["nbf"] = _seconds(credential["validFrom"])
    if "validUntil" in credential:
        payload["exp"] = _seconds(credential["validUntil"])
    headers = {"kid": issuer.public.kid, "typ": "JWT"}
    return jwt.encode(payload, issuer.private_key, algorithm="EdDSA", headers=headers)


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of ``token`` *without* checking anything: for messages, never for trust."""
    try:
        header = jwt.get_unverified_header(token)
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as err:
        raise ProofError("format", f"not a VC-JWT ({err})") from None
    return header, payload


def credential_of(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The credential inside a verified payload (the registered JWT claims removed)."""
    return {k: v for k, v in payload.items() if k not in _CLAIMS}


def verify_signature(token: str, issuer: PublicIssuer) -> dict[str, Any]:
    """The credential in ``token`` when its EdDSA signature verifies with ``issuer``'s key.

    Raises :class:`ProofError` with reason ``issuer`` when the token names another issuer,
    ``signature`` when the signature fails, ``tampered`` when the signed claims disagree with the
    signed credential. Dates and status are the caller's to check.
    """
    header, payload = unverified(token.strip())
    if header.get("alg") != "EdDSA":
        raise ProofError("signature", f"signed with {header.get('alg')!r}; labkit credentials use EdDSA")
    named = str(header.get("kid") or payload.get("iss") or "").split("#")[0]
    if named and named != issuer.did:
        raise ProofError(
            "issuer",
            f"issued by {named}, not by the issuer you trust ({issuer.did}): another key signed it",
        )
    try:
        verified = jwt.decode(
            token.strip(),
            issuer.key,
            algorithms=["EdDSA"],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
        )
    except jwt.InvalidSignatureError:
        raise ProofError(
            "signature",
            "the Ed25519 signature does not match: the credential was altered after signing, or "
            "another key signed it",
        ) from None
    except jwt.InvalidTokenError as err:
        raise ProofError("format", f"not a valid VC-JWT ({err})") from None
    credential = credential_of(verified)
    issuer_id = credential.get("issuer", {})
    issuer_id = issuer_id.get("id") if isinstance(issuer_id, Mapping) else issuer_id
    checks = [
        ("iss", verified.get("iss"), issuer.did),
        ("issuer.id", issuer_id, issuer.did),
        ("jti", verified.get("jti"), credential.get("id")),
    ]
    for name, got, want in checks:
        if got != want:
            raise ProofError("tampered", f"the signed claim {name} is {got!r}, expected {want!r}")
    return credential
