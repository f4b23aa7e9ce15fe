"""The end-to-end lab: real machines install through a real provisiond.

``e2e`` gives a private L2 segment (the netboot ``lab``: namespace, bridge
``br0`` at 10.77.0.1/24), ``provisiond serve`` on it (full-mode DHCP, TFTP,
HTTP; the test's own database), and ``e2e.machine(...)`` for any number of
QEMU machines, each on its own tap in the bridge, with its own MAC, SMBIOS
serial, memory, CPU count, raw virtio disk and serial-console log per boot,
and (``bmc=True``) its own BMC: an ipmi_sim in the lab's namespace whose
chassis program (``chassis.sh``) really starts, stops and resets that
machine's QEMU process, and whose boot device sets the firmware's boot order.
``e2e.provctl(...)`` runs provctl in the namespace against the server.

The profile's kernel and initrd, served from provisiond's ``/boot``, are the
test installer: a real Debian kernel (``tests/e2e/kernel.py``, fetched with
``apt-get download`` into a cache on the first run) and an initramfs built by
``tests/e2e/installer/build-initramfs.sh`` from busybox-static and curl. It
runs the kickstart provisiond composes (see ``installer/ks-run``).

A machine made with ``system=installed_system`` (opt-in: the others stay on
the fast path) also has install media, a read-only disk holding a real
Debian system (``tests/e2e/sysimage.py``: debootstrap, built once and
cached): the installer copies it onto the machine's disk and runs ``%post``
chrooted into it, as Anaconda does, and ``vm.boot(from_disk=True)`` starts
that system (QEMU's direct kernel boot with its kernel and initrd stands in
for its boot loader), whose provisiond-agent then enrolls at the lab's agent
gateway (https://10.77.0.1:8443).

Everything (VMs, BMCs, taps, namespace, server) is torn down after the test; the
machine's own interfaces are never touched. Under CI=true a missing
prerequisite fails the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from provisiond.config import Settings
from provisiond.services import Services
from tests.conftest import require
from tests.e2e.kernel import MODULES, Kernel, KernelUnavailable, fetch_kernel
from tests.e2e.sysimage import SystemImage, SystemUnavailable, system_image
from tests.netboot.conftest import Lab, lab  # noqa: F401  (the fixture, shared with tests/netboot)
from tests.netboot.test_qemu_pxe import PUBLIC_URL, Server, alive
from tests.power.ipmisim import TOOLS, SimBmc, write_config

INSTALLER = Path(__file__).resolve().parent / "installer"
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
                           capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable})
    require(built.returncode == 0, f"building the installer initramfs failed: {built.stdout}{built.stderr}")
    return out


@pytest.fixture(scope="session")
def installed_system(request: pytest.FixtureRequest) -> SystemImage:
    """The lab's installed system (Debian, python3, systemd), built by
    debootstrap once and cached by its inputs (``tests/e2e/sysimage.py``).
    A build says so, and how long it took, on the terminal."""
    _needs("debootstrap", "mkfs.ext4")
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def say(text: str) -> None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print(f"\n{text}", file=sys.stderr, flush=True)
    try:
        return system_image(say=say)
    except SystemUnavailable as error:
        require(False, f"no installed system for the lab: {error}")
        raise


#: The serial number of the install media disk (the installer looks for it).
MEDIA_SERIAL = "provisiond-media"
#: The installed system's kernel command line (what its boot loader would
#: pass): its root is the whole disk; its console, with the journal
#: forwarded to it, is the serial log; a panic ends the boot at once.
SYSTEM_CMDLINE = "root=/dev/vda rw console=ttyS0,115200n8 systemd.journald.forward_to_console=1 panic=1"


def system_accel() -> str:
    """QEMU's accelerator for the installed system's boots:
    ``PROVISIOND_LAB_ACCEL`` (e.g. ``kvm``), else TCG like every lab boot."""
    return os.environ.get("PROVISIOND_LAB_ACCEL") or "tcg,thread=single"


CHASSIS = Path(__file__).resolve().parent / "chassis.sh"
#: A bound on a BMC's start and on the power worker's reaction (seconds).
BMC_WAIT = 60
#: Where each machine's ipmi_sim listens: 127.0.0.1 of the lab's namespace
#: (where provisiond runs), port BMC_PORT + the machine's index.
BMC_PORT = 6230


class LabBmc(SimBmc):
    """One machine's ipmi_sim, in the lab's namespace, whose chassis program
    (``chassis.sh``) powers that machine's QEMU process on, off and through a
    reset. What it was told is in :meth:`calls`/:meth:`actions`, as for the
    recording BMC of tests/power."""

    def __init__(self, lab: Lab, directory: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        super().__init__(directory, port, process)
        self.lab = lab

    @classmethod
    def start(cls, lab: Lab, vm_folder: Path, port: int) -> LabBmc:
        directory = vm_folder / "bmc"
        lan, emu = write_config(directory, port, chassis=f"{CHASSIS} {vm_folder}")
        (directory / "machine" / "boot").write_text("none\n")  # no override: the machine's own order
        (directory / "machine" / "power").unlink()  # the power is QEMU's, not a file's
        with (directory / "ipmi_sim.log").open("wb") as log:
            process = subprocess.Popen(
                lab.ns_cmd(lab.server_ns, "ipmi_sim", "-c", str(lan), "-f", str(emu), "-n",
                           "-s", str(directory / "simstate")),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=directory)
        bmc = cls(lab, directory, port, process)
        deadline = time.monotonic() + BMC_WAIT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"ipmi_sim exited ({process.returncode}): {bmc.log()}")
            try:
                bmc.ipmitool("chassis", "power", "status", timeout=10)
                break
            except (RuntimeError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    bmc.stop()
                    raise
                time.sleep(0.2)
        bmc.clear()  # the readiness checks are not the test's
        return bmc

    def record(self) -> dict[str, Any]:
        """The host record's ``bmc``: what provisiond uses to reach this one."""
        return {"type": "ipmi", "address": self.host, "port": self.port, "user": self.user,
                "password": self.password}

    def ipmitool(self, *arguments: str, port: int | None = None, timeout: float = 20) -> str:
        """ipmitool against this BMC, from the lab's namespace."""
        command = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", self.host, "-p", str(port or self.port),
                   "-U", self.user, "-E", *arguments]
        done = subprocess.run(self.lab.ns_cmd(self.lab.server_ns, *command), capture_output=True, text=True,
                              timeout=timeout, check=False, env={**os.environ, "IPMI_PASSWORD": self.password})
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr or done.stdout}")
        return done.stdout

    def sets(self) -> list[tuple[str, str]]:
        """What the BMC told the chassis, oldest first: ``("boot", "pxe")``, ``("power", "1")``."""
        return [(action.name, action.value) for action in self.actions()]


