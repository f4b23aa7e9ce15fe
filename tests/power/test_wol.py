"""Wake-on-LAN: the magic packet on the wire, in both modes, checked byte for byte.

The network tests run in two network namespaces made here, joined by a veth
pair (``vethA`` in the sender namespace, ``vethB`` in the receiver one), and
never touch the machine's own interfaces. The driver opens its sockets in the
current process, so it runs in a child process inside the sender namespace
(``ip netns exec``); the receiver is a child process in the other namespace,
started (and ready) before anything is sent. Expected frames are decoded and
checked here by hand (header fields, checksums) as well as compared with
:func:`magic_frame`. Needs root and iproute2; under CI=true their absence
fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from provisiond.power.base import BmcError, BootDevice, DriverOptions, Target, Unsupported
from provisiond.power.bmc import Pacer, Policy, carry_out
from provisiond.power.wol import WolDriver, magic_frame, magic_payload
from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
MAC = "52:54:00:aa:bb:cc"
MAC_BYTES = bytes([0x52, 0x54, 0x00, 0xAA, 0xBB, 0xCC])
PAYLOAD = b"\xff" * 6 + MAC_BYTES * 16
MAC_A = "02:00:00:0a:0a:01"  # vethA, the sender
MAC_B = "02:00:00:0b:0b:01"  # vethB, the receiver
ADDRESS_A, ADDRESS_B, SUBNET_BROADCAST = "10.99.0.1", "10.99.0.2", "10.99.0.255"
WAIT = 10.0  # seconds a receiver waits for the packet


def target(mac: str | None = MAC) -> Target:
    return Target(serial="S1", type="wol", mac=mac)


# --------------------------------------------------------------------------- child processes

#: Runs in the sender namespace: WolDriver.power_on (or carry_out) with the given options.
SENDER = textwrap.dedent("""
    import dataclasses, json, sys
    from provisiond.power.base import BmcError, DriverOptions, Target
    from provisiond.power.wol import WolDriver
    spec = json.loads(sys.argv[1])
    driver = WolDriver(Target(serial="S1", type="wol", mac=spec["mac"]), DriverOptions(**spec["options"]))
    if spec["carry_out"]:
        from provisiond.power.bmc import Pacer, Policy, carry_out
        outcome = carry_out(driver, Pacer(0), Policy(min_gap=0, budget=5), "power", spec["carry_out"], False,
                            "operation 1: power " + spec["carry_out"])
        print(json.dumps(dataclasses.asdict(outcome)))
    else:
        try:
            driver.power_on()
            print(json.dumps({"sent": True}))
        except BmcError as exc:
            print(json.dumps({"sent": False, "error": str(exc), "kind": type(exc).__name__}))
""")

#: Runs in the receiver namespace: the first IPv4/UDP frame to the port that
#: arrives on the interface, as hex (exit 0); "timeout" (exit 1) if none comes.
RAW_RECEIVER = textwrap.dedent("""
    import socket, sys, time
    interface, port, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
    sock.bind((interface, 0x0003))
    print("ready", flush=True)
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            frame, address = sock.recvfrom(65535)
        except socket.timeout:
            break
        if address[2] == socket.PACKET_OUTGOING or len(frame) < 42:
            continue
        if frame[12:14] != b"\\x08\\x00" or frame[23] != 17:  # IPv4, UDP
            continue
        udp = 14 + (frame[14] & 0x0F) * 4
        if int.from_bytes(frame[udp + 2:udp + 4], "big") == port:
            print(frame.hex(), flush=True)
            sys.exit(0)
    print("timeout", flush=True)
    sys.exit(1)
