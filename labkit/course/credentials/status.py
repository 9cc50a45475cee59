"""Revocation through a W3C Bitstring Status List (https://www.w3.org/TR/vc-bitstring-status-list/).

The issuer publishes one ``BitstringStatusListCredential``: a GZIP-compressed bitstring of at
least 131,072 bits (16 KiB, so that one credential's index tells an observer little), encoded as
multibase base64url. Each credential carries a ``BitstringStatusListEntry`` with its index; the
bit at that index (counted from the left, most significant bit first) is 1 once it is revoked.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
from collections.abc import Mapping
from typing import Any

__all__ = ["MIN_BITS", "decode_list", "encode_list", "entry", "is_set", "list_credential", "set_bit"]

MIN_BITS = 131_072
PURPOSE = "revocation"


def encode_list(bits: bytes) -> str:
    """Multibase (``u``, base64url without padding) of the GZIP-compressed bitstring."""
    packed = gzip.compress(bytes(bits), mtime=0)
    return "u" + base64.urlsafe_b64encode(packed).decode().rstrip("=")


def decode_list(encoded: str) -> bytes:
    """The bitstring of an ``encodedList``; ``ValueError`` when it is not one."""
    if not encoded.startswith("u"):
        raise ValueError("encodedList: expected multibase base64url (a leading 'u')")
    body = encoded[1:]
    try:
        return gzip.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"encodedList is not GZIP-compressed base64url: {err}") from None


def is_set(bits: bytes, index: int) -> bool:
    """Whether the bit at ``index`` (left-most first) is 1.

    Examples
    --------
    >>> is_set(bytes([0b1000_0000, 0b0000_0001]), 0), is_set(bytes([0b1000_0000, 0b0000_0001]), 15)
    (True, True)
    """
    if not 0 <= index < 8 * len(bits):
        raise ValueError(f"status index {index} is outside the list of {8 * len(bits)} bits")
    return bool(bits[index // 8] >> (7 - index % 8) & 1)


def set_bit(bits: bytearray, index: int) -> None:
    """Set the bit at ``index`` (left-most first) to 1."""
    if not 0 <= index < 8 * len(bits):
        raise ValueError(f"status index {index} is outside the list of {8 * len(bits)} bits")
    bits[index // 8] |= 1 << (7 - index % 8)


def entry(list_url: str, index: int) -> dict[str, Any]:
    """The ``credentialStatus`` of the credential at ``index`` of the list at ``list_url``."""
    return {
        "id": f"{list_url}#{index}",
        "type": "BitstringStatusListEntry",
        "statusPurpose": PURPOSE,
        "statusListIndex": str(index),
        "statusListCredential": list_url,
    }


def list_credential(
    issuer: Mapping[str, Any], list_url: str, bits: bytes, *, issued: dt.datetime
) -> dict[str, Any]:
    """The unsigned ``BitstringStatusListCredential`` the issuer publishes at ``list_url``."""
    return {
        "@context": ["https://www.w3.org/ns/credentials/v2"],
        "id": list_url,
        "type": ["VerifiableCredential", "BitstringStatusListCredential"],
        "issuer": dict(issuer),
        "validFrom": issued.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "credentialSubject": {
            "id": f"{list_url}#list",
            "type": "BitstringStatusList",
            "statusPurpose": PURPOSE,
            "encodedList": encode_list(bits),
        },
    }
