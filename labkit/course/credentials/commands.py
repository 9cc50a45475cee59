"""``labkit keys init``, ``labkit certify``, ``labkit verify`` and ``labkit revoke``.

:func:`add_credential_commands` registers them on the ``labkit`` subparsers; a mistake in a call
(a missing key, an unreadable file) raises :class:`CredentialError` or ``UsageError`` and the CLI
prints one line ``labkit: error: ...`` with exit status 2. ``verify`` exits 1 for an INVALID
credential, after saying why.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_credential_commands", "certify", "keys_init", "revoke", "verify"]

_ISSUER_DIR_HELP = "the issuer's folder (default: LABKIT_ISSUER_DIR, else ~/.config/labkit/issuer)"
_COURSE_HELP = (
    "course.yml (or its folder) to act on (default: LABKIT_COURSE, else the working directory "
    "or its parents; never the checkout labkit was installed from)"
)


def keys_init(args: argparse.Namespace) -> int:
    """Create the issuer's Ed25519 key pair, public JWK set and did:key."""
    from labkit.course.credentials.keys import default_issuer_dir, init_keys
    from labkit.course.manifest import find_course_file

    found = find_course_file(installed=False)
    forbidden = [found.parent] if found is not None else []
    if args.course:
        named = Path(args.course).expanduser().resolve()
        forbidden.append(named.parent if named.is_file() else named)
    issuer = init_keys(
        args.dir or default_issuer_dir(),
        name=args.name,
        url=args.url,
        status_list_url=args.status_url,
        forbidden=forbidden,
        force=args.force,
    )
    print(f"issuer: {issuer.profile['name']} ({issuer.did})")
    print(f"private key: {issuer.directory / 'issuer.key'} (mode 0600; back it up, never share it)")
    print(f"public key:  {issuer.jwks_path} and {issuer.directory / 'issuer.did'} (publish these)")
    print(f"status list: credentials will point at {issuer.status_list_url}")
    return 0


def certify(args: argparse.Namespace) -> int:
    """Issue Open Badges 3.0 credentials to the learners who pass the course's policy."""
    from labkit.course.credentials.issue import issue
    from labkit.course.credentials.keys import load_issuer
    from labkit.course.usage import course_to_write

    if args.key_file:
        from labkit.course.usage import UsageError

        raise UsageError(
            "--key-file signs the old HMAC certificates, which labkit no longer issues: run "
            "`labkit keys init --name NAME` once and certify with the issuer's Ed25519 key"
        )
    course = course_to_write(args.course)
    issuer = load_issuer(args.issuer_dir)
    out = Path(args.out).resolve()
    print(f"course: {course.path}")
    print(f"issuer: {issuer.profile['name']} ({issuer.did})")
    print(f"writing credentials to {out}")
    results = issue(
        course,
        args.grades,
        issuer=issuer,
        out=out,
        submissions=args.submissions,
        date=args.date,
        valid_until=args.valid_until,
    )
    for r in results:
        shown = f"{100 * r.decision.score:.1f}%"
        print(
            f"{r.decision.learner}: {shown} "
            + (f"credential {r.files['pdf']}" if r.files else f"no credential ({r.decision.reason})")
        )
    passed = sum(1 for r in results if r.files)
    print(f"{passed} of {len(results)} learner(s) certified; list in {out / 'credentials.csv'}")
    if args.submissions is None:
        print("note: no --submissions given, so the credentials carry no evidence digests")
    print(f"publish for verifiers: {out / 'issuer.jwks.json'}, {out / 'status-list.jwt'}")
    return 0


def _legacy(args: argparse.Namespace) -> int:
    from labkit.course.certificates import CertificateError, load_key
    from labkit.course.certificates import verify as check

    message = (
        "this is an old HMAC certificate: it verifies with the instructor's secret for this "
        "release only; ask the issuer for an Open Badges credential"
    )
    print(f"labkit verify: deprecated: {message}", file=sys.stderr)
    key = load_key(args.key_file)
    try:
        cert = check(args.credential, key)
    except CertificateError as err:
        print(f"INVALID (signature): {err}")
        return 1
    print(
        f"VALID: {cert.learner} completed {cert.title} ({cert.course} {cert.version}) with "
        f"{cert.score}% on {cert.date} (deprecated HMAC certificate)"
    )
    return 0


