"""A real machine PXE-boots from a real `provisiond serve`.

QEMU (``-accel tcg``) with QEMU's own iPXE option ROM on a virtio NIC, in the
lab's server namespace on ``br0``; provisiond runs there as
``python -m provisiond.cli.server serve`` with full-mode DHCP, TFTP and HTTP
on 10.77.0.1, the test's own database, a boot root filled by
``provisiond bootloaders install`` and a profile whose install tree is
provisiond's own ``/boot``.

The firmware is iPXE, so provisiond's DHCP hands it the per-MAC iPXE script
URL (``/boot/ipxe/<mac>``), not lpxelinux.0 (giving iPXE a loader would
chain-load it into itself). Not armed: the script says local boot and exits
back to the BIOS, which finds no disk. Armed: the script loads the
profile's kernel and initrd over HTTP from ``/boot`` with ``inst.ks=`` and
the one-time token. When the Debian cloud kernel package is in apt's cache
the kernel is real, and its serial console prints the command line it was
given (token included); otherwise small dummy files stand in, iPXE's fetches
of both are what is seen, and the token is read from the served script.

Asserted from the serial log, the server's log and the host's events; never
on wall-clock time (the waits are bounded only so a broken boot fails).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisiond.config import SHIPPED_PROFILES, Settings
from provisiond.services import Services
from tests.conftest import require
from tests.netboot.conftest import Lab
from tests.netboot.test_dhcp_lab import add_host, namespace_database_url

ADDRESS = "10.77.0.1"
PUBLIC_URL = f"http://{ADDRESS}:8080"
KERNEL_DEB = "/var/cache/apt/archives/linux-image-*-cloud-amd64_*_amd64.deb"
BOOT_WAIT = 120  # seconds: a bound on a broken boot, not an assertion


@pytest.fixture(scope="session")
def real_kernel(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """A Debian kernel unpacked from apt's cache, or None (nothing is downloaded)."""
    debs = sorted(glob.glob(KERNEL_DEB))
    if not debs or shutil.which("dpkg-deb") is None:
        return None
    root = tmp_path_factory.mktemp("kernel")
    with (root / "k.tar").open("wb") as tar:
        subprocess.run(["dpkg-deb", "--fsys-tarfile", debs[-1]], stdout=tar, check=True)
    members = subprocess.run(["tar", "-tf", str(root / "k.tar")], capture_output=True, text=True, check=True)
    wanted = [m for m in members.stdout.split() if m.startswith("./boot/vmlinuz-")]
    if not wanted:
        return None
    subprocess.run(["tar", "-xf", str(root / "k.tar"), "-C", str(root), wanted[0]], check=True)
    (root / "k.tar").unlink()
    return root / wanted[0]


