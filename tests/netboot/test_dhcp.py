"""DHCP codec and responder, table-driven: request bytes in, reply fields out.

Requests are encoded here with scapy directly (an encoder independent of
provisiond's codec); replies are decoded with :func:`parse_reply` and
compared field by field with the expectations in the tables. The responder
tables run against a real database (SQLite and PostgreSQL) holding hosts
created through the admin API.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Iterator, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP
from sqlalchemy import func, select

from provisiond import models
from provisiond.errors import ConfigError
from provisiond.models import utcnow
from provisiond.netboot import leases
from provisiond.netboot.dhcp import (
    BROADCAST,
    PXE_PORT,
    Arrival,
    BootFiles,
    Destination,
    DhcpService,
    choose_boot,
)
from provisiond.netboot.dhcp_codec import (
    DhcpReply,
    MalformedPacket,
    MessageType,
    PxeOption,
    build_reply,
    parse_reply,
    parse_request,
)
from provisiond.services import Services
from tests.conftest import metric

A = IPv4Address
MAC_A = "52:54:00:00:0a:01"  # SN-A: static 10.77.0.10/24
MAC_B = "52:54:00:00:0b:01"  # SN-B: known, no address (pool)
MAC_R = "52:54:00:00:0c:01"  # SN-R: static 10.88.0.10/24, behind a relay
MAC_X = "52:54:00:00:0d:01"  # SN-X: static 10.0.0.10/24, another segment
MAC_U = "52:54:00:ff:ff:01"  # not in the data source
SERVER = A("10.77.0.1")
RELAY = A("10.88.0.1")
URL = "http://provisiond.test:8080"
UUID = b"\x00" + bytes(range(16))
OPTION82 = b"\x01\x04port\x02\x03sw1"

HOSTS: list[dict[str, Any]] = [
    {"serial": "SN-A", "hostname": "a.lab.test", "profile": "default", "macs": [MAC_A], "ip": "10.77.0.10",
     "prefix": 24, "gateway": "10.77.0.1", "dns": ["10.77.0.2"], "bmc": {"type": "fake"}},
    {"serial": "SN-B", "hostname": "b.lab.test", "profile": "default", "macs": [MAC_B]},
    {"serial": "SN-R", "hostname": "r.lab.test", "profile": "default", "macs": [MAC_R], "ip": "10.88.0.10",
     "prefix": 24, "gateway": "10.88.0.1", "dns": ["10.77.0.2"]},
    {"serial": "SN-X", "hostname": "x.lab.test", "profile": "default", "macs": [MAC_X], "ip": "10.0.0.10",
     "prefix": 24, "gateway": "10.0.0.1"},
    # A static address inside the pool: the pool must skip it.
    {"serial": "SN-P", "hostname": "p.lab.test", "profile": "default", "macs": ["52:54:00:00:0e:01"],
     "ip": "10.77.0.101", "prefix": 24},
]
SUBNETS = [
    {"network": "10.77.0.0/24", "router": "10.77.0.1", "dns": ["10.77.0.2"], "pool": "10.77.0.100-10.77.0.102",
     "lease_seconds": 600},
    {"network": "10.88.0.0/24", "router": "10.88.0.1", "dns": ["10.77.0.2"], "pool": "10.88.0.100-10.88.0.150"},
]

DIRECT = Arrival(67, ("0.0.0.0", 68), SERVER, 2, "br0")
RELAYED = Arrival(67, (str(RELAY), 67), SERVER, 2, "br0")
BOOT_SERVER = Arrival(PXE_PORT, ("10.77.0.120", 68), SERVER, 2, "br0")
BCAST = Destination(BROADCAST, 68, broadcast=True)


def request(kind: str, mac: str = MAC_A, *, arch: int | None = None, vendor: bytes | None = None,
            user_class: bytes | None = None, requested: str | None = None, server: str | None = None,
            ciaddr: str = "0.0.0.0", giaddr: str = "0.0.0.0", relay_info: bytes | None = None,
            uuid: bytes | None = None, boot_item: bytes | None = None, ipxe175: bool = False,
            flags: int = 0x8000, xid: int = 0x1234ABCD) -> bytes:
    """A client's request, as scapy (not provisiond) encodes it."""
    options: list[Any] = [("message-type", kind)]
    if requested:
        options.append(("requested_addr", requested))
    if server:
        options.append(("server_id", server))
    if vendor is not None:
        options.append(("vendor_class_id", vendor))
    if arch is not None:
        options.append((93, arch.to_bytes(2, "big")))
    if user_class is not None:
        options.append(("user_class", user_class))
    if uuid is not None:
        options.append((97, uuid))
    if boot_item is not None:
        options.append((43, bytes([PxeOption.BOOT_ITEM, len(boot_item)]) + boot_item + b"\xff"))
    if ipxe175:
        options.append((175, b"\x13\x01\x01"))
    options.append(("param_req_list", [1, 3, 6, 12, 15, 43, 60, 66, 67]))
    if relay_info is not None:
        options.append((82, relay_info))
    options.append("end")
    packet = BOOTP(op=1, xid=xid, flags=flags, ciaddr=ciaddr, giaddr=giaddr, hops=1 if giaddr != "0.0.0.0" else 0,
                   chaddr=bytes.fromhex(mac.replace(":", "")) + b"\0" * 10) / DHCP(options=options)
    return bytes(packet)


