"""Boot loader binaries: copied from the distribution's packages, never committed.

``provisiond bootloaders install`` copies them into ``settings.pxelinux_dir``
(the TFTP root, also served over HTTP under ``/boot/``), where ``.gitignore``
keeps them out of the repository. The sources are Debian's packages:

=================  ==================================================  =====================
package            files                                               what for
=================  ==================================================  =====================
pxelinux           /usr/lib/PXELINUX/pxelinux.0, lpxelinux.0           BIOS loader (lpxelinux
                                                                       also fetches over HTTP)
syslinux-common    /usr/lib/syslinux/modules/bios/*.c32                its modules; pxelinux 6
                                                                       loads ldlinux.c32 from
                                                                       its own directory first
ipxe               /usr/lib/ipxe/undionly.kpxe, snponly.efi,           iPXE for BIOS (UNDI)
                   /boot/ipxe.efi                                      and UEFI
=================  ==================================================  =====================

Every required file is checked before anything is copied: a missing package
fails the command with the ``apt-get install`` line that fixes it and leaves
the boot root as it was. Each file is written to a temporary name and renamed
into place, so a TFTP transfer in progress keeps reading the old copy and a
new one never sees half a file. Files already identical are left alone.
"""

from __future__ import annotations

import enum
import filecmp
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from provisiond.errors import ProvisiondError


@dataclass(frozen=True)
class Source:
    #: The Debian package that ships the file(s).
    package: str
    #: Absolute path, or a glob (``*``) for a family of files.
    path: str
    #: Without it the boot chain breaks; a glob that is not required may match nothing.
    required: bool = True


SOURCES: tuple[Source, ...] = (
    Source("pxelinux", "/usr/lib/PXELINUX/pxelinux.0"),
    Source("pxelinux", "/usr/lib/PXELINUX/lpxelinux.0"),
    Source("syslinux-common", "/usr/lib/syslinux/modules/bios/ldlinux.c32"),
    Source("syslinux-common", "/usr/lib/syslinux/modules/bios/*.c32", required=False),
    Source("ipxe", "/usr/lib/ipxe/undionly.kpxe"),
    Source("ipxe", "/usr/lib/ipxe/snponly.efi"),
    Source("ipxe", "/boot/ipxe.efi"),
)


class MissingPackages(ProvisiondError):
    """Boot loader files are missing: their Debian packages are not installed."""

    code = "missing_packages"

    def __init__(self, missing: Iterable[tuple[Source, Path]]) -> None:
        missing = list(missing)
        packages = sorted({source.package for source, _ in missing})
        files = ", ".join(str(path) for _, path in missing)
        super().__init__(f"missing {files}; install them with: apt-get install {' '.join(packages)}")
        self.packages = packages


class Outcome(str, enum.Enum):
    COPIED = "copied"
    UPDATED = "updated"
    UNCHANGED = "unchanged"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Copied:
    name: str  # its name in the boot root
    source: Path
    package: str
    outcome: Outcome


def plan(sources: Iterable[Source] = SOURCES, system_root: Path = Path("/")) -> list[tuple[Source, Path]]:
    """Every file to copy, with its source; raises :class:`MissingPackages`.

    ``system_root`` prefixes every source path (an unpacked package tree,
    ``dpkg -x``); names found twice are copied once, the first source wins.
    """
    found: dict[str, tuple[Source, Path]] = {}
    missing: list[tuple[Source, Path]] = []
    for source in sources:
        pattern = system_root / source.path.lstrip("/")
        matches = sorted(pattern.parent.glob(pattern.name)) if "*" in source.path else [pattern]
        matches = [path for path in matches if path.is_file()]
        if not matches and source.required:
            missing.append((source, pattern))
        for path in matches:
            found.setdefault(path.name, (source, path))
    if missing:
        raise MissingPackages(missing)
    return list(found.values())


def install(destination: Path, sources: Iterable[Source] = SOURCES, system_root: Path = Path("/")) -> list[Copied]:
    """Copy the boot loaders into ``destination`` (created if missing)."""
    files = plan(sources, system_root)
    destination.mkdir(parents=True, exist_ok=True)
    done = []
    for source, path in files:
        target = destination / path.name
        if target.is_file() and not target.is_symlink() and filecmp.cmp(path, target, shallow=False):
            outcome = Outcome.UNCHANGED
        else:
            outcome = Outcome.UPDATED if target.exists() or target.is_symlink() else Outcome.COPIED
            _replace(path, target)
        done.append(Copied(path.name, path, source.package, outcome))
    return done


def status(destination: Path, sources: Iterable[Source] = SOURCES) -> list[tuple[Source, str, bool]]:
    """(source, name in the boot root, present?) for every required file."""
    return [(source, Path(source.path).name, (destination / Path(source.path).name).is_file())
            for source in sources if source.required]


def _replace(source: Path, target: Path) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
