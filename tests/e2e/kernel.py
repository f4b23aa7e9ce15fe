"""A real Debian kernel for the test installer, fetched with apt and cached.

The package is what Debian's ``linux-image-cloud-amd64`` meta-package points
at today (a ``linux-image-<abi>-cloud-amd64`` package: Debian's x86-64 kernel
for virtual machines, virtio as modules, fewer drivers to probe under TCG);
``PROVISIOND_E2E_KERNEL_PACKAGE`` names another (e.g. ``linux-image-6.1.0-56-amd64``).
It is fetched once with ``apt-get download`` (or taken from apt's own cache),
unpacked with ``dpkg-deb``, and only ``vmlinuz`` and the modules the installer
loads are kept under the cache folder (``PROVISIOND_E2E_CACHE``, default
``~/.cache/provisiond-e2e``). Nothing of it is ever committed.

Offline, a kernel cached by an earlier run is used instead of the newest one.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

META_PACKAGE = "linux-image-cloud-amd64"

#: Modules the installer loads, in this order (dependencies first): virtio
#: PCI transport, the NIC (virtio-net with its failover helpers), the disk.
MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
           "failover", "net_failover", "virtio_net", "virtio_blk")


class KernelUnavailable(RuntimeError):
    """No kernel could be fetched and none is cached."""


@dataclass(frozen=True)
class Kernel:
    package: str
    version: str  # the kernel release, e.g. 6.1.0-56-cloud-amd64
    vmlinuz: Path
    modules: Path  # a folder of ``<name>.ko`` for every name in MODULES
    deb_bytes: int

    def describe(self) -> str:
        return (f"{self.package} ({self.version}; .deb {self.deb_bytes / 1e6:.1f} MB, "
                f"vmlinuz {self.vmlinuz.stat().st_size / 1e6:.1f} MB)")


def cache_dir() -> Path:
    configured = os.environ.get("PROVISIOND_E2E_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "provisiond-e2e"


def wanted_package() -> str | None:
    """The kernel package to use: the override, or the meta-package's dependency."""
    override = os.environ.get("PROVISIOND_E2E_KERNEL_PACKAGE")
    if override:
        return override
    if shutil.which("apt-cache") is None:
        return None
    result = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True, text=True)
    for line in result.stdout.splitlines():
        name = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and name.startswith("linux-image-"):
            return name
    return None


def _load(folder: Path) -> Kernel | None:
    meta = folder / "kernel.json"
    if not meta.exists():
        return None
    data = json.loads(meta.read_text())
    kernel = Kernel(data["package"], data["version"], folder / "vmlinuz", folder / "modules", data["deb_bytes"])
    if not kernel.vmlinuz.exists() or not all((kernel.modules / f"{m}.ko").exists() for m in MODULES):
        return None
    return kernel


def _download(package: str, into: Path) -> Path:
    """The package's .deb: apt's own cache if it holds it, else ``apt-get download``."""
    cached = sorted(glob.glob(f"/var/cache/apt/archives/{glob.escape(package)}_*_amd64.deb"))
    if cached:
        return Path(cached[-1])
    if shutil.which("apt-get") is None:
        raise KernelUnavailable("apt-get is not installed")
    fetched = subprocess.run(["apt-get", "download", "-q", package], cwd=into, capture_output=True, text=True)
    debs = sorted(into.glob(f"{package}_*.deb"))
    if fetched.returncode != 0 or not debs:
        raise KernelUnavailable(f"apt-get download {package} failed: {fetched.stdout}{fetched.stderr}".strip())
    return debs[-1]


def _unpack(package: str, deb: Path, folder: Path) -> Kernel:
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        root = Path(scratch)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        vmlinuz = sorted(root.glob("boot/vmlinuz-*"))
        if not vmlinuz:
            raise KernelUnavailable(f"{deb.name} holds no boot/vmlinuz-*")
        version = vmlinuz[0].name.removeprefix("vmlinuz-")
        found = {ko.name.removesuffix(".ko"): ko for ko in (root / "lib" / "modules" / version).rglob("*.ko")}
        missing = [m for m in MODULES if m not in found]
        if missing:
            raise KernelUnavailable(f"{deb.name} lacks the modules {', '.join(missing)} (built in? compressed?)")
        staging = root / "keep"
        (staging / "modules").mkdir(parents=True)
        shutil.copy(vmlinuz[0], staging / "vmlinuz")
        for name in MODULES:
            shutil.copy(found[name], staging / "modules" / f"{name}.ko")
        (staging / "kernel.json").write_text(json.dumps(
            {"package": package, "version": version, "deb_bytes": deb.stat().st_size}))
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)  # complete or absent: never half a kernel in the cache
    kernel = _load(folder)
    assert kernel is not None
    return kernel


def _fetch(package: str, cache: Path) -> Kernel:
    kernel = _load(cache / package)
    if kernel is not None:
        return kernel
    with tempfile.TemporaryDirectory(dir=cache) as downloads:
        try:
            return _unpack(package, _download(package, Path(downloads)), cache / package)
        except subprocess.CalledProcessError as error:
            raise KernelUnavailable(str(error)) from error


def _apt_update() -> bool:
    """Refresh apt's package lists (root only): a stale list names a kernel
    the mirror no longer has."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    return subprocess.run(["apt-get", "update", "-qq"], capture_output=True).returncode == 0


def _cached(cache: Path) -> Kernel | None:
    """The kernel an earlier run cached most recently, if any."""
    kernels = [k for k in (_load(folder) for folder in cache.glob("linux-image-*")) if k is not None]
    return max(kernels, key=lambda k: k.vmlinuz.stat().st_mtime, default=None)


def fetch_kernel(cache: Path | None = None) -> Kernel:
    """The newest kernel package, fetched and unpacked once, then from the cache.
    If it cannot be fetched: a kernel cached earlier; failing that, refresh
    apt's lists (they may name a kernel the mirror dropped) and try again."""
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    problem = f"apt-cache does not know {META_PACKAGE} (run apt-get update)"
    for attempt in range(2):
        package = wanted_package()
        if package is not None:
            try:
                return _fetch(package, cache)
            except KernelUnavailable as error:
                problem = str(error)
        fallback = _cached(cache)
        if fallback is not None:
            return fallback
        if attempt == 0 and not _apt_update():
            break
    raise KernelUnavailable(problem)


if __name__ == "__main__":  # fetch ahead of a test run: python -m tests.e2e.kernel
    print(fetch_kernel().describe())
