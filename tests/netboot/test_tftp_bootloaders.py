"""``provisiond bootloaders install``: the real loaders from Debian's packages
land in pxelinux_dir, and a client in the lab fetches them byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from provisiond.config import load_settings
from provisiond.netboot.bootloaders import SOURCES
from tests.conftest import require
from tests.netboot.conftest import SERVER_ADDRESS, Lab
from tests.netboot.test_tftp import NetnsTftp, sha256

LOADERS = {
    "pxelinux.0": Path("/usr/lib/PXELINUX/pxelinux.0"),
    "lpxelinux.0": Path("/usr/lib/PXELINUX/lpxelinux.0"),
    "ldlinux.c32": Path("/usr/lib/syslinux/modules/bios/ldlinux.c32"),
    "menu.c32": Path("/usr/lib/syslinux/modules/bios/menu.c32"),
    "undionly.kpxe": Path("/usr/lib/ipxe/undionly.kpxe"),
    "snponly.efi": Path("/usr/lib/ipxe/snponly.efi"),
    "ipxe.efi": Path("/boot/ipxe.efi"),
}


def provisiond(tmp_path: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROVISIOND_PXELINUX_DIR": str(root), "PROVISIOND_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run([sys.executable, "-m", "provisiond.cli.server", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def packages() -> None:
    for package, path in (("pxelinux", LOADERS["pxelinux.0"]), ("syslinux-common", LOADERS["ldlinux.c32"]),
                          ("ipxe", LOADERS["undionly.kpxe"])):
        require(path.is_file(), f"needs the Debian package {package} ({path})")


def test_install_copies_the_loaders(packages: None, tmp_path: Path) -> None:
    root = tmp_path / "pxelinux"
    result = provisiond(tmp_path, root, "bootloaders", "status")
    assert result.returncode == 1 and "MISSING\tpxelinux.0" in result.stdout
    result = provisiond(tmp_path, root, "bootloaders", "install")
    assert result.returncode == 0, result.stderr
    for name, source in LOADERS.items():
        assert sha256(root / name) == sha256(source), name
        assert f"copied\t{name}\t" in result.stdout
    assert (root / "ipxe.efi").stat().st_mode & 0o777 == 0o644
    # Again: nothing to do. A changed file is put back.
    assert "0 of" in provisiond(tmp_path, root, "bootloaders", "install").stdout
    (root / "ldlinux.c32").write_bytes(b"damaged")
    result = provisiond(tmp_path, root, "bootloaders", "install")
    assert "updated\tldlinux.c32" in result.stdout and "1 of" in result.stdout
    assert sha256(root / "ldlinux.c32") == sha256(LOADERS["ldlinux.c32"])
    result = provisiond(tmp_path, root, "bootloaders", "status")
    assert result.returncode == 0 and "MISSING" not in result.stdout
    assert not [path for path in root.iterdir() if path.name.startswith(".")]  # no temporary files left


def test_missing_packages_copy_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty-system"
    (empty / "usr/lib/PXELINUX").mkdir(parents=True)
    (empty / "usr/lib/PXELINUX/pxelinux.0").write_bytes(b"only this one")
    root = tmp_path / "pxelinux"
    result = provisiond(tmp_path, root, "bootloaders", "install", "--from", str(empty))
    assert result.returncode == 1
    assert "apt-get install ipxe pxelinux syslinux-common" in result.stderr, result.stderr
    assert not root.exists() or not list(root.iterdir())


def test_every_required_source_is_a_debian_path() -> None:
    required = {Path(source.path).name for source in SOURCES if source.required}
    assert required == {"pxelinux.0", "lpxelinux.0", "ldlinux.c32", "undionly.kpxe", "snponly.efi", "ipxe.efi"}


def test_installed_loaders_are_served(packages: None, lab: Lab, tmp_path: Path) -> None:
    root = tmp_path / "pxelinux"
    assert provisiond(tmp_path, root, "bootloaders", "install").returncode == 0
    require(subprocess.run(["which", "curl"], capture_output=True).returncode == 0, "needs curl")
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path / "data")})
    server = NetnsTftp(lab, settings, root, tmp_path / "tftp.log")
    try:
        client = lab.add_client("52:54:00:bb:00:01", "10.77.0.50/24")
        for name, source in LOADERS.items():
            out = tmp_path / f"got-{name}"
            result = lab.run(client, "curl", "-sS", "--tftp-blksize", "1468", "-o", str(out),
                             f"tftp://{SERVER_ADDRESS}/{name}")
            assert result.returncode == 0, result.stderr
            assert sha256(out) == sha256(source), name
    finally:
        server.stop()
    # The boot files the settings name (lpxelinux.0, ipxe.efi) are there: no warning.
    assert not [line for line in server.log_text().splitlines() if "boot file" in line and "is not in" in line]
