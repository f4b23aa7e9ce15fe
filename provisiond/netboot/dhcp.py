"""The DHCP responder of ``provisiond netboot``: full, proxy or relay.

Each packet goes validate → decide → build → send, and every exit says why:

* :func:`provisiond.netboot.dhcp_codec.parse_request` turns bytes into a
  :class:`DhcpRequest` (a malformed packet is logged and dropped);
* the handler chosen once at start-up (:class:`FullHandler`, the same
  restricted to relayed requests for ``relay``, or :class:`ProxyHandler`)
  asks the data source what this MAC should boot *now*
  (:func:`~provisiond.inventory.bootplan.plan_for_mac`: no sync step, so
  arming or editing a host takes effect on its very next packet) and returns
  an :class:`Outcome`: a :class:`DhcpReply` to send, or none, and the reason;
* :class:`DhcpService` logs the outcome, writes it to the host's timeline
  (once, not once per retransmission), encodes the reply and sends it where
  RFC 2131 §4.1 says.

Every packet read from a socket is counted once in
``provisiond_dhcp_packets_total`` (:mod:`provisiond.metrics`): malformed
when it cannot be decoded, ignored when the handler decided not to answer,
answered once the reply has been sent, shed when dropped under overload,
failed when answering or sending raised.

Modes (``settings.dhcp_mode``):

full
    Addresses and boot information. Hosts in the data source get their
    static address (``ip``/``prefix``/``gateway``/``dns``); clients without
    one get a pool address (:mod:`provisiond.netboot.leases`) when their
    subnet has a pool and they are allowed an answer at all (unknown MACs:
    ``unknown_mac: local``). Requests arriving through a relay are answered
    for the relay's subnet too.
relay
    As full, but only requests that came through a relay agent (giaddr set)
    are answered; the reply goes back to the relay (RFC 2131 §4.1).
proxy
    Beside the site's own DHCP server (PXE 2.1 §2.2.5, "proxyDHCP"): answers
    only PXE clients, with boot information and never an address, on port 67
    (DISCOVER → OFFER) and port 4011 (boot server REQUEST → ACK).
"""

from __future__ import annotations

import datetime as dt
import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Protocol

from provisiond import metrics
from provisiond.config import Settings
from provisiond.db import Database
from provisiond.errors import ConfigError
from provisiond.inventory.bootplan import BootAction, BootPlan, plan_for_mac
from provisiond.kickstart.profiles import ProfileStore
from provisiond.models import utcnow
from provisiond.netboot import leases
from provisiond.netboot.dhcp_codec import (
    DISCOVERY_USE_BOOT_FILE,
    ZERO,
    Architecture,
    DhcpReply,
    DhcpRequest,
    MalformedPacket,
    MessageType,
    PxeOption,
    build_reply,
    parse_request,
)
from provisiond.netboot.leases import Subnet
from provisiond.netboot.timeline import Timeline
from provisiond.vault import Vault

if TYPE_CHECKING:
    from provisiond.services import Services

log = logging.getLogger("provisiond.netboot.dhcp")

#: PXE 2.1 §2.2.6: PXE clients send boot server requests to this port.
PXE_PORT = 4011
BROADCAST = IPv4Address("255.255.255.255")
#: An identical timeline line for the same host within this window is not
#: written again (a client retransmitting DISCOVER every few seconds).
TIMELINE_WINDOW = dt.timedelta(seconds=60)
#: Under overload (see DhcpService._serve_backlog): datagrams read per
#: round, the time a round may take before waiting DISCOVERs are shed, how
#: often the shedding is summarised in the log, and the socket's buffer.
DRAIN_MAX = 1024
ROUND_SECONDS = 0.05
SHED_LOG_SECONDS = 5.0
RECEIVE_BUFFER = 1 << 20
#: Linux <netinet/in.h>; Python's socket module lacks IP_PKTINFO.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_PKTINFO = struct.Struct("=I4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr


# --------------------------------------------------------------------------- boot decision


@dataclass(frozen=True)
class BootFiles:
    """What each kind of firmware is told to load (from settings)."""

    bios: str  # settings.bios_boot_file: lpxelinux.0
    uefi: str  # settings.uefi_boot_file: ipxe.efi
    public_url: str  # iPXE and UEFI HTTP clients fetch over HTTP from here


