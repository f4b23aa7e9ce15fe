"""Golden packets and fuzzing: real DHCP requests in, typed fields out.

The packets under ``tests/netboot/golden/`` were sent by software nobody on
this project wrote (ISC dhclient, ISC perfdhcp acting as a relay, QEMU's iPXE
option ROM) and captured as raw UDP payloads (see golden/README.md). The
table test decodes each with :func:`parse_request` and checks its fields.

The property tests then feed random bytes, truncations and mutations of those
packets to the codec and to the responder's packet entry point
(:meth:`DhcpService.process`, what the socket loop calls with the bytes and
their :class:`Arrival`): the only exception that may leave the codec is
:class:`MalformedPacket`, and the service must never raise (a malformed
packet is an "ignored" outcome). A hang is caught by hypothesis's
per-example deadline, and each example's allocation peak is measured with
tracemalloc and bounded.
"""

from __future__ import annotations

import dataclasses
import signal
import tracemalloc
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, event, given, settings

from provisiond.netboot.dhcp import PXE_PORT, Arrival, DhcpService, Sent
from provisiond.netboot.dhcp_codec import (
    DhcpRequest,
    MalformedPacket,
    MessageType,
    parse_reply,
    parse_request,
)
from provisiond.services import Services

GOLDEN = Path(__file__).parent / "golden"
A = IPv4Address
M = MessageType
SERVER = A("10.99.0.1")
#: Every example may allocate at most this much at its peak (tracemalloc),
#: beyond what was live before it. A 1,500-octet packet decoded by scapy and
#: answered costs well under 1 MiB; a leak or a runaway loop would not.
PEAK_BYTES = 4 * 1024 * 1024


def golden(name: str) -> bytes:
    return bytes.fromhex((GOLDEN / f"{name}.hex").read_text())


#: Each captured packet and the fields it must decode to (others: defaults).
TABLE: dict[str, dict[str, Any]] = {
    "dhclient-discover-pxe-bios": {
        "message_type": M.DISCOVER, "mac": "52:54:00:99:00:01", "xid": 0x56747D12, "giaddr": A("0.0.0.0"),
        "hops": 0, "flags": 0, "hostname": "golden-host", "vendor_class": b"PXEClient:Arch:00000:UNDI:002001",
        "architecture": None, "user_class": b"", "parameter_request_list": (1, 28, 2, 3, 15, 6, 12),
        "requested_address": None, "server_id": None, "client_id": None, "ipxe_options": None,
    },
    "dhclient-request-init-reboot-uefi": {
        "message_type": M.REQUEST, "mac": "52:54:00:99:00:01", "xid": 0x572AD501, "giaddr": A("0.0.0.0"),
        "ciaddr": A("0.0.0.0"), "requested_address": A("10.99.0.50"), "server_id": None,
        "vendor_class": b"PXEClient:Arch:00007:UNDI:003016", "architecture": 7, "user_class": b"",
        "hostname": None,
    },
    "perfdhcp-relay-discover": {
        "message_type": M.DISCOVER, "mac": "00:0c:01:02:03:04", "xid": 0, "giaddr": A("10.99.0.60"), "hops": 1,
        "client_id": b"\x01\x00\x0c\x01\x02\x03\x04", "vendor_class": b"", "architecture": None, "user_class": b"",
        "parameter_request_list": (1, 28, 2, 3, 15, 6, 12),
    },
    "ipxe-qemu-virtio-discover": {
        "message_type": M.DISCOVER, "mac": "52:54:00:99:00:30", "xid": 0x458C6936, "giaddr": A("0.0.0.0"),
        "secs": 4, "vendor_class": b"PXEClient:Arch:00000:UNDI:002001", "architecture": 0, "user_class": b"iPXE",
        "max_message_size": 1472, "client_id": b"\x01\x52\x54\x00\x99\x00\x30", "client_uuid": b"\x00" * 17,
        "parameter_request_list": (1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132,
                                   133, 134, 135, 175, 203),
    },
}
#: Derived properties of each request: (relayed, pxe_client, ipxe).
FLAGS = {
    "dhclient-discover-pxe-bios": (False, True, False),
    "dhclient-request-init-reboot-uefi": (False, True, False),
    "perfdhcp-relay-discover": (True, False, False),
    "ipxe-qemu-virtio-discover": (False, True, True),
}
PACKETS = {name: golden(name) for name in TABLE}


