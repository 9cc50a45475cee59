"""The one error type of :mod:`labkit.course.credentials`."""

from __future__ import annotations

__all__ = ["CredentialError"]


class CredentialError(ValueError):
    """A key, a grades file or a command argument that cannot be used as given.

    A credential that fails verification is not an error: :func:`verify_credential` returns an
    INVALID :class:`Verification` that says why.
    """
