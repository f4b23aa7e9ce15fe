"""DHCP on the wire: bytes → :class:`DhcpRequest`, :class:`DhcpReply` → bytes.

A pure codec (RFC 2131 / RFC 2132, the PXE 2.1 extensions of RFC 4578 and
the Intel PXE specification): no sockets, no database, no clock. The
fixed BOOTP header is one :mod:`struct` layout and the options a
type-length-value walk, so a packet costs tens of microseconds (scapy's
generic layers took about 0.3 ms to dissect a request and 0.4 ms to build a
reply, most of a DHCP exchange's CPU). The tests hold this codec to scapy's
reading of the same bytes, both ways (tests/netboot/test_dhcp.py), and feed
golden packets in and compare typed fields out.

Every option number is an :class:`Option`; every field comment names the
option it carries.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

#: RFC 2131 §3: the first four octets of the options field.
MAGIC_COOKIE = b"\x63\x82\x53\x63"
#: Fixed BOOTP header (236 octets) plus the magic cookie.
HEADER_LENGTH = 240
#: RFC 1542 §2.1: some relays and old PXE ROMs drop BOOTP messages shorter
#: than 300 octets, so replies are padded to it (ISC dhcpd does the same).
MIN_REPLY_LENGTH = 300
#: The ``file`` header field is 128 octets, NUL-terminated.
FILE_FIELD_LENGTH = 128
BROADCAST_FLAG = 0x8000
ZERO = IPv4Address(0)
BOOTREQUEST, BOOTREPLY = 1, 2
HTYPE_ETHERNET = 1
#: RFC 2131 §2: op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr,
#: siaddr, giaddr, chaddr, sname, file; then the magic cookie.
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s4s")
PAD, END = 0, 255


class MessageType(enum.IntEnum):
    """Option 53, RFC 2132 §9.6."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8

    def __str__(self) -> str:
        return f"DHCP{self.name}"


class Option(enum.IntEnum):
    """The DHCP option numbers provisiond reads or writes (RFC 2132 unless noted)."""

    SUBNET_MASK = 1
    ROUTER = 3
    DNS_SERVERS = 6
    HOSTNAME = 12
    VENDOR_SPECIFIC = 43  # PXE: encapsulated PxeOption sub-options
    REQUESTED_ADDRESS = 50
    LEASE_TIME = 51
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_REQUEST_LIST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58  # T1
    REBINDING_TIME = 59  # T2
    VENDOR_CLASS = 60  # "PXEClient:Arch:00000:UNDI:002001", "HTTPClient:..."
    CLIENT_ID = 61
    TFTP_SERVER_NAME = 66
    BOOTFILE_NAME = 67
    USER_CLASS = 77  # RFC 3004; iPXE sends "iPXE"
    RELAY_AGENT_INFORMATION = 82  # RFC 3046; echoed back to the relay
    CLIENT_ARCHITECTURE = 93  # RFC 4578 §2.1
    CLIENT_NDI = 94  # RFC 4578 §2.2
    CLIENT_UUID = 97  # RFC 4578 §2.3; echoed in proxyDHCP answers
    SUBNET_SELECTION = 118  # RFC 3011
    IPXE_ENCAPSULATED = 175  # iPXE's own feature options: present only in iPXE


class Architecture(enum.IntEnum):
    """Option 93 values (RFC 4578 §2.1, IANA "Processor Architecture Types")."""

    BIOS = 0  # Intel x86PC
    EFI_IA32 = 6
    EFI_BC = 7  # what x86-64 UEFI firmware sends in practice (the RFC's "EFI BC")
    EFI_X86_64 = 9
    EFI_ARM32 = 10
    EFI_ARM64 = 11
    EFI_X86_64_HTTP = 16  # UEFI HTTP boot; the boot file is a URL


class PxeOption(enum.IntEnum):
    """Sub-options of option 43 for PXE clients (PXE 2.1 specification, table 2-1)."""

    DISCOVERY_CONTROL = 6
    BOOT_SERVERS = 8
    BOOT_MENU = 9
    MENU_PROMPT = 10
    BOOT_ITEM = 71


#: PXE_DISCOVERY_CONTROL bit 3: "if a boot file name is present in the offer,
#: download it; do not prompt, show a menu or run boot server discovery".
DISCOVERY_USE_BOOT_FILE = 0x08


class MalformedPacket(ValueError):
    """Not a DHCP request provisiond can read."""


def _mac(chaddr: bytes) -> str:
    return ":".join(f"{b:02x}" for b in chaddr[:6])


