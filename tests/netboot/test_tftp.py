"""TFTP against real clients: curl, tftp-hpa and atftp in client namespaces,
provisiond's TFTP service in the server namespace of the lab.

The service runs as a separate process (``ip netns exec <server ns> python``)
started with PROVISIOND_* settings, as the daemon will be. Tests that only
serve static files give it an SQLite URL it never opens; tests of the
per-MAC entries run on SQLite and PostgreSQL. A PostgreSQL server on this
machine's loopback is out of the lab's reach, so for those a forwarder
listens on the same address inside the server namespace.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from provisiond.config import SHIPPED_BOOT_TEMPLATES, Settings, load_settings
from provisiond.netboot.tftp import RETRIES
from provisiond.services import Services
from tests.conftest import require
from tests.netboot.conftest import SERVER_ADDRESS, Lab

SECRET = b"root:x:0:0:outside the boot root\n"
SMALL = {"empty.bin": 0, "f511.bin": 511, "f512.bin": 512, "f513.bin": 513}
BIG_NAME = "images/big.img"
BIG_SIZE = 32 * 1024 * 1024 + 1000  # larger than 32 MiB: block numbers wrap at blksize 512

ARMED_MAC, ARMED_MAC2 = "00:26:b9:35:e9:aa", "00:26:b9:35:e9:ab"  # 712DM2Y
IDLE_MAC = "52:54:00:00:00:01"  # SN-WEB-0001
UNKNOWN_MAC = "52:54:00:99:99:99"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dashed(mac: str) -> str:
    return mac.replace(":", "-")


# --------------------------------------------------------------------------- the boot root


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.img"
    with path.open("wb") as handle:
        remaining = BIG_SIZE
        while remaining:
            chunk = os.urandom(min(remaining, 1 << 20))
            handle.write(chunk)
            remaining -= len(chunk)
    return path


@pytest.fixture
def boot_root(tmp_path: Path, big_file: Path) -> Path:
    """Files of the sizes that matter, the entry templates, and symlinks that
    try to leave the root."""
    root = tmp_path / "pxelinux"
    shutil.copytree(SHIPPED_BOOT_TEMPLATES, root / "templates")
    for name, size in SMALL.items():
        (root / name).write_bytes(os.urandom(size))
    (root / "images").mkdir()
    try:
        os.link(big_file, root / BIG_NAME)
    except OSError:
        shutil.copy(big_file, root / BIG_NAME)
    (root / "text.cfg").write_bytes(b"line one\nline two\r\nbare\rcarriage\n")
    (root / "alias.bin").symlink_to("f513.bin")  # inside: served
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    (root / "escape").symlink_to(outside / "secret")
    (root / "escape-dir").symlink_to(outside)
    (root / "images" / "up").symlink_to("../..")
    # A stale file where a live entry is generated: never served.
    (root / "pxelinux.cfg").mkdir()
    (root / "pxelinux.cfg" / f"01-{dashed(ARMED_MAC)}").write_text("DEFAULT stale-file-on-disk\n")
    return root


# --------------------------------------------------------------------------- PostgreSQL in reach of the lab

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _enter_netns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), path)
    finally:
        os.close(fd)


class NetnsTcpForward:
    """Listens on ``host:port`` inside namespace ``ns`` and forwards each
    connection to the same address in this process's own namespace.

    The listening socket is created by a short-lived thread that enters the
    namespace (setns affects only the calling thread); everything else runs
    in threads that never leave the test's namespace.
    """

    def __init__(self, ns: str, host: str, port: int) -> None:
        self.target = (host, port)
        made: dict[str, Any] = {}

        def listen() -> None:
            try:
                _enter_netns(f"/var/run/netns/{ns}")
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(self.target)
                sock.listen(64)
                made["sock"] = sock
            except OSError as exc:
                made["error"] = exc

        thread = threading.Thread(target=listen)
        thread.start()
        thread.join()
        if "error" in made:
            raise made["error"]
        self.listener: socket.socket = made["sock"]
        self.sockets: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                inside, _ = self.listener.accept()
            except OSError:
                return
            try:
                outside = socket.create_connection(self.target)
            except OSError:
                inside.close()
                continue
            self.sockets += [inside, outside]
            for a, b in ((inside, outside), (outside, inside)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()


# --------------------------------------------------------------------------- the service in the lab

SERVER = """
import logging, sys
from provisiond.config import load_settings
from provisiond.netboot.tftp import TftpService
from provisiond.services import Services