""")

#: Runs in the receiver namespace: the first datagram to 0.0.0.0:port, as JSON.
UDP_RECEIVER = textwrap.dedent("""
    import json, socket, sys
    port, wait = int(sys.argv[1]), float(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(wait)
    print("ready", flush=True)
    try:
        data, (host, sport) = sock.recvfrom(65535)
    except socket.timeout:
        print("timeout", flush=True)
        sys.exit(1)
    print(json.dumps({"data": data.hex(), "host": host, "port": sport}), flush=True)
""")


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


@dataclass
class Pair:
    """Two namespaces joined by a veth pair: ``vethA`` (MAC_A) in ``sender``, ``vethB`` (MAC_B) in ``receiver``."""

    sender: str
    receiver: str
    children: list[subprocess.Popen[str]] = field(default_factory=list)

    def ip(self, ns: str, *args: str) -> None:
        sh("ip", "-n", ns, *args)

    def addresses(self) -> None:
        """10.99.0.1/24 on vethA, 10.99.0.2/24 on vethB, both with the subnet broadcast."""
        self.ip(self.sender, "addr", "add", f"{ADDRESS_A}/24", "brd", "+", "dev", "vethA")
        self.ip(self.receiver, "addr", "add", f"{ADDRESS_B}/24", "brd", "+", "dev", "vethB")

    def python(self, ns: str, script: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", ns, sys.executable, "-c", script, *args]

    def receive(self, ns: str, script: str, *args: str) -> subprocess.Popen[str]:
        """Start a receiver and return once it is listening."""
        child = subprocess.Popen(self.python(ns, script, *args), cwd=ROOT, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.children.append(child)
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        if line != "ready":
            child.kill()
            _, err = child.communicate(timeout=10)
            raise AssertionError(f"receiver did not start: {line!r} {err}")
        return child

    def send(self, options: dict[str, Any], carry: str = "", mac: str = MAC) -> dict[str, Any]:
        """WolDriver.power_on (or carry_out ``power <carry>``) in the sender namespace."""
        spec = json.dumps({"mac": mac, "options": options, "carry_out": carry})
        done = subprocess.run(self.python(self.sender, SENDER, spec), cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def result(self, child: subprocess.Popen[str]) -> str:
        try:
            out, err = child.communicate(timeout=WAIT + 10)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
        assert child.returncode == 0, f"receiver: {out.strip()} {err.strip()}"
        return out.strip()

    def destroy(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.communicate()
        for ns in (self.sender, self.receiver):
            sh("ip", "netns", "del", ns, check=False)


def _link_up(ns: str, interface: str) -> bool:
    shown = sh("ip", "-n", ns, "-o", "link", "show", interface, check=False).stdout
    return "LOWER_UP" in shown and "state UP" in shown


@pytest.fixture
def pair() -> Iterator[Pair]:
    require(os.geteuid() == 0, "network namespaces need root")
    require(shutil.which("ip") is not None, "needs iproute2 (ip)")
    tag = "wol" + uuid.uuid4().hex[:8]
    created = sh("ip", "netns", "add", f"{tag}a", check=False)
    require(created.returncode == 0, f"cannot create a network namespace: {created.stderr.strip()}")
    lab = Pair(f"{tag}a", f"{tag}b")
    try:
        sh("ip", "netns", "add", lab.receiver)
        # Made inside the sender namespace, the peer moved straight to the receiver's:
        # the pair never exists among the machine's own interfaces.
        lab.ip(lab.sender, "link", "add", "vethA", "address", MAC_A, "type", "veth",
               "peer", "name", "vethB", "address", MAC_B, "netns", lab.receiver)
        for ns, interface in ((lab.sender, "vethA"), (lab.receiver, "vethB")):
            lab.ip(ns, "link", "set", "lo", "up")
            lab.ip(ns, "link", "set", interface, "up")
        for _ in range(100):
            if _link_up(lab.sender, "vethA") and _link_up(lab.receiver, "vethB"):
                break
            subprocess.run(["sleep", "0.05"], check=True)
        else:
            raise AssertionError("the veth pair did not come up")
        yield lab
    finally:
        lab.destroy()


# --------------------------------------------------------------------------- decoding by hand


def _checksum(data: bytes) -> int:
    """The one's-complement sum of 16-bit words (0xffff over a correct header)."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def check_frame(frame: bytes, source_mac: str, destination: str, port: int) -> None:
    """A broadcast Ethernet frame carrying IPv4/UDP ``0.0.0.0:port → destination:port`` and the magic packet."""
    source = bytes.fromhex(source_mac.replace(":", ""))
    assert len(frame) == 14 + 20 + 8 + 102
    assert frame[0:6] == b"\xff" * 6, "destination MAC is not ff:ff:ff:ff:ff:ff"
    assert frame[6:12] == source, "source MAC is not the interface's"
    assert frame[12:14] == b"\x08\x00", "not IPv4"
    ip, udp, payload = frame[14:34], frame[34:42], frame[42:]
    assert ip[0] == 0x45  # IPv4, 20-byte header
    assert struct.unpack("!H", ip[2:4])[0] == 20 + 8 + 102
    assert ip[9] == 17, "not UDP"
    assert ip[12:16] == socket.inet_aton("0.0.0.0")
    assert ip[16:20] == socket.inet_aton(destination)
    assert _checksum(ip) == 0xFFFF, "bad IPv4 header checksum"
    sport, dport, length, udp_sum = struct.unpack("!HHHH", udp)
    assert (sport, dport, length) == (port, port, 8 + 102)
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, length)
    assert udp_sum == 0 or _checksum(pseudo + udp + payload) == 0xFFFF, "bad UDP checksum"
    assert payload == PAYLOAD


# --------------------------------------------------------------------------- on the wire: raw frames


