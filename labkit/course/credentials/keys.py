"""Issuer keys: an Ed25519 key pair, its public half as a JWK set and as a ``did:key``.

The private key is a PKCS#8 PEM file readable by its owner only (0600), in a folder outside the
course (by default ``~/.config/labkit/issuer``, or ``LABKIT_ISSUER_DIR``). Graders never need it:
``labkit grade`` does not read it and sandboxes see only the course's files. The public half is
published as ``issuer.jwks.json`` and ``issuer.did``; either one is all a verifier needs.

``did:key`` (W3C CCG, https://w3c-ccg.github.io/did-method-key/) encodes the raw 32-byte public
key behind the multicodec prefix ``0xed 0x01`` in base58btc, so the identifier *is* the key.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from labkit.course.credentials.errors import CredentialError

__all__ = [
    "ISSUER_DIR_ENV",
    "Issuer",
    "PublicIssuer",
    "default_issuer_dir",
    "did_from_key",
    "init_keys",
    "key_from_did",
    "load_issuer",
    "load_public",
]

ISSUER_DIR_ENV = "LABKIT_ISSUER_DIR"
PRIVATE_KEY = "issuer.key"
JWKS = "issuer.jwks.json"
DID = "issuer.did"
PROFILE = "issuer.json"
_ED25519_MULTICODEC = b"\xed\x01"
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58encode(data: bytes) -> str:
    """Base58btc (the Bitcoin alphabet), as multibase ``z`` uses it; an encoding, not cryptography."""
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, rem = divmod(n, 58)
        out = _B58[rem] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def _b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        pos = _B58.find(ch)
        if pos < 0:
            raise ValueError(f"{ch!r} is not a base58 character")
        n = n * 58 + pos
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def did_from_key(public: Ed25519PublicKey) -> str:
    """The ``did:key`` of an Ed25519 public key.

    Examples
    --------
    >>> key = Ed25519PublicKey.from_public_bytes(bytes(32))
    >>> did_from_key(key)
    'did:key:z6MkeTG3bFFSLYVU7VqhgZxqr6YzpaGrQtFMh1uvqGy1vDnP'
    >>> key_from_did(did_from_key(key)) == key
    True
    """
    return "did:key:z" + _b58encode(_ED25519_MULTICODEC + _raw(public))


def key_from_did(did: str) -> Ed25519PublicKey:
    """The Ed25519 public key a ``did:key`` names (``did:key:z6Mk...``, optionally ``#fragment``)."""
    text = did.strip().split("#")[0]
    if not text.startswith("did:key:z"):
        raise CredentialError(f"{did[:60]!r} is not an Ed25519 did:key (expected did:key:z6Mk...)")
    try:
        raw = _b58decode(text[len("did:key:z") :])
    except ValueError as err:
        raise CredentialError(f"{did[:60]!r} is not a valid did:key: {err}") from None
    if not raw.startswith(_ED25519_MULTICODEC) or len(raw) != 34:
        raise CredentialError(f"{did[:60]!r} is a did:key, but not of an Ed25519 key")
    return Ed25519PublicKey.from_public_bytes(raw[2:])


def _kid(did: str) -> str:
    return f"{did}#{did.removeprefix('did:key:')}"


@dataclass(frozen=True)
class PublicIssuer:
    """What a verifier knows: the issuer's ``did:key`` and its public key."""

    did: str
    key: Ed25519PublicKey

    @property
    def kid(self) -> str:
        """The key id in a credential's JOSE header: ``did:key:z...#z...``."""
        return _kid(self.did)


@dataclass(frozen=True)
class Issuer:
    """The issuer's folder: private key, public key, profile and the status-list settings."""

    directory: Path
    private_key: Ed25519PrivateKey
    profile: dict[str, Any]  # the Open Badges issuer Profile (id, type, name, url)
    status_list_url: str

    @property
    def public(self) -> PublicIssuer:
        public = self.private_key.public_key()
        return PublicIssuer(did_from_key(public), public)

    @property
    def did(self) -> str:
        return self.public.did

    @property
    def jwks_path(self) -> Path:
        return self.directory / JWKS

    @property
    def registry_path(self) -> Path:
        return self.directory / "registry.json"

    @property
    def status_list_path(self) -> Path:
        return self.directory / "status-list.jwt"


def default_issuer_dir() -> Path:
    """``LABKIT_ISSUER_DIR``, else ``$XDG_CONFIG_HOME/labkit/issuer`` (``~/.config/labkit/issuer``)."""
    if os.environ.get(ISSUER_DIR_ENV):
        return Path(os.environ[ISSUER_DIR_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "labkit" / "issuer"


def jwk_set(public: PublicIssuer) -> dict[str, Any]:
    """The public key as a JWK set (RFC 7517), its ``kid`` the key's did:key URL."""
    jwk = OKPAlgorithm.to_jwk(public.key, as_dict=True)
    return {"keys": [{**jwk, "kid": public.kid, "alg": "EdDSA", "use": "sig"}]}


def init_keys(
    directory: str | Path | None = None,
    *,
    name: str,
    url: str | None = None,
    status_list_url: str | None = None,
    forbidden: list[Path] | tuple[Path, ...] = (),
    force: bool = False,
) -> Issuer:
    """Create an issuer: an Ed25519 key pair, the public JWK set, the did:key and the profile.

    Parameters
    ----------
    directory:
        Where to write (default :func:`default_issuer_dir`). Must not lie inside any of
        ``forbidden`` (the course folder: a key there would be shared with the course's files).
    name:
        The issuer's name as credentials show it (a school, a team, an instructor).
    url:
        The issuer's web page, if any.
    status_list_url:
        Where the issuer will publish its revocation list (``status-list.jwt``); credentials
        point there. Default: a ``urn:`` naming the key, for lists handed over as files.
    force:
        Replace an existing key. Credentials signed with the old key stop verifying.

    Examples
    --------
    >>> import tempfile
    >>> issuer = init_keys(tempfile.mkdtemp() + "/issuer", name="Demo school")
    >>> issuer.did.startswith("did:key:z6Mk"), oct((issuer.directory / "issuer.key").stat().st_mode & 0o777)
    (True, '0o600')
    """
    folder = Path(directory) if directory is not None else default_issuer_dir()
    folder = folder.expanduser().resolve()
    for place in forbidden:
        if folder.is_relative_to(Path(place).resolve()):
            raise CredentialError(
                f"{folder} lies inside {place}: keep the issuer's private key outside the course "
                f"folder (default {default_issuer_dir()}), or pass --dir elsewhere"
            )
    if not name.strip():
        raise CredentialError("the issuer needs a name (--name), e.g. the school or the instructor")
    key_path = folder / PRIVATE_KEY
    if key_path.exists() and not force:
        raise CredentialError(
            f"{key_path} exists already; credentials signed with it would stop verifying if it were "
            "replaced (pass --force to replace it anyway)"
        )
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if force:
        key_path.unlink(missing_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(key_path, 0o600)  # whatever the umask
    public = PublicIssuer(did_from_key(private.public_key()), private.public_key())
    profile: dict[str, Any] = {"id": public.did, "type": ["Profile"], "name": name.strip()}
    if url:
        profile["url"] = url
    settings = {
        "profile": profile,
        "status_list_url": status_list_url or f"urn:labkit:status:{public.did.removeprefix('did:key:')}",
    }
    (folder / PROFILE).write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / JWKS).write_text(json.dumps(jwk_set(public), indent=2) + "\n", encoding="utf-8")
    (folder / DID).write_text(public.did + "\n", encoding="utf-8")
    return load_issuer(folder)


def load_issuer(directory: str | Path | None = None) -> Issuer:
    """The issuer in ``directory`` (default :func:`default_issuer_dir`), private key included."""
    folder = Path(directory).expanduser() if directory is not None else default_issuer_dir()
    key_path = folder / PRIVATE_KEY
    if not key_path.is_file():
        raise CredentialError(
            f"no issuer key in {folder}: run `labkit keys init --name NAME` first "
            f"(or point {ISSUER_DIR_ENV} / --issuer-dir at the issuer's folder)"
        )
    mode = key_path.stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialError(
            f"{key_path} is readable by others (mode {oct(mode & 0o777)}); run chmod 600 {key_path}"
        )
    try:
        private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        settings = json.loads((folder / PROFILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CredentialError(f"cannot read the issuer in {folder}: {err}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise CredentialError(f"{key_path} is not an Ed25519 private key")
    return Issuer(folder, private, dict(settings["profile"]), str(settings["status_list_url"]))


def load_public(source: str | Path) -> PublicIssuer:
    """The issuer's public key from what it published: a ``did:key``, or a file holding one, a
    JWK set, a single JWK, or a PEM public key; an issuer folder works too."""
    text = str(source).strip()
    if text.startswith("did:key:"):
        return PublicIssuer(text.split("#")[0], key_from_did(text))
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / JWKS
    try:
        data = path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise CredentialError(
            f"cannot read the issuer's public key {path}: {err.strerror}; expected a did:key, "
            "or the issuer's issuer.jwks.json or issuer.did"
        ) from None
    if data.startswith("did:key:"):
        return load_public(data.split()[0])
    if data.startswith("-----BEGIN PUBLIC KEY-----"):
        pem = serialization.load_pem_public_key(data.encode())
        if not isinstance(pem, Ed25519PublicKey):
            raise CredentialError(f"{path} holds a public key that is not Ed25519")
        return PublicIssuer(did_from_key(pem), pem)
    if data.startswith("-----BEGIN"):
        raise CredentialError(f"{path} is not a public key: give the verifier the public half only")
    try:
        doc = json.loads(data)
        jwk = doc["keys"][0] if "keys" in doc else doc
        if "d" in jwk:
            raise CredentialError(f"{path} holds a private JWK: publish the public half only")
        key = OKPAlgorithm.from_jwk(jwk)
    except (ValueError, KeyError, IndexError, TypeError) as err:
        if isinstance(err, CredentialError):
            raise
        raise CredentialError(f"{path} is neither a did:key, a JWK set, a JWK nor a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CredentialError(f"{path} holds a key that is not an Ed25519 public key")
    return PublicIssuer(did_from_key(key), key)