@dataclass(frozen=True)
class BootChoice:
    firmware: str  # for the log: "BIOS", "UEFI", "UEFI HTTP", "iPXE"
    #: None: no boot file for this firmware (an architecture provisiond has no loader for).
    file: str | None
    #: Option 60 to echo: UEFI HTTP boot ignores an offer without "HTTPClient".
    vendor_class: bytes | None = None
    why_not: str = ""


def choose_boot(request: DhcpRequest, files: BootFiles) -> BootChoice:
    """The boot file for this client, from option 93 and iPXE's own marks.

    iPXE gets an HTTP script URL rather than a loader: giving it the loader
    again would chain-load iPXE into itself forever.
    """
    if request.ipxe:
        return BootChoice("iPXE", f"{files.public_url.rstrip('/')}/boot/ipxe/{request.mac}")
    arch = request.architecture
    if arch is None or arch == Architecture.BIOS:  # no option 93: a legacy PXE ROM or a plain client
        return BootChoice("BIOS", files.bios)
    if arch in (Architecture.EFI_BC, Architecture.EFI_X86_64):
        return BootChoice("UEFI", files.uefi)
    if arch == Architecture.EFI_X86_64_HTTP:
        return BootChoice("UEFI HTTP", f"{files.public_url.rstrip('/')}/boot/{files.uefi}", b"HTTPClient")
    try:
        name = Architecture(arch).name
    except ValueError:
        name = "unknown"
    return BootChoice(f"arch {arch}", None, why_not=f"no boot file for client architecture {arch} ({name})")


# --------------------------------------------------------------------------- packets in, outcomes out


@dataclass(frozen=True)
class Arrival:
    """Where a request came in: what the socket (and IP_PKTINFO) told us."""

    port: int  # the local port: dhcp_port or 4011
    source: tuple[str, int]  # the sender's address and port
    local_address: IPv4Address  # our address on the receiving interface (ipi_spec_dst)
    ifindex: int = 0
    interface: str = ""


@dataclass(frozen=True)
class Outcome:
    """A handler's decision about one request."""

    #: What was done ("offered 10.77.0.10, boot file lpxelinux.0", "ignored").
    summary: str
    #: Why, in words.
    reason: str
    reply: DhcpReply | None = None
    #: The known host concerned, whose timeline gets the line.
    serial: str | None = None
    #: Also worth a timeline line for that host.
    timeline: bool = True


def ignore(reason: str, serial: str | None = None, timeline: bool = True) -> Outcome:
    return Outcome("ignored", reason, None, serial, timeline)


class Handler(Protocol):
    """One mode's answer to a request: the single seam between the socket
    loop and the decision. Chosen once at start-up by :func:`make_handler`."""

    #: Short name for logs and the timeline ("DHCP", "proxyDHCP").
    label: str
    #: The UDP ports this mode listens on.
    ports: tuple[int, ...]

    def handle(self, request: DhcpRequest, arrival: Arrival) -> Outcome: ...


@dataclass(frozen=True)
class Context:
    """What the handlers need, built once from settings and services."""

    db: Database
    vault: Vault
    profiles: ProfileStore
    public_url: str
    files: BootFiles
    unknown: BootAction
    subnets: tuple[Subnet, ...]
    dhcp_port: int
    #: settings.netboot_address: server id and next-server; None: the address
    #: of the interface the request arrived on.
    address: IPv4Address | None
    clock: Callable[[], dt.datetime] = utcnow

    @classmethod
    def from_settings(cls, settings: Settings, db: Database, vault: Vault, profiles: ProfileStore,
                      clock: Callable[[], dt.datetime] = utcnow) -> Context:
        return cls(
            db=db, vault=vault, profiles=profiles, public_url=settings.public_url,
            files=BootFiles(settings.bios_boot_file, settings.uefi_boot_file, settings.public_url),
            unknown=BootAction.LOCAL if settings.unknown_mac == "local" else BootAction.IGNORE,
            subnets=leases.parse_subnets(settings.dhcp_subnets), dhcp_port=settings.dhcp_port,
            address=IPv4Address(settings.netboot_address) if settings.netboot_address else None,
            clock=clock,
        )

    def server_id(self, arrival: Arrival) -> IPv4Address:
        return self.address or arrival.local_address

    def plan(self, mac: str) -> BootPlan:
        # One statement on the loop's kept connection: what is committed now.
        return self.db.ask(lambda connection: plan_for_mac(
            connection, mac, vault=self.vault, profiles=self.profiles, public_url=self.public_url,
            unknown=self.unknown))


