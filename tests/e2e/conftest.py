"""The end-to-end lab: real machines install through a real provisiond.

``e2e`` gives a private L2 segment (the netboot ``lab``: namespace, bridge
``br0`` at 10.77.0.1/24), ``provisiond serve`` on it (full-mode DHCP, TFTP,
HTTP; the test's own database), and ``e2e.machine(...)`` for any number of
QEMU machines, each on its own tap in the bridge, with its own MAC, SMBIOS
serial, memory, CPU count, raw virtio disk and serial-console log per boot.

The profile's kernel and initrd, served from provisiond's ``/boot``, are the
test installer: a real Debian kernel (``tests/e2e/kernel.py``, fetched with
``apt-get download`` into a cache on the first run) and an initramfs built by
``tests/e2e/installer/build-initramfs.sh`` from busybox-static and curl. It
runs the kickstart provisiond composes (see ``installer/ks-run``).

Everything (VMs, taps, namespace, server) is torn down after the test; the
machine's own interfaces are never touched. Under CI=true a missing
prerequisite fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provisiond.config import PROJECT_ROOT, Settings
from provisiond.services import Services
from tests.conftest import require
from tests.e2e.kernel import MODULES, Kernel, KernelUnavailable, fetch_kernel
from tests.netboot.conftest import Lab, lab  # noqa: F401  (the fixture, shared with tests/netboot)
from tests.netboot.test_qemu_pxe import Server

INSTALLER = PROJECT_ROOT / "tests" / "e2e" / "installer"
#: Bounds on a broken boot (seconds), never assertions on speed.
BOOT_WAIT = 240


def _needs(*tools: str) -> None:
    for tool in tools:
        require(shutil.which(tool) is not None, f"needs {tool} (Debian packages in .ci/debian-packages)")


@pytest.fixture(scope="session")
def kernel() -> Kernel:
    """The installer's kernel: Debian's cloud kernel, fetched once and cached."""
    _needs("apt-get", "dpkg-deb")
    try:
        return fetch_kernel()
    except KernelUnavailable as error:
        require(False, f"no Debian kernel for the test installer: {error}")
        raise


@pytest.fixture(scope="session")
def installer_initrd(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test installer's initramfs, built once per session."""
    require(Path("/bin/busybox").exists(), "needs busybox-static (/bin/busybox)")
    _needs("cpio", "curl", "gzip")
    out = tmp_path_factory.mktemp("installer") / "initrd.img"
    modules = [arg for name in MODULES for arg in ("--module", str(kernel.modules / f"{name}.ko"))]
    built = subprocess.run(["bash", str(INSTALLER / "build-initramfs.sh"), "--out", str(out), *modules],
                           capture_output=True, text=True)
    require(built.returncode == 0, f"building the installer initramfs failed: {built.stdout}{built.stderr}")
    return out