PXE_BIOS = {"vendor": b"PXEClient:Arch:00000:UNDI:002001", "arch": 0}
PXE_UEFI = {"vendor": b"PXEClient:Arch:00007:UNDI:003016", "arch": 7}
PXE_UEFI9 = {"vendor": b"PXEClient:Arch:00009:UNDI:003016", "arch": 9}
HTTP_UEFI = {"vendor": b"HTTPClient:Arch:00016:UNDI:003001", "arch": 16}
IPXE = {"vendor": b"PXEClient:Arch:00000:UNDI:002001", "arch": 0, "user_class": b"iPXE", "ipxe175": True}
ARM64 = {"vendor": b"PXEClient:Arch:00011:UNDI:003000", "arch": 11}

# --------------------------------------------------------------------------- codec


@pytest.mark.parametrize(("data", "error"), [
    (b"\x01" * 100, "shorter than a BOOTP header"),
    (request("discover")[:236] + b"\0\0\0\0" + request("discover")[240:], "no DHCP magic cookie"),
    (b"\x02" + request("discover")[1:], "not BOOTREQUEST"),
    (request("discover")[:1] + b"\x06" + request("discover")[2:], "is not Ethernet"),
    (request("discover")[:240] + b"\x3c\x05PXE\xff", "the options run past the end"),
    (request("discover")[:240] + b"\x35\x01\x63\xff", "unknown message type 99"),
    (request("discover")[:240] + b"\xff", "missing or unknown message type"),
], ids=["short", "no-cookie", "reply", "not-ethernet", "truncated-option", "bad-type", "no-type"])
def test_malformed_requests_are_refused_with_a_reason(data: bytes, error: str) -> None:
    with pytest.raises(MalformedPacket, match=error):
        parse_request(data)


@pytest.mark.parametrize(("data", "fields"), [
    (request("discover", **PXE_BIOS, uuid=UUID),
     {"message_type": MessageType.DISCOVER, "xid": 0x1234ABCD, "mac": MAC_A, "broadcast": True, "architecture": 0,
      "pxe_client": True, "ipxe": False, "client_uuid": UUID, "relayed": False, "requested_address": None}),
    (request("request", requested="10.77.0.10", server="10.77.0.1", **PXE_UEFI),
     {"message_type": MessageType.REQUEST, "requested_address": A("10.77.0.10"), "server_id": SERVER,
      "architecture": 7}),
    (request("discover", **IPXE), {"ipxe": True, "user_class": b"iPXE", "pxe_client": True}),
    (request("discover", user_class=b"iPXE"), {"ipxe": True, "pxe_client": False, "architecture": None}),
    (request("discover", **HTTP_UEFI), {"http_client": True, "pxe_client": False, "architecture": 16}),
    (request("discover", giaddr="10.88.0.1", relay_info=OPTION82),
     {"relayed": True, "giaddr": RELAY, "hops": 1, "relay_agent_information": OPTION82}),
    (request("request", ciaddr="10.77.0.10", flags=0), {"ciaddr": A("10.77.0.10"), "broadcast": False}),
    (request("inform", ciaddr="10.77.0.10"), {"message_type": MessageType.INFORM}),
    (request("release", ciaddr="10.77.0.10", server="10.77.0.1"), {"message_type": MessageType.RELEASE}),
    (request("decline", requested="10.77.0.10", server="10.77.0.1"), {"message_type": MessageType.DECLINE}),
    (request("request", ciaddr="10.77.0.120", boot_item=b"\x80\x00\x00\x00", **PXE_BIOS),
     {"boot_item": b"\x80\x00\x00\x00"}),
], ids=["discover-bios", "request-uefi", "ipxe", "ipxe-user-class-only", "http-boot", "relayed", "renew",
        "inform", "release", "decline", "boot-item"])
def test_parse_request(data: bytes, fields: dict[str, Any]) -> None:
    parsed = parse_request(data)
    assert {name: getattr(parsed, name) for name in fields} == fields


def test_reply_round_trips_and_a_long_boot_file_moves_to_option_67() -> None:
    reply = DhcpReply(MessageType.OFFER, 7, MAC_A, SERVER, flags=0x8000, yiaddr=A("10.77.0.10"), siaddr=SERVER,
                      boot_file="lpxelinux.0", subnet_mask=A("255.255.255.0"), router=SERVER,
                      dns_servers=(A("10.77.0.2"), A("10.77.0.3")), hostname="a.lab.test", lease_seconds=600,
                      renewal_seconds=300, rebinding_seconds=525, vendor_class=b"PXEClient",
                      pxe_options=((PxeOption.DISCOVERY_CONTROL, b"\x08"),), client_uuid=UUID,
                      relay_agent_information=OPTION82)
    data = build_reply(reply)
    assert len(data) >= 300  # RFC 1542 minimum
    assert data[240:243] == b"\x35\x01\x02"  # message type first
    assert parse_reply(data) == reply
    long = dataclasses.replace(reply, boot_file=URL + "/boot/ipxe/" + "x" * 150)
    data = build_reply(long)
    assert data[108:236] == b"\0" * 128  # file field empty
    assert parse_reply(data).boot_file == long.boot_file


