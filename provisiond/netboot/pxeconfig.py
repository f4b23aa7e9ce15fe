"""Per-MAC boot entries, generated live from a :class:`BootPlan`.

Three loaders, one plan: pxelinux/lpxelinux (BIOS), GRUB (UEFI) and iPXE.
Templates live in ``settings.boot_templates_dir`` (strict, sandboxed Jinja2). An
armed host gets the installer entry; everything else gets local boot.

pxelinux asks for ``pxelinux.cfg/01-<mac with dashes>`` (then hex-IP names,
then ``default``); GRUB for ``grub/grub.cfg-01-<mac>``; iPXE fetches an
HTTP script (``/boot/ipxe?mac=...``).
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from provisiond.inventory.bootplan import BootAction, BootPlan


class Loader(str, enum.Enum):
    PXELINUX = "pxelinux.cfg.j2"
    GRUB = "grub.cfg.j2"
    IPXE = "boot.ipxe.j2"


_PXELINUX_NAME = re.compile(r"^pxelinux\.cfg/01-([0-9a-f]{2}(?:-[0-9a-f]{2}){5})$")
_GRUB_NAME = re.compile(r"^grub/grub\.cfg-01-([0-9a-f]{2}(?:-[0-9a-f]{2}){5})$")


def mac_from_config_name(name: str) -> tuple[Loader, str] | None:
    """``pxelinux.cfg/01-52-54-00-12-34-56`` → (PXELINUX, ``52:54:00:12:34:56``)."""
    lowered = name.lower().lstrip("/")
    for pattern, loader in ((_PXELINUX_NAME, Loader.PXELINUX), (_GRUB_NAME, Loader.GRUB)):
        match = pattern.match(lowered)
        if match:
            return loader, match.group(1).replace("-", ":")
    return None


def is_fallback_config_name(name: str) -> bool:
    """pxelinux's other guesses (hex IP, ``default``): answered with local boot."""
    lowered = name.lower().lstrip("/")
    return lowered.startswith("pxelinux.cfg/") or lowered.startswith("grub/grub.cfg")


class EntryRenderer:
    def __init__(self, templates_dir: Path) -> None:
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(templates_dir)), undefined=jinja2.StrictUndefined,
            autoescape=False, auto_reload=True, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        )
        self.env.globals["grub_path"] = grub_path

    def render(self, plan: BootPlan, loader: Loader) -> str:
        install = plan.action == BootAction.INSTALL
        return self.env.get_template(loader.value).render(plan=plan, install=install)


def local_plan(mac: str, reason: str) -> BootPlan:
    return BootPlan(mac=mac, action=BootAction.LOCAL, reason=reason)


def grub_path(url: str) -> str:
    """``http://10.0.0.1:8080/boot/vmlinuz`` → ``(http,10.0.0.1:8080)/boot/vmlinuz``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "tftp"):
        return url
    return f"({parts.scheme},{parts.netloc}){parts.path}"
