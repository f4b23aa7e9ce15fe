"""Console passwords: hashed with Argon2id (argon2-cffi, the reference
implementation's binding), never stored or logged in clear."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

#: argon2-cffi's defaults (RFC 9106's second recommendation: 64 MiB, 3 passes).
_hasher = PasswordHasher()
#: Verified against when the user does not exist, so that a wrong name takes
#: as long to refuse as a wrong password.
_DUMMY = _hasher.hash("provisiond: no such user")

MIN_LENGTH = 8


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` is the one ``password_hash`` was made from
    (``None``: no such user; as slow as a real check, and False)."""
    try:
        return _hasher.verify(password_hash or _DUMMY, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """The hash was made with weaker parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)
