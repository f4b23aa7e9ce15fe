"""The one question every netboot hop asks: what should this MAC boot now?

DHCP, TFTP and the iPXE/pxelinux/GRUB entries all call :func:`plan_for_mac`
and get a frozen :class:`BootPlan`; none of them touches ORM objects. The
answer is taken from the database at the moment it is asked: arming a host
or editing it takes effect on its very next packet.

Only a host whose install state is ARMED gets the installer. Every other
known host gets local boot, whatever it sends; an unknown MAC is ignored or
sent to local boot, as configured.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, replace

from typing import Any

from sqlalchemy import Connection, and_, bindparam, select
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.errors import NotFound
from provisiond.kickstart.composer import InstallContext
from provisiond.kickstart.profiles import ProfileStore
from provisiond.models import utcnow
from provisiond.states import HostState
from provisiond.vault import Vault


class BootAction(str, enum.Enum):
    INSTALL = "install"  # boot the installer with this host's kickstart
    LOCAL = "local"  # boot from the local disk
    IGNORE = "ignore"  # do not answer at all

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class BootPlan:
    mac: str
    action: BootAction
    #: Why, in words, for the log and the timeline.
    reason: str
    serial: str | None = None
    hostname: str | None = None
    ip: str | None = None
    prefix: int | None = None
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    #: For INSTALL: where the kernel and initrd are, and the kernel command line.
    kernel_url: str | None = None
    initrd_url: str | None = None
    kernel_args: str = ""


_hosts, _nics, _installs = models.Host.__table__, models.Nic.__table__, models.Install.__table__
#: Every DHCP, TFTP and iPXE request asks this, so it is one prebuilt
#: statement returning one row: the host behind the MAC, only the columns a
#: boot plan uses, and its live install's sealed token (decrypted only for
#: an armed host). No NICs, groups or variables: they are not boot answers.
_BOOT_HOST_BY_MAC = (
    select(_hosts.c.serial, _hosts.c.hostname, _hosts.c.ip, _hosts.c.prefix, _hosts.c.gateway, _hosts.c.dns,
           _hosts.c.state, _hosts.c.profile, _installs.c.token_sealed, _installs.c.expires_at)
    .join(_nics, _nics.c.host_id == _hosts.c.id)
    # A host has at most one live install (the lifecycle keeps it so).
    .outerjoin(_installs, and_(_installs.c.host_id == _hosts.c.id, _installs.c.active.is_(True)))
    .where(_nics.c.mac == bindparam("mac"))
)


def plan_for_mac(session: Session | Connection, mac: str, *, vault: Vault, profiles: ProfileStore, public_url: str,
                 unknown: BootAction = BootAction.IGNORE, now: dt.datetime | None = None) -> BootPlan:
    host = session.execute(_BOOT_HOST_BY_MAC, {"mac": mac}).first()
    if host is None:
        return BootPlan(mac, unknown, f"MAC {mac} is not in the data source")
    if host.state != HostState.ARMED.value:
        return _local(mac, host, f"host {host.serial} is {host.state}, not armed")
    if host.token_sealed is None:  # armed but its install ended in between: never install
        return _local(mac, host, f"host {host.serial} has no live install")
    if host.expires_at <= (now or utcnow()):  # the reaper has not failed it yet: never boot it
        return _local(mac, host, f"host {host.serial} is armed but its install expired at "
                                 f"{host.expires_at:%Y-%m-%d %H:%M:%S} UTC (arm_ttl_seconds)")
    try:
        profile = profiles.get(host.profile)
    except NotFound:
        return _local(mac, host, f"host {host.serial} is armed but its profile {host.profile!r} is missing")
    ks_url = InstallContext(vault.decrypt(host.token_sealed), public_url).urls["kickstart"]
    args = f"inst.ks={ks_url} inst.repo={profile.install_tree} {profile.kernel_args}".strip()
    return replace(
        _local(mac, host, f"host {host.serial} is armed (profile {profile.name})"), action=BootAction.INSTALL,
        kernel_url=_url(profile.install_tree, profile.kernel), initrd_url=_url(profile.install_tree, profile.initrd),
        kernel_args=args,
    )


def _local(mac: str, host: Any, reason: str) -> BootPlan:
    """Local boot for a known host (a row of ``_BOOT_HOST_BY_MAC``), with its
    identity (DHCP answers with it)."""
    return BootPlan(mac, BootAction.LOCAL, reason, serial=host.serial, hostname=host.hostname, ip=host.ip,
                    prefix=host.prefix, gateway=host.gateway, dns=tuple(host.dns or ()))


def _url(tree: str, path: str) -> str:
    if "://" in path:
        return path
    return f"{tree.rstrip('/')}/{path.lstrip('/')}"