#: A reply as provisiond may build one: every field drawn at random.
_addresses = st.builds(A, st.integers(0, 2**32 - 1))
replies = st.builds(
    DhcpReply,
    message_type=st.sampled_from([MessageType.OFFER, MessageType.ACK, MessageType.NAK]),
    xid=st.integers(0, 2**32 - 1),
    mac=st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b)),
    server_id=_addresses, flags=st.sampled_from([0, 0x8000]), ciaddr=_addresses, yiaddr=_addresses,
    siaddr=_addresses, giaddr=_addresses,
    boot_file=st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=200),
    subnet_mask=st.none() | _addresses, router=st.none() | _addresses,
    dns_servers=st.lists(_addresses, max_size=3).map(tuple),
    hostname=st.none() | st.from_regex(r"[a-z][a-z0-9.-]{0,60}", fullmatch=True),
    lease_seconds=st.none() | st.integers(0, 2**32 - 1),
    vendor_class=st.none() | st.sampled_from([b"PXEClient", b"HTTPClient"]),
    pxe_options=st.lists(st.tuples(st.sampled_from(list(PxeOption)), st.binary(min_size=1, max_size=20)),
                         max_size=3, unique_by=lambda item: item[0]).map(tuple),
    relay_agent_information=st.none() | st.binary(min_size=2, max_size=40),
    client_uuid=st.none() | st.binary(min_size=17, max_size=17),
)


@settings(max_examples=200, deadline=None)
@given(reply=replies)
def test_scapy_reads_what_build_reply_wrote(reply: DhcpReply) -> None:
    """The codec is struct and a TLV walk; scapy's BOOTP/DHCP layers, an
    independent decoder, must read its bytes as the reply that was built."""
    data = build_reply(reply)
    assert parse_reply(data) == reply
    packet = BOOTP(data)
    assert (packet.op, packet.xid, packet.flags) == (2, reply.xid, reply.flags)
    assert bytes(packet.chaddr)[:6] == bytes.fromhex(reply.mac.replace(":", ""))
    assert [packet.ciaddr, packet.yiaddr, packet.siaddr, packet.giaddr] == \
        [str(reply.ciaddr), str(reply.yiaddr), str(reply.siaddr), str(reply.giaddr)]
    options = {name: values for name, *values in
               (item for item in packet[DHCP].options if isinstance(item, tuple))}
    assert options["message-type"] == [int(reply.message_type)]
    assert options["server_id"] == [str(reply.server_id)]
    expected_file = reply.boot_file if len(reply.boot_file) < 128 else ""
    assert bytes(packet.file).rstrip(b"\0").decode() == expected_file
    if expected_file != reply.boot_file:
        assert options["boot-file-name"] == [reply.boot_file.encode()]
    if reply.lease_seconds is not None:
        assert options["lease_time"] == [reply.lease_seconds]
    if reply.subnet_mask is not None:
        assert options["subnet_mask"] == [str(reply.subnet_mask)]
    if reply.dns_servers:
        assert options["name_server"] == [str(a) for a in reply.dns_servers]
    if reply.hostname:
        assert options["hostname"] == [reply.hostname.encode()]
    if reply.relay_agent_information is not None:
        listed = packet[DHCP].options
        assert listed[listed.index("end") - 1][0] == "relay_agent_information"  # last, before the end option


def test_nak_wire_format_is_golden() -> None:
    nak = DhcpReply(MessageType.NAK, 0x01020304, MAC_A, SERVER, flags=0x8000, message="no")
    data = build_reply(nak)
    assert data[:12].hex() == "0201060001020304" + "00008000"
    assert data[28:34].hex() == "525400000a01"
    assert data[236:254].hex() == "63825363" + "350106" + "36040a4d0001" + "38026e6f" + "ff"
    assert data[254:] == b"\0" * (300 - 254)


@pytest.mark.parametrize(("client", "firmware", "file", "vendor"), [
    ({}, "BIOS", "lpxelinux.0", None),
    (PXE_BIOS, "BIOS", "lpxelinux.0", None),
    (PXE_UEFI, "UEFI", "ipxe.efi", None),
    (PXE_UEFI9, "UEFI", "ipxe.efi", None),
    (HTTP_UEFI, "UEFI HTTP", f"{URL}/boot/ipxe.efi", b"HTTPClient"),
    (IPXE, "iPXE", f"{URL}/boot/ipxe/{MAC_A}", None),
    ({**PXE_UEFI, "user_class": b"iPXE"}, "iPXE", f"{URL}/boot/ipxe/{MAC_A}", None),
    (ARM64, "arch 11", None, None),
], ids=["plain", "bios", "uefi-7", "uefi-9", "uefi-http", "ipxe", "ipxe-efi", "arm64"])
def test_boot_file_by_firmware(client: dict[str, Any], firmware: str, file: str | None,
                               vendor: bytes | None) -> None:
    choice = choose_boot(parse_request(request("discover", **client)), BootFiles("lpxelinux.0", "ipxe.efi", URL))
    assert (choice.firmware, choice.file, choice.vendor_class) == (firmware, file, vendor)


