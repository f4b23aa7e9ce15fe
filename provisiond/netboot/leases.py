"""Subnets, pools and dynamic leases (full and relay mode).

Hosts in the data source keep their static address: they never touch this
module. A client without one (an unknown MAC when ``unknown_mac: local``, or a
known host with no ``ip``) gets an address from the pool of the subnet its
request arrived on, and that lease lives in the ``leases`` table so that every
netboot daemon sharing the database sees it.

Every function takes the caller's ``Session`` (one unit of work per packet)
and a ``now``, and returns plain frozen data, never an ORM object. Claiming an
address is a single INSERT, or a single guarded UPDATE of a row whose time is
up: on SQLite and PostgreSQL alike, two daemons racing for one address cannot
both win (the ``ip`` column is unique and the UPDATE re-checks its condition).
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.errors import ConfigError

#: A subnet without ``lease_seconds`` leases for an hour.
DEFAULT_LEASE_SECONDS = 3600
#: How long an offered address is held for the client's REQUEST.
OFFER_HOLD = dt.timedelta(seconds=60)


class LeaseState(str, enum.Enum):
    OFFERED = "offered"
    BOUND = "bound"
    RELEASED = "released"
    DECLINED = "declined"  # the client found the address in use: quarantined

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Subnet:
    """One entry of ``settings.dhcp_subnets``, checked at start-up."""

    network: IPv4Network
    router: IPv4Address | None = None  # option 3
    dns: tuple[IPv4Address, ...] = ()  # option 6
    #: First and last address handed out to clients without a static one.
    pool: tuple[IPv4Address, IPv4Address] | None = None
    lease_seconds: int = DEFAULT_LEASE_SECONDS  # option 51

    @property
    def name(self) -> str:
        return str(self.network)

    def in_pool(self, address: IPv4Address) -> bool:
        return self.pool is not None and self.pool[0] <= address <= self.pool[1]

    def pool_addresses(self) -> Iterator[IPv4Address]:
        if self.pool is None:
            return
        for number in range(int(self.pool[0]), int(self.pool[1]) + 1):
            yield IPv4Address(number)


def parse_subnets(raw: Sequence[Mapping[str, Any]]) -> tuple[Subnet, ...]:
    """``settings.dhcp_subnets`` → subnets; a bad entry stops start-up."""
    subnets = []
    for index, entry in enumerate(raw):
        where = f"dhcp_subnets[{index}]"
        unknown = set(entry) - {"network", "router", "dns", "pool", "lease_seconds"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        try:
            network = IPv4Network(str(entry["network"]), strict=True)
        except KeyError:
            raise ConfigError(f"{where}: 'network' (CIDR) is required") from None
        except ValueError as exc:
            raise ConfigError(f"{where}: network {entry['network']!r} is not an IPv4 CIDR: {exc}") from None
        router = _address(entry.get("router"), f"{where}.router") if entry.get("router") else None
        if router is not None and router not in network:
            raise ConfigError(f"{where}: router {router} is not in {network}")
        dns_raw = entry.get("dns") or []
        if isinstance(dns_raw, str):
            dns_raw = [dns_raw]
        dns = tuple(_address(item, f"{where}.dns") for item in dns_raw)
        pool = _pool(entry.get("pool"), network, where)
        lease = entry.get("lease_seconds", DEFAULT_LEASE_SECONDS)
        if isinstance(lease, bool) or not isinstance(lease, int) or lease < 60:
            raise ConfigError(f"{where}: lease_seconds must be an integer of at least 60, got {lease!r}")
        subnets.append(Subnet(network, router, dns, pool, lease))
    for a, b in ((a, b) for i, a in enumerate(subnets) for b in subnets[i + 1:]):
        if a.network.overlaps(b.network):
            raise ConfigError(f"dhcp_subnets: {a.network} and {b.network} overlap")
    return tuple(subnets)


def _address(value: Any, where: str) -> IPv4Address:
    try:
        return IPv4Address(str(value))
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not an IPv4 address") from None


def _pool(value: Any, network: IPv4Network, where: str) -> tuple[IPv4Address, IPv4Address] | None:
    if not value:
        return None
    parts = str(value).split("-")
    if len(parts) != 2:
        raise ConfigError(f"{where}: pool {value!r} must be 'first-last'")
    first, last = (_address(p.strip(), f"{where}.pool") for p in parts)
    if first > last:
        raise ConfigError(f"{where}: pool {value!r} ends before it starts")
    usable = (network.network_address, network.broadcast_address)
    if first not in network or last not in network or first in usable or last in usable:
        raise ConfigError(f"{where}: pool {value!r} is not inside the usable addresses of {network}")
    return first, last


def subnet_for(subnets: Iterable[Subnet], address: IPv4Address) -> Subnet | None:
    return next((s for s in subnets if address in s.network), None)


# --------------------------------------------------------------------------- leases


@dataclass(frozen=True)
class LeaseRecord:
    ip: IPv4Address
    mac: str
    state: LeaseState
    expires_at: dt.datetime


_L = models.Lease


def _record(row: Any) -> LeaseRecord:
    return LeaseRecord(IPv4Address(row.ip), row.mac, LeaseState(row.state), row.expires_at)


def current(session: Session, subnet: Subnet, mac: str) -> LeaseRecord | None:
    """The client's latest lease in ``subnet`` that it may have again (any
    state but declined; expired ones included: the same client gets the same
    address back while nobody else has taken it)."""
    row = session.execute(
        select(_L.ip, _L.mac, _L.state, _L.expires_at)
        .where(_L.mac == mac, _L.subnet == subnet.name, _L.state != LeaseState.DECLINED.value)
        .order_by(_L.updated_at.desc(), _L.id.desc()).limit(1)
    ).first()
    return None if row is None else _record(row)


def offer(session: Session, subnet: Subnet, mac: str, now: dt.datetime, *, requested: IPv4Address | None = None,
          reserved: frozenset[IPv4Address] = frozenset(), hostname: str | None = None) -> LeaseRecord | None:
    """An address to offer ``mac``, held for :data:`OFFER_HOLD`; None when
    the pool is exhausted. Preference: the client's current address, the one
    it asks for (option 50), a never-used address, the longest-expired one."""
    if subnet.pool is None:
        return None
    own = current(session, subnet, mac)
    if own is not None and subnet.in_pool(own.ip) and own.state == LeaseState.BOUND and own.expires_at > now:
        return own  # a live lease: offer it again unchanged
    expires = now + OFFER_HOLD
    # The client's own address, then the one it asks for: one check each, so a
    # retransmitted DISCOVER costs a few single-row statements, not a pool scan.
    for wanted in (own.ip if own is not None else None, requested):
        if (wanted is not None and subnet.in_pool(wanted) and wanted not in reserved
                and not _static_addresses(session, wanted)
                and _claim(session, subnet, mac, wanted, LeaseState.OFFERED, expires, now, hostname)):
            return LeaseRecord(wanted, mac, LeaseState.OFFERED, expires)
    blocked = _static_addresses(session) | reserved
    rows = {IPv4Address(r.ip): r.expires_at for r in session.execute(
        select(_L.ip, _L.expires_at).where(_L.subnet == subnet.name))}
    never_used = (a for a in subnet.pool_addresses() if a not in rows)
    expired = sorted((a for a, end in rows.items() if end <= now and subnet.in_pool(a)), key=lambda a: rows[a])
    for address in itertools.chain(never_used, expired):
        if address not in blocked and _claim(session, subnet, mac, address, LeaseState.OFFERED, expires, now,
                                             hostname):
            return LeaseRecord(address, mac, LeaseState.OFFERED, expires)
    return None


def bind(session: Session, subnet: Subnet, mac: str, address: IPv4Address, now: dt.datetime, *,
         reserved: frozenset[IPv4Address] = frozenset(), hostname: str | None = None) -> LeaseRecord | None:
    """Bind (or renew) ``address`` to ``mac`` for the subnet's lease time;
    None when the address is not the client's to have."""
    if not subnet.in_pool(address) or address in reserved or address in _static_addresses(session, address):
        return None
    expires = now + dt.timedelta(seconds=subnet.lease_seconds)
    if _claim(session, subnet, mac, address, LeaseState.BOUND, expires, now, hostname):
        return LeaseRecord(address, mac, LeaseState.BOUND, expires)
    return None


