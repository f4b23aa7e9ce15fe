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

import enum
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.errors import NotFound
from provisiond.inventory.hosts import find_by_mac
from provisiond.inventory.records import HostRecord
from provisiond.kickstart.composer import InstallContext
from provisiond.kickstart.profiles import ProfileStore
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


def plan_for_mac(session: Session, mac: str, *, vault: Vault, profiles: ProfileStore, public_url: str,
                 unknown: BootAction = BootAction.IGNORE) -> BootPlan:
    host = find_by_mac(session, mac)
    if host is None:
        return BootPlan(mac, unknown, f"MAC {mac} is not in the data source")
    if host.state != HostState.ARMED.value:
        return _local(mac, host, f"host {host.serial} is {host.state}, not armed")
    token = _armed_token(session, host.serial, vault)
    if token is None:  # armed but its install ended in between: never install
        return _local(mac, host, f"host {host.serial} has no live install")
    try:
        profile = profiles.get(host.profile)
    except NotFound:
        return _local(mac, host, f"host {host.serial} is armed but its profile {host.profile!r} is missing")
    ks_url = InstallContext(token, public_url).urls["kickstart"]
    args = f"inst.ks={ks_url} inst.repo={profile.install_tree} {profile.kernel_args}".strip()
    return replace(
        _local(mac, host, f"host {host.serial} is armed (profile {profile.name})"), action=BootAction.INSTALL,
        kernel_url=_url(profile.install_tree, profile.kernel), initrd_url=_url(profile.install_tree, profile.initrd),
        kernel_args=args,
    )


def _local(mac: str, host: HostRecord, reason: str) -> BootPlan:
    """Local boot for a known host, with its identity (DHCP answers with it)."""
    return BootPlan(mac, BootAction.LOCAL, reason, serial=host.serial, hostname=host.hostname, ip=host.ip,
                    prefix=host.prefix, gateway=host.gateway, dns=host.dns)


def _armed_token(session: Session, serial: str, vault: Vault) -> str | None:
    sealed = session.scalar(
        select(models.Install.token_sealed).join(models.Host)
        .where(models.Host.serial == serial, models.Install.active.is_(True))
    )
    return None if sealed is None else vault.decrypt(sealed)


def _url(tree: str, path: str) -> str:
    if "://" in path:
        return path
    return f"{tree.rstrip('/')}/{path.lstrip('/')}"
