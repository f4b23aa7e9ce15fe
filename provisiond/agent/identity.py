"""Who this agent is: what it says of its host when it enrolls (hostname,
machine id, serial number) and the credential it proves itself with.

The credential is made here, once, and never leaves this host but in the
``enroll`` body and the ``Authorization`` header (the server keeps only its
SHA-256). A new credential is a new agent to the server (a rebuilt host is
``denied`` until an operator decides), so it is kept in ``state_dir`` and
read back at every start, never made again while the file is there.

Standard library only; runs on Python 3.9.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import stat
from pathlib import Path
from typing import NamedTuple, Sequence

from provisiond.agent import protocol

log = logging.getLogger(__name__)

MACHINE_ID_PATHS = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
SERIAL_PATH = Path("/sys/class/dmi/id/product_serial")
CREDENTIAL_FILE = "credential"
#: What the server accepts (``provisiond.agents.registry``): the prefix and 40-100 url-safe characters.
_CREDENTIAL = re.compile(re.escape(protocol.CREDENTIAL_PREFIX) + r"[A-Za-z0-9_-]{40,100}")


class CredentialError(Exception):
    """The credential file exists but cannot be used; the agent must not
    quietly make another (that would be another agent to the server)."""


class Identity(NamedTuple):
    """What the agent tells the server about its host."""

    hostname: str
    machine_id: str
    serial: str


def read_identity(machine_id_paths: Sequence[Path] = MACHINE_ID_PATHS,
                  serial_path: Path = SERIAL_PATH) -> Identity:
    """This host's name, machine id (the first readable of
    ``machine_id_paths``) and DMI serial number ("" when unreadable: a VM or
    a board without one, or no permission)."""
    return Identity(hostname=socket.gethostname(), machine_id=_first_line(machine_id_paths),
                    serial=_first_line([serial_path]))


def _first_line(paths: Sequence[Path]) -> str:
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
        if text:
            return text.splitlines()[0].strip()
    return ""


def new_credential() -> str:
    """A fresh credential: the prefix and 43 url-safe random characters."""
    return protocol.CREDENTIAL_PREFIX + secrets.token_urlsafe(32)


def load_or_create_credential(state_dir: Path) -> str:
    """The credential in ``state_dir/credential``; made there (mode 0600,
    the directory 0700) when there is none yet."""
    _private_directory(state_dir)
    path = state_dir / CREDENTIAL_FILE
    existing = _read_credential(path)
    if existing is not None:
        return existing
    credential = new_credential()
    try:
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        # Another process made it between our read and our create: use theirs.
        again = _read_credential(path)
        if again is None:
            raise CredentialError(f"{path} appeared empty while this agent was making it; is another "
                                  "provisiond-agent running?") from None
        return again
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (credential + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("made this agent's credential in %s (it is kept there; a new one would be a new agent "
             "to provisiond)", path)
    return credential


def _private_directory(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by others (mode %04o): made it 0700", directory, mode)
        os.chmod(directory, 0o700)


def _read_credential(path: Path) -> str | None:
    """The stored credential; None when there is none (no file, or an empty
    one left by a crash before its first write reached the disk: it was
    never sent, so nothing knows it)."""
    try:
        fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        text = os.read(fd, 4096).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    if not text:
        log.warning("%s is empty (the agent stopped while making it): making the credential again", path)
        os.unlink(str(path))
        return None
    if not _CREDENTIAL.fullmatch(text):
        raise CredentialError(f"{path} does not hold a provisiond-agent credential; remove it to enroll as "
                              "a new agent (an operator must then accept it)")
    if stat.S_IMODE(info.st_mode) & 0o077:
        log.warning("%s was readable by others (mode %04o): made it 0600", path, stat.S_IMODE(info.st_mode))
        os.chmod(str(path), 0o600)
    return text