def test_every_captured_packet_is_in_the_table() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.hex")) == sorted(TABLE)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_golden_packet_decodes(name: str) -> None:
    request = parse_request(PACKETS[name])
    got = {key: getattr(request, key) for key in TABLE[name]}
    assert got == TABLE[name]
    assert (request.relayed, request.pxe_client, request.ipxe) == FLAGS[name]


def test_ipxe_golden_packet_carries_its_feature_options() -> None:
    """Option 175 as QEMU's iPXE sent it: encapsulated TLVs, e.g. 0xb1 (bus id)
    and 0x13 (PXE extensions), 0x21 (HTTP), 0x10 (version)."""
    request = parse_request(PACKETS["ipxe-qemu-virtio-discover"])
    assert request.ipxe_options is not None
    tags = set()
    raw, i = request.ipxe_options, 0
    while i + 1 < len(raw):
        tags.add(raw[i])
        i += 2 + raw[i + 1]
    assert i == len(raw)  # the TLVs tile the option exactly
    assert {0x13, 0x10, 0xB1} <= tags


# --------------------------------------------------------------------------- the responder


@pytest.fixture
def dhcp(services: Services) -> Any:
    """DhcpService factory over the test database (never started: its
    packet entry point is called directly); unknown MACs get pool addresses
    in 10.99.0.0/24, where the golden packets were captured."""

    def make(mode: str = "full") -> DhcpService:
        changed = dataclasses.replace(
            services.settings, dhcp_mode=mode, unknown_mac="local", netboot_address=str(SERVER),
            dhcp_subnets=[{"network": "10.99.0.0/24", "router": "10.99.0.1", "pool": "10.99.0.10-10.99.0.250"}])
        return DhcpService(Services(settings=changed, db=services.db))

    return make


DIRECT = Arrival(67, ("0.0.0.0", 68), SERVER, 2, "br0")


@pytest.mark.parametrize("name", sorted(TABLE))
def test_golden_packet_is_answered_in_full_mode(dhcp: Any, name: str) -> None:
    arrival = Arrival(67, ("10.99.0.60", 67), SERVER, 2, "br0") if FLAGS[name][0] else DIRECT
    sent = dhcp("full").process(PACKETS[name], arrival)
    assert sent.data is not None, sent.outcome
    reply = parse_reply(sent.data)
    request = parse_request(PACKETS[name])
    assert (reply.xid, reply.mac, reply.server_id) == (request.xid, request.mac, SERVER)
    if request.message_type == MessageType.DISCOVER:
        assert reply.message_type == MessageType.OFFER
        assert reply.yiaddr in (A("10.99.0.0") + n for n in range(10, 251))
    else:  # dhclient's INIT-REBOOT for 10.99.0.50: free in the pool, so it is granted
        assert (reply.message_type, reply.yiaddr) == (MessageType.ACK, A("10.99.0.50"))
    expected_file = "http://provisiond.test:8080/boot/ipxe/52:54:00:99:00:30" if FLAGS[name][2] else (
        "ipxe.efi" if request.architecture == 7 else "lpxelinux.0")
    assert reply.boot_file == expected_file
    assert sent.destination is not None
    assert sent.destination.address == (request.giaddr if request.relayed else A("255.255.255.255"))


# --------------------------------------------------------------------------- property tests

