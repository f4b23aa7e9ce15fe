"""A real IPMI peer for tests and benchmarks: OpenIPMI's ``ipmi_sim`` on a
loopback UDP port, with a chassis program that keeps the "machine's" power
and boot state in files and records every command the BMC was told; and a
:class:`UdpRelay` that stands between a client and a BMC, losing or delaying
datagrams the way a poor network or a poor BMC does.

Plain functions and classes (no pytest), so a benchmark can use them too::

    with start_ipmi_sim(Path("/tmp/bmc1")) as bmc:
        ...  # talk IPMI to 127.0.0.1:bmc.port as admin/secret
"""

from __future__ import annotations

import heapq
import os
import random
import selectors
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from provisiond.power.base import Target

USER = "admin"
PASSWORD = "secret"
HOST = "127.0.0.1"

#: Tools the peer needs; a test that lacks one skips (or fails under CI=true).
TOOLS = ("ipmi_sim", "ipmitool")

#: "Get Channel Authentication Capabilities" outside a session (RMCP, IPMI 1.5
#: framing, channel "this one", admin): any BMC answers it, so it tells when
#: ipmi_sim is listening without logging in.
_PING = bytes.fromhex("0600ff07" "00" "00000000" "00000000" "09" "2018c8" "81" "00" "38" "8e04" "b5")

# The chassis program ipmi_sim runs as ``PROG 0x20 get power boot`` (answer one
# ``name:value`` line each) and ``PROG 0x20 set power 1`` / ``set boot pxe`` /
# ``set reset 1``. Every call is appended to calls.log with a timestamp. A reset
# leaves the power as it is: a reset does not switch on a machine that is off.
# It runs for every IPMI command that touches the chassis, on the same cores as
# the software under test, so it starts no other program: bash's own clock and
# ``read``; a value is written over the old one in place (``1<>``, no
# truncation, so a reader never sees an empty file) and only a state file's
# first line counts.
_CHASSIS = """#!/bin/bash
state='{state}'
mc=$1; verb=$2; shift 2
echo "$EPOCHREALTIME $verb $*" >> "$state/calls.log"
if [ "$verb" = get ]; then
    for name in "$@"; do
        value=
        [ -e "$state/$name" ] && read -r value < "$state/$name"
        echo "$name:$value"
    done
    exit 0
fi
while [ $# -ge 2 ]; do
    case $1 in
        power|boot) echo "$2" 1<> "$state/$1" ;;
    esac
    shift 2
done
"""

_LAN_CONF = """name "sim"
set_working_mc 0x20
  startlan 1
    addr {host} {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{chassis}"
  user 2 true  "{user}"   "{password}" admin    10       none md2 md5 straight
"""