def test_interface_mode_sends_the_magic_frame_on_the_interface(pair: Pair) -> None:
    receiver = pair.receive(pair.receiver, RAW_RECEIVER, "vethB", "9", str(WAIT))
    assert pair.send({"wol_interface": "vethA", "wol_port": 9}) == {"sent": True}
    frame = bytes.fromhex(pair.result(receiver))

    check_frame(frame, MAC_A, "255.255.255.255", 9)
    assert frame == magic_frame(MAC, MAC_A, "255.255.255.255", 9)


def test_interface_mode_uses_the_configured_broadcast_and_port(pair: Pair) -> None:
    receiver = pair.receive(pair.receiver, RAW_RECEIVER, "vethB", "4000", str(WAIT))
    sent = pair.send({"wol_interface": "vethA", "wol_broadcast": SUBNET_BROADCAST, "wol_port": 4000},
                     mac="52-54-00-AA-BB-CC")
    assert sent == {"sent": True}
    frame = bytes.fromhex(pair.result(receiver))

    check_frame(frame, MAC_A, SUBNET_BROADCAST, 4000)
    assert frame == magic_frame(MAC, MAC_A, SUBNET_BROADCAST, 4000)


@pytest.mark.parametrize(("argument", "result", "calls"), [
    ("on", "powered on", 2), ("reset", "woken (Wake-on-LAN cannot reset a machine that is on)", 1),
    ("netboot", "woken (Wake-on-LAN cannot reset a machine that is on)", 1)])
def test_interface_mode_through_carry_out(pair: Pair, argument: str, result: str, calls: int) -> None:
    """The worker's path: the power state is unsupported, so "power on" (and the
    "netboot" an install queues) just wakes."""
    receiver = pair.receive(pair.receiver, RAW_RECEIVER, "vethB", "9", str(WAIT))
    outcome = pair.send({"wol_interface": "vethA"}, carry=argument)
    frame = bytes.fromhex(pair.result(receiver))

    assert outcome["ok"] is True, outcome
    assert outcome["result"] == result
    assert outcome["attempts"] == calls  # "on": the status it cannot tell, then the wake
    assert outcome["message"].startswith(f"operation 1: power {argument}: {result} (BMC wol 52:54:00:aa:bb:cc, ")
    assert "attempts" not in outcome["message"]  # no retries
    assert frame == magic_frame(MAC, MAC_A, "255.255.255.255", 9)


def test_interface_mode_on_a_missing_interface_is_a_bmc_error(pair: Pair) -> None:
    sent = pair.send({"wol_interface": "nosuch0"})
    assert sent["sent"] is False
    assert sent["kind"] == "BmcError"
    assert sent["error"].startswith("BMC wol 52:54:00:aa:bb:cc (host S1): power on: could not send the magic packet:")


# --------------------------------------------------------------------------- on the wire: UDP broadcast


def test_broadcast_mode_sends_the_payload_to_the_subnet_broadcast(pair: Pair) -> None:
    pair.addresses()
    receiver = pair.receive(pair.receiver, UDP_RECEIVER, "9", str(WAIT))
    assert pair.send({"wol_broadcast": SUBNET_BROADCAST, "wol_port": 9}) == {"sent": True}
    got = json.loads(pair.result(receiver))

    assert bytes.fromhex(got["data"]) == PAYLOAD
    assert len(PAYLOAD) == 102
    assert got["host"] == ADDRESS_A


def test_broadcast_mode_on_a_high_port_with_the_raw_view(pair: Pair) -> None:
    """The datagram as it crosses the link: an Ethernet broadcast from vethA to the subnet broadcast."""
    pair.addresses()
    frames = pair.receive(pair.receiver, RAW_RECEIVER, "vethB", "40009", str(WAIT))
    datagrams = pair.receive(pair.receiver, UDP_RECEIVER, "40009", str(WAIT))
    assert pair.send({"wol_broadcast": SUBNET_BROADCAST, "wol_port": 40009}) == {"sent": True}
    frame = bytes.fromhex(pair.result(frames))
    got = json.loads(pair.result(datagrams))

    assert bytes.fromhex(got["data"]) == PAYLOAD
    assert got["host"] == ADDRESS_A
    assert frame[0:6] == b"\xff" * 6
    assert frame[6:12] == bytes.fromhex(MAC_A.replace(":", ""))
    assert frame[12:14] == b"\x08\x00" and frame[23] == 17
    assert frame[26:30] == socket.inet_aton(ADDRESS_A)
    assert frame[30:34] == socket.inet_aton(SUBNET_BROADCAST)
    assert struct.unpack("!H", frame[36:38])[0] == 40009
    assert frame[42:] == PAYLOAD