def _readable(sock: socket.socket) -> bool:
    """Whether a datagram waits on ``sock`` (without reading it)."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True  # an error is waiting: the next read reports it
    return True


def _boot_text(boot: BootChoice) -> str:
    return f"boot file {boot.file}" if boot.file else f"no boot file ({boot.why_not})"


# --------------------------------------------------------------------------- full (and relay)


@dataclass(frozen=True)
class Addressing:
    """The address and network settings one client is given."""

    ip: IPv4Address
    mask: IPv4Address
    router: IPv4Address | None
    dns: tuple[IPv4Address, ...]
    lease_seconds: int
    subnet: Subnet | None  # the pool's subnet, for a pool address


_CLIENT_MESSAGES = (MessageType.DISCOVER, MessageType.REQUEST, MessageType.DECLINE, MessageType.RELEASE,
                    MessageType.INFORM)


class FullHandler:
    """Addresses from the data source (static) or a pool, plus boot information."""

    label = "DHCP"

    def __init__(self, ctx: Context, relayed_only: bool = False) -> None:
        self.ctx = ctx
        self.relayed_only = relayed_only
        self.ports: tuple[int, ...] = (ctx.dhcp_port,)

    def handle(self, request: DhcpRequest, arrival: Arrival) -> Outcome:
        # validate
        if self.relayed_only and not request.relayed:
            return ignore("relay mode answers only requests forwarded by a relay agent (giaddr is 0.0.0.0)",
                          timeline=False)
        if request.message_type not in _CLIENT_MESSAGES:
            return ignore(f"{request.message_type} is not a client message", timeline=False)
        if arrival.port == PXE_PORT:
            return ignore("boot server requests (port 4011) are answered in proxy mode only", timeline=False)
        server_id = self.ctx.server_id(arrival)
        link = request.subnet_selection or (request.giaddr if request.relayed else arrival.local_address)
        subnet = leases.subnet_for(self.ctx.subnets, link)
        # decide
        plan = self.ctx.plan(request.mac)
        if plan.action == BootAction.IGNORE:
            return ignore(plan.reason, plan.serial)
        other = request.server_id is not None and request.server_id != server_id
        if other and request.message_type != MessageType.INFORM:
            if request.message_type == MessageType.REQUEST and subnet is not None and not plan.ip:
                with self.ctx.db.write() as session:
                    leases.withdraw_offer(session, subnet, request.mac, self.ctx.clock())
            return ignore(f"the client is talking to server {request.server_id}, not {server_id}",
                          plan.serial, timeline=False)
        boot = choose_boot(request, self.ctx.files)
        if request.message_type == MessageType.INFORM:
            return self._inform(request, plan, boot, server_id, link, subnet)
        if plan.ip:
            static = self._static(plan, link, subnet)
            if isinstance(static, str):
                return ignore(static, plan.serial)
            return self._static_answer(request, plan, boot, server_id, static)
        if subnet is None:
            return ignore(f"{plan.reason}; no static address, and no dhcp_subnets entry contains {link}", plan.serial)
        if subnet.pool is None:
            return ignore(f"{plan.reason}; no static address, and subnet {subnet.name} has no pool", plan.serial)
        return self._pool_answer(request, plan, boot, server_id, subnet)

    # -- static addresses ------------------------------------------------------

    def _static(self, plan: BootPlan, link: IPv4Address, subnet: Subnet | None) -> Addressing | str:
        assert plan.ip is not None
        ip = IPv4Address(plan.ip)
        prefix = plan.prefix
        if prefix is None and subnet is not None and ip in subnet.network:
            prefix = subnet.network.prefixlen
        if prefix is None:
            return f"host {plan.serial} has address {ip} but no prefix, and no dhcp_subnets entry contains it"
        network = leases.network_of(plan.ip, prefix)
        if link not in network:
            # Handing out an address of another segment would cut the host off.
            return f"host {plan.serial}'s address {ip}/{prefix} is not on the network this request came from ({link})"
        same = subnet if subnet is not None and ip in subnet.network else None
        router = IPv4Address(plan.gateway) if plan.gateway else (same.router if same else None)
        dns = tuple(IPv4Address(a) for a in plan.dns) if plan.dns else (same.dns if same else ())
        lease = same.lease_seconds if same else leases.DEFAULT_LEASE_SECONDS
        return Addressing(ip, network.netmask, router, dns, lease, None)

    def _static_answer(self, request: DhcpRequest, plan: BootPlan, boot: BootChoice, server_id: IPv4Address,
                       address: Addressing) -> Outcome:
        kind = request.message_type
        why = plan.reason
        if kind == MessageType.DISCOVER:
            reply = self._reply(request, MessageType.OFFER, server_id, boot, address, plan.hostname)
            return Outcome(f"offered {address.ip}, {_boot_text(boot)}", why, reply, plan.serial)
        if kind == MessageType.REQUEST:
            wanted = request.requested_address or (request.ciaddr if request.ciaddr != ZERO else None)
            if wanted is None:
                return ignore("a REQUEST naming no address (no option 50, ciaddr 0.0.0.0)", plan.serial)
            if wanted != address.ip:
                text = f"{wanted} is not this host's address (its address is {address.ip})"
                return Outcome(f"refused {wanted}", text, self._nak(request, server_id, text), plan.serial)
            reply = self._reply(request, MessageType.ACK, server_id, boot, address, plan.hostname)
            return Outcome(f"acknowledged {address.ip} for {address.lease_seconds} s, {_boot_text(boot)}",
                           why, reply, plan.serial)
        if kind == MessageType.DECLINE:
            wanted = request.requested_address or address.ip
            return ignore(f"the client declined {wanted}: another machine answers ARP for it (address conflict)",
                          plan.serial)
        # RELEASE: a static address stays the host's.
        return ignore(f"the client released {request.ciaddr}; a static address stays reserved", plan.serial)

    # -- pool addresses --------------------------------------------------------

    def _pool_answer(self, request: DhcpRequest, plan: BootPlan, boot: BootChoice, server_id: IPv4Address,
                     subnet: Subnet) -> Outcome:
        kind = request.message_type
        now = self.ctx.clock()
        reserved = frozenset(a for a in (server_id, self.ctx.address, subnet.router) if a is not None)
        why = f"{plan.reason}; pool of {subnet.name}"
        with self.ctx.db.write() as session:
            if kind == MessageType.DISCOVER:
                lease = leases.offer(session, subnet, request.mac, now, requested=request.requested_address,
                                     reserved=reserved, hostname=request.hostname)
                if lease is None:
                    return ignore(f"{why}: no free address left", plan.serial)
                reply = self._reply(request, MessageType.OFFER, server_id, boot, self._pooled(lease.ip, subnet))
                return Outcome(f"offered {lease.ip}, {_boot_text(boot)}", why, reply, plan.serial)
            if kind == MessageType.REQUEST:
                wanted = request.requested_address or (request.ciaddr if request.ciaddr != ZERO else None)
                if wanted is None:
                    return ignore("a REQUEST naming no address (no option 50, ciaddr 0.0.0.0)", plan.serial)
                if wanted not in subnet.network:
                    text = f"{wanted} is not on {subnet.name}"
                    return Outcome(f"refused {wanted}", text, self._nak(request, server_id, text), plan.serial)
                lease = leases.bind(session, subnet, request.mac, wanted, now, reserved=reserved,
                                    hostname=request.hostname)
                if lease is None:
                    text = f"{wanted} is not free for this client"
                    return Outcome(f"refused {wanted}", text, self._nak(request, server_id, text), plan.serial)
                reply = self._reply(request, MessageType.ACK, server_id, boot, self._pooled(lease.ip, subnet))
                return Outcome(f"acknowledged {lease.ip} for {subnet.lease_seconds} s, {_boot_text(boot)}",
                               why, reply, plan.serial)
            if kind == MessageType.DECLINE:
                wanted = request.requested_address or request.ciaddr
                quarantine = dt.timedelta(seconds=subnet.lease_seconds)
                done = leases.decline(session, request.mac, wanted, now, quarantine)
                return ignore(f"the client declined {wanted} (address conflict)" +
                              (f"; it is quarantined for {subnet.lease_seconds} s" if done else
                               "; it was not leased to this client"), plan.serial)
            done = leases.release(session, request.mac, request.ciaddr, now)  # RELEASE
            return ignore(f"the client released {request.ciaddr}" +
                          ("" if done else "; it held no lease on it"), plan.serial)

    @staticmethod
    def _pooled(ip: IPv4Address, subnet: Subnet) -> Addressing:
        return Addressing(ip, subnet.network.netmask, subnet.router, subnet.dns, subnet.lease_seconds, subnet)

    # -- INFORM ------------------------------------------------------------------

    def _inform(self, request: DhcpRequest, plan: BootPlan, boot: BootChoice, server_id: IPv4Address,
                link: IPv4Address, subnet: Subnet | None) -> Outcome:
        """RFC 2131 §3.4: configuration for a client that has its address."""
        address: Addressing | str | None = None
        if plan.ip:
            address = self._static(plan, link, subnet)
        elif subnet is not None:
            address = self._pooled(request.ciaddr, subnet)
        if address is None or isinstance(address, str):
            return ignore(address or f"no dhcp_subnets entry contains {link}", plan.serial)
        informed = replace(address, lease_seconds=0)
        reply = self._reply(request, MessageType.ACK, server_id, boot, informed, plan.hostname, inform=True)
        return Outcome(f"informed {request.ciaddr}, {_boot_text(boot)}", plan.reason, reply, plan.serial)

    # -- build -------------------------------------------------------------------

    def _reply(self, request: DhcpRequest, kind: MessageType, server_id: IPv4Address, boot: BootChoice,
               address: Addressing, hostname: str | None = None, inform: bool = False) -> DhcpReply:
        lease = None if inform else address.lease_seconds
        return DhcpReply(
            message_type=kind, xid=request.xid, mac=request.mac, server_id=server_id, flags=request.flags,
            ciaddr=request.ciaddr if kind == MessageType.ACK else ZERO,
            yiaddr=ZERO if inform else address.ip,
            siaddr=self.ctx.address or server_id if boot.file else ZERO,
            giaddr=request.giaddr, boot_file=boot.file or "",
            subnet_mask=address.mask, router=address.router, dns_servers=address.dns, hostname=hostname,
            lease_seconds=lease, renewal_seconds=None if lease is None else lease // 2,
            rebinding_seconds=None if lease is None else lease * 7 // 8,
            vendor_class=boot.vendor_class if boot.file else None,
            relay_agent_information=request.relay_agent_information,
        )

    @staticmethod
    def _nak(request: DhcpRequest, server_id: IPv4Address, message: str) -> DhcpReply:
        return DhcpReply(MessageType.NAK, request.xid, request.mac, server_id, flags=request.flags,
                         giaddr=request.giaddr, message=message,
                         relay_agent_information=request.relay_agent_information)


# --------------------------------------------------------------------------- proxy


class ProxyHandler:
    """Boot information for PXE clients beside another DHCP server; never an address.

    Port 67: a PXE client's DISCOVER gets a proxy OFFER (yiaddr 0.0.0.0, option
    60 "PXEClient", option 43 telling it to use the boot file as given).
    Port 4011: a PXE client that then asks the boot server (a REQUEST or
    INFORM, unicast) gets an ACK with the same boot information.
    """

    label = "proxyDHCP"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.ports: tuple[int, ...] = (ctx.dhcp_port, PXE_PORT)

    def handle(self, request: DhcpRequest, arrival: Arrival) -> Outcome:
        # validate
        boot_server = arrival.port == PXE_PORT
        expected = (MessageType.REQUEST, MessageType.INFORM) if boot_server else (MessageType.DISCOVER,)
        if request.message_type not in expected:
            return ignore(f"proxy mode answers {' or '.join(map(str, expected))} on port {arrival.port}; "
                          f"the site's DHCP server handles {request.message_type}", timeline=False)
        if not (request.pxe_client or request.http_client):
            return ignore(f"not a PXE client (vendor class {request.vendor_class.decode(errors='replace')!r})",
                          timeline=False)
        # decide
        plan = self.ctx.plan(request.mac)
        if plan.action == BootAction.IGNORE:
            return ignore(plan.reason, plan.serial)
        boot = choose_boot(request, self.ctx.files)
        if boot.file is None:
            return ignore(boot.why_not, plan.serial)
        # build
        server_id = self.ctx.server_id(arrival)
        pxe: tuple[tuple[int, bytes], ...] = ((PxeOption.DISCOVERY_CONTROL, bytes([DISCOVERY_USE_BOOT_FILE])),)
        if boot_server and request.boot_item is not None:
            pxe += ((PxeOption.BOOT_ITEM, request.boot_item),)  # PXE 2.1 §2.2.7: echo the item asked for
        reply = DhcpReply(
            message_type=MessageType.ACK if boot_server else MessageType.OFFER,
            xid=request.xid, mac=request.mac, server_id=server_id, flags=request.flags,
            ciaddr=request.ciaddr if boot_server else ZERO,
            siaddr=self.ctx.address or server_id, giaddr=request.giaddr, boot_file=boot.file,
            vendor_class=boot.vendor_class or b"PXEClient", pxe_options=pxe if not request.http_client else (),
            client_uuid=request.client_uuid, relay_agent_information=request.relay_agent_information,
        )
        where = f"boot server on port {PXE_PORT}" if boot_server else "proxy offer"
        return Outcome(f"{_boot_text(boot)} from {reply.siaddr} ({boot.firmware}, {where})", plan.reason, reply,
                       plan.serial)


def make_handler(mode: str, ctx: Context) -> Handler:
    """The mode's handler, chosen once at start-up."""
    if mode == "full":
        return FullHandler(ctx)
    if mode == "relay":
        if ctx.address is None:
            raise ConfigError("dhcp_mode relay needs netboot_address: the server id relays send requests to")
        return FullHandler(ctx, relayed_only=True)
    if mode == "proxy":
        return ProxyHandler(ctx)
    raise ConfigError(f"dhcp_mode {mode!r} has no DHCP handler")