_EMU = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
"""


def free_udp_port() -> int:
    """A loopback UDP port nobody holds right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def bmc_answers(port: int, host: str = HOST, timeout: float = 0.2) -> bool:
    """Whether something at ``host:port`` answers an IPMI ping."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(_PING, (host, port))
            return bool(sock.recv(512))
        except OSError:  # timeout, or ICMP port unreachable
            return False


@dataclass(frozen=True)
class Action:
    """One ``set`` the BMC passed to the chassis: ``power 1``, ``boot pxe``, ``reset 1``."""

    time: float
    name: str
    value: str


class SimBmc:
    """One running ipmi_sim and the machine behind it."""

    def __init__(self, directory: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.directory = directory
        self.port = port
        self.process = process
        self.host = HOST
        self.user = USER
        self.password = PASSWORD

    @property
    def state(self) -> Path:
        return self.directory / "machine"

    def target(self, port: int | None = None, password: str | None = None, serial: str = "SIM0001") -> Target:
        """provisiond's target for this BMC (``port``: reach it through a relay)."""
        return Target(serial=serial, type="ipmi", address=self.host, port=port or self.port, user=self.user,
                      password=self.password if password is None else password)

    # ------------------------------------------------------------- the machine

    @property
    def power(self) -> bool:
        return self._read("power") == "1"

    @power.setter
    def power(self, on: bool) -> None:
        self._write("power", "1" if on else "0")

    @property
    def boot(self) -> str:
        """What the BMC last told the chassis to boot: ``pxe``, ``default``, ``none``."""
        return self._read("boot")

    def calls(self) -> list[tuple[float, str]]:
        """Every call of the chassis program: (time, ``get power boot`` / ``set power 1``)."""
        log = self.state / "calls.log"
        if not log.exists():
            return []
        found = []
        for line in log.read_text().splitlines():
            stamp, _, command = line.partition(" ")
            found.append((float(stamp), command))
        return found

    def actions(self) -> list[Action]:
        """The ``set`` calls, one :class:`Action` per name/value pair, oldest first."""
        found: list[Action] = []
        for stamp, command in self.calls():
            verb, *words = command.split()
            if verb == "set":
                found.extend(Action(stamp, name, value) for name, value in zip(words[::2], words[1::2]))
        return found

    def clear(self) -> None:
        """Forget the recorded calls (the state stays)."""
        (self.state / "calls.log").unlink(missing_ok=True)

    def _read(self, name: str) -> str:
        """A state file's first line (the chassis program writes over a value in place)."""
        return (self.state / name).read_text().partition("\n")[0].strip()

    def _write(self, name: str, value: str) -> None:
        temporary = self.state / f"{name}.new"
        temporary.write_text(value + "\n")
        temporary.replace(self.state / name)

    # ------------------------------------------------------------- the process

    def log(self) -> str:
        return (self.directory / "ipmi_sim.log").read_text(errors="replace")

    def ipmitool(self, *arguments: str, port: int | None = None, timeout: float = 20) -> str:
        """Run ipmitool against this BMC (``-C 3``: no cipher suite discovery) and return its
        output. The password goes in the environment (``-E``), not on the command line."""
        command = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", self.host, "-p", str(port or self.port),
                   "-U", self.user, "-E", *arguments]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, "IPMI_PASSWORD": self.password})
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr or done.stdout}")
        return done.stdout

    def stop(self) -> None:
        """Stop ipmi_sim (its chassis program runs for milliseconds and is not waited for)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> SimBmc:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


#: What the ``ipmi_sim`` fixture gives: ``start(power=False) -> SimBmc``.
StartBmc = Callable[..., SimBmc]


def write_config(directory: Path, port: int, user: str = USER, password: str = PASSWORD,
                 chassis: str | None = None) -> tuple[Path, Path]:
    """lan.conf, sim.emu, the chassis program and the machine's state (off, no boot override)
    in ``directory``; returns (lan.conf, sim.emu). ``chassis``: another chassis program
    (a command line ipmi_sim appends ``get ...``/``set ...`` to) instead of the recording one."""
    state = directory / "machine"
    state.mkdir(parents=True, exist_ok=True)
    (directory / "simstate").mkdir(exist_ok=True)
    (state / "power").write_text("0\n")
    (state / "boot").write_text("default\n")
    if chassis is None:
        program = directory / "chassis.sh"
        program.write_text(_CHASSIS.format(state=state))
        program.chmod(0o755)
        chassis = f"{program} 0x20"
    lan = directory / "lan.conf"
    lan.write_text(_LAN_CONF.format(host=HOST, port=port, chassis=chassis, user=user, password=password))
    emu = directory / "sim.emu"
    emu.write_text(_EMU)
    return lan, emu


def start_ipmi_sim(directory: Path, port: int | None = None, *, power: bool = False,
                   ready_within: float = 10.0, password: str = PASSWORD) -> SimBmc:
    """Start ipmi_sim on ``127.0.0.1:port`` (a free one if None) with its files in
    ``directory``; return once it answers. The machine starts off unless ``power``."""
    if shutil.which("ipmi_sim") is None:
        raise FileNotFoundError("ipmi_sim is not installed (Debian package openipmi)")
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_udp_port()
    lan, emu = write_config(directory, port, password=password)
    with (directory / "ipmi_sim.log").open("wb") as log:
        process = subprocess.Popen(
            ["ipmi_sim", "-c", str(lan), "-f", str(emu), "-n", "-s", str(directory / "simstate")],
            # In the caller's process group: a Ctrl-C or timeout(1) that ends the tests ends it too.
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=directory,
        )
    bmc = SimBmc(directory, port, process)
    bmc.password = password
    bmc.power = power
    try:
        _wait_until_ready(bmc, ready_within)
    except BaseException:
        bmc.stop()
        raise
    return bmc


def _wait_until_ready(bmc: SimBmc, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if bmc.process.poll() is not None:
            raise RuntimeError(f"ipmi_sim exited ({bmc.process.returncode}): {bmc.log()}")
        if bmc_answers(bmc.port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"ipmi_sim did not answer on UDP port {bmc.port} within {within} s: {bmc.log()}")


# --------------------------------------------------------------------------- a poor network


class UdpRelay:
    """Listens on a loopback UDP port and forwards each datagram to ``upstream``
    and the answers back, losing a share ``drop`` of them (either way, from a
    seeded random generator) and holding each for ``delay`` seconds.

    Each client address gets its own upstream socket, so answers find their way
    back. ``forwarded`` and ``dropped`` count datagrams."""

    def __init__(self, upstream_port: int, *, drop: float = 0.0, delay: float = 0.0, seed: int = 1,
                 upstream_host: str = HOST) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.drop = drop
        self.delay = delay
        self.forwarded = 0
        self.dropped = 0
        self._random = random.Random(seed)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._listener.bind((HOST, 0))
        self.port = int(self._listener.getsockname()[1])
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._clients: dict[tuple[str, int], socket.socket] = {}
        #: (due, order, socket, payload, address): datagrams held back by ``delay``.
        self._pending: list[tuple[float, int, socket.socket, bytes, tuple[str, int]]] = []
        self._order = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"udp-relay-{self.port}", daemon=True)

    def start(self) -> UdpRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._selector.close()
        for sock in [self._listener, *self._clients.values()]:
            sock.close()

    def __enter__(self) -> UdpRelay:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._send_due()
            wait = 0.05 if not self._pending else max(0.0, min(0.05, self._pending[0][0] - time.monotonic()))
            for key, _ in self._selector.select(wait):
                self._receive(key.fileobj, key.data)  # type: ignore[arg-type]

    def _receive(self, sock: socket.socket, client: tuple[str, int] | None) -> None:
        try:
            payload, sender = sock.recvfrom(65535)
        except OSError:  # ICMP port unreachable from a dead upstream: nothing to forward
            return
        if client is None:  # from a client, for the BMC
            self._pass(self._upstream_for(sender), payload, self.upstream)
        else:  # from the BMC, for that client
            self._pass(self._listener, payload, client)

    def _upstream_for(self, client: tuple[str, int]) -> socket.socket:
        sock = self._clients.get(client)
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((HOST, 0))
            self._clients[client] = sock
            self._selector.register(sock, selectors.EVENT_READ, client)
        return sock

    def _pass(self, sock: socket.socket, payload: bytes, to: tuple[str, int]) -> None:
        if self._random.random() < self.drop:
            self.dropped += 1
            return
        self._order += 1
        heapq.heappush(self._pending, (time.monotonic() + self.delay, self._order, sock, payload, to))
        self._send_due()

    def _send_due(self) -> None:
        now = time.monotonic()
        while self._pending and self._pending[0][0] <= now:
            _, _, sock, payload, to = heapq.heappop(self._pending)
            try:
                sock.sendto(payload, to)
                self.forwarded += 1
            except OSError:
                self.dropped += 1