class Machine:
    """One QEMU machine on its own tap in ``br0``: an iPXE ROM on its virtio
    NIC, a raw virtio disk that outlives its boots, one serial log per boot.

    It is switched on and off by ``chassis.sh`` — by its BMC (``bmc=True``:
    an ipmi_sim in the lab whose chassis program that is) or by the test
    pressing the power button (:meth:`boot`, :meth:`kill`); either way
    ``qemu.sh`` in its folder is its QEMU command line. With ``-no-reboot`` a
    guest reboot or power-off ends the QEMU process: the machine is off, and
    the next power-on is its next boot, with the same disk."""

    def __init__(self, lab: Lab, folder: Path, index: int, *, mac: str, serial: str, memory_mib: int,
                 cpus: int, manufacturer: str, product: str, disk_mib: int, system: SystemImage | None = None) -> None:
        self.lab, self.folder = lab, folder
        self.mac, self.serial, self.memory_mib, self.cpus = mac, serial, memory_mib, cpus
        self.manufacturer, self.product = manufacturer, product
        self.system = system
        self.tap = f"tap{index}"
        self.disk = folder / "disk.raw"
        if system is not None:  # room for the system the installer copies onto it
            disk_mib = max(disk_mib, -(-system.size >> 20))
        with self.disk.open("wb") as disk:
            disk.truncate(disk_mib << 20)
        lab.run(lab.server_ns, "ip", "tuntap", "add", "dev", self.tap, "mode", "tap", check=True)
        lab.run(lab.server_ns, "ip", "link", "set", self.tap, "master", "br0", check=True)
        lab.run(lab.server_ns, "ip", "link", "set", self.tap, "up", check=True)
        self.exited = self.timed_out = False  # how the last wait() ended
        self.bmc: LabBmc | None = None
        smbios = f"type=1,serial={serial},manufacturer={manufacturer},product={product}"
        fixed = ["qemu-system-x86_64", "-accel", "tcg,thread=single", "-m", str(memory_mib), "-smp", str(cpus),
                 "-smbios", smbios, "-no-reboot", "-nographic", "-display", "none", "-monitor", "none",
                 "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
                 "-drive", f"file={self.disk},format=raw,if=none,id=d0"]
        command = folder / "qemu.sh"
        text = ("#!/bin/sh\n"
                f"# Lab machine {serial} (tests/e2e/conftest.py), started by chassis.sh with SERIAL_LOG,\n"
                "# NET_BOOTINDEX and DISK_BOOTINDEX set (the firmware's boot order: 1 first).\n")
        if system is not None:
            # The installed system's boot loader is not modelled: once the test
            # asks for it (boot(from_disk=True)), QEMU boots the system's own
            # kernel and initrd with its root on the disk, as its GRUB would.
            direct = [*fixed[:1], "-accel", system_accel(), *fixed[3:], "-kernel", str(system.vmlinuz),
                      "-initrd", str(system.initrd), "-append", SYSTEM_CMDLINE]
            text += (f"if [ -e {shlex.quote(str(self.boot_from_disk_flag))} ]; then\n"
                     f"  exec {shlex.join(direct)} \\\n"
                     '    -serial "file:$SERIAL_LOG" \\\n'
                     f'    -device "virtio-net-pci,netdev=n0,mac={mac}" -device virtio-blk-pci,drive=d0\n'
                     "fi\n")
        text += (f"exec {shlex.join(fixed)} \\\n"
                 '  -serial "file:$SERIAL_LOG" \\\n'
                 f'  -device "virtio-net-pci,netdev=n0,mac={mac},bootindex=$NET_BOOTINDEX" \\\n'
                 '  -device "virtio-blk-pci,drive=d0,bootindex=$DISK_BOOTINDEX"')
        if system is not None:  # the install media: the system's image, read-only, never booted
            text += (f" \\\n  -drive {shlex.quote(f'file={system.rootfs},format=raw,if=none,id=m0,readonly=on')}"
                     f" \\\n  -device virtio-blk-pci,drive=m0,serial={MEDIA_SERIAL}")
        command.write_text(text + "\n")

    # ------------------------------------------------------------- power

    def chassis(self, *arguments: str) -> str:
        done = self.lab.run(self.lab.server_ns, "sh", str(CHASSIS), str(self.folder), *arguments, timeout=30)
        assert done.returncode == 0, f"chassis.sh {' '.join(arguments)}: {done.stdout}{done.stderr}"
        return done.stdout

    @property
    def boots(self) -> int:
        """Power-ons so far (by the BMC or the button)."""
        counter = self.folder / "boots"
        return int(counter.read_text()) if counter.exists() else 0

    @property
    def serial_log(self) -> Path:
        return self.folder / f"serial-{self.boots}.log"

    def running(self) -> bool:
        """Whether its QEMU process is alive (what its BMC reports as power)."""
        try:
            pid = int((self.folder / "qemu.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            # Empty while the process is inside execve (sh becoming QEMU): still this machine.
            return alive(pid) and (not cmdline or f"{self.folder}/".encode() in cmdline)
        except (OSError, ValueError):
            return False

    @property
    def boot_from_disk_flag(self) -> Path:
        return self.folder / "boot-from-disk"

    def boot(self, from_disk: bool = False) -> None:
        """Press the power button: the next boot, on the same disk.
        ``from_disk`` (a machine with a ``system``): boot the system
        installed on its disk, not the network (see :data:`SYSTEM_CMDLINE`)."""
        assert not self.running(), "already running"
        if from_disk:
            assert self.system is not None, "only a machine with a system boots one from its disk"
            self.boot_from_disk_flag.touch()
        else:
            self.boot_from_disk_flag.unlink(missing_ok=True)
        self.chassis("button", "on")

    def kill(self) -> None:
        """Switch it off (if it is on), behind its BMC's back."""
        self.chassis("button", "off")

    def wait_for_power_on(self, boots: int, timeout: float = BMC_WAIT) -> None:
        """Wait (bounded) until its ``boots``-th power-on (by its BMC)."""
        deadline = time.monotonic() + timeout
        while self.boots < boots:
            assert time.monotonic() < deadline, f"{self.serial} was not powered on ({self.boots} boots)"
            time.sleep(0.2)

    # ------------------------------------------------------------- what it did

    def console(self) -> str:
        log = self.serial_log
        return log.read_text(errors="replace").replace("\r", "") if log.exists() else ""

    def qemu_errors(self) -> str:
        """What QEMU itself said on this boot, but for being stopped."""
        log = self.folder / f"qemu-{self.boots}.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        return "\n".join(line for line in lines if "terminating on signal" not in line)

    def wait(self, until: Callable[[str], object] | None = None, timeout: float = BOOT_WAIT) -> str:
        """Wait (bounded) for the machine to switch itself off, or for
        ``until(console)``; then make sure it is off. Returns the console of
        this boot."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running():
            if until is not None and until(self.console()):
                break
            time.sleep(0.5)
        self.timed_out = time.monotonic() >= deadline
        self.exited = not self.running()
        self.kill()
        if self.exited and self.qemu_errors():
            raise AssertionError(f"QEMU failed: {self.qemu_errors()}\n{self.console()}")
        if self.exited and not self.console():  # off before its firmware said a word: say what we know
            log = self.folder / f"qemu-{self.boots}.log"
            calls = self.folder / "bmc" / "machine" / "calls.log"
            raise AssertionError(f"{self.serial} switched off with an empty console (boot {self.boots}); "
                                 f"QEMU: {log.read_text() if log.exists() else '-'}; "
                                 f"chassis calls: {calls.read_text() if calls.exists() else '-'}")
        return self.console()

    def wait_until(self, until: Callable[[str], object], timeout: float = BOOT_WAIT) -> str:
        """Wait (bounded) for ``until(console)`` and leave the machine as it is;
        fail if it switches off first or the time runs out."""
        deadline = time.monotonic() + timeout
        while not until(self.console()):
            assert self.running(), f"{self.serial} switched off:\n{self.qemu_errors()}\n{self.console()}"
            assert time.monotonic() < deadline, f"{self.serial}: still waiting after {timeout} s:\n{self.console()}"
            time.sleep(0.5)
        return self.console()

    def disk_head(self, size: int = 512) -> bytes:
        with self.disk.open("rb") as disk:
            return disk.read(size)


class E2ELab:
    """The lab of one test: the segment, the server and the machines on it."""

    def __init__(self, lab: Lab, server: Server, folder: Path, token: str) -> None:
        self.lab, self.server, self.folder, self.token = lab, server, folder, token
        self.machines: list[Machine] = []
        self.home = folder / "home"  # provctl's HOME: no developer config leaks in
        self.home.mkdir()

    def machine(self, serial: str, mac: str, *, memory_mib: int = 512, cpus: int = 1,
                manufacturer: str = "QEMU-Lab", product: str = "Standard-PC-i440FX", disk_mib: int = 64,
                bmc: bool = False, system: SystemImage | None = None) -> Machine:
        """A machine, off; ``bmc``: with its own ipmi_sim (``vm.bmc``);
        ``system`` (the ``installed_system`` fixture): with install media, so
        the installer installs that real Debian system on its disk and runs
        ``%post`` chrooted into it, and ``vm.boot(from_disk=True)`` boots it."""
        folder = self.folder / f"vm-{serial}"
        folder.mkdir()
        index = len(self.machines)
        vm = Machine(self.lab, folder, index, mac=mac, serial=serial, memory_mib=memory_mib,
                     cpus=cpus, manufacturer=manufacturer, product=product, disk_mib=disk_mib, system=system)
        self.machines.append(vm)
        if bmc:
            vm.bmc = LabBmc.start(self.lab, folder, BMC_PORT + index)
        return vm

    def provctl_command(self, *arguments: str) -> tuple[list[str], dict[str, str]]:
        """provctl as an operator on the boot network runs it: a process in
        the lab's namespace, talking HTTP to the server, with an admin token."""
        env = {k: v for k, v in os.environ.items() if k not in ("PROVISIOND_URL", "PROVISIOND_TOKEN",
                                                                  "PROVCTL_CONFIG")}
        env.update(HOME=str(self.home), PROVISIOND_URL=PUBLIC_URL, PROVISIOND_TOKEN=self.token)
        return self.lab.ns_cmd(self.lab.server_ns, sys.executable, "-m", "provisiond.cli.provctl", *arguments), env

    def provctl(self, *arguments: str, status: int = 0, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command, env = self.provctl_command(*arguments)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == status, \
            f"provctl {' '.join(arguments)}: exit {done.returncode}\n{done.stdout}{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def server_log(self) -> str:
        return self.server.log.read_text(errors="replace")

    def close(self) -> None:
        # The server first (no more BMC commands), then the BMCs, then the machines.
        try:
            self.server.stop()
        finally:
            for vm in self.machines:
                if vm.bmc is not None:
                    vm.bmc.stop()
                vm.kill()


@pytest.fixture
def e2e_env() -> dict[str, str]:
    """More settings for the lab's server, as ``{"install_cap": "1"}`` for
    PROVISIOND_INSTALL_CAP: override this fixture in a test module."""
    return {}


@pytest.fixture
def e2e(lab: Lab, settings: Settings, services: Services, tmp_path: Path, kernel: Kernel,  # noqa: F811
        installer_initrd: Path, e2e_env: dict[str, str], admin_token: str) -> Iterator[E2ELab]:
    require(os.path.exists("/dev/net/tun"), "needs /dev/net/tun")
    _needs("qemu-system-x86_64", "curl", *TOOLS)
    require(Path("/usr/lib/ipxe/qemu/pxe-virtio.rom").exists() or Path("/usr/lib/ipxe/qemu/efi-virtio.rom").exists(),
            "needs ipxe-qemu (QEMU's iPXE option ROMs)")
    services.vault  # one key for the server and the test's own API calls
    server = Server(lab, settings, tmp_path, kernel.vmlinuz, installer_initrd, **e2e_env)
    running = E2ELab(lab, server, tmp_path, admin_token)
    try:
        yield running
    finally:
        running.close()  # then the lab fixture deletes the namespace (and the taps in it)

