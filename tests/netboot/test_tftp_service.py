"""TftpService in this process, on loopback: the protocol byte for byte (a
raw UDP client), timeouts, start/stop, and a slow lookup that must not hold
up anyone else. Real clients in a namespace lab are in test_tftp.py."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from provisiond.config import SHIPPED_BOOT_TEMPLATES, Settings, load_settings
from provisiond.errors import ProvisiondError
from provisiond.netboot.tftp import MAX_BLKSIZE, RETRIES, EntryMaker, TftpService
from provisiond.services import Services
from tests.conftest import metric

F513 = os.urandom(513)
LOGGER = "provisiond.netboot.tftp"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "pxelinux"
    shutil.copytree(SHIPPED_BOOT_TEMPLATES, root / "templates")
    (root / "f513.bin").write_bytes(F513)
    (root / "empty.bin").write_bytes(b"")
    return root


def tftp_settings(base: Settings, root: Path, **overrides: Any) -> Settings:
    return dataclasses.replace(base, pxelinux_dir=root, boot_templates_dir=root / "templates",
                               netboot_address="127.0.0.1", tftp_port=0, **overrides)


@pytest.fixture
def plain_settings(tmp_path: Path, root: Path) -> Settings:
    """No database behind it: for tests that serve only files."""
    base = load_settings(environ={}, overrides={"data_dir": str(tmp_path / "data")})
    return tftp_settings(base, root, tftp_timeout_seconds=1)


@pytest.fixture
def serve() -> Iterator[Callable[..., TftpService]]:
    started: list[TftpService] = []

    def _serve(settings: Settings, db_from: Services | None = None) -> TftpService:
        services = Services(settings=settings, db=db_from.db) if db_from else Services.build(settings)
        service = TftpService(services)
        service.start()
        started.append(service)
        return service

    yield _serve
    for service in started:
        service.stop()


def where(service: TftpService) -> tuple[str, int]:
    assert service.address is not None, "not started"
    return service.address


class Raw:
    """A TFTP client that says exactly what a test tells it to."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.peer: tuple[str, int] | None = None

    def request(self, name: str, *options: str, opcode: int = 1, mode: str = "octet") -> None:
        fields = [name, mode, *options]
        self.sock.sendto(struct.pack("!H", opcode) + b"".join(f.encode() + b"\x00" for f in fields), self.server)

    def receive(self, timeout: float = 10) -> bytes:
        self.sock.settimeout(timeout)
        data, self.peer = self.sock.recvfrom(70000)
        return data

    def ack(self, block: int) -> None:
        assert self.peer is not None
        self.sock.sendto(struct.pack("!HH", 4, block), self.peer)

    def download(self, blksize: int = 512) -> bytes:
        """Acknowledge DATA packets (the first one already received is not)
        until a short block ends the file."""
        content = b""
        while True:
            packet = self.receive()
            opcode, block = struct.unpack("!HH", packet[:4])
            assert opcode == 3, packet
            content += packet[4:]
            self.ack(block)
            if len(packet) - 4 < blksize:
                return content

    def close(self) -> None:
        self.sock.close()


def data(block: int, payload: bytes) -> bytes:
    return struct.pack("!HH", 3, block) + payload


OUTCOMES = ("completed", "failed", "timeout", "refused", "dropped", "malformed")


def counted() -> dict[str, float]:
    return {outcome: metric("provisiond_tftp_requests_total", outcome=outcome) for outcome in OUTCOMES}


def since(before: dict[str, float]) -> dict[str, float]:
    return {outcome: value - before[outcome] for outcome, value in counted().items()}


def settled(service: TftpService) -> None:
    """Return once the service has handled every packet sent to it before
    this call. Its loop reads one request per round and finishes a round
    before it selects again: a first write request is handled in a round
    whose select saw everything sent earlier, and the answer to a second,
    sent after the first was answered, comes from a later round. (Two
    refusals: the counts include them.)"""
    client = Raw(where(service))
    for _ in range(2):
        client.request("settled.bin", opcode=2)
        assert client.receive()[:4] == b"\x00\x05\x00\x02"
    client.close()