def test_broadcast_mode_without_a_route_is_a_bmc_error(pair: Pair) -> None:
    sent = pair.send({"wol_broadcast": "10.98.0.255"})  # no address, no route in the namespace
    assert sent["sent"] is False
    assert sent["kind"] == "BmcError"
    assert sent["error"] == ("BMC wol 52:54:00:aa:bb:cc (host S1): power on: "
                             "could not send the magic packet: Network is unreachable")


# --------------------------------------------------------------------------- no network


@pytest.mark.parametrize("mac", ["52:54:00:aa:bb:cc", "52-54-00-aa-bb-cc", "52:54:00:AA:BB:CC", "525400aabbcc"])
def test_magic_payload(mac: str) -> None:
    payload = magic_payload(mac)
    assert payload == PAYLOAD
    assert len(payload) == 102
    assert payload[:6] == b"\xff" * 6
    assert all(payload[6 + 6 * i:12 + 6 * i] == MAC_BYTES for i in range(16))


@pytest.mark.parametrize("mac", ["52:54:00:aa:bb", "52:54:00:aa:bb:cc:dd", "52:54:00:aa:bb:zz", "", "not a mac"])
def test_magic_payload_refuses_a_bad_mac(mac: str) -> None:
    with pytest.raises(ValueError):
        magic_payload(mac)


def test_magic_frame_layout() -> None:
    frame = magic_frame(MAC, MAC_A, "255.255.255.255", 9)
    check_frame(frame, MAC_A, "255.255.255.255", 9)


def test_wol_cannot_choose_the_boot_device() -> None:
    assert WolDriver.sets_boot_device is False


@pytest.mark.parametrize(("call", "operation", "why"), [
    (lambda d: d.power_off(), "power off", "Wake-on-LAN can only power a machine on"),
    (lambda d: d.power_reset(), "power reset", "Wake-on-LAN can only power a machine on"),
    (lambda d: d.power_status(), "power status", "Wake-on-LAN cannot tell whether a machine is on"),
    (lambda d: d.set_boot_device(BootDevice.PXE, False), "set boot device pxe",
     "Wake-on-LAN cannot choose the boot device: the machine's own boot order decides"),
    (lambda d: d.set_boot_device(BootDevice.DISK, True), "set boot device disk",
     "Wake-on-LAN cannot choose the boot device: the machine's own boot order decides"),
    (lambda d: d.get_boot_device(), "get boot device", "Wake-on-LAN cannot read the boot device"),
], ids=["power_off", "power_reset", "power_status", "set_boot_pxe", "set_boot_disk", "get_boot_device"])
def test_everything_but_power_on_is_unsupported(call: Any, operation: str, why: str) -> None:
    driver = WolDriver(target(), DriverOptions())
    with pytest.raises(Unsupported) as caught:
        call(driver)
    assert str(caught.value) == f"BMC wol 52:54:00:aa:bb:cc (host S1): {operation}: {why}"
    assert caught.value.problem == why
    assert caught.value.retryable is False


def test_carry_out_power_off_says_why_it_cannot() -> None:
    driver = WolDriver(target(), DriverOptions())
    outcome = carry_out(driver, Pacer(0), Policy(min_gap=0, budget=5), "power", "off", False,
                        "operation 2: power off")
    assert outcome.ok is False
    assert outcome.result is None
    assert outcome.message == ("operation 2: power off failed: BMC wol 52:54:00:aa:bb:cc (host S1): "
                               "power off: Wake-on-LAN can only power a machine on")
    assert outcome.attempts == 2  # the status (unsupported, not retried), then power off (the same)


def test_carry_out_bootdev_says_why_it_cannot() -> None:
    driver = WolDriver(target(), DriverOptions())
    outcome = carry_out(driver, Pacer(0), Policy(min_gap=0, budget=5), "bootdev", "pxe", False,
                        "operation 3: set the boot device to pxe")
    assert outcome.ok is False
    assert outcome.message == ("operation 3: set the boot device to pxe failed: BMC wol 52:54:00:aa:bb:cc "
                               "(host S1): set boot device pxe: Wake-on-LAN cannot choose the boot device: "
                               "the machine's own boot order decides")
    assert outcome.attempts == 1


@pytest.mark.parametrize("mac", [None, ""])
def test_a_host_without_a_mac_cannot_be_woken(mac: str | None) -> None:
    driver = WolDriver(target(mac), DriverOptions())
    with pytest.raises(BmcError) as caught:
        driver.power_on()
    assert str(caught.value) == "BMC wol S1 (host S1): power on: the host has no primary MAC to wake"
    assert caught.value.problem == "the host has no primary MAC to wake"