@pytest.mark.parametrize(("raw", "error"), [
    ([{"router": "10.0.0.1"}], "'network' .* is required"),
    ([{"network": "10.0.0.1/24"}], "not an IPv4 CIDR"),
    ([{"network": "10.0.0.0/24", "router": "10.1.0.1"}], "not in 10.0.0.0/24"),
    ([{"network": "10.0.0.0/24", "pool": "10.0.0.50"}], "must be 'first-last'"),
    ([{"network": "10.0.0.0/24", "pool": "10.0.0.50-10.0.1.5"}], "not inside the usable addresses"),
    ([{"network": "10.0.0.0/24", "pool": "10.0.0.9-10.0.0.5"}], "ends before it starts"),
    ([{"network": "10.0.0.0/24", "lease_seconds": 5}], "at least 60"),
    ([{"network": "10.0.0.0/24", "gateway": "10.0.0.1"}], "unknown key"),
    ([{"network": "10.0.0.0/16"}, {"network": "10.0.5.0/24"}], "overlap"),
])
def test_bad_subnets_stop_start_up(raw: list[dict[str, Any]], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        leases.parse_subnets(raw)


# --------------------------------------------------------------------------- the responder


@dataclass
class World:
    services: Services
    client: Any
    auth: dict[str, str]
    now: list[dt.datetime] = field(default_factory=lambda: [utcnow()])
    started: list[DhcpService] = field(default_factory=list)

    def dhcp(self, mode: str = "full", unknown: str = "ignore", **settings: Any) -> DhcpService:
        settings = {"netboot_address": str(SERVER), "dhcp_subnets": SUBNETS, **settings}
        changed = dataclasses.replace(self.services.settings, dhcp_mode=mode, unknown_mac=unknown, **settings)
        service = DhcpService(Services(settings=changed, db=self.services.db), clock=lambda: self.now[0])
        self.started.append(service)
        return service

    def tick(self, seconds: float) -> None:
        self.now[0] += dt.timedelta(seconds=seconds)

    def events(self, serial: str) -> list[dict[str, Any]]:
        for service in self.started:  # timeline lines are written off the packet path
            service.timeline.flush()
        with self.services.db.read() as session:  # committed, whatever a reader may see yet
            written = session.scalar(select(func.count()).select_from(models.Event).join(models.Host)
                                     .where(models.Host.serial == serial, models.Event.kind == "dhcp"))
        deadline = time.monotonic() + 10
        while True:
            # On PostgreSQL a reader sees a line once every older transaction
            # on the server has ended (events.read): another test run's
            # open transaction may hold it back for a moment.
            response = self.client.get(f"/api/v1/hosts/{serial}/events", headers=self.auth)
            assert response.status_code == 200, response.get_json()
            lines = [e for e in response.get_json()["events"] if e["kind"] == "dhcp"]
            if len(lines) >= written or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)


@pytest.fixture
def world(services: Services, client: Any, auth: dict[str, str]) -> Iterator[World]:
    for host in HOSTS:
        response = client.post("/api/v1/hosts", json=host, headers=auth)
        assert response.status_code == 201, response.get_json()
    world = World(services, client, auth)
    yield world
    for service in world.started:
        service.stop()  # the timeline writer threads


@dataclass(frozen=True)
class Case:
    id: str
    packet: bytes
    #: Reply fields expected (None: no reply).
    expect: dict[str, Any] | None
    where: Destination | None = None
    mode: str = "full"
    unknown: str = "ignore"
    arrival: Arrival = DIRECT
    #: A substring of the logged reason.
    reason: str = ""


OFFER_A = {"message_type": MessageType.OFFER, "yiaddr": A("10.77.0.10"), "siaddr": SERVER, "server_id": SERVER,
           "boot_file": "lpxelinux.0", "subnet_mask": A("255.255.255.0"), "router": A("10.77.0.1"),
           "dns_servers": (A("10.77.0.2"),), "lease_seconds": 600, "renewal_seconds": 300,
           "rebinding_seconds": 525, "hostname": "a.lab.test", "xid": 0x1234ABCD, "mac": MAC_A, "flags": 0x8000,
           "vendor_class": None, "pxe_options": ()}
ACK_A = {**OFFER_A, "message_type": MessageType.ACK}
NO_LEASE = {"lease_seconds": None, "renewal_seconds": None, "rebinding_seconds": None}
PROXY = {"yiaddr": A("0.0.0.0"), "siaddr": SERVER, "server_id": SERVER, "vendor_class": b"PXEClient",
         "pxe_options": ((PxeOption.DISCOVERY_CONTROL, b"\x08"),), "subnet_mask": None, "router": None,
         "dns_servers": (), **NO_LEASE}