def test_oack_carries_only_what_was_asked(plain_settings: Settings, serve: Callable[..., TftpService]) -> None:
    service = serve(plain_settings)
    client = Raw(where(service))
    # Too large a block: the largest RFC 2348 allows; tsize: the real size.
    client.request("f513.bin", "blksize", "70000", "tsize", "0")
    assert client.receive() == b"\x00\x06blksize\x00" + str(MAX_BLKSIZE).encode() + b"\x00tsize\x00513\x00"
    client.ack(0)
    assert client.receive() == data(1, F513)
    client.ack(1)

    client = Raw(where(service))  # option names are case-insensitive (RFC 2347)
    client.request("f513.bin", "BLKSIZE", "256")
    assert client.receive() == b"\x00\x06blksize\x00256\x00"
    client.ack(0)
    assert client.download(256) == F513

    for options in (("blksize", "4"), ("windowsize", "4"), ()):
        client = Raw(where(service))  # nothing to acknowledge: no OACK, DATA 1 at once
        client.request("f513.bin", *options)
        assert client.receive() == data(1, F513[:512]), options
        client.ack(1)
        assert client.download() == F513[512:]

    client = Raw(where(service))  # an empty file: tsize 0 is left out (curl rejects it)
    client.request("empty.bin", "tsize", "0")
    assert client.receive() == data(1, b"")
    client.ack(1)