def _mac_bytes(mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"not an Ethernet MAC address: {mac!r}")
    return raw


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class DhcpRequest:
    """A client's (or a relay's) BOOTREQUEST, as provisiond needs it."""

    message_type: MessageType  # option 53
    xid: int
    mac: str  # chaddr, lower-case aa:bb:cc:dd:ee:ff
    flags: int = 0
    hops: int = 0
    secs: int = 0
    ciaddr: IPv4Address = ZERO
    giaddr: IPv4Address = ZERO  # set by a relay agent
    requested_address: IPv4Address | None = None  # option 50
    server_id: IPv4Address | None = None  # option 54
    hostname: str | None = None  # option 12
    parameter_request_list: tuple[int, ...] = ()  # option 55
    max_message_size: int | None = None  # option 57
    vendor_class: bytes = b""  # option 60
    client_id: bytes | None = None  # option 61
    user_class: bytes = b""  # option 77
    vendor_specific: bytes = b""  # option 43 (a PXE client's boot item, on port 4011)
    relay_agent_information: bytes | None = None  # option 82
    architecture: int | None = None  # option 93 (first entry)
    client_uuid: bytes | None = None  # option 97, raw (type octet + 16-octet GUID)
    subnet_selection: IPv4Address | None = None  # option 118
    ipxe_options: bytes | None = None  # option 175

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & BROADCAST_FLAG)

    @property
    def relayed(self) -> bool:
        return self.giaddr != ZERO

    @property
    def pxe_client(self) -> bool:
        """Vendor class ``PXEClient...`` (PXE 2.1 §2.2.5): a network boot ROM or loader."""
        return self.vendor_class.startswith(b"PXEClient")

    @property
    def http_client(self) -> bool:
        """Vendor class ``HTTPClient...``: UEFI HTTP boot (UEFI 2.5+ §24.7)."""
        return self.vendor_class.startswith(b"HTTPClient")

    @property
    def ipxe(self) -> bool:
        """iPXE says so in its user class (option 77) and sends option 175."""
        return b"iPXE" in self.user_class or self.ipxe_options is not None

    @property
    def boot_item(self) -> bytes | None:
        """PXE_BOOT_ITEM (option 43, sub-option 71) of a boot server request."""
        return pxe_suboptions(self.vendor_specific).get(PxeOption.BOOT_ITEM)


def read_options(data: bytes, start: int = HEADER_LENGTH) -> dict[int, bytes]:
    """The option TLVs from ``start`` to the end option (or the end of the
    packet) → {number: octets}. A repeated option is one value, its parts
    concatenated (RFC 3396); a length that runs past the packet is a
    :class:`MalformedPacket`."""
    found: dict[int, bytes] = {}
    i, end = start, len(data)
    while i < end:
        code = data[i]
        if code == END:
            break
        if code == PAD:
            i += 1
            continue
        if i + 1 >= end or i + 2 + data[i + 1] > end:
            raise MalformedPacket("the options run past the end of the packet")
        value = data[i + 2:i + 2 + data[i + 1]]
        found[code] = found[code] + value if code in found else value
        i += 2 + len(value)
    return found


def _address(options: dict[int, bytes], code: Option, what: str) -> IPv4Address | None:
    value = options.get(code)
    if value is None:
        return None
    if len(value) != 4:
        raise MalformedPacket(f"{what} is not an IPv4 address: {value!r}")
    return IPv4Address(value)