# --------------------------------------------------------------------------- where replies go


@dataclass(frozen=True)
class Destination:
    address: IPv4Address
    port: int
    #: Limited broadcast on the interface the request arrived on.
    broadcast: bool = False


def destination(request: DhcpRequest, reply: DhcpReply, arrival: Arrival, dhcp_port: int) -> Destination:
    """RFC 2131 §4.1, and PXE 2.1 §2.2.6 for port 4011.

    A client without an address is answered by broadcast rather than by a
    unicast to yiaddr/chaddr (which would need ARP injection); RFC 2131
    clients must accept both.
    """
    client_port = dhcp_port + 1
    if arrival.port == PXE_PORT:
        return Destination(IPv4Address(arrival.source[0]), arrival.source[1])
    if request.relayed:
        return Destination(request.giaddr, dhcp_port)  # relay agents listen on the server port
    if reply.message_type == MessageType.NAK:
        return Destination(BROADCAST, client_port, broadcast=True)
    if request.ciaddr != ZERO:
        return Destination(request.ciaddr, client_port)
    return Destination(BROADCAST, client_port, broadcast=True)


# --------------------------------------------------------------------------- the service


@dataclass(frozen=True)
class Sent:
    """What :meth:`DhcpService.process` produced for one packet."""

    outcome: Outcome
    data: bytes | None = None
    destination: Destination | None = None