def test_refusals_are_tftp_errors(plain_settings: Settings, serve: Callable[..., TftpService], root: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    service = serve(plain_settings)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        client = Raw(where(service))
        client.request("f513.bin", opcode=2)
        assert client.receive() == b"\x00\x05\x00\x02Access violation: write requests are refused: read-only server\x00"
        assert client.peer != where(service)  # from a fresh port, as a transfer would be
        client.request("f513.bin", mode="mail")
        assert client.receive()[:4] == b"\x00\x05\x00\x04"
        client.request("nothing.bin")
        assert client.receive() == b"\x00\x05\x00\x01File not found\x00"
        client.request("templates")  # a directory is not a file
        assert client.receive()[:4] == b"\x00\x05\x00\x01"
        client.request("caf\u00e9.bin")
        assert client.receive()[:4] == b"\x00\x05\x00\x02"
        # Not a request: ignored, and said so.
        client.sock.sendto(struct.pack("!HH", 4, 1), where(service))
        client.request("empty.bin")
        assert client.receive() == data(1, b"")
    assert sorted(path.name for path in root.iterdir()) == ["empty.bin", "f513.bin", "templates"]
    messages = [record.getMessage() for record in caplog.records if record.name == LOGGER]
    assert any("refused WRQ 'f513.bin'" in m and "read-only server" in m for m in messages), messages
    assert any("transfer mode 'mail'" in m for m in messages)
    assert any("refused RRQ 'nothing.bin'" in m and "no such file" in m for m in messages)
    assert any("control or non-ASCII character" in m for m in messages)
    assert any("ignored a packet" in m and "opcode 4" in m for m in messages)


def test_a_silent_client_gets_retransmissions_then_is_given_up(plain_settings: Settings, serve: Callable[..., TftpService],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    service = serve(plain_settings)
    client = Raw(where(service))
    before = counted()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        client.request("f513.bin")
        packets = [client.receive()]
        while True:  # never acknowledged: the same block again, timeout seconds apart
            try:
                packets.append(client.receive(timeout=plain_settings.tftp_timeout_seconds * 3))
            except TimeoutError:
                break
    assert packets == [data(1, F513[:512])] * (1 + RETRIES)
    assert any(f"no answer from the client after {RETRIES} retransmissions" in r.getMessage() for r in caplog.records)
    settled(service)
    assert since(before)["timeout"] == 1


def test_every_request_is_counted_by_how_it_ended(plain_settings: Settings, serve: Callable[..., TftpService]) -> None:
    """provisiond_tftp_requests_total: one outcome per request."""
    service = serve(dataclasses.replace(plain_settings, tftp_max_transfers=1))
    before = counted()
    complete = Raw(where(service))
    complete.request("f513.bin")
    assert complete.receive() == data(1, F513[:512])
    complete.ack(1)
    assert complete.download() == F513[512:]  # and the last block acknowledged: completed
    Raw(where(service)).request("nothing.bin")  # refused: file not found
    complete.sock.sendto(struct.pack("!HH", 4, 1), where(service))  # an ACK on the request port: malformed
    holder = Raw(where(service))
    holder.request("f513.bin")
    assert holder.receive() == data(1, F513[:512])  # the one transfer allowed, held open
    Raw(where(service)).request("empty.bin")  # beyond tftp_max_transfers: dropped (the client would retry)
    assert holder.peer is not None
    holder.sock.sendto(struct.pack("!HH", 5, 0) + b"client gave up\x00", holder.peer)  # an ERROR ends it: failed
    settled(service)
    assert since(before) == {"completed": 1, "failed": 1, "timeout": 0, "refused": 1 + 2, "dropped": 1,
                             "malformed": 1}


def test_stop_is_prompt_and_frees_the_port(plain_settings: Settings, serve: Callable[..., TftpService],
                                           caplog: pytest.LogCaptureFixture) -> None:
    service = TftpService(Services.build(plain_settings))
    service.start()
    host, port = where(service)
    client = Raw((host, port))
    client.request("f513.bin")
    assert client.receive() == data(1, F513[:512])  # a transfer in progress
    thread = service._thread
    with caplog.at_level(logging.INFO, logger=LOGGER):
        service.stop()
    assert thread is not None and not thread.is_alive()
    assert any("failed after 512 bytes: the server is stopping" in r.getMessage() for r in caplog.records)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind((host, port))
    # And it can be started again.
    service.start()
    service.stop()


def test_a_broken_template_fails_one_request_only(plain_settings: Settings, serve: Callable[..., TftpService],
                                                  root: Path, caplog: pytest.LogCaptureFixture) -> None:
    (root / "templates" / "pxelinux.cfg.j2").write_text("{{ no_such_variable }}\n")  # StrictUndefined
    service = serve(plain_settings)
    client = Raw(where(service))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        client.request("pxelinux.cfg/default")
        assert client.receive() == b"\x00\x05\x00\x00server error while preparing the entry\x00"
        client.request("pxelinux.cfg/01-00-26-b9-35-e9-aa")  # on a worker thread (and no database either)
        assert client.receive() == b"\x00\x05\x00\x00server error while preparing the entry\x00"
        client.request("f513.bin")
        assert client.receive() == data(1, F513[:512])
    assert any("cannot render 'pxelinux.cfg/default'" in r.getMessage() for r in caplog.records)


def test_a_port_in_use_is_a_clear_error(plain_settings: Settings) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        settings = dataclasses.replace(plain_settings, tftp_port=taken.getsockname()[1])
        service = TftpService(Services.build(settings))
        with pytest.raises(ProvisiondError, match=r"cannot serve TFTP on 127\.0\.0\.1:\d+: Address already in use"):
            service.start()
    service.stop()  # never started: nothing to do


def test_without_a_database_the_answer_is_local_boot(plain_settings: Settings, serve: Callable[..., TftpService], tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """An SQLite file without the schema: every lookup fails. A host never
    installs because of an error."""
    settings = dataclasses.replace(plain_settings, database_url=f"sqlite:///{tmp_path / 'no-schema.db'}")
    service = serve(settings)
    client = Raw(where(service))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        client.request("pxelinux.cfg/01-00-26-b9-35-e9-aa")
        entry = client.download()
    assert b"DEFAULT local" in entry and b"data source could not be asked (OperationalError)" in entry
    assert any("cannot ask the data source about 00:26:b9:35:e9:aa" in r.getMessage() for r in caplog.records)


def test_a_slow_lookup_does_not_hold_other_transfers(settings: Settings, services: Services, demo_data: None,
                                                     arm: Callable[[str], str], root: Path, serve: Callable[..., TftpService],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The database answers the per-MAC lookup only when the test says so;
    meanwhile a boot file is served in full, and the client's retransmitted
    request does not start a second transfer."""
    token = arm("712DM2Y")
    asked, answer = threading.Event(), threading.Event()
    lookup = EntryMaker.for_mac

    def slow_lookup(self: EntryMaker, *args: Any) -> Any:
        asked.set()
        answer.wait(60)
        return lookup(self, *args)

    monkeypatch.setattr(EntryMaker, "for_mac", slow_lookup)
    service = serve(tftp_settings(settings, root), db_from=services)
    waiting = Raw(where(service))
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        waiting.request("pxelinux.cfg/01-00-26-b9-35-e9-aa")
        assert asked.wait(30)
        waiting.request("pxelinux.cfg/01-00-26-b9-35-e9-aa")  # the firmware gets impatient
        host, port = where(service)
        result = subprocess.run(["curl", "-sS", "--tftp-blksize", "100", f"tftp://{host}:{port}/f513.bin"],
                                capture_output=True)
        assert result.returncode == 0 and result.stdout == F513, result.stderr
        answer.set()
        entry = waiting.download()
    assert f"install/{token}/ks".encode() in entry and b"DEFAULT install" in entry
    messages = [record.getMessage() for record in caplog.records if record.name == LOGGER]
    assert sum("RRQ 'pxelinux.cfg/01-00-26-b9-35-e9-aa'" in m and "installer entry" in m for m in messages) == 1
    assert any("retransmitted request" in m for m in messages), messages
