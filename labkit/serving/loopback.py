"""Loopback only: servers and load generators of this course talk to the machine they run on."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["LOOPBACK_NAMES", "check_loopback", "check_url"]

LOOPBACK_NAMES = ("localhost",)


# ---------------------------------------------------------------------------------- loopback
def check_loopback(host: str, *, what: str = "host") -> str:
    """Return ``host`` if it is a loopback address (127.0.0.0/8, ::1, localhost), else raise.

    Servers and load generators in this course only ever talk to the machine they run on:
    load-testing someone else's service is an attack on it.
    """
    if not isinstance(host, str) or not host:
        raise ValueError(f"{what} must be a loopback address such as 127.0.0.1, got {host!r}")
    bare = host.strip("[]")
    if bare.lower() in LOOPBACK_NAMES:
        return host
    try:
        if ipaddress.ip_address(bare).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(
        f"{what} {host!r} is not a loopback address: labkit only serves and load-tests on this machine "
        "(use 127.0.0.1)"
    )


def check_url(url: str) -> str:
    """Return ``url`` without its trailing slash if it is an http(s) URL on loopback, else raise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url must look like http://127.0.0.1:PORT, got {url!r}")
    check_loopback(parts.hostname, what="url host")
    return url.rstrip("/")