golden_packets = st.sampled_from(sorted(PACKETS.values()))


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    packet = draw(golden_packets)
    return packet[:draw(st.integers(0, len(packet)))]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A golden packet with some octets replaced, some removed or inserted,
    and maybe truncated or extended: mostly past the header checks, so the
    option parser and the handler see it."""
    data = bytearray(draw(golden_packets))
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["set", "set-header", "set-header", "set-option", "delete", "insert",
                                       "truncate", "extend"]))
        if not data:
            break
        if action == "set":
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif action == "set-header" and len(data) > 236:
            data[draw(st.integers(3, 235))] = draw(st.integers(0, 255))  # past op/htype/hlen, before the cookie
        elif action == "set-option" and len(data) > 240:
            data[draw(st.integers(240, len(data) - 1))] = draw(st.integers(0, 255))
        elif action == "delete" and len(data) > 240:
            start = draw(st.integers(240, len(data) - 1))
            del data[start:start + draw(st.integers(1, 16))]
        elif action == "insert":
            at = draw(st.integers(min(240, len(data)), len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif action == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif action == "extend":
            data += draw(st.binary(max_size=300))
    return bytes(data)


#: Options scapy decodes into a typed field: the value has this many octets
#: (another length is a malformed packet, which the liars cover).
FIXED_SIZE = {1: 4, 2: 4, 3: 4, 28: 4, 50: 4, 51: 4, 53: 1, 54: 4, 57: 2, 58: 4, 59: 4, 118: 4}


@st.composite
def option_soup(draw: st.DrawFn) -> bytes:
    """A valid BOOTREQUEST header from a golden packet, then random option TLVs
    (lengths may lie), with or without an end option."""
    header = draw(golden_packets)[:240]
    # Mostly a valid message type first, so most of these reach the handler.
    kind = draw(st.one_of(st.integers(1, 8), st.integers(1, 8), st.integers(1, 8), st.integers(0, 255)))
    options = b"" if draw(st.integers(0, 9)) == 0 else bytes([53, 1, kind])
    liar = draw(st.integers(0, 3)) == 0  # one packet in four: pad/end codes and lengths that lie
    for _ in range(draw(st.integers(0, 20))):
        code = draw(st.one_of(st.sampled_from([53, 50, 54, 12, 55, 57, 60, 61, 77, 43, 82, 93, 97, 118, 175, 52]),
                              st.integers(0, 255) if liar else st.integers(1, 254)))
        size = FIXED_SIZE.get(code) if not liar else None
        value = draw(st.binary(min_size=size, max_size=size) if size else st.binary(max_size=40))
        length = draw(st.integers(0, 255)) if liar and draw(st.booleans()) else len(value)
        options += bytes([code, length]) + value
    if draw(st.integers(0, 3)):
        options += b"\xff"
    return header + options


#: Random bytes and truncations exercise the header checks; mutations and
#: option soups (weighted up) mostly get past them to the option parser and
#: the handler (hypothesis's statistics show the shares).
any_packet = st.one_of(st.binary(max_size=1500), truncated(), mutated(), mutated(), option_soup(), option_soup(),
                       option_soup())


#: A backstop for a real hang (an example that never returns, which
#: hypothesis's deadline cannot report): SIGALRM turns it into a failure.
HANG_SECONDS = 30


class Hung(Exception):
    pass


class PeakMemory:
    """tracemalloc peak of one call, beyond what was allocated before it
    (and the hang backstop around it)."""

    def __enter__(self) -> PeakMemory:
        def hung(_signum: int, _frame: object) -> None:
            raise Hung(f"no answer after {HANG_SECONDS} s")

        self.previous = signal.signal(signal.SIGALRM, hung)
        signal.alarm(HANG_SECONDS)
        tracemalloc.reset_peak()
        self.before = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = tracemalloc.get_traced_memory()[1] - self.before
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.previous)


@pytest.fixture(scope="module")
def traced() -> Iterator[None]:
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    yield
    if started:
        tracemalloc.stop()


@pytest.mark.usefixtures("traced")
@settings(max_examples=500, deadline=250, suppress_health_check=[HealthCheck.too_slow])
@given(data=any_packet)
def test_codec_raises_only_malformed_packet(data: bytes) -> None:
    with PeakMemory() as memory:
        try:
            request = parse_request(data)
        except MalformedPacket:
            request = None
    assert request is None or isinstance(request, DhcpRequest)
    assert memory.peak < PEAK_BYTES, f"{memory.peak} bytes allocated for a {len(data)}-octet packet"


ARRIVALS = st.sampled_from([
    DIRECT,
    Arrival(67, ("10.99.0.60", 67), SERVER, 2, "br0"),
    Arrival(PXE_PORT, ("10.99.0.120", 68), SERVER, 2, "br0"),
])


@pytest.mark.usefixtures("traced")
@pytest.mark.parametrize("mode", ["full", "proxy"])
@settings(max_examples=300, deadline=2000,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=any_packet, arrival=ARRIVALS)
def test_service_never_raises_on_any_packet(dhcp: Any, mode: str, data: bytes, arrival: Arrival) -> None:
    """What the socket loop calls: any packet ends in an outcome, no exception
    (``_receive`` would log and survive one, but the packet would go unanswered
    and unexplained). Malformed packets are ignored with the codec's reason."""
    service = dhcp(mode)
    with PeakMemory() as memory:
        sent = service.process(data, arrival)
    assert isinstance(sent, Sent)
    try:
        parse_request(data)
    except MalformedPacket as exc:
        event("malformed")
        assert (sent.outcome.summary, sent.data) == ("ignored", None)
        assert str(exc) in sent.outcome.reason
    else:
        event("decoded, answered" if sent.data is not None else "decoded, ignored")
    if sent.data is not None:
        parse_reply(sent.data)  # what is sent decodes
    assert memory.peak < PEAK_BYTES, f"{memory.peak} bytes allocated for a {len(data)}-octet packet"
