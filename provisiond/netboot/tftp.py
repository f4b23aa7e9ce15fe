"""TFTP: boot loaders from the boot root, per-MAC boot entries generated live.

What is served (read-only; RFC 1350 with the blksize and tsize options of
RFC 2347/2348/2349):

* ``pxelinux.cfg/01-<mac>`` and ``grub/grub.cfg-01-<mac>``: rendered for this
  request from the host's :class:`~provisiond.inventory.bootplan.BootPlan`,
  never read from disk. An ARMED host gets the installer entry, every other
  known host local boot; an unknown MAC gets local boot or "file not found"
  per ``settings.unknown_mac``. Serving a known host's entry is an Event on
  its timeline ("TFTP: served ... to 10.77.0.50: installer entry (...)").
* pxelinux's other guesses (hex-IP names, ``default``) and GRUB's
  (``grub/grub.cfg-<hex IP>``, ``grub/grub.cfg``): a local-boot entry. A
  machine only ever installs from an entry that names its own MAC.
* Anything else: a regular file under ``settings.pxelinux_dir`` (the boot
  loaders ``provisiond bootloaders install`` puts there), checked by
  :func:`provisiond.netboot.paths.resolve_inside` exactly as HTTP does.
  One leading ``/`` means the TFTP root (tftpd-hpa ``--secure`` semantics:
  GRUB asks for ``/grub/...``); after it, an absolute name, ``..``, a
  backslash, percent-encoding, or a symlink out of the root is refused
  (ERROR 2, access violation) and the refusal is logged with its reason.
* Write requests are refused (ERROR 2): nothing on this server is writable
  over TFTP.

Why not tftpy's ``TftpServer.listen()``
---------------------------------------
tftpy's transfer machinery is used as is: its per-transfer context (socket,
metrics, the DATA/ACK/ERROR packet classes) and its ``TftpStateExpectACK``
state, which sends OACK and DATA and handles ACKs, duplicates and
block-number rollover. The first packet of a request is read by
:func:`parse_request` here, and tftpy's server loop is not used, because it
cannot meet the requirements:

- it calls ``dyn_file_func`` inside the select loop, so a slow database
  query would stall every transfer in progress;
- it has no bound on concurrent transfers;
- with no ``upload_open`` it accepts WRQ and writes the upload into the
  root, overwriting what is there;
- ``stop()`` takes effect only when ``select`` next returns (up to the
  timeout), and after the first timeout of a stalled transfer its retry
  counter runs out as fast as other transfers' packets arrive;
- its OACK carries ``blksize=512`` even when the client did not ask for it
  (RFC 2347: only options the client sent), it clamps a too-small blksize
  *up*, accepts blksize up to 65536 (RFC 2348: at most 65464), and serves
  netascii requests as raw bytes.

:class:`TftpService` therefore runs its own loop over the same parts.

The select loop never waits on the database
-------------------------------------------
A per-MAC request is decided on a small thread pool: the worker asks
:func:`plan_for_mac` (one statement on the worker's kept connection),
renders the entry and hands the bytes back through a queue, waking the loop
through a socket pair; only then does the loop open the transfer (OACK or
DATA 1). Meanwhile the loop keeps pumping every other transfer, and a
retransmitted RRQ from the same client port is ignored while its entry is
being prepared. Once the transfer has been acknowledged, its line goes to
the host's timeline through :class:`~provisiond.netboot.timeline.Timeline`
(a writer thread, one transaction per batch).

A cache refreshed in the background was rejected: it would answer from the
past. Right after ``done`` a stale "ARMED" would hand the installer to a
host that has just been installed, breaking the rule that a host that is not
ARMED always gets local boot (design §1). Asking the database per request
keeps the answer exactly as fresh as HTTP's, and pxelinux asks once per boot.

If the database cannot be asked, the entry is local boot (with that reason):
a host never installs because of an error.

Counted
-------
Every request read on the request port ends once in
``provisiond_tftp_requests_total`` (:mod:`provisiond.metrics`): completed,
failed, timeout, refused, dropped or malformed (unless the service stops
first). A retransmitted RRQ for a transfer already under way is not a new
request.

Limits
------
At most ``settings.tftp_max_transfers`` transfers run or are being prepared
at once; a request beyond that is dropped (and logged) rather than refused,
so the client retransmits its RRQ and is served when a transfer ends
(a TFTP error would make PXE firmware give up). A transfer whose client
stays silent for ``settings.tftp_timeout_seconds`` gets its last packet
again, up to :data:`RETRIES` times, then is abandoned.
"""