def parse_request(data: bytes) -> DhcpRequest:
    """Decode a BOOTREQUEST; :class:`MalformedPacket` says why one is refused."""
    if len(data) < HEADER_LENGTH:
        raise MalformedPacket(f"{len(data)} octets is shorter than a BOOTP header")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, _yiaddr, _siaddr, giaddr, chaddr, _sname, _file,
     cookie) = _HEADER.unpack_from(data)
    if cookie != MAGIC_COOKIE:
        raise MalformedPacket("no DHCP magic cookie (a plain BOOTP request)")
    if op != BOOTREQUEST:
        raise MalformedPacket(f"op {op} is not BOOTREQUEST")
    if htype != HTYPE_ETHERNET or hlen != 6:
        raise MalformedPacket(f"hardware type {htype} / length {hlen} is not Ethernet")
    options = read_options(data)
    kind = options.get(Option.MESSAGE_TYPE)
    try:
        if kind is None or len(kind) != 1:
            raise ValueError
        message_type = MessageType(kind[0])
    except ValueError:
        shown = kind[0] if kind is not None and len(kind) == 1 else kind
        raise MalformedPacket(f"missing or unknown message type {shown!r}") from None
    arch = options.get(Option.CLIENT_ARCHITECTURE, b"")
    hostname = options.get(Option.HOSTNAME)
    size = options.get(Option.MAX_MESSAGE_SIZE)
    return DhcpRequest(
        message_type=message_type,
        xid=xid,
        mac=_mac(chaddr),
        flags=flags,
        hops=hops,
        secs=secs,
        ciaddr=IPv4Address(ciaddr),
        giaddr=IPv4Address(giaddr),
        requested_address=_address(options, Option.REQUESTED_ADDRESS, "option 50"),
        server_id=_address(options, Option.SERVER_ID, "option 54"),
        hostname=None if hostname is None else hostname.decode("utf-8", "replace").rstrip("\0"),
        parameter_request_list=tuple(options.get(Option.PARAMETER_REQUEST_LIST, b"")),
        max_message_size=int.from_bytes(size, "big") if size is not None and len(size) == 2 else None,
        vendor_class=options.get(Option.VENDOR_CLASS, b""),
        client_id=options.get(Option.CLIENT_ID),
        user_class=options.get(Option.USER_CLASS, b""),
        vendor_specific=options.get(Option.VENDOR_SPECIFIC, b""),
        relay_agent_information=options.get(Option.RELAY_AGENT_INFORMATION),
        architecture=int.from_bytes(arch[:2], "big") if len(arch) >= 2 else None,
        client_uuid=options.get(Option.CLIENT_UUID),
        subnet_selection=_address(options, Option.SUBNET_SELECTION, "option 118"),
        ipxe_options=options.get(Option.IPXE_ENCAPSULATED),
    )


def pxe_suboptions(raw: bytes) -> dict[int, bytes]:
    """Option 43 of a PXE message → {sub-option: value} (stops at 255 or a short TLV)."""
    found: dict[int, bytes] = {}
    i = 0
    while i + 1 < len(raw):
        code = raw[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        length = raw[i + 1]
        found[code] = raw[i + 2:i + 2 + length]
        i += 2 + length
    return found


def encode_pxe_suboptions(items: tuple[tuple[int, bytes], ...]) -> bytes:
    return b"".join(bytes([code, len(value)]) + value for code, value in items) + b"\xff"


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class DhcpReply:
    """A BOOTREPLY to send: what provisiond decided, field by field."""

    message_type: MessageType  # option 53
    xid: int
    mac: str  # chaddr
    server_id: IPv4Address  # option 54
    flags: int = 0  # copied from the request
    ciaddr: IPv4Address = ZERO
    yiaddr: IPv4Address = ZERO  # "your address": 0.0.0.0 in proxyDHCP and INFORM answers
    siaddr: IPv4Address = ZERO  # next server: where the boot file is fetched by TFTP
    giaddr: IPv4Address = ZERO  # copied from a relayed request
    sname: str = ""
    #: The ``file`` field; a name too long for it goes in option 67 instead.
    boot_file: str = ""
    subnet_mask: IPv4Address | None = None  # option 1
    router: IPv4Address | None = None  # option 3
    dns_servers: tuple[IPv4Address, ...] = ()  # option 6
    hostname: str | None = None  # option 12
    lease_seconds: int | None = None  # option 51
    renewal_seconds: int | None = None  # option 58 (T1)
    rebinding_seconds: int | None = None  # option 59 (T2)
    message: str | None = None  # option 56: why a NAK
    vendor_class: bytes | None = None  # option 60: "PXEClient" / "HTTPClient" echoed
    pxe_options: tuple[tuple[int, bytes], ...] = ()  # option 43 (PxeOption sub-options)
    relay_agent_information: bytes | None = None  # option 82, echoed to the relay
    client_uuid: bytes | None = None  # option 97, echoed for PXE clients

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & BROADCAST_FLAG)


