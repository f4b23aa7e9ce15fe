"""What the agent says of its host, and its credential: made once, 0600,
read back on later starts, never made again while it is there."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from provisiond.agent import identity, protocol
from provisiond.agent.identity import CredentialError


def test_identity_from_the_files(tmp_path: Path):
    (tmp_path / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (tmp_path / "serial").write_text("712DM2Y \n")
    found = identity.read_identity(machine_id_paths=[tmp_path / "machine-id"], serial_path=tmp_path / "serial")
    assert found == identity.Identity(socket.gethostname(), "0123456789abcdef0123456789abcdef", "712DM2Y")


def test_machine_id_falls_back_and_a_missing_serial_is_empty(tmp_path: Path):
    (tmp_path / "empty").write_text("")
    (tmp_path / "dbus").write_text("fedcba9876543210\n")
    found = identity.read_identity(machine_id_paths=[tmp_path / "missing", tmp_path / "empty", tmp_path / "dbus"],
                                   serial_path=tmp_path / "no-serial")
    assert found.machine_id == "fedcba9876543210" and found.serial == ""
    assert identity.read_identity(machine_id_paths=[tmp_path / "missing"], serial_path=tmp_path).machine_id == ""


def test_the_credential_is_made_once_private_and_read_back(tmp_path: Path):
    state = tmp_path / "state"
    credential = identity.load_or_create_credential(state)
    assert credential.startswith(protocol.CREDENTIAL_PREFIX)
    assert len(credential) == len(protocol.CREDENTIAL_PREFIX) + 43
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    path = state / "credential"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == credential
    assert identity.load_or_create_credential(state) == credential  # the next start: the same agent
    assert identity.new_credential() != identity.new_credential()


def test_the_credential_ignores_the_umask(tmp_path: Path):
    old = os.umask(0)
    try:
        identity.load_or_create_credential(tmp_path / "state")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state" / "credential").stat().st_mode) == 0o600


def test_loose_permissions_are_tightened(tmp_path: Path):
    state = tmp_path / "state"
    credential = identity.load_or_create_credential(state)
    os.chmod(state, 0o755)
    os.chmod(state / "credential", 0o644)
    assert identity.load_or_create_credential(state) == credential
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "credential").stat().st_mode) == 0o600


def test_an_empty_file_left_by_a_crash_is_made_again(tmp_path: Path):
    (tmp_path / "credential").write_text("")
    assert identity.load_or_create_credential(tmp_path).startswith(protocol.CREDENTIAL_PREFIX)


def test_a_broken_credential_is_not_replaced_quietly(tmp_path: Path):
    (tmp_path / "credential").write_text("not a credential\n")
    with pytest.raises(CredentialError, match="remove it"):
        identity.load_or_create_credential(tmp_path)
    assert (tmp_path / "credential").read_text() == "not a credential\n"