from __future__ import annotations

import enum
import functools
import io
import logging
import os
import queue
import selectors
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from tftpy.TftpContexts import TftpContext
from tftpy.TftpShared import TftpException, TftpTimeoutExpectACK
from tftpy.TftpStates import TftpStateExpectACK

from provisiond import metrics
from provisiond.errors import ProvisiondError
from provisiond.inventory.bootplan import BootAction, BootPlan, plan_for_mac
from provisiond.models import utcnow
from provisiond.netboot.paths import UnsafeName, real_path_inside, unsafe_reason
from provisiond.netboot.pxeconfig import (
    EntryRenderer,
    Loader,
    is_fallback_config_name,
    local_plan,
    mac_from_config_name,
)
from provisiond.netboot.timeline import Timeline
from provisiond.services import Services

log = logging.getLogger("provisiond.netboot.tftp")

#: RFC 2348: the largest block size a client may be granted.
MAX_BLKSIZE = 65464
MIN_BLKSIZE = 8
DEFAULT_BLKSIZE = 512
#: Retransmissions of the last packet before a silent client is given up.
RETRIES = 5
#: Threads that ask the database and render entries (and write events).
ENTRY_WORKERS = 4
#: How often the loop looks for silent transfers (at most; seconds).
TICK = 0.25


class Opcode(enum.IntEnum):
    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(enum.IntEnum):
    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8


# --------------------------------------------------------------------------- codec


class BadPacket(ValueError):
    """Not a TFTP request this server can read."""


@dataclass(frozen=True)
class Request:
    """An RRQ or WRQ as sent."""

    opcode: Opcode
    filename: str
    mode: str  # lower-cased: octet, netascii, mail
    #: Option names lower-cased (RFC 2347: case-insensitive), values as sent.
    options: Mapping[str, str] = field(default_factory=dict)


def parse_request(data: bytes) -> Request:
    """``opcode | filename 0 | mode 0 | (option 0 value 0)*`` → :class:`Request`."""
    if len(data) < 4:
        raise BadPacket("shorter than a request")
    opcode = int.from_bytes(data[:2], "big")
    if opcode not in (Opcode.RRQ, Opcode.WRQ):
        raise BadPacket(f"opcode {opcode} on the request port")
    fields = data[2:].split(b"\x00")
    if len(fields) < 3 or fields[-1] != b"":
        raise BadPacket("filename and mode must each end with a NUL byte")
    fields = fields[:-1]
    filename = fields[0].decode("latin-1")
    mode = fields[1].decode("latin-1").lower()
    pairs = fields[2:]
    if len(pairs) % 2:  # some firmware pads with a stray NUL: drop the odd one
        pairs = pairs[:-1]
    options = {pairs[i].decode("latin-1").lower(): pairs[i + 1].decode("latin-1") for i in range(0, len(pairs), 2)}
    return Request(Opcode(opcode), filename, mode, options)


def error_packet(code: ErrorCode, message: str) -> bytes:
    return (int(Opcode.ERROR).to_bytes(2, "big") + int(code).to_bytes(2, "big")
            + message.encode("ascii", "replace") + b"\x00")


def negotiate(options: Mapping[str, str], size: int | None) -> tuple[int, dict[str, str]]:
    """The block size to use and the options to acknowledge (OACK), per RFC
    2347: only options the client sent, and only those understood. A client
    asking for a larger block than RFC 2348 allows gets the largest; one
    asking for less than 8 bytes (or nonsense) is answered without the
    option, so it falls back to 512. ``tsize`` is answered when the size is
    known (not for netascii, whose size on the wire differs) and not zero:
    curl rejects an OACK carrying ``tsize 0`` ("invalid tsize value in OACK
    packet", lib/tftp.c), and leaving an option out is always allowed."""
    acked: dict[str, str] = {}
    blksize = DEFAULT_BLKSIZE
    if "blksize" in options:
        try:
            requested = int(options["blksize"])
        except ValueError:
            requested = 0
        if requested >= MIN_BLKSIZE:
            blksize = min(requested, MAX_BLKSIZE)
            acked["blksize"] = str(blksize)
    if "tsize" in options and size:
        acked["tsize"] = str(size)
    return blksize, acked