class DhcpService:
    """The DHCP side of ``provisiond netboot``: a background thread that
    reads requests, asks the handler and sends the replies.

    ``DhcpService(services).start()`` binds and returns; ``stop()`` wakes
    the thread and returns once it has ended and the sockets are closed.
    The handler is chosen here, once: a bad mode or subnet list stops
    start-up with a :class:`~provisiond.errors.ConfigError`.
    """

    def __init__(self, services: Services, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.settings = services.settings
        self.clock = clock
        self.timeline = Timeline(services.db, "dhcp", window=TIMELINE_WINDOW)
        self.handler: Handler | None = None
        if self.settings.dhcp_mode != "off":
            ctx = Context.from_settings(self.settings, services.db, services.vault, services.profiles, clock)
            self.handler = make_handler(self.settings.dhcp_mode, ctx)
        self._thread: threading.Thread | None = None
        self._sockets: list[socket.socket] = []
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._shed_count, self._shed_logged = 0, time.monotonic() - SHED_LOG_SECONDS  # the first shed is told at once

    # -- one packet --------------------------------------------------------------

    def process(self, data: bytes, arrival: Arrival) -> Sent:
        """Validate → decide → build, with the outcome logged and timelined
        (nothing is sent, so an answer is not counted as one)."""
        request = self.decode(data, arrival)
        return request if isinstance(request, Sent) else self.answer(request, arrival)

    def decode(self, data: bytes, arrival: Arrival) -> DhcpRequest | Sent:
        """The request, or (malformed) the logged outcome of ignoring it."""
        handler = self.handler
        assert handler is not None, "dhcp_mode is off"
        try:
            return parse_request(data)
        except MalformedPacket as exc:
            metrics.DHCP_MALFORMED.inc()
            outcome = ignore(f"malformed packet from {arrival.source[0]}:{arrival.source[1]}: {exc}", timeline=False)
            log.info("%s: ignored: %s", handler.label, outcome.reason)
            return Sent(outcome)

    def answer(self, request: DhcpRequest, arrival: Arrival) -> Sent:
        """Decide → build, with the outcome logged and timelined."""
        handler = self.handler
        assert handler is not None, "dhcp_mode is off"
        outcome = handler.handle(request, arrival)
        self._note(handler.label, request, arrival, outcome)
        if outcome.reply is None:
            metrics.DHCP_IGNORED.inc()
            return Sent(outcome)
        return Sent(outcome, build_reply(outcome.reply),
                    destination(request, outcome.reply, arrival, self.settings.dhcp_port))

    def _note(self, label: str, request: DhcpRequest, arrival: Arrival, outcome: Outcome) -> None:
        via = arrival.interface or arrival.local_address
        relay = f" relayed by {request.giaddr}" if request.relayed else ""
        # Packets plainly not for provisiond (another server's conversation, a
        # non-PXE client beside the site's server) go to DEBUG: in proxy mode
        # that is every other DHCP packet on the segment.
        level = logging.INFO if outcome.reply or outcome.serial or outcome.timeline else logging.DEBUG
        log.log(level, "%s: %s from %s%s via %s port %d: %s (%s)", label, request.message_type, request.mac, relay,
                via, arrival.port, outcome.summary, outcome.reason)
        if outcome.serial and outcome.timeline:
            text = (f"{label}: {outcome.summary}" if outcome.reply is not None
                    else f"{label}: ignored {request.message_type}: {outcome.reason}")
            try:
                data = {"reason": outcome.reason, "mac": request.mac, "message": str(request.message_type)}
                self.timeline.record(outcome.serial, text, self.clock(), data)
            except Exception:  # the answer matters more than its timeline line
                log.exception("could not write the timeline of host %s", outcome.serial)

    # -- sockets -------------------------------------------------------------------

    name = "the DHCP service"

    @property
    def thread(self) -> threading.Thread | None:
        """The service's loop (None when stopped)."""
        return self._thread

    def start(self) -> None:
        if self.handler is None:
            log.info("DHCP is off (dhcp_mode: off)")
            return
        if self._thread is not None:
            raise RuntimeError("the DHCP service is already running")
        self._sockets = [self._bind(port) for port in self.handler.ports]
        self._wake = socket.socketpair()
        self._thread = threading.Thread(target=self._loop, name="dhcp", daemon=True)
        self._thread.start()
        log.info("%s (%s mode) listening on UDP %s%s", self.handler.label, self.settings.dhcp_mode,
                 ", ".join(map(str, self.handler.ports)),
                 f" on {self.settings.netboot_interface}" if self.settings.netboot_interface else "")

    def stop(self) -> None:
        if self._thread is not None:
            assert self._wake is not None
            self._wake[1].send(b"x")
            self._thread.join()
            for sock in (*self._sockets, *self._wake):
                sock.close()
            self._thread, self._sockets, self._wake = None, [], None
        self.timeline.close()  # what was decided reaches the timeline before stop returns

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            # Room for a storm's burst (the kernel caps it at net.core.rmem_max).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            if self.settings.netboot_interface:
                # Broadcast requests reach only a socket bound to 0.0.0.0; the
                # device binding keeps this one to the boot network.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                                self.settings.netboot_interface.encode())
            sock.bind(("0.0.0.0", port))
        except OSError:
            sock.close()
            raise
        return sock

    def _loop(self) -> None:
        assert self._wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake[0], selectors.EVENT_READ)
            for sock in self._sockets:
                selector.register(sock, selectors.EVENT_READ)
            while True:
                for key, _events in selector.select():
                    if key.fileobj is self._wake[0]:
                        return
                    self._serve_backlog(key.fileobj)  # type: ignore[arg-type]

    def _serve_backlog(self, sock: socket.socket) -> None:
        """Answer what has queued on ``sock``: first every request that
        continues an exchange (REQUEST, DECLINE, RELEASE, INFORM), then the
        DISCOVERs, newest first. When answering falls behind (a round takes
        more than :data:`ROUND_SECONDS` and more packets wait), the DISCOVERs
        left are shed: under overload the exchanges already begun complete,
        rather than every client getting an OFFER and then no ACK."""
        continuing: list[tuple[DhcpRequest, Arrival]] = []
        discovers: list[tuple[DhcpRequest, Arrival]] = []
        for data, arrival in self._drain(sock):
            request = self.decode(data, arrival)
            if isinstance(request, DhcpRequest):
                (discovers if request.message_type == MessageType.DISCOVER else continuing).append((request, arrival))
        deadline = time.monotonic() + ROUND_SECONDS
        for request, arrival in continuing:
            self._answer_and_send(sock, request, arrival)
        discovers.reverse()
        for index, (request, arrival) in enumerate(discovers):
            if time.monotonic() > deadline and _readable(sock):
                self._shed(discovers[index:])
                return
            self._answer_and_send(sock, request, arrival)

    def _drain(self, sock: socket.socket) -> list[tuple[bytes, Arrival]]:
        """Every datagram waiting on ``sock`` (at most :data:`DRAIN_MAX`)."""
        received: list[tuple[bytes, Arrival]] = []
        while len(received) < DRAIN_MAX:
            try:
                data, ancillary, _flags, source = sock.recvmsg(65535, socket.CMSG_SPACE(_PKTINFO.size),
                                                               socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("DHCP receive failed: %s", exc)
                break
            received.append((data, self._arrival(sock, ancillary, source)))
        return received

    @staticmethod
    def _arrival(sock: socket.socket, ancillary: list[tuple[int, int, bytes]], source: tuple[str, int]) -> Arrival:
        ifindex, local = 0, IPv4Address(0)
        for level, kind, value in ancillary:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                ifindex, spec_dst, _addr = _PKTINFO.unpack(value[:_PKTINFO.size])
                local = IPv4Address(spec_dst)
        try:
            interface = socket.if_indextoname(ifindex) if ifindex else ""
        except OSError:
            interface = ""
        return Arrival(sock.getsockname()[1], (source[0], source[1]), local, ifindex, interface)

    def _answer_and_send(self, sock: socket.socket, request: DhcpRequest, arrival: Arrival) -> None:
        try:
            sent = self.answer(request, arrival)
            if sent.data is not None and sent.destination is not None:
                self._send(sock, sent.data, sent.destination, arrival)
                metrics.DHCP_ANSWERED.inc()
        except Exception:  # one bad packet (or a database hiccup) must not stop the service
            metrics.DHCP_FAILED.inc()
            log.exception("DHCP: failed to handle a packet from %s:%d", *arrival.source)

    def _shed(self, dropped: list[tuple[DhcpRequest, Arrival]]) -> None:
        """Drop DISCOVERs unanswered (their clients retransmit), each logged
        at DEBUG; a WARNING says how many, at most every few seconds."""
        for request, arrival in dropped if log.isEnabledFor(logging.DEBUG) else ():
            log.debug("DHCP: DHCPDISCOVER from %s via %s: ignored (overloaded: shed)", request.mac,
                      arrival.interface or arrival.local_address)
        metrics.DHCP_SHED.inc(len(dropped))
        self._shed_count += len(dropped)
        now = time.monotonic()
        if now - self._shed_logged >= SHED_LOG_SECONDS:
            log.warning("DHCP overloaded: %d DISCOVERs shed unanswered in the last %.0f s (requests that continue "
                        "an exchange are answered first; the clients retransmit)", self._shed_count,
                        now - self._shed_logged)
            self._shed_count, self._shed_logged = 0, now

    @staticmethod
    def _send(sock: socket.socket, data: bytes, where: Destination, arrival: Arrival) -> None:
        target = (str(where.address), where.port)
        if where.broadcast and arrival.ifindex:
            # Out of the interface the request came in on, whatever the routes say.
            info = _PKTINFO.pack(arrival.ifindex, arrival.local_address.packed, b"\0" * 4)
            sock.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, target)
        else:
            sock.sendto(data, target)