class Server:
    """`provisiond serve` (HTTP + DHCP + TFTP) in the lab's server namespace."""

    def __init__(self, lab: Lab, settings: Settings, folder: Path, kernel: Path | None,
                 initrd: Path | None = None, **extra_env: str) -> None:
        """``kernel``/``initrd``: the files served as the profile's; dummies when None.
        ``extra_env``: more PROVISIOND_* settings (``install_cap="1"``)."""
        self.lab = lab
        self.boot_root = folder / "bootroot"
        self.boot_root.mkdir()
        profiles = folder / "profiles"
        shutil.copytree(SHIPPED_PROFILES, profiles)
        default = yaml.safe_load((profiles / "default.yaml").read_text())
        self.kernel_path, self.initrd_path = default["kernel"], default["initrd"]
        text = (profiles / "default.yaml").read_text().replace(default["install_tree"], f"{PUBLIC_URL}/boot")
        (profiles / "default.yaml").write_text(text)
        self.env = {
            **os.environ,
            "PROVISIOND_DATA_DIR": str(settings.data_dir),
            "PROVISIOND_DATABASE_URL": namespace_database_url(settings.database_url),
            "PROVISIOND_NETBOOT_ADDRESS": ADDRESS,
            "PROVISIOND_NETBOOT_INTERFACE": "br0",
            "PROVISIOND_DHCP_MODE": "full",
            "PROVISIOND_DHCP_SUBNETS": f"[{{network: 10.77.0.0/24, router: {ADDRESS}}}]",
            "PROVISIOND_HTTP_HOST": ADDRESS,
            "PROVISIOND_HTTP_PORT": "8080",
            "PROVISIOND_HTTP_WORKERS": "2",
            "PROVISIOND_PUBLIC_URL": PUBLIC_URL,
            "PROVISIOND_AGENT_LISTEN": f"{ADDRESS}:8443",  # the gateway the installed hosts' agents enroll with
            "PROVISIOND_PXELINUX_DIR": str(self.boot_root),
            "PROVISIOND_PROFILES_DIR": str(profiles),
            "PROVISIOND_LOG_LEVEL": "INFO",
            **{f"PROVISIOND_{key.upper()}": value for key, value in extra_env.items()},
        }
        installed = subprocess.run([sys.executable, "-m", "provisiond.cli.server", "bootloaders", "install"],
                                   env=self.env, capture_output=True, text=True)
        require(installed.returncode == 0,
                f"provisiond bootloaders install failed: {installed.stdout}{installed.stderr}")
        # entry templates come from settings.boot_templates_dir (the repository)
        kernel_file, initrd_file = self.boot_root / self.kernel_path, self.boot_root / self.initrd_path
        kernel_file.parent.mkdir(parents=True, exist_ok=True)
        if kernel is not None:
            shutil.copy(kernel, kernel_file)
        else:
            kernel_file.write_bytes(b"not a kernel\n" * 64)
        if initrd is not None:
            shutil.copy(initrd, initrd_file)
        else:
            initrd_file.write_bytes(b"not an initrd\n" * 64)  # a real kernel panics on it, after its command line
        self.profiles = profiles
        self.log = folder / "server.log"
        self.log.write_bytes(b"")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start `provisiond serve` (again after :meth:`kill`: the same database,
        settings and files; its log goes on in the same file)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.lab.ns_cmd(self.lab.server_ns, sys.executable, "-m", "provisiond.cli.server", "run"),
                env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self._wait()

    def processes(self) -> list[int]:
        """The server's processes: the master (``ip netns exec`` execs it) and
        everything under it (the HTTP workers), master first."""
        assert self.process is not None
        return process_tree(self.process.pid)

    def kill(self, within: float = 30) -> list[int]:
        """SIGKILL to the server and every process under it at once (what
        systemd does to a unit's processes, or a power cut), then wait
        (bounded) until they are all gone. Returns their pids."""
        assert self.process is not None
        pids = self.processes()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=within)
        deadline = time.monotonic() + within
        while any(alive(pid) for pid in pids):
            assert time.monotonic() < deadline, f"killed server processes still alive: {pids}"
            time.sleep(0.1)
        return pids

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server's processes have used so far,
        with the processes it has reaped (HTTP workers that ended)."""
        return sum(cpu_seconds(pid) for pid in self.processes())

    def _wait(self) -> None:
        assert self.process is not None
        for _ in range(150):
            if self.process.poll() is not None:
                raise RuntimeError(f"provisiond serve exited:\n{self.log.read_text()}")
            if self.lab.run(self.lab.server_ns, "curl", "-sf", "-o", "/dev/null", f"{PUBLIC_URL}/healthz",
                            timeout=10).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"provisiond serve did not answer:\n{self.log.read_text()}")

    def stop(self) -> str:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.log.read_text(errors="replace")


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from the field after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def fetched(url: str, console: str) -> bool:
    """Whether iPXE says it fetched ``url``: "URL... ok", with a progress
    figure ("URL... 92%     ok") when the download took a while."""
    return re.search(re.escape(url) + r"\.\.\.[\d%\s\x08]*ok", console) is not None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc), parents before children."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, queue = [], [root]
    while queue:
        pid = queue.pop(0)
        if _stat(pid) is not None:
            tree.append(pid)
            queue.extend(sorted(children.get(pid, [])))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and of its children it has waited for."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def server(lab: Lab, settings: Settings, services: Services, tmp_path: Path,
           real_kernel: Path | None) -> Iterator[Server]:
    require(shutil.which("curl") is not None, "needs curl")
    services.vault  # one key for the server and the test's arm()
    running = Server(lab, settings, tmp_path, real_kernel)
    yield running
    running.stop()


class Machine:
    """One QEMU VM with the iPXE ROM, PXE-booting on br0 through a tap."""

    def __init__(self, lab: Lab, serial_log: Path, mac: str, serial: str) -> None:
        lab.run(lab.server_ns, "ip", "tuntap", "add", "dev", "tap0", "mode", "tap", check=True)
        lab.run(lab.server_ns, "ip", "link", "set", "tap0", "master", "br0", check=True)
        lab.run(lab.server_ns, "ip", "link", "set", "tap0", "up", check=True)
        self.serial_log = serial_log
        self.process = subprocess.Popen(lab.ns_cmd(
            lab.server_ns, "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-boot", "n", "-no-reboot",
            "-nographic", "-serial", f"file:{serial_log}", "-monitor", "none", "-display", "none",
            "-smbios", f"type=1,serial={serial}",
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={mac}"),
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.serial_log.read_text(errors="replace") if self.serial_log.exists() else ""

    def wait_for(self, done: Callable[[str], bool]) -> str:
        """Poll the serial log until ``done`` (bounded); then the VM is killed."""
        try:
            for _ in range(BOOT_WAIT * 2):
                if done(self.text()) or self.process.poll() is not None:
                    break
                time.sleep(0.5)
        finally:
            self.kill()
        return self.text()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def machine(lab: Lab, tmp_path: Path) -> Iterator[Callable[[str, str], Machine]]:
    require(os.path.exists("/dev/net/tun"), "needs /dev/net/tun")
    require(shutil.which("qemu-system-x86_64") is not None, "needs qemu-system-x86_64 (qemu-system-x86)")
    require(Path("/usr/lib/ipxe/qemu/pxe-virtio.rom").exists() or Path("/usr/lib/ipxe/qemu/efi-virtio.rom").exists(),
            "needs ipxe-qemu (QEMU's iPXE option ROMs)")
    machines: list[Machine] = []

    def start(mac: str, serial: str) -> Machine:
        vm = Machine(lab, tmp_path / "serial.log", mac, serial)
        machines.append(vm)
        return vm

    yield start
    for vm in machines:
        vm.kill()


def events(client: Any, auth: dict[str, str], serial: str) -> list[tuple[str, str]]:
    response = client.get(f"/api/v1/hosts/{serial}/events", headers=auth)
    assert response.status_code == 200, response.get_json()
    return [(e["kind"], e["message"]) for e in response.get_json()["events"]]


def test_not_armed_host_boots_locally(lab: Lab, server: Server, machine: Any, client: Any,
                                      auth: dict[str, str]) -> None:
    mac, serial = "52:54:00:77:01:10", "SN-QEMU-10"
    add_host(client, auth, serial, mac, ip="10.77.0.10", prefix=24, gateway=ADDRESS)
    vm = machine(mac, serial)
    console = vm.wait_for(lambda text: "No bootable device" in text)
    log = server.stop()
    script = f"{PUBLIC_URL}/boot/ipxe/{mac}"
    assert f"Next server: {ADDRESS}" in console, console
    assert f"Filename: {script}" in console, console
    assert "provisiond: local boot (host SN-QEMU-10 is " in console, console
    assert "No bootable device" in console, console  # back in the BIOS: the "disk" was tried
    assert "/boot/images/pxeboot/vmlinuz" not in console and "Kernel command line" not in console
    assert f"iPXE script for {mac} from 10.77.0.10: local" in log, log
    timeline = events(client, auth, serial)
    messages = [message for _, message in timeline]
    assert any(m.startswith("DHCP: offered 10.77.0.10") and script in m for m in messages), timeline
    assert any(m.startswith("DHCP: acknowledged 10.77.0.10") and script in m for m in messages), timeline
    ipxe = [m for kind, m in timeline if kind == "ipxe"]
    assert ipxe and all(": local boot (host SN-QEMU-10 is " in m for m in ipxe), timeline
    assert not any("installer entry" in m for m in messages), timeline


def test_armed_host_loads_the_installer_entry(lab: Lab, server: Server, machine: Any, client: Any,
                                              auth: dict[str, str], arm: Any, real_kernel: Path | None) -> None:
    mac, serial = "52:54:00:77:01:11", "SN-QEMU-11"
    add_host(client, auth, serial, mac, ip="10.77.0.11", prefix=24, gateway=ADDRESS)
    token = arm(serial)
    kernel_url = f"{PUBLIC_URL}/boot/{server.kernel_path}"
    initrd_url = f"{PUBLIC_URL}/boot/{server.initrd_path}"
    vm = machine(mac, serial)
    if real_kernel is not None:  # the kernel itself prints what it was given
        console = vm.wait_for(lambda text: "Kernel command line:" in text and "\n" in
                              text.split("Kernel command line:", 1)[1])
    else:  # iPXE loads both files (then sits on the dummy kernel, silently)
        console = vm.wait_for(lambda text: fetched(initrd_url, text))
    log = server.stop()
    assert f"Filename: {PUBLIC_URL}/boot/ipxe/{mac}" in console, console
    assert fetched(kernel_url, console), console  # iPXE prints each URL it fetches
    assert fetched(initrd_url, console), console
    assert "provisiond: local boot" not in console
    assert f"iPXE script for {mac} from 10.77.0.11: install" in log, log
    kickstart = f"inst.ks={PUBLIC_URL}/"
    if real_kernel is not None:
        line = console.split("Kernel command line:", 1)[1].splitlines()[0]
        assert kickstart in line and token in line, line
        assert f"inst.repo={PUBLIC_URL}/boot" in line, line
    timeline = events(client, auth, serial)
    messages = [message for _, message in timeline]
    assert any(m.startswith("DHCP: acknowledged 10.77.0.11") for m in messages), timeline
    ipxe = [m for kind, m in timeline if kind == "ipxe"]
    assert any(": installer entry (host SN-QEMU-11 is armed" in m for m in ipxe), timeline
    assert not any("local boot" in m for m in ipxe), timeline
    if real_kernel is None:
        # The script itself, as the firmware got it (provisiond is stopped: ask the app).
        entry = client.get(f"/boot/ipxe/{mac}")
        assert entry.status_code == 200
        assert token in entry.get_data(as_text=True)