CASES = [
    # -- full mode: a known host and its static address ---------------------------------
    Case("discover-bios", request("discover", **PXE_BIOS), OFFER_A, BCAST, reason="host SN-A is idle, not armed"),
    Case("discover-plain-client", request("discover"), OFFER_A, BCAST),
    Case("discover-uefi", request("discover", **PXE_UEFI), {**OFFER_A, "boot_file": "ipxe.efi"}, BCAST),
    Case("discover-uefi-x64", request("discover", **PXE_UEFI9), {**OFFER_A, "boot_file": "ipxe.efi"}, BCAST),
    Case("discover-ipxe", request("discover", **IPXE), {**OFFER_A, "boot_file": f"{URL}/boot/ipxe/{MAC_A}"}, BCAST),
    Case("discover-uefi-http", request("discover", **HTTP_UEFI),
         {**OFFER_A, "boot_file": f"{URL}/boot/ipxe.efi", "vendor_class": b"HTTPClient"}, BCAST),
    Case("discover-arm64-address-only", request("discover", **ARM64),
         {**OFFER_A, "boot_file": "", "siaddr": A("0.0.0.0")}, BCAST),
    Case("request-selecting", request("request", requested="10.77.0.10", server="10.77.0.1", **PXE_BIOS),
         ACK_A, BCAST),
    Case("request-init-reboot", request("request", requested="10.77.0.10"), ACK_A, BCAST),
    Case("request-wrong-address-nak", request("request", requested="10.77.0.99"),
         {"message_type": MessageType.NAK, "yiaddr": A("0.0.0.0"), "boot_file": "", "lease_seconds": None,
          "message": "10.77.0.99 is not this host's address (its address is 10.77.0.10)"}, BCAST),
    Case("request-for-another-server", request("request", requested="10.77.0.10", server="10.77.0.2"), None,
         reason="talking to server 10.77.0.2"),
    Case("request-without-address", request("request"), None, reason="naming no address"),
    Case("renew-unicast", request("request", ciaddr="10.77.0.10", flags=0),
         {**ACK_A, "ciaddr": A("10.77.0.10"), "flags": 0}, Destination(A("10.77.0.10"), 68)),
    Case("inform", request("inform", ciaddr="10.77.0.10", flags=0),
         {**ACK_A, "ciaddr": A("10.77.0.10"), "yiaddr": A("0.0.0.0"), "flags": 0, **NO_LEASE},
         Destination(A("10.77.0.10"), 68)),
    Case("release-static", request("release", ciaddr="10.77.0.10", server="10.77.0.1"), None,
         reason="a static address stays reserved"),
    Case("decline-static", request("decline", requested="10.77.0.10", server="10.77.0.1"), None,
         reason="address conflict"),
    Case("other-segment-host", request("discover", MAC_X), None,
         reason="10.0.0.10/24 is not on the network this request came from (10.77.0.1)"),
    Case("offer-from-client-ignored", request("offer"), None, reason="not a client message"),
    # -- full mode: pools ---------------------------------------------------------------
    Case("unknown-ignored", request("discover", MAC_U, **PXE_BIOS), None, reason="not in the data source"),
    Case("unknown-local-pool", request("discover", MAC_U, **PXE_BIOS),
         {"message_type": MessageType.OFFER, "yiaddr": A("10.77.0.100"), "boot_file": "lpxelinux.0",
          "router": A("10.77.0.1"), "lease_seconds": 600, "hostname": None}, BCAST, unknown="local"),
    Case("known-without-address-pool", request("discover", MAC_B),
         {"message_type": MessageType.OFFER, "yiaddr": A("10.77.0.100"), "boot_file": "lpxelinux.0"}, BCAST),
    Case("pool-honours-requested", request("discover", MAC_B, requested="10.77.0.102"),
         {"yiaddr": A("10.77.0.102")}, BCAST),
    Case("pool-skips-static-address", request("discover", MAC_B, requested="10.77.0.101"),
         {"yiaddr": A("10.77.0.100")}, BCAST),
    Case("pool-init-reboot-ack", request("request", MAC_B, requested="10.77.0.102"),
         {"message_type": MessageType.ACK, "yiaddr": A("10.77.0.102"), "lease_seconds": 600}, BCAST),
    Case("pool-request-outside-pool-nak", request("request", MAC_B, requested="10.77.0.50"),
         {"message_type": MessageType.NAK, "message": "10.77.0.50 is not free for this client"}, BCAST),
    Case("pool-request-other-network-nak", request("request", MAC_B, requested="192.168.1.5"),
         {"message_type": MessageType.NAK, "message": "192.168.1.5 is not on 10.77.0.0/24"}, BCAST),
    # -- relayed --------------------------------------------------------------------------
    Case("relayed-static", request("discover", MAC_R, giaddr="10.88.0.1", relay_info=OPTION82, **PXE_UEFI),
         {"message_type": MessageType.OFFER, "yiaddr": A("10.88.0.10"), "giaddr": RELAY, "router": RELAY,
          "boot_file": "ipxe.efi", "relay_agent_information": OPTION82, "lease_seconds": 3600},
         Destination(RELAY, 67), arrival=RELAYED),
    Case("relayed-pool", request("discover", MAC_U, giaddr="10.88.0.1"),
         {"yiaddr": A("10.88.0.100"), "giaddr": RELAY, "subnet_mask": A("255.255.255.0")},
         Destination(RELAY, 67), unknown="local", arrival=RELAYED),
    Case("relayed-wrong-segment", request("discover", MAC_A, giaddr="10.88.0.1"), None, arrival=RELAYED,
         reason="is not on the network this request came from (10.88.0.1)"),
    Case("relay-mode-relayed", request("discover", MAC_R, giaddr="10.88.0.1"),
         {"yiaddr": A("10.88.0.10"), "giaddr": RELAY}, Destination(RELAY, 67), mode="relay", arrival=RELAYED),
    Case("relay-mode-nak-to-relay", request("request", MAC_R, giaddr="10.88.0.1", requested="10.88.0.11"),
         {"message_type": MessageType.NAK, "giaddr": RELAY}, Destination(RELAY, 67), mode="relay",
         arrival=RELAYED),
    Case("relay-mode-direct-ignored", request("discover", MAC_A), None, mode="relay",
         reason="only requests forwarded by a relay agent"),
    # -- proxy mode -----------------------------------------------------------------------
    Case("proxy-bios", request("discover", uuid=UUID, **PXE_BIOS),
         {"message_type": MessageType.OFFER, "boot_file": "lpxelinux.0", "client_uuid": UUID, **PROXY}, BCAST,
         mode="proxy"),
    Case("proxy-uefi", request("discover", **PXE_UEFI),
         {"message_type": MessageType.OFFER, "boot_file": "ipxe.efi", "client_uuid": None, **PROXY}, BCAST,
         mode="proxy"),
    Case("proxy-ipxe", request("discover", **IPXE),
         {"message_type": MessageType.OFFER, "boot_file": f"{URL}/boot/ipxe/{MAC_A}", **PROXY}, BCAST,
         mode="proxy"),
    Case("proxy-uefi-http", request("discover", **HTTP_UEFI),
         {"message_type": MessageType.OFFER, "boot_file": f"{URL}/boot/ipxe.efi",
          **{**PROXY, "vendor_class": b"HTTPClient", "pxe_options": ()}}, BCAST, mode="proxy"),
    Case("proxy-unknown-local", request("discover", MAC_U, **PXE_BIOS),
         {"message_type": MessageType.OFFER, "boot_file": "lpxelinux.0", **PROXY}, BCAST, mode="proxy",
         unknown="local"),
    Case("proxy-boot-server", request("request", ciaddr="10.77.0.120", boot_item=b"\x80\x00\x00\x00",
                                      uuid=UUID, flags=0, **PXE_UEFI),
         {"message_type": MessageType.ACK, "boot_file": "ipxe.efi", "ciaddr": A("10.77.0.120"),
          **{**PROXY, "pxe_options": ((PxeOption.DISCOVERY_CONTROL, b"\x08"),
                                      (PxeOption.BOOT_ITEM, b"\x80\x00\x00\x00"))}},
         Destination(A("10.77.0.120"), 68), mode="proxy", arrival=BOOT_SERVER),
    Case("proxy-not-pxe", request("discover"), None, mode="proxy", reason="not a PXE client"),
    Case("proxy-request-on-67", request("request", requested="10.77.0.120", **PXE_BIOS), None, mode="proxy",
         reason="the site's DHCP server handles DHCPREQUEST"),
    Case("proxy-unknown-ignored", request("discover", MAC_U, **PXE_BIOS), None, mode="proxy",
         reason="not in the data source"),
    Case("proxy-arm64", request("discover", **ARM64), None, mode="proxy", reason="architecture 11 (EFI_ARM64)"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_responder(world: World, case: Case) -> None:
    sent = world.dhcp(case.mode, case.unknown).process(case.packet, case.arrival)
    assert case.reason in sent.outcome.reason
    if case.expect is None:
        assert sent.data is None, sent.outcome
        return
    assert sent.data is not None, sent.outcome
    reply = parse_reply(sent.data)
    assert {name: getattr(reply, name) for name in case.expect} == case.expect
    assert sent.destination == case.where


def test_pool_lifecycle(world: World) -> None:
    """Offers hold, leases bind, renew, release, decline and expire (fake clock)."""
    dhcp = world.dhcp("full", "local")
    u1, u2, u3 = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"

    def ask(*args: Any, **kwargs: Any) -> DhcpReply | None:
        sent = dhcp.process(request(*args, **kwargs), DIRECT)
        return None if sent.data is None else parse_reply(sent.data)

    def offered(mac: str) -> IPv4Address | None:
        reply = ask("discover", mac)
        return None if reply is None else reply.yiaddr

    assert offered(u1) == A("10.77.0.100")
    assert offered(u1) == A("10.77.0.100")  # a retransmission gets the same offer
    assert ask("request", u1, requested="10.77.0.100", server="10.77.0.1").message_type == MessageType.ACK
    assert offered(u2) == A("10.77.0.102")  # .101 is SN-P's static address
    assert offered(u3) is None  # exhausted: u2's offer holds .102
    world.tick(61)
    assert offered(u3) == A("10.77.0.102")  # u2's offer lapsed
    renew = ask("request", u1, ciaddr="10.77.0.100", flags=0)
    assert (renew.message_type, renew.yiaddr, renew.lease_seconds) == (MessageType.ACK, A("10.77.0.100"), 600)
    assert ask("request", u2, requested="10.77.0.102").message_type == MessageType.NAK  # u3 holds it
    # u3 chose another server: its offer is withdrawn and .102 is free again.
    assert ask("request", u3, requested="192.168.0.7", server="192.168.0.1") is None
    assert offered(u2) == A("10.77.0.102")
    assert ask("request", u2, requested="10.77.0.102", server="10.77.0.1").message_type == MessageType.ACK
    # RELEASE frees .100 at once; the same client would get it back, another one may take it.
    assert ask("release", u1, ciaddr="10.77.0.100", server="10.77.0.1") is None
    assert offered(u3) == A("10.77.0.100")
    # DECLINE quarantines the address for the lease time.
    assert ask("decline", u3, requested="10.77.0.100", server="10.77.0.1") is None
    assert offered(u1) is None and offered(u3) is None
    world.tick(601)  # quarantine over, and u2's lease ran out too
    assert offered(u3) in (A("10.77.0.100"), A("10.77.0.102"))


def test_concurrent_daemons_never_share_an_address(world: World) -> None:
    """Eight responders (as if on eight machines) race for a 3-address pool."""
    subnet = leases.parse_subnets(SUBNETS)[0]
    results: list[IPv4Address | None] = []
    barrier = threading.Barrier(8)

    def race(index: int) -> None:
        barrier.wait()
        with world.services.db.write() as session:
            lease = leases.offer(session, subnet, f"02:00:00:00:01:{index:02x}", utcnow())
        results.append(None if lease is None else lease.ip)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    given = [ip for ip in results if ip is not None]
    assert sorted(given) == [A("10.77.0.100"), A("10.77.0.102")]  # .101 is static
    assert results.count(None) == 6


def test_timeline_gets_one_line_per_decision_not_per_retransmission(world: World, arm: Callable[..., str]) -> None:
    dhcp = world.dhcp("full")
    for _ in range(3):
        dhcp.process(request("discover", **PXE_BIOS), DIRECT)
    dhcp.process(request("request", requested="10.77.0.10", server="10.77.0.1", **PXE_BIOS), DIRECT)
    dhcp.process(request("request", requested="10.77.0.10", server="10.77.0.1", **PXE_BIOS), DIRECT)
    messages = [e["message"] for e in world.events("SN-A")]
    assert messages == ["DHCP: offered 10.77.0.10, boot file lpxelinux.0",
                        "DHCP: acknowledged 10.77.0.10 for 600 s, boot file lpxelinux.0"]
    # Arming changes the reason on the very next packet (the loader is the same).
    arm("SN-A")
    sent = dhcp.process(request("discover", **PXE_BIOS), DIRECT)
    assert sent.outcome.reason.startswith("host SN-A is armed")
    world.tick(61)
    dhcp.process(request("discover", **PXE_BIOS), DIRECT)
    events = world.events("SN-A")
    assert events[-1]["message"] == "DHCP: offered 10.77.0.10, boot file lpxelinux.0"
    assert events[-1]["data"]["reason"].startswith("host SN-A is armed")
    # Ignored packets of a known host are on its timeline too.
    world.dhcp("proxy").process(request("discover", **ARM64), DIRECT)
    assert world.events("SN-A")[-1]["message"].startswith("proxyDHCP: ignored DHCPDISCOVER: no boot file")


def test_an_edit_takes_effect_on_the_next_packet(world: World) -> None:
    dhcp = world.dhcp("full")
    assert parse_reply(dhcp.process(request("discover"), DIRECT).data or b"").yiaddr == A("10.77.0.10")
    response = world.client.patch("/api/v1/hosts/SN-A", json={"ip": "10.77.0.11"}, headers=world.auth)
    assert response.status_code == 200, response.get_json()
    assert parse_reply(dhcp.process(request("discover"), DIRECT).data or b"").yiaddr == A("10.77.0.11")
    response = world.client.delete("/api/v1/hosts/SN-A", headers=world.auth)
    assert response.status_code in (200, 204), response.get_json()
    assert dhcp.process(request("discover"), DIRECT).data is None


def test_relay_mode_needs_a_server_address(world: World) -> None:
    with pytest.raises(ConfigError, match="netboot_address"):
        world.dhcp("relay", netboot_address="")


def _free_port_pair() -> int:
    """A UDP port P with P+1 free too (server and client port, as 67/68)."""
    import socket

    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port < 65535:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                    other.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free pair of UDP ports")


def test_service_answers_over_udp_and_stops_promptly(world: World) -> None:
    """The socket loop itself, on loopback (no root needed): an INFORM from
    127.0.0.1 is answered by unicast to ciaddr:port+1, and stop() returns with
    the thread gone and the sockets closed."""
    import socket

    port = _free_port_pair()
    answered = metric("provisiond_dhcp_packets_total", outcome="answered")
    service = world.dhcp("full", "local", dhcp_port=port, netboot_address="", netboot_interface="",
                         dhcp_subnets=[{"network": "127.0.0.0/8", "dns": ["127.0.0.53"]}])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", port + 1))
        peer.settimeout(30)
        service.start()
        try:
            peer.sendto(request("inform", MAC_U, ciaddr="127.0.0.1", flags=0), ("127.0.0.1", port))
            reply = parse_reply(peer.recv(2048))
        finally:
            service.stop()
    assert (reply.message_type, reply.server_id, reply.ciaddr, reply.yiaddr) == \
        (MessageType.ACK, A("127.0.0.1"), A("127.0.0.1"), A("0.0.0.0"))
    assert (reply.subnet_mask, reply.dns_servers, reply.boot_file) == \
        (A("255.0.0.0"), (A("127.0.0.53"),), "lpxelinux.0")
    assert service._thread is None and service._sockets == []
    assert metric("provisiond_dhcp_packets_total", outcome="answered") == answered + 1  # counted once sent
    service.stop()  # idempotent


def _backlog(service: DhcpService, packets: list[bytes]) -> tuple[Any, list[tuple[str, str]]]:
    """A UDP socket with ``packets`` queued on it, and the (message, MAC)
    pairs the service answers, in order, once it serves that socket."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        for packet in packets:
            peer.sendto(packet, sock.getsockname())
    answered: list[tuple[str, str]] = []
    real = service.answer

    def answer(request: Any, arrival: Arrival) -> Any:
        answered.append((str(request.message_type), request.mac))
        return real(request, arrival)

    service.answer = answer  # type: ignore[method-assign]
    return sock, answered


def test_a_backlog_is_served_continuing_exchanges_first(world: World) -> None:
    """Requests that continue an exchange go before the DISCOVERs read with
    them, and DISCOVERs newest first (unknown MACs, ignored: nothing is sent)."""
    service = world.dhcp("full", "ignore")
    sock, answered = _backlog(service, [request("discover", "52:54:00:ff:00:01"),
                                        request("request", "52:54:00:ff:00:02", requested="10.77.0.60"),
                                        request("discover", "52:54:00:ff:00:03"),
                                        request("inform", "52:54:00:ff:00:04", ciaddr="10.77.0.61")])
    with sock:
        service._serve_backlog(sock)
    assert answered == [("DHCPREQUEST", "52:54:00:ff:00:02"), ("DHCPINFORM", "52:54:00:ff:00:04"),
                        ("DHCPDISCOVER", "52:54:00:ff:00:03"), ("DHCPDISCOVER", "52:54:00:ff:00:01")]


def test_discovers_are_shed_when_answering_falls_behind(world: World, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A round over its time with more packets waiting sheds the DISCOVERs it
    has not answered (said once in a WARNING); a REQUEST is still answered.
    The round's limits are made tiny here instead of flooding the socket."""
    from provisiond.netboot import dhcp

    monkeypatch.setattr(dhcp, "ROUND_SECONDS", -1.0)  # every round is already late
    monkeypatch.setattr(dhcp, "DRAIN_MAX", 3)
    service = world.dhcp("full", "ignore")
    packets = [request("discover", f"52:54:00:ff:01:{i:02x}") for i in range(4)]
    sock, answered = _backlog(service, [*packets[:2], request("request", "52:54:00:ff:01:09",
                                                               requested="10.77.0.60"), *packets[2:]])
    shed = metric("provisiond_dhcp_packets_total", outcome="shed")
    with sock:
        with caplog.at_level("WARNING", logger="provisiond.netboot.dhcp"):
            service._serve_backlog(sock)  # reads 3, two more wait: the REQUEST only
        assert answered == [("DHCPREQUEST", "52:54:00:ff:01:09")]
        assert "DHCP overloaded: 2 DISCOVERs shed unanswered" in caplog.text
        assert metric("provisiond_dhcp_packets_total", outcome="shed") == shed + 2
        service._serve_backlog(sock)  # the last two, nothing waits after them: answered
    assert answered[1:] == [("DHCPDISCOVER", "52:54:00:ff:01:03"), ("DHCPDISCOVER", "52:54:00:ff:01:02")]


def test_packets_are_counted_by_what_became_of_them(world: World) -> None:
    """Malformed, ignored, failed; answered and shed are counted on the
    socket path (the UDP and backlog tests above)."""
    def count(outcome: str) -> float:
        return metric("provisiond_dhcp_packets_total", outcome=outcome)

    before = {outcome: count(outcome) for outcome in ("malformed", "ignored", "failed", "answered")}
    service = world.dhcp("full", "ignore")
    assert service.process(b"\x01" * 100, DIRECT).data is None
    assert service.process(request("discover", MAC_U), DIRECT).data is None  # unknown MAC, unknown_mac: ignore
    assert service.process(request("discover", MAC_A), DIRECT).data is not None  # built, not sent: not counted
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # sending to a closed socket fails
        sock.close()
        service._answer_and_send(sock, parse_request(request("discover", MAC_A)), DIRECT)
    assert {outcome: count(outcome) - before[outcome] for outcome in before} == {
        "malformed": 1, "ignored": 1, "failed": 1, "answered": 0}


def test_off_mode_starts_nothing(world: World) -> None:
    service = world.dhcp("off")
    assert service.handler is None
    service.start()
    service.stop()