class Machine:
    """One QEMU machine on its own tap in ``br0``: PXE first (iPXE ROM), a raw
    virtio disk that outlives its boots, and one serial log per boot. With
    ``-no-reboot`` a guest reboot or power-off ends the QEMU process; the
    next :meth:`boot` is the machine's next power-on, with the same disk."""

    def __init__(self, lab: Lab, folder: Path, index: int, *, mac: str, serial: str, memory_mib: int,
                 cpus: int, manufacturer: str, product: str, disk_mib: int) -> None:
        self.lab, self.folder = lab, folder
        self.mac, self.serial, self.memory_mib, self.cpus = mac, serial, memory_mib, cpus
        self.manufacturer, self.product = manufacturer, product
        self.tap = f"tap{index}"
        self.disk = folder / "disk.raw"
        with self.disk.open("wb") as disk:
            disk.truncate(disk_mib << 20)
        lab.run(lab.server_ns, "ip", "tuntap", "add", "dev", self.tap, "mode", "tap", check=True)
        lab.run(lab.server_ns, "ip", "link", "set", self.tap, "master", "br0", check=True)
        lab.run(lab.server_ns, "ip", "link", "set", self.tap, "up", check=True)
        self.boots = 0
        self.exited = self.timed_out = False  # how the last wait() ended
        self.process: subprocess.Popen[bytes] | None = None
        self.serial_log = folder / "serial-0.log"

    def boot(self) -> None:
        """Power on: a new QEMU process on the same disk, logging to serial-<n>.log."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.boots += 1
        self.serial_log = self.folder / f"serial-{self.boots}.log"
        smbios = f"type=1,serial={self.serial},manufacturer={self.manufacturer},product={self.product}"
        self.process = subprocess.Popen(self.lab.ns_cmd(
            self.lab.server_ns, "qemu-system-x86_64", "-accel", "tcg,thread=single",
            "-m", str(self.memory_mib), "-smp", str(self.cpus), "-smbios", smbios,
            "-boot", "n", "-no-reboot", "-nographic", "-display", "none", "-monitor", "none",
            "-serial", f"file:{self.serial_log}",
            "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={self.mac}",
            "-drive", f"file={self.disk},format=raw,if=virtio"),
            stdout=(self.folder / f"qemu-{self.boots}.log").open("wb"), stderr=subprocess.STDOUT)

    def console(self) -> str:
        return self.serial_log.read_text(errors="replace").replace("\r", "") if self.serial_log.exists() else ""

    def wait(self, until: Callable[[str], bool] | None = None, timeout: float = BOOT_WAIT) -> str:
        """Wait (bounded) for QEMU to exit, or for ``until(console)``; then
        make sure the machine is off. Returns the console of this boot."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if until is not None and until(self.console()):
                break
            time.sleep(0.5)
        self.timed_out = time.monotonic() >= deadline
        self.exited = self.process.poll() is not None
        self.kill()
        if self.exited and self.process.returncode != 0:  # QEMU itself failed (a guest reboot exits 0)
            qemu = (self.folder / f"qemu-{self.boots}.log").read_text(errors="replace")
            raise AssertionError(f"QEMU exited with {self.process.returncode}: {qemu}\n{self.console()}")
        return self.console()

    def disk_head(self, size: int = 512) -> bytes:
        with self.disk.open("rb") as disk:
            return disk.read(size)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()


class E2ELab:
    """The lab of one test: the segment, the server and the machines on it."""

    def __init__(self, lab: Lab, server: Server, folder: Path) -> None:
        self.lab, self.server, self.folder = lab, server, folder
        self.machines: list[Machine] = []

    def machine(self, serial: str, mac: str, *, memory_mib: int = 512, cpus: int = 1,
                manufacturer: str = "QEMU-Lab", product: str = "Standard-PC-i440FX", disk_mib: int = 64) -> Machine:
        folder = self.folder / f"vm-{serial}"
        folder.mkdir()
        vm = Machine(self.lab, folder, len(self.machines), mac=mac, serial=serial, memory_mib=memory_mib,
                     cpus=cpus, manufacturer=manufacturer, product=product, disk_mib=disk_mib)
        self.machines.append(vm)
        return vm

    def server_log(self) -> str:
        return self.server.log.read_text(errors="replace")

    def close(self) -> None:
        for vm in self.machines:
            vm.kill()
        self.server.stop()


@pytest.fixture
def e2e_env() -> dict[str, str]:
    """More settings for the lab's server, as ``{"install_cap": "1"}`` for
    PROVISIOND_INSTALL_CAP: override this fixture in a test module."""
    return {}


@pytest.fixture
def e2e(lab: Lab, settings: Settings, services: Services, tmp_path: Path, kernel: Kernel,  # noqa: F811
        installer_initrd: Path, e2e_env: dict[str, str]) -> Iterator[E2ELab]:
    require(os.path.exists("/dev/net/tun"), "needs /dev/net/tun")
    _needs("qemu-system-x86_64", "curl")
    require(Path("/usr/lib/ipxe/qemu/pxe-virtio.rom").exists() or Path("/usr/lib/ipxe/qemu/efi-virtio.rom").exists(),
            "needs ipxe-qemu (QEMU's iPXE option ROMs)")
    services.vault  # one key for the server and the test's own API calls
    server = Server(lab, settings, tmp_path, kernel.vmlinuz, installer_initrd, **e2e_env)
    running = E2ELab(lab, server, tmp_path)
    try:
        yield running
    finally:
        running.close()  # then the lab fixture deletes the namespace (and the taps in it)