def build_reply(reply: DhcpReply) -> bytes:
    """Encode a reply: options in a fixed order, 53 first (some PXE ROMs
    read it from the first position only), padded to 300 octets."""
    file_field, option67 = reply.boot_file, None
    if len(reply.boot_file.encode()) >= FILE_FIELD_LENGTH:
        file_field, option67 = "", reply.boot_file
    options = [bytes([Option.MESSAGE_TYPE, 1, reply.message_type, Option.SERVER_ID, 4]), reply.server_id.packed]

    def add(code: Option, value: bytes | None) -> None:
        if value is not None:  # a value over 255 octets goes in pieces (RFC 3396)
            for i in range(0, max(len(value), 1), 255):
                piece = value[i:i + 255]
                options.append(bytes([code, len(piece)]) + piece)

    def number(value: int | None) -> bytes | None:
        return None if value is None else value.to_bytes(4, "big")

    add(Option.LEASE_TIME, number(reply.lease_seconds))
    add(Option.RENEWAL_TIME, number(reply.renewal_seconds))
    add(Option.REBINDING_TIME, number(reply.rebinding_seconds))
    add(Option.SUBNET_MASK, None if reply.subnet_mask is None else reply.subnet_mask.packed)
    add(Option.ROUTER, None if reply.router is None else reply.router.packed)
    add(Option.DNS_SERVERS, b"".join(a.packed for a in reply.dns_servers) or None)
    add(Option.HOSTNAME, None if not reply.hostname else reply.hostname.encode()[:255])
    add(Option.MESSAGE, None if reply.message is None else reply.message.encode()[:255])
    add(Option.VENDOR_CLASS, reply.vendor_class)
    add(Option.VENDOR_SPECIFIC, encode_pxe_suboptions(reply.pxe_options) if reply.pxe_options else None)
    add(Option.CLIENT_UUID, reply.client_uuid)
    add(Option.BOOTFILE_NAME, None if option67 is None else option67.encode()[:255])
    # RFC 3046 §2.2: the relay agent option goes last, as the relay appended it.
    add(Option.RELAY_AGENT_INFORMATION, reply.relay_agent_information)
    options.append(bytes([END]))
    header = _HEADER.pack(
        BOOTREPLY, HTYPE_ETHERNET, 6, 0, reply.xid, 0, reply.flags, reply.ciaddr.packed, reply.yiaddr.packed,
        reply.siaddr.packed, reply.giaddr.packed, _mac_bytes(reply.mac), reply.sname.encode()[:63],
        file_field.encode()[:FILE_FIELD_LENGTH - 1], MAGIC_COOKIE)
    data = header + b"".join(options)
    return data + b"\0" * max(0, MIN_REPLY_LENGTH - len(data))


def parse_reply(data: bytes) -> DhcpReply:
    """Decode a BOOTREPLY (the inverse of :func:`build_reply`; tests and
    diagnostics read what was sent with it)."""
    if len(data) < HEADER_LENGTH:
        raise MalformedPacket("not a DHCP BOOTREPLY")
    (op, _htype, _hlen, _hops, xid, _secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file_field,
     cookie) = _HEADER.unpack_from(data)
    if cookie != MAGIC_COOKIE or op != BOOTREPLY:
        raise MalformedPacket("not a DHCP BOOTREPLY")
    raw = read_options(data)

    def number(code: Option) -> int | None:
        return None if code not in raw else int.from_bytes(raw[code], "big")

    def address(code: Option) -> IPv4Address | None:
        return None if code not in raw else IPv4Address(raw[code][:4])

    dns = raw.get(Option.DNS_SERVERS, b"")
    boot_file = file_field.split(b"\0", 1)[0].decode()
    return DhcpReply(
        message_type=MessageType(raw[Option.MESSAGE_TYPE][0]),
        xid=xid,
        mac=_mac(chaddr),
        server_id=IPv4Address(raw[Option.SERVER_ID]),
        flags=flags,
        ciaddr=IPv4Address(ciaddr), yiaddr=IPv4Address(yiaddr),
        siaddr=IPv4Address(siaddr), giaddr=IPv4Address(giaddr),
        sname=sname.split(b"\0", 1)[0].decode(),
        boot_file=boot_file or raw.get(Option.BOOTFILE_NAME, b"").decode(),
        subnet_mask=address(Option.SUBNET_MASK),
        router=address(Option.ROUTER),
        dns_servers=tuple(IPv4Address(dns[i:i + 4]) for i in range(0, len(dns) - 3, 4)),
        hostname=raw[Option.HOSTNAME].decode() if Option.HOSTNAME in raw else None,
        lease_seconds=number(Option.LEASE_TIME),
        renewal_seconds=number(Option.RENEWAL_TIME),
        rebinding_seconds=number(Option.REBINDING_TIME),
        message=raw[Option.MESSAGE].decode() if Option.MESSAGE in raw else None,
        vendor_class=raw.get(Option.VENDOR_CLASS),
        pxe_options=tuple((k, v) for k, v in pxe_suboptions(raw.get(Option.VENDOR_SPECIFIC, b"")).items()),
        relay_agent_information=raw.get(Option.RELAY_AGENT_INFORMATION),
        client_uuid=raw.get(Option.CLIENT_UUID),
    )