def release(session: Session, mac: str, address: IPv4Address, now: dt.datetime) -> bool:
    """DHCPRELEASE: the address is free now (the row stays, so the same
    client gets the same address back if nobody took it meanwhile)."""
    result = session.execute(
        update(_L).where(_L.ip == str(address), _L.mac == mac,
                         _L.state.in_([LeaseState.OFFERED.value, LeaseState.BOUND.value]))
        .values(state=LeaseState.RELEASED.value, expires_at=now, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def decline(session: Session, mac: str, address: IPv4Address, now: dt.datetime, quarantine: dt.timedelta) -> bool:
    """DHCPDECLINE: something else answers ARP for the address; nobody gets
    it until the quarantine ends (RFC 2131 §4.3.3)."""
    result = session.execute(
        update(_L).where(_L.ip == str(address), _L.mac == mac)
        .values(state=LeaseState.DECLINED.value, expires_at=now + quarantine, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def withdraw_offer(session: Session, subnet: Subnet, mac: str, now: dt.datetime) -> bool:
    """The client REQUESTed another server's offer: ours is free again."""
    result = session.execute(
        update(_L).where(_L.mac == mac, _L.subnet == subnet.name, _L.state == LeaseState.OFFERED.value)
        .values(state=LeaseState.RELEASED.value, expires_at=now, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _static_addresses(session: Session, only: IPv4Address | None = None) -> frozenset[IPv4Address]:
    """Addresses the data source gives to hosts: never handed out from a pool."""
    query = select(models.Host.ip).where(models.Host.ip.is_not(None))
    if only is not None:
        query = query.where(models.Host.ip == str(only))
    return frozenset(IPv4Address(ip) for ip in session.scalars(query))


def _claim(session: Session, subnet: Subnet, mac: str, address: IPv4Address, state: LeaseState,
           expires: dt.datetime, now: dt.datetime, hostname: str | None) -> bool:
    """Take ``address`` for ``mac``: insert its row, or update a row that is
    already this client's (and not quarantined) or whose time is up."""
    values = {"mac": mac, "subnet": subnet.name, "state": state.value, "expires_at": expires,
              "client_hostname": hostname, "updated_at": now}
    result = session.execute(
        update(_L).where(_L.ip == str(address), or_(
            and_(_L.mac == mac, _L.state != LeaseState.DECLINED.value), _L.expires_at <= now))
        .values(**values)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        return True
    if session.scalar(select(_L.id).where(_L.ip == str(address))) is not None:
        return False  # someone else's, and still live
    try:
        with session.begin_nested():
            session.execute(insert(_L).values(ip=str(address), **values))
    except IntegrityError:  # another daemon inserted it a moment ago
        return False
    return True


def network_of(address: str, prefix: int) -> IPv4Network:
    return ipaddress.ip_network(f"{address}/{prefix}", strict=False)  # type: ignore[return-value]