def _is_legacy(source: str) -> bool:
    if source.strip().startswith("LK1."):
        return True
    path = Path(source)
    if path.suffix.lower() == ".pdf" and path.is_file():
        return b"/Keywords (LK1." in path.read_bytes()
    return False


def verify(args: argparse.Namespace) -> int:
    """Verify a credential or certificate PDF with the issuer's public key."""
    from labkit.course.credentials.verify import verify_credential
    from labkit.course.usage import UsageError

    if _is_legacy(args.credential):
        return _legacy(args)
    if not args.issuer:
        raise UsageError(
            "--issuer is required: the issuer's public key (a did:key, or its issuer.jwks.json or "
            "issuer.did file)"
        )
    result = verify_credential(args.credential, args.issuer, status=args.status)
    print(result.summary())
    return 0 if result.valid else 1


def revoke(args: argparse.Namespace) -> int:
    """Revoke a learner's credentials in the issuer's status list."""
    from labkit.course.credentials.issue import revoke as flip
    from labkit.course.credentials.keys import load_issuer

    issuer = load_issuer(args.issuer_dir)
    revoked = flip(args.learner, issuer=issuer, course_id=args.course_id)
    for e in revoked:
        print(f"revoked {e['id']} ({e['learner']}, {e['course']} {e['version']}, issued {e['issued']})")
    if not revoked:
        print(f"{args.learner}'s credentials were revoked already")
    print(f"status list: {issuer.status_list_path}; publish it at {issuer.status_list_url}")
    return 0


def add_credential_commands(sub: Any) -> None:
    """Register ``keys``, ``certify``, ``verify`` and ``revoke`` on the ``labkit`` subparsers."""
    p = sub.add_parser("keys", help="the issuer's signing keys for certificates")
    keys = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    k = keys.add_parser(
        "init",
        help="create the issuer's Ed25519 key pair (private key 0600, public JWK set and did:key)",
    )
    k.add_argument("--name", required=True, help="the issuer's name as credentials show it")
    k.add_argument("--url", default=None, help="the issuer's web page")
    k.add_argument("--dir", default=None, help=_ISSUER_DIR_HELP)
    k.add_argument(
        "--status-url", default=None, help="where you will publish status-list.jwt (default: a urn: name)"
    )
    k.add_argument("--course", default=None, help="the course folder the key must stay out of")
    k.add_argument(
        "--force", action="store_true", help="replace an existing key (old credentials stop verifying)"
    )
    k.set_defaults(func=keys_init)

    p = sub.add_parser(
        "certify",
        help="Open Badges 3.0 credentials and PDFs for the learners who pass (needs the issuer key)",
    )
    p.add_argument("grades", help="grades CSV written by labkit grade")
    p.add_argument("--out", default="credentials", help="output folder (default: credentials)")
    p.add_argument("--submissions", default=None, help="the graded submissions, for evidence digests")
    p.add_argument("--issuer-dir", default=None, help=_ISSUER_DIR_HELP)
    p.add_argument("--date", default=None, help="issuance date, ISO (default: now)")
    p.add_argument("--valid-until", default=None, help="expiry date, ISO (default: none)")
    p.add_argument("--course", default=None, help=_COURSE_HELP)
    p.add_argument("--key-file", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=certify)

    p = sub.add_parser("verify", help="verify a credential or certificate PDF with the issuer's public key")
    p.add_argument("credential", help="the credential (.jwt), the certificate PDF, or an old LK1 code")
    p.add_argument(
        "--issuer", default=None, help="the issuer's public key: did:key, issuer.jwks.json or issuer.did"
    )
    p.add_argument("--status", default=None, help="the issuer's status-list.jwt, to check revocation")
    p.add_argument(
        "--key-file",
        default=None,
        help="deprecated: the instructor's secret, for old HMAC certificates (default: LABKIT_CERT_KEY_FILE)",
    )
    p.set_defaults(func=verify)

    p = sub.add_parser("revoke", help="revoke a learner's credentials in the issuer's status list")
    p.add_argument("learner", help="the learner's name as in the grades CSV")
    p.add_argument("--course-id", default=None, help="only this course's credentials (default: all)")
    p.add_argument("--issuer-dir", default=None, help=_ISSUER_DIR_HELP)
    p.set_defaults(func=revoke)
