"""The TFTP codec and the name check, with golden bytes: no sockets, no database."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from provisiond.netboot.paths import UnsafeName, resolve_inside, unsafe_reason
from provisiond.netboot.tftp import (
    MAX_BLKSIZE,
    BadPacket,
    ErrorCode,
    NetasciiReader,
    Opcode,
    Request,
    error_packet,
    negotiate,
    parse_request,
)


def test_parse_rrq_with_options() -> None:
    packet = b"\x00\x01pxelinux.0\x00octet\x00tsize\x000\x00BLKSIZE\x001468\x00"
    assert parse_request(packet) == Request(Opcode.RRQ, "pxelinux.0", "octet", {"tsize": "0", "blksize": "1468"})


def test_parse_wrq_and_mode_case() -> None:
    assert parse_request(b"\x00\x02up\x00NetASCII\x00") == Request(Opcode.WRQ, "up", "netascii", {})


def test_parse_tolerates_a_stray_trailing_nul() -> None:
    # Some PXE ROMs pad the request; the odd field is dropped, the rest kept.
    assert parse_request(b"\x00\x01a\x00octet\x00tsize\x000\x00\x00").options == {"tsize": "0"}


@pytest.mark.parametrize("packet, reason", [
    (b"\x00\x01", "shorter"),
    (b"\x00\x04\x00\x01", "opcode 4"),
    (b"\x00\x03\x00\x01data", "opcode 3"),
    (b"\x00\x01pxelinux.0\x00octet", "NUL"),
    (b"\x00\x01pxelinux.0", "NUL"),
])
def test_parse_rejects(packet: bytes, reason: str) -> None:
    with pytest.raises(BadPacket, match=reason):
        parse_request(packet)


def test_error_packet_golden() -> None:
    assert error_packet(ErrorCode.ACCESS_VIOLATION, "read-only") == b"\x00\x05\x00\x02read-only\x00"
    assert error_packet(ErrorCode.FILE_NOT_FOUND, "nö") == b"\x00\x05\x00\x01n?\x00"


@pytest.mark.parametrize("options, size, blksize, oack", [
    ({}, 100, 512, {}),
    ({"blksize": "1468"}, 100, 1468, {"blksize": "1468"}),
    ({"blksize": "8"}, 100, 8, {"blksize": "8"}),
    ({"blksize": "70000"}, 100, MAX_BLKSIZE, {"blksize": str(MAX_BLKSIZE)}),  # RFC 2348: at most 65464
    ({"blksize": "7"}, 100, 512, {}),  # too small: not acknowledged, never raised
    ({"blksize": "lots"}, 100, 512, {}),
    ({"tsize": "0"}, 1234, 512, {"tsize": "1234"}),
    ({"tsize": "0"}, 0, 512, {}),  # curl rejects an OACK with tsize 0
    ({"tsize": "0", "blksize": "1024"}, None, 1024, {"blksize": "1024"}),  # netascii: size unknown
    ({"windowsize": "8", "timeout": "1"}, 10, 512, {}),  # not understood: no OACK at all
])
def test_negotiate(options: dict[str, str], size: int | None, blksize: int, oack: dict[str, str]) -> None:
    assert negotiate(options, size) == (blksize, oack)


def test_netascii_reader_keeps_block_sizes() -> None:
    raw = b"a\nb\r\nc\rd" * 100
    reader = NetasciiReader(io.BytesIO(raw))
    blocks = []
    while True:
        block = reader.read(7)
        blocks.append(block)
        if len(block) < 7:
            break
    wire = b"".join(blocks)
    assert all(len(block) == 7 for block in blocks[:-1])
    assert wire == raw.replace(b"\r", b"\r\x00").replace(b"\n", b"\r\n")
    # A client decodes CR LF -> LF and CR NUL -> CR: the original again.
    assert wire.replace(b"\r\n", b"\n").replace(b"\r\x00", b"\r") == raw


@pytest.mark.parametrize("name, reason", [
    ("", "empty name"),
    ("a\x00b", "NUL byte"),
    ("..\\x", "backslash"),
    ("images\\pxeboot", "backslash"),
    ("/etc/passwd", "absolute path"),
    ("..", "'..' segment"),
    ("a/../../b", "'..' segment"),
    ("%2e%2e/x", "percent-encoded '..' segment"),
    ("%2E%2E%2Fx", "percent-encoded '..' segment"),
    ("%252e%252e/x", "percent-encoded '..' segment"),
    ("%2fetc%2fpasswd", "percent-encoded absolute path"),
    ("..%5cx", "percent-encoded backslash"),
    ("a%00b", "percent-encoded NUL byte"),
])
def test_unsafe_names(name: str, reason: str) -> None:
    found = unsafe_reason(name)
    assert found is not None and reason in found, found


@pytest.mark.parametrize("name", ["pxelinux.0", "pxelinux.cfg/default", "images/pxeboot/vmlinuz", "a..b", "...",
                                  "100%", "%41"])
def test_plain_names(name: str) -> None:
    assert unsafe_reason(name) is None


def test_resolve_inside_follows_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    (root / "images" / "k").write_bytes(b"k")
    (root / "alias").symlink_to("images/k")
    (tmp_path / "secret").write_bytes(b"s")
    (root / "escape").symlink_to(tmp_path / "secret")
    (root / "images" / "up").symlink_to("../..")
    assert resolve_inside(root, "alias") == "images/k"
    assert resolve_inside(root, "missing/file") == "missing/file"  # existence is the caller's business
    for name, reason in [("escape", "outside the boot root"), ("images/up/secret", "outside the boot root"),
                         (".", "boot root itself"), ("images/..", "'..' segment")]:
        with pytest.raises(UnsafeName) as refused:
            resolve_inside(root, name)
        assert reason in refused.value.reason