settings = load_settings()
logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
service = TftpService(Services.build(settings))
service.start()
print("ready", flush=True)
sys.stdin.read()  # the test closes stdin to stop the service
service.stop()
print("stopped", flush=True)
"""


class NetnsTftp:
    """provisiond's TFTP service, in its own process in the server namespace."""

    def __init__(self, lab: Lab, settings: Settings, root: Path, log: Path, **env: str) -> None:
        self.log = log
        environment = {
            **os.environ,
            "PROVISIOND_DATA_DIR": str(settings.data_dir),
            "PROVISIOND_DATABASE_URL": settings.effective_database_url,
            "PROVISIOND_PUBLIC_URL": settings.public_url,
            "PROVISIOND_PXELINUX_DIR": str(root),
            "PROVISIOND_NETBOOT_ADDRESS": SERVER_ADDRESS,
            "PROVISIOND_TFTP_PORT": "69",
            "PROVISIOND_LOG_LEVEL": "INFO",
            **{f"PROVISIOND_{key.upper()}": value for key, value in env.items()},
        }
        self.process = subprocess.Popen(
            lab.ns_cmd(lab.server_ns, sys.executable, "-c", SERVER), env=environment, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"),
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            self.process.kill()
            raise RuntimeError(f"the TFTP service did not start:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text()

    def log_lines(self, *needles: str) -> list[str]:
        """Log lines holding every needle. A transfer's last line is written
        when the client's final ACK arrives, which may be just after the
        client has exited: the log is read again for a while before giving up."""
        for _ in range(200):
            found = [line for line in self.log_text().splitlines() if all(needle in line for needle in needles)]
            if found:
                return found
            time.sleep(0.05)
        return []

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the TFTP service did not stop:\n{self.log_text()}") from None
        assert self.process.stdout.read().strip() == "stopped", self.log_text()


def _require_clients() -> None:
    for tool, package in (("curl", "curl"), ("tftp", "tftp-hpa"), ("atftp", "atftp")):
        require(shutil.which(tool) is not None, f"needs {tool} (Debian package {package})")


@pytest.fixture
def start_tftp(lab: Lab, tmp_path: Path, boot_root: Path) -> Iterator[Callable[..., NetnsTftp]]:
    """``start_tftp(settings=None, **setting_overrides)``. Without settings the
    service gets an SQLite database it never opens (static files only)."""
    _require_clients()
    servers: list[NetnsTftp] = []
    forwards: list[NetnsTcpForward] = []

    def start(settings: Settings | None = None, **env: str) -> NetnsTftp:
        if settings is None:
            settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path / "data")})
        url = make_url(settings.effective_database_url)
        if url.get_backend_name() == "postgresql" and url.host in ("127.0.0.1", "localhost") and not forwards:
            forwards.append(NetnsTcpForward(lab.server_ns, "127.0.0.1", url.port or 5432))
        server = NetnsTftp(lab, settings, boot_root, tmp_path / f"tftp-{len(servers)}.log", **env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    for forward in forwards:
        forward.close()


@pytest.fixture
def live(services: Services) -> Services:
    """The test's database, with the vault key in place before the service reads it."""
    services.vault
    return services


# --------------------------------------------------------------------------- clients


def curl(lab: Lab, ns: str, name: str, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return lab.run(ns, "curl", "-sS", "--path-as-is", "-o", str(out), *args, f"tftp://{SERVER_ADDRESS}/{name}",
                   timeout=300)


def tftp_hpa(lab: Lab, ns: str, command: str, *args: str, mode: str = "binary") -> subprocess.CompletedProcess[str]:
    """tftp-hpa's -c mode exits 0 even on a TFTP error; it prints 'Error code N'."""
    return lab.run(ns, "tftp", "-m", mode, SERVER_ADDRESS, "-c", command, *args, timeout=300)


def atftp(lab: Lab, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return lab.run(ns, "atftp", *args, SERVER_ADDRESS, timeout=300)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


# --------------------------------------------------------------------------- static files


def test_small_files_at_every_block_size(lab: Lab, start_tftp: Any, boot_root: Path, tmp_path: Path) -> None:
    server = start_tftp()
    client = lab.add_client("52:54:00:aa:00:01", "10.77.0.50/24")
    for name in SMALL:
        expected = sha256(boot_root / name)
        out = tmp_path / "out"
        for blksize in ("8", "512", "1024", "1468", "65464"):
            result = curl(lab, client, name, out, "--tftp-blksize", blksize)
            assert result.returncode == 0, (name, blksize, output(result))
            assert sha256(out) == expected, (name, blksize)
        result = curl(lab, client, name, out, "--tftp-no-options")
        assert result.returncode == 0 and sha256(out) == expected, (name, output(result))
        result = tftp_hpa(lab, client, "get", name, str(out))
        assert "Error" not in output(result) and sha256(out) == expected, (name, output(result))
        result = atftp(lab, client, "--option", "blksize 1428", "--option", "tsize", "-g", "-r", name, "-l", str(out))
        assert result.returncode == 0 and sha256(out) == expected, (name, output(result))
    # The negotiated block size is the one asked for (RFC 2348), and said in the log.
    for blksize in ("8", "1024", "1468", "65464"):
        assert server.log_lines("sent 'f513.bin'", f"(blksize {blksize})"), blksize
    assert server.log_lines("sent 'f513.bin'", "(blksize 1428)")  # atftp


def test_symlink_inside_the_root_and_leading_slash(lab: Lab, start_tftp: Any, boot_root: Path, tmp_path: Path) -> None:
    start_tftp(netboot_interface="br0")  # and bound to the lab's bridge (SO_BINDTODEVICE)
    client = lab.add_client("52:54:00:aa:00:02", "10.77.0.51/24")
    out = tmp_path / "out"
    assert curl(lab, client, "alias.bin", out).returncode == 0
    assert sha256(out) == sha256(boot_root / "f513.bin")
    # One leading slash is the TFTP root (GRUB asks for /grub/...): never the machine's /.
    result = tftp_hpa(lab, client, "get", "/f513.bin", str(out))
    assert "Error" not in output(result) and sha256(out) == sha256(boot_root / "f513.bin")
    result = tftp_hpa(lab, client, "get", "/etc/passwd", str(tmp_path / "passwd"))
    assert "Error code 1" in output(result)


def test_netascii_is_translated(lab: Lab, start_tftp: Any, boot_root: Path, tmp_path: Path) -> None:
    start_tftp()
    client = lab.add_client("52:54:00:aa:00:03", "10.77.0.52/24")
    out = tmp_path / "out"
    result = tftp_hpa(lab, client, "get", "text.cfg", str(out), mode="netascii")
    assert "Error" not in output(result)
    assert out.read_bytes() == (boot_root / "text.cfg").read_bytes()


def test_file_larger_than_32_mib(lab: Lab, start_tftp: Any, boot_root: Path, tmp_path: Path) -> None:
    start_tftp()
    client = lab.add_client("52:54:00:aa:00:04", "10.77.0.53/24")
    expected = sha256(boot_root / BIG_NAME)
    out = tmp_path / "big.out"
    result = curl(lab, client, BIG_NAME, out, "--tftp-blksize", "1468")
    assert result.returncode == 0 and sha256(out) == expected, output(result)
    out.unlink()
    # No options: 512-byte blocks, so the 16-bit block number wraps around.
    result = tftp_hpa(lab, client, "get", BIG_NAME, str(out))
    assert "Error" not in output(result) and sha256(out) == expected, output(result)
    out.unlink()
    result = atftp(lab, client, "--option", "blksize 65464", "-g", "-r", BIG_NAME, "-l", str(out))
    assert result.returncode == 0 and sha256(out) == expected, output(result)


# (name as the client sends it, the reason in the server's log)
TRAVERSAL = [
    ("../outside/secret", "'..' segment"),
    ("images/../../outside/secret", "'..' segment"),
    ("pxelinux.cfg/../../outside/secret", "'..' segment"),
    ("..", "'..' segment"),
    ("/../outside/secret", "'..' segment"),
    ("//etc/passwd", "absolute path"),
    ("%2e%2e/outside/secret", "percent-encoded '..' segment"),
    ("%2E%2E%2Foutside%2Fsecret", "percent-encoded '..' segment"),
    ("%252e%252e/outside/secret", "percent-encoded '..' segment"),
    ("%2fetc%2fpasswd", "percent-encoded absolute path"),
    ("..\\outside\\secret", "backslash"),
    ("..%5coutside%5csecret", "percent-encoded backslash"),
    ("f513.bin%00../outside/secret", "percent-encoded NUL byte"),
    ("escape", "outside the boot root"),
    ("escape-dir/secret", "outside the boot root"),
    ("images/up/outside/secret", "outside the boot root"),
    (".", "boot root itself"),
]


def test_traversal_is_refused_and_logged(lab: Lab, start_tftp: Any, tmp_path: Path) -> None:
    server = start_tftp()
    client = lab.add_client("52:54:00:aa:00:05", "10.77.0.54/24")
    out = tmp_path / "loot"
    for name, reason in TRAVERSAL:
        result = tftp_hpa(lab, client, "get", name, str(out))
        assert "Error code 2: Access violation" in output(result), (name, output(result))
        assert not out.exists() or SECRET not in out.read_bytes(), name
        lines = server.log_lines(f"refused RRQ {name!r}", reason)
        assert len(lines) == 1, (name, reason, server.log_text()[-3000:])
    # The same through clients that decode or normalise names themselves.
    for url_path, reason in [("%2e%2e/outside/secret", "'..' segment"), ("..%2Foutside%2Fsecret", "'..' segment"),
                             ("images/up/outside/secret", "outside the boot root")]:
        result = curl(lab, client, url_path, out)
        assert result.returncode == 69, (url_path, output(result))  # CURLE_TFTP_PERM
        assert not out.exists() or SECRET not in out.read_bytes()
    for name in ("../outside/secret", "escape"):
        result = atftp(lab, client, "-g", "-r", name, "-l", str(out))
        assert result.returncode != 0 and "Access violation" in output(result), output(result)
        assert not out.exists() or SECRET not in out.read_bytes()
    assert server.log_lines("refused RRQ '../outside/secret'", "'..' segment")


def test_write_requests_are_refused(lab: Lab, start_tftp: Any, boot_root: Path, tmp_path: Path) -> None:
    server = start_tftp()
    client = lab.add_client("52:54:00:aa:00:06", "10.77.0.55/24")
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"overwritten\n")
    before = {path: path.read_bytes() for path in boot_root.rglob("*") if path.is_file()}
    result = tftp_hpa(lab, client, "put", str(upload), "f513.bin")
    assert "Error code 2: Access violation" in output(result), output(result)
    result = atftp(lab, client, "-p", "-l", str(upload), "-r", "new.bin")
    assert result.returncode != 0 and "read-only" in output(result), output(result)
    result = lab.run(client, "curl", "-sS", "-T", str(upload), f"tftp://{SERVER_ADDRESS}/pxelinux.cfg/default")
    assert result.returncode == 69, output(result)
    assert {path: path.read_bytes() for path in boot_root.rglob("*") if path.is_file()} == before
    assert len(server.log_lines("refused WRQ", "read-only server")) == 3


HOLD = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.sendto(b"\\x00\\x01" + sys.argv[1].encode() + b"\\x00octet\\x00", (sys.argv[2], 69))
sock.recvfrom(1024)  # DATA 1; never acknowledged
print("holding", flush=True)
sys.stdin.read()
"""


def test_transfers_are_bounded_and_a_silent_client_times_out(lab: Lab, start_tftp: Any, boot_root: Path,
                                                             tmp_path: Path) -> None:
    """With room for one transfer, a second client's request is dropped (not
    refused) while a silent client holds the slot; once that transfer times
    out, the second client's retransmitted request is served."""
    server = start_tftp(tftp_max_transfers="1", tftp_timeout_seconds="1")
    silent = lab.add_client("52:54:00:aa:00:07", "10.77.0.56/24")
    patient = lab.add_client("52:54:00:aa:00:08", "10.77.0.57/24")
    holder = subprocess.Popen(lab.ns_cmd(silent, sys.executable, "-c", HOLD, "f513.bin", SERVER_ADDRESS),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        out = tmp_path / "out"
        result = curl(lab, patient, "f512.bin", out, "--tftp-blksize", "1024")
        assert result.returncode == 0 and sha256(out) == sha256(boot_root / "f512.bin"), output(result)
    finally:
        holder.communicate("")
    assert server.log_lines("dropped RRQ 'f512.bin' from 10.77.0.57", "tftp_max_transfers")
    assert server.log_lines("transfer of 'f513.bin' to 10.77.0.56", f"no answer from the client after {RETRIES}")
    assert server.log_lines("sent 'f512.bin' to 10.77.0.57")


# --------------------------------------------------------------------------- live per-MAC entries


def events(client: Any, auth: dict[str, str], serial: str, needle: str) -> list[dict[str, Any]]:
    """The host's tftp events containing ``needle``; the event is written when
    the client acknowledges the last block, so give the service a moment."""
    for _ in range(200):
        found = [event for event in client.get(f"/api/v1/hosts/{serial}/events", headers=auth).get_json()["events"]
                 if event["kind"] == "tftp" and needle in event["message"]]
        if found:
            return found
        time.sleep(0.05)
    return []


def test_entries_follow_the_data_source(lab: Lab, start_tftp: Any, settings: Settings, live: Services, client: Any,
                                        auth: dict[str, str], demo_data: None, arm: Any, tmp_path: Path) -> None:
    token = arm("712DM2Y")
    server = start_tftp(settings, unknown_mac="local")
    armed = lab.add_client(ARMED_MAC, "10.77.0.50/24")
    idle = lab.add_client(IDLE_MAC, "10.77.0.60/24")
    stranger = lab.add_client(UNKNOWN_MAC, "10.77.0.70/24")
    out = tmp_path / "entry"

    # The armed host: its installer entry, with its one-time token; not the stale file on disk.
    name = f"pxelinux.cfg/01-{dashed(ARMED_MAC)}"
    result = curl(lab, armed, name, out)
    assert result.returncode == 0, output(result)
    entry = out.read_text()
    assert f"inst.ks=http://provisiond.test:8080/install/{token}/ks" in entry
    assert "DEFAULT install" in entry and "stale-file-on-disk" not in entry
    # GRUB's name for its second NIC, through tftp-hpa.
    result = tftp_hpa(lab, armed, "get", f"grub/grub.cfg-01-{dashed(ARMED_MAC2)}", str(out))
    assert "Error" not in output(result)
    assert f"install/{token}/ks" in out.read_text() and "set default=install" in out.read_text()

    # A known host that is not armed: local boot.
    result = atftp(lab, idle, "-g", "-r", f"pxelinux.cfg/01-{dashed(IDLE_MAC).upper()}", "-l", str(out))
    assert result.returncode == 0, output(result)
    assert "DEFAULT local" in out.read_text() and "inst.ks" not in out.read_text()

    # An unknown MAC, with unknown_mac=local: local boot. So are pxelinux's guesses.
    for guess in (f"pxelinux.cfg/01-{dashed(UNKNOWN_MAC)}", "pxelinux.cfg/0A4D0046", "pxelinux.cfg/default"):
        result = curl(lab, stranger, guess, out)
        assert result.returncode == 0, (guess, output(result))
        assert "LOCALBOOT 0" in out.read_text() and "inst.ks" not in out.read_text(), guess
    result = curl(lab, stranger, "grub/grub.cfg", out)
    assert result.returncode == 0 and "set default=local" in out.read_text()

    # Every decision is logged with its reason, and lands on the host's timeline.
    assert server.log_lines(f"RRQ '{name}' from 10.77.0.50", "installer entry", "host 712DM2Y is armed")
    assert server.log_lines("from 10.77.0.60", "local boot", "host SN-WEB-0001 is idle, not armed")
    assert server.log_lines(f"MAC {UNKNOWN_MAC} is not in the data source")
    served = events(client, auth, "712DM2Y", f"TFTP: served {name} to 10.77.0.50: installer entry (host 712DM2Y is armed")
    assert len(served) == 1 and served[0]["data"]["ok"] is True
    assert events(client, auth, "712DM2Y", f"grub/grub.cfg-01-{dashed(ARMED_MAC2)} to 10.77.0.50: installer entry")
    assert events(client, auth, "SN-WEB-0001", "to 10.77.0.60: local boot (host SN-WEB-0001 is idle, not armed)")

    # Once the installer has fetched its kickstart the host is booting: the next boot is local.
    assert client.get(f"/install/{token}/ks").status_code == 200
    result = curl(lab, armed, name, out)
    assert result.returncode == 0 and "DEFAULT local" in out.read_text() and token not in out.read_text()
    assert events(client, auth, "712DM2Y", "local boot (host 712DM2Y is booting, not armed)")


def test_unknown_mac_ignored(lab: Lab, start_tftp: Any, settings: Settings, live: Services, demo_data: None,
                             tmp_path: Path) -> None:
    server = start_tftp(settings, unknown_mac="ignore")
    stranger = lab.add_client(UNKNOWN_MAC, "10.77.0.70/24")
    out = tmp_path / "entry"
    result = curl(lab, stranger, f"pxelinux.cfg/01-{dashed(UNKNOWN_MAC)}", out)
    assert result.returncode == 68, output(result)  # CURLE_TFTP_NOTFOUND
    assert server.log_lines(f"MAC {UNKNOWN_MAC} is not in the data source and unknown_mac is 'ignore'")
    # pxelinux then tries its fallbacks, which boot locally.
    result = curl(lab, stranger, "pxelinux.cfg/default", out)
    assert result.returncode == 0 and "LOCALBOOT 0" in out.read_text()


def test_two_clients_at_once(lab: Lab, start_tftp: Any, settings: Settings, live: Services, demo_data: None,
                             arm: Any, boot_root: Path, tmp_path: Path) -> None:
    """Two machines boot together: each gets its own entry and the same large
    file, byte for byte, while the other's transfer is running."""
    token = arm("712DM2Y")
    start_tftp(settings)
    first = lab.add_client(ARMED_MAC, "10.77.0.50/24")
    second = lab.add_client(IDLE_MAC, "10.77.0.60/24")
    script = (f"curl -sS -o {{out}}.cfg tftp://{SERVER_ADDRESS}/pxelinux.cfg/01-{{mac}} && "
              f"curl -sS --tftp-blksize {{blksize}} -o {{out}}.img tftp://{SERVER_ADDRESS}/{BIG_NAME}")
    runs = []
    for ns, mac, blksize in ((first, ARMED_MAC, "1468"), (second, IDLE_MAC, "512")):
        out = tmp_path / ns
        command = script.format(out=out, mac=dashed(mac), blksize=blksize)
        runs.append((out, subprocess.Popen(lab.ns_cmd(ns, "sh", "-c", command), stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True)))
    for out, process in runs:
        text, _ = process.communicate(timeout=300)
        assert process.returncode == 0, text
        assert sha256(out.with_suffix(".img")) == sha256(boot_root / BIG_NAME)
    assert f"install/{token}/ks" in (tmp_path / first).with_suffix(".cfg").read_text()
    assert "DEFAULT local" in (tmp_path / second).with_suffix(".cfg").read_text()