class NetasciiReader(io.RawIOBase):
    """A file read as netascii (RFC 764): LF → CR LF, CR → CR NUL.

    ``read(n)`` returns exactly ``n`` bytes until the end, as tftpy's
    ``sendDAT`` takes a short block for the last one.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.buffer = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = self.raw.read(max(size, 8192))
            if not chunk:
                break
            self.buffer += chunk.replace(b"\r", b"\r\x00").replace(b"\n", b"\r\n")
        if size < 0:
            size = len(self.buffer)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def close(self) -> None:
        self.raw.close()
        super().close()


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Entry:
    """A generated boot entry, or why there is none."""

    name: str
    content: bytes | None  # None: answer "file not found"
    #: "installer entry" / "local boot" / "not found", for the log and the event.
    what: str
    reason: str
    #: The known host it was decided for (its timeline gets the event).
    serial: str | None = None


class EntryMaker:
    """Decides and renders per-MAC entries; runs on the worker threads."""

    def __init__(self, services: Services) -> None:
        self.services = services
        settings = services.settings
        self.renderer = EntryRenderer(settings.boot_templates_dir)
        self.unknown = BootAction.LOCAL if settings.unknown_mac == "local" else BootAction.IGNORE

    def for_mac(self, name: str, loader: Loader, mac: str) -> Entry:
        svc = self.services
        try:
            plan = svc.db.ask(lambda connection: plan_for_mac(  # one statement, what is committed now
                connection, mac, vault=svc.vault, profiles=svc.profiles, public_url=svc.settings.public_url,
                unknown=self.unknown))
        except Exception as exc:  # never install because of an error
            log.exception("cannot ask the data source about %s", mac)
            plan = local_plan(mac, f"the data source could not be asked ({type(exc).__name__})")
        if plan.action == BootAction.IGNORE:
            return Entry(name, None, "not found", f"{plan.reason} and unknown_mac is 'ignore'")
        return self.render(name, plan, loader)

    def fallback(self, name: str) -> Entry:
        loader = Loader.GRUB if name.lower().startswith("grub/") else Loader.PXELINUX
        plan = local_plan("", "not a per-MAC name: only a host's own MAC entry can install")
        return self.render(name, plan, loader)

    def render(self, name: str, plan: BootPlan, loader: Loader) -> Entry:
        what = "installer entry" if plan.action == BootAction.INSTALL else "local boot"
        return Entry(name, self.renderer.render(plan, loader).encode(), what, plan.reason, plan.serial)


# --------------------------------------------------------------------------- transfers


class _ClientSocket(socket.socket):
    """A transfer's UDP socket: non-blocking (the loop's selector says when
    to read; CPython would poll() before every call on a socket with a
    timeout) and connected to the client, so tftpy's ``sendto(data, client)``
    becomes ``send(data)`` on the cached route. A datagram the kernel cannot
    queue now is dropped like a lost packet: the client's retransmission or
    ours recovers it."""

    def __init__(self, client: tuple[str, int], local_ip: str, interface: str) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.setblocking(False)
            if interface:
                self.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            if local_ip:
                self.bind((local_ip, 0))
            self.connect(client)
        except OSError:
            self.close()
            raise

    def sendto(self, data: Any, *_address: Any) -> int:  # type: ignore[override]
        try:
            return self.send(data)
        except BlockingIOError:
            return 0


class Transfer(TftpContext):  # type: ignore[misc]  # tftpy has no type hints
    """One download: tftpy's context and ACK state, on a socket connected to
    the client (the kernel drops datagrams from anyone else, and an ICMP
    "port unreachable" ends the transfer at once)."""

    sock: socket.socket

    def __init__(self, client: tuple[str, int], local_ip: str, interface: str, name: str, fileobj: BinaryIO,
                 blksize: int, oack: dict[str, str], timeout: float,
                 on_end: Callable[[Transfer, str | None], None]) -> None:
        sock = _ClientSocket(client, local_ip, interface)
        try:
            super().__init__(client[0], client[1], timeout, retries=RETRIES, flock=False)
        except Exception:
            sock.close()
            raise
        self.sock.close()  # tftpy's own, unbound: ours replaces it
        self.sock = sock
        self.client = client
        self.tidport = client[1]
        self.file_to_transfer = name
        self.fileobj = fileobj
        self.blksize = blksize
        self.options = oack
        self.on_end = on_end

    def getBlocksize(self) -> int:  # noqa: N802 (tftpy's name)
        return self.blksize

    def begin(self) -> None:
        self.metrics.start_time = self.last_update = time.time()
        self.state = TftpStateExpectACK(self)
        if self.options:
            self.state.sendOACK()  # the client's ACK of block 0 starts the data
        else:
            self.next_block = 1
            self.pending_complete = self.state.sendDAT()

    def finish(self) -> None:
        self.end()
        self.metrics.end_time = time.time()


@dataclass
class _Pending:
    request: Request
    name: str
    future: Future[Entry]


class TftpService:
    """The TFTP server of ``provisiond netboot``/``serve``: ``start()`` binds
    ``settings.netboot_address or 0.0.0.0`` port ``settings.tftp_port`` and
    serves from a background thread; ``stop()`` ends it promptly."""

    def __init__(self, services: Services) -> None:
        self.services = services
        settings = services.settings
        self.root = settings.pxelinux_dir
        self.host = settings.netboot_address or "0.0.0.0"
        self.port = settings.tftp_port
        self.max_transfers = settings.tftp_max_transfers
        self.timeout = float(settings.tftp_timeout_seconds)
        self.interface = settings.netboot_interface
        self.entries = EntryMaker(services)
        self.timeline = Timeline(services.db, "tftp")  # every transfer of a host's entry is a line
        self.address: tuple[str, int] | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._ready: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
        self._executor: ThreadPoolExecutor | None = None
        self._transfers: dict[socket.socket, Transfer] = {}
        self._by_client: dict[tuple[str, int], Transfer] = {}
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._selector: selectors.BaseSelector | None = None

    # -- life cycle ---------------------------------------------------------

    name = "the TFTP service"

    @property
    def thread(self) -> threading.Thread | None:
        """The service's loop (None when stopped)."""
        return self._thread

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the TFTP service is already running")
        if logging.getLogger("tftpy").level == logging.NOTSET:
            # tftpy logs every end of file and final ACK at INFO; ours says it once per transfer.
            logging.getLogger("tftpy").setLevel(logging.WARNING)
        self._stopping.clear()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._bind_to_interface(sock)
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ProvisiondError(f"cannot serve TFTP on {self.host}:{self.port}"
                                  f"{' (' + self.interface + ')' if self.interface else ''}: {exc.strerror or exc}"
                                  " (ports below 1024 need root or CAP_NET_BIND_SERVICE)") from exc
        sock.setblocking(False)
        self._sock = sock
        self.address = sock.getsockname()
        self._executor = ThreadPoolExecutor(max_workers=ENTRY_WORKERS, thread_name_prefix="tftp-entry")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._check_root()
        self._thread = threading.Thread(target=self._run, name="tftp", daemon=True)
        self._thread.start()
        log.info("TFTP serving %s on %s:%d (at most %d transfers, %gs timeout)",
                 self.root, *self.address, self.max_transfers, self.timeout)

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        self._wake()
        self._thread.join()
        self._thread = None
        assert self._executor is not None
        for pending in self._pending.values():
            pending.future.cancel()
        self._pending.clear()
        self._executor.shutdown(wait=False)
        self.timeline.close()  # what was served reaches the timeline before stop returns
        assert self._wake_r is not None and self._wake_w is not None
        wake_r, wake_w, self._wake_r, self._wake_w = self._wake_r, self._wake_w, None, None
        wake_r.close()
        wake_w.close()
        log.info("TFTP stopped")

    def _bind_to_interface(self, sock: socket.socket) -> None:
        """With ``netboot_interface`` set, only packets through it (SO_BINDTODEVICE)."""
        if self.interface:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())

    def _check_root(self) -> None:
        settings = self.services.settings
        for name in (settings.bios_boot_file, settings.uefi_boot_file):
            if not (self.root / name).is_file():
                log.warning("boot file %s is not in %s: run `provisiond bootloaders install`", name, self.root)
        for loader in (Loader.PXELINUX, Loader.GRUB):
            if not (settings.boot_templates_dir / loader.value).is_file():
                log.warning("template %s is not in %s: its entries will fail", loader.value,
                            settings.boot_templates_dir)

    # -- the loop -----------------------------------------------------------

    def _run(self) -> None:
        assert self._selector is not None and self._sock is not None
        last_scan = time.time()
        try:
            while not self._stopping.is_set():
                for key, _ in self._selector.select(TICK):
                    sock = key.fileobj
                    if sock is self._sock:
                        self._guarded(self._receive_request)
                    elif sock is self._wake_r:
                        self._drain_wake()
                    else:
                        transfer = self._transfers.get(sock)  # type: ignore[call-overload]
                        if transfer is not None:
                            self._cycle(transfer)
                self._guarded(self._start_ready)
                now = time.time()
                if now - last_scan >= TICK:
                    last_scan = now
                    self._scan_timeouts(now)
        except Exception:
            log.exception("TFTP loop failed")
            raise
        finally:
            for transfer in list(self._transfers.values()):
                self._end(transfer, "the server is stopping")
            self._selector.close()
            self._sock.close()

    @staticmethod
    def _guarded(step: Callable[[], None]) -> None:
        """One request's bug (a broken template...) must not end the service."""
        try:
            step()
        except Exception:
            log.exception("TFTP request handling failed")

    def _wake(self) -> None:
        """Called from any thread: make the loop's select() return now."""
        wake = self._wake_w
        if wake is None:
            return
        try:
            wake.send(b"\x00")
        except OSError:
            pass  # already awake (buffer full), or stopped meanwhile

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            self._wake_r.recv(4096)
        except BlockingIOError:
            pass

    # -- validate → decide → build → send ------------------------------------

    def _receive_request(self) -> None:
        assert self._sock is not None
        try:
            data, client = self._sock.recvfrom(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # e.g. an ICMP error for an earlier reply
            log.debug("request socket: %s", exc)
            return
        peer = f"{client[0]}:{client[1]}"
        try:
            request = parse_request(data)
        except BadPacket as exc:
            metrics.TFTP_MALFORMED.inc()
            log.warning("ignored a packet from %s on the request port: %s", peer, exc)
            return
        if client in self._by_client or client in self._pending:
            log.debug("retransmitted request %r from %s: already being answered", request.filename, peer)
            return
        name = request.filename
        if request.opcode == Opcode.WRQ:
            return self._refuse(client, request, ErrorCode.ACCESS_VIOLATION, "write requests are refused: read-only server")
        if request.mode not in ("octet", "netascii"):
            return self._refuse(client, request, ErrorCode.ILLEGAL_OPERATION, f"transfer mode {request.mode!r} is not supported")
        busy = len(self._transfers) + len(self._pending)
        if busy >= self.max_transfers:
            metrics.TFTP_DROPPED.inc()
            log.warning("dropped RRQ %r from %s: %d transfers in progress (tftp_max_transfers); the client will retry",
                        name, peer, busy)
            return
        relative = name[1:] if name.startswith("/") and not name.startswith("//") else name
        reason = unsafe_reason(relative)
        if reason is None and any(ord(char) < 0x20 or ord(char) > 0x7E for char in relative):
            reason = "control or non-ASCII character in the name"
        if reason is not None:
            return self._refuse(client, request, ErrorCode.ACCESS_VIOLATION, reason)
        per_mac = mac_from_config_name(relative)
        if per_mac is not None:
            loader, mac = per_mac
            assert self._executor is not None
            future = self._executor.submit(self.entries.for_mac, relative, loader, mac)
            self._pending[client] = _Pending(request, relative, future)
            future.add_done_callback(functools.partial(self._prepared, client))
            return
        if is_fallback_config_name(relative):
            try:
                entry = self.entries.fallback(relative)
            except Exception:
                log.exception("cannot render %r", relative)
                return self._refuse(client, request, ErrorCode.NOT_DEFINED, "server error while preparing the entry",
                                    failed=True)
            return self._send_entry(client, request, entry)
        self._send_file(client, request, relative)

    def _prepared(self, client: tuple[str, int], _future: Future[Entry]) -> None:
        """On a worker thread: an entry is ready (or failed); tell the loop."""
        self._ready.put(client)
        self._wake()

    def _send_file(self, client: tuple[str, int], request: Request, name: str) -> None:
        try:
            path = real_path_inside(self.root, name)
        except UnsafeName as refused:
            return self._refuse(client, request, ErrorCode.ACCESS_VIOLATION, refused.reason)
        try:
            # O_NONBLOCK: opening a FIFO someone left in the root must not hang the loop.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            return self._refuse(client, request, ErrorCode.FILE_NOT_FOUND, f"no such file in {self.root} ({exc.strerror})",
                                level=logging.INFO)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return self._refuse(client, request, ErrorCode.FILE_NOT_FOUND, f"not a regular file in {self.root}",
                                level=logging.INFO)
        os.set_blocking(fd, True)
        fileobj = os.fdopen(fd, "rb")
        log.info("RRQ %r from %s:%d: boot file %s (%d bytes)", request.filename, *client, path, info.st_size)
        self._begin(client, request, name, fileobj, info.st_size, None)

    def _send_entry(self, client: tuple[str, int], request: Request, entry: Entry) -> None:
        if entry.content is None:
            return self._refuse(client, request, ErrorCode.FILE_NOT_FOUND, entry.reason, level=logging.INFO)
        log.info("RRQ %r from %s:%d: %s (%s)", request.filename, *client, entry.what, entry.reason)
        self._begin(client, request, entry.name, io.BytesIO(entry.content), len(entry.content), entry)

    def _start_ready(self) -> None:
        while True:
            try:
                client = self._ready.get_nowait()
            except queue.Empty:
                return
            pending = self._pending.pop(client, None)
            if pending is None or pending.future.cancelled():
                continue
            try:
                entry = pending.future.result()
            except Exception:
                log.exception("cannot prepare %r for %s:%d", pending.name, *client)
                self._refuse(client, pending.request, ErrorCode.NOT_DEFINED, "server error while preparing the entry",
                             failed=True)
                continue
            self._send_entry(client, pending.request, entry)

    def _begin(self, client: tuple[str, int], request: Request, name: str, fileobj: BinaryIO, size: int,
               entry: Entry | None) -> None:
        netascii = request.mode == "netascii"
        if netascii:
            fileobj = NetasciiReader(fileobj)  # type: ignore[assignment]
        blksize, oack = negotiate(request.options, None if netascii else size)
        local_ip = "" if self.host == "0.0.0.0" else self.host

        def on_end(transfer: Transfer, failure: str | None) -> None:
            self._ended(transfer, entry, failure)

        try:
            transfer = Transfer(client, local_ip, self.interface, name, fileobj, blksize, oack, self.timeout, on_end)
        except OSError as exc:
            fileobj.close()
            metrics.TFTP_FAILED.inc()
            log.error("cannot open a transfer socket for %s:%d: %s", *client, exc)
            return
        self._transfers[transfer.sock] = transfer
        self._by_client[client] = transfer
        assert self._selector is not None
        self._selector.register(transfer.sock, selectors.EVENT_READ)
        try:
            transfer.begin()
        except (OSError, TftpException) as exc:
            self._end(transfer, f"cannot send the first packet: {exc}")

    def _cycle(self, transfer: Transfer) -> None:
        try:
            transfer.cycle()
        except TftpTimeoutExpectACK:
            self._retransmit(transfer, time.time())
            return
        except BlockingIOError:  # woken, but the datagram was gone (e.g. a bad checksum)
            return
        except TftpException as exc:
            return self._end(transfer, " ".join(str(exc).split()))
        except OSError as exc:
            return self._end(transfer, f"the client went away ({exc.strerror or exc})")
        except Exception as exc:  # a packet tftpy cannot decode: the transfer is over
            return self._end(transfer, f"bad packet from the client ({type(exc).__name__}: {exc})")
        if transfer.state is None:
            self._end(transfer, None)

    def _scan_timeouts(self, now: float) -> None:
        for transfer in list(self._transfers.values()):
            if now - transfer.last_update > self.timeout:
                self._retransmit(transfer, now)

    def _retransmit(self, transfer: Transfer, now: float) -> None:
        transfer.retry_count += 1
        if transfer.retry_count > RETRIES:
            return self._end(transfer, f"no answer from the client after {RETRIES} retransmissions "
                                       f"({self.timeout:g}s apart)", timed_out=True)
        try:
            assert transfer.state is not None
            transfer.state.resendLast()
        except (OSError, TftpException) as exc:
            return self._end(transfer, f"cannot retransmit: {exc}")
        transfer.timeout_expectACK = False
        transfer.last_update = now  # the next retransmission is a full timeout later

    def _end(self, transfer: Transfer, failure: str | None, timed_out: bool = False) -> None:
        if failure is None:
            metrics.TFTP_COMPLETED.inc()
        else:
            (metrics.TFTP_TIMEOUT if timed_out else metrics.TFTP_FAILED).inc()
        self._transfers.pop(transfer.sock, None)
        self._by_client.pop(transfer.client, None)
        assert self._selector is not None
        try:
            self._selector.unregister(transfer.sock)
        except (KeyError, ValueError):
            pass
        transfer.finish()
        transfer.on_end(transfer, failure)

    def _ended(self, transfer: Transfer, entry: Entry | None, failure: str | None) -> None:
        ip, port = transfer.client
        seconds = transfer.metrics.end_time - transfer.metrics.start_time
        if failure is None:
            log.info("sent %r to %s:%d: %d bytes in %.2fs (blksize %d)", transfer.file_to_transfer, ip, port,
                     transfer.metrics.bytes, seconds, transfer.blksize)
        else:
            log.warning("transfer of %r to %s:%d failed after %d bytes: %s", transfer.file_to_transfer, ip, port,
                        transfer.metrics.bytes, failure)
        if entry is None or entry.serial is None:
            return
        if failure is None:
            message = f"TFTP: served {entry.name} to {ip}: {entry.what} ({entry.reason})"
        else:
            message = f"TFTP: sending {entry.name} to {ip} failed: {failure} ({entry.what}: {entry.reason})"
        data = {"file": entry.name, "client": ip, "entry": entry.what, "bytes": transfer.metrics.bytes,
                "ok": failure is None}
        self.timeline.record(entry.serial, message, utcnow(), data)

    def _refuse(self, client: tuple[str, int], request: Request, code: ErrorCode, reason: str,
                level: int = logging.WARNING, failed: bool = False) -> None:
        """Answer with a TFTP error from a fresh port (as a transfer would
        start), and log why. ``failed``: the server's fault, not a refusal."""
        (metrics.TFTP_FAILED if failed else metrics.TFTP_REFUSED).inc()
        kind = "WRQ" if request.opcode == Opcode.WRQ else "RRQ"
        log.log(level, "refused %s %r from %s:%d: %s (error %d)", kind, request.filename, *client, reason, code)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                self._bind_to_interface(sock)
                if self.host != "0.0.0.0":
                    sock.bind((self.host, 0))
                sock.sendto(error_packet(code, _short(code, reason)), client)
        except OSError as exc:
            log.debug("cannot send the error to %s:%d: %s", *client, exc)


def _short(code: ErrorCode, reason: str) -> str:
    """What the client is told: enough to act on, nothing about the server's files."""
    if code == ErrorCode.FILE_NOT_FOUND:
        return "File not found"
    if code == ErrorCode.ACCESS_VIOLATION:
        return "Access violation: " + reason.split(" (to ")[0]
    return reason
