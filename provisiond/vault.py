"""Encryption at rest for BMC secrets (Fernet from ``cryptography``).

The key is created on first start in ``secret_key_file`` with mode 0600.
Rotation: ``provisiond secrets rotate`` re-encrypts every secret with a new
key and keeps the old one as ``secret.key.old`` until the operator removes it.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from provisiond.errors import ConfigError


class Vault:
    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        keys = [_load_or_create(key_file)]
        old = key_file.with_name(key_file.name + ".old")
        if old.exists():
            keys.append(_read_key(old))
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    @property
    def fingerprint(self) -> str:
        """Which key this is, without telling it: the first 16 hex digits of
        its SHA-256 (the database keeps the one it was sealed with)."""
        return fingerprint(_read_key(self.key_file))

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken:
            raise ConfigError(
                f"a stored secret cannot be decrypted with {self.key_file}: wrong or rotated-away key"
            ) from None

    def rotate(self, token: str) -> str:
        return self._fernet.rotate(token.encode("ascii")).decode("ascii")


def fingerprint(key: bytes) -> str:
    import hashlib

    return hashlib.sha256(key).hexdigest()[:16]


def key_fingerprint(path: Path) -> str | None:
    """The fingerprint of the key in ``path``, None if there is none."""
    return fingerprint(_read_key(path)) if path.exists() else None


def _read_key(path: Path) -> bytes:
    key = path.read_bytes().strip()
    try:
        Fernet(key)
    except ValueError:
        raise ConfigError(f"secret_key_file {path} does not hold a Fernet key") from None
    return key


def _load_or_create(path: Path) -> bytes:
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"secret_key_file {path} is readable by others (mode {mode:o}); chmod 600 it")
        return _read_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    # Write a private temporary file, then link it into place: a second
    # worker starting at the same moment reads the first one's whole key.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        key = _read_key(path)
    finally:
        tmp.unlink()
    return key
