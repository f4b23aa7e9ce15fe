"""The lab's installed system: a Debian root file system built once, cached.

``system/build-system.sh`` makes it with debootstrap (``--variant=minbase``
plus :data:`PACKAGES`) as an ext4 image, ``rootfs.img``, with its kernel and
initrd beside it. The test installer copies the image onto a machine's disk
(the lab attaches it to the machine as install media) and runs the
kickstart's ``%post`` chrooted into it; the machine's second boot starts it
from that disk.

Building takes minutes, so it is done once and kept under
``<cache>/<key>/``, where the key is a hash of what decides the result: the
suite, the package list and the build script. The cache is
``PROVISIOND_LAB_SYSTEM_CACHE``, default ``/var/cache/provisiond-lab``,
outside any clone, so a fresh CI clone on the same machine reuses it. A build
is announced and timed on the terminal (the ``installed_system`` fixture
lifts pytest's capture for it); two builds of one key wait for each other (a
lock file). ``python -m tests.e2e.sysimage`` builds ahead of a test run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "system" / "build-system.sh"
SUITE = "bookworm"
#: Added to debootstrap's minbase: an init (systemd), a Python for the agent
#: (a python3 zipapp), a kernel, curl and CAs for the kickstart's %post,
#: ip for the console, udev to name the NIC.
PACKAGES = ("systemd", "systemd-sysv", "python3", "linux-image-amd64", "curl", "ca-certificates", "iproute2", "udev")
MIRROR = "http://deb.debian.org/debian"
DEFAULT_CACHE = Path("/var/cache/provisiond-lab")


class SystemUnavailable(RuntimeError):
    """The image cannot be built here (and none is cached)."""


@dataclass(frozen=True)
class SystemImage:
    folder: Path
    rootfs: Path  # ext4, the whole disk's file system (root=/dev/vda)
    vmlinuz: Path
    initrd: Path
    info: dict

    @property
    def size(self) -> int:
        return self.rootfs.stat().st_size

    def describe(self) -> str:
        return (f"Debian {self.info['suite']} (kernel {self.info['kernel']}), {self.size >> 20} MiB image, "
                f"built in {self.info['build_seconds']} s, in {self.folder}")


def cache_dir() -> Path:
    configured = os.environ.get("PROVISIOND_LAB_SYSTEM_CACHE")
    return Path(configured) if configured else DEFAULT_CACHE


def key(suite: str = SUITE, packages: tuple[str, ...] = PACKAGES) -> str:
    """What the image depends on, hashed: suite, packages, build script."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"suite": suite, "packages": sorted(packages)}).encode())
    digest.update(SCRIPT.read_bytes())
    return digest.hexdigest()[:16]


def _load(folder: Path) -> SystemImage | None:
    meta = folder / "system.json"
    if not meta.exists():
        return None
    image = SystemImage(folder, folder / "rootfs.img", folder / "vmlinuz", folder / "initrd.img",
                        json.loads(meta.read_text()))
    return image if all(p.exists() for p in (image.rootfs, image.vmlinuz, image.initrd)) else None


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def system_image(cache: Path | None = None, mirror: str | None = None,
                 say: Callable[[str], None] = _say) -> SystemImage:
    """The cached image for today's inputs, built first if there is none
    (``say`` tells that it is being built, and how long it took). A build
    removes the images of other keys (earlier build scripts or package
    lists): the cache holds one image."""
    cache = cache or cache_dir()
    folder = cache / key()
    image = _load(folder)
    if image is not None:
        return image
    if os.geteuid() != 0:
        raise SystemUnavailable(f"no image in {folder}, and building one needs root (debootstrap)")
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"{folder.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it: wait for it
        image = _load(folder)
        if image is not None:
            return image
        mirror = mirror or os.environ.get("PROVISIOND_LAB_MIRROR", MIRROR)
        say(f"building the lab's installed system into {folder} (debootstrap {SUITE} from {mirror}; "
            "once per change of tests/e2e/system/build-system.sh or the package list)")
        started = time.monotonic()
        built = subprocess.run(["bash", str(SCRIPT), "--out", str(folder), "--suite", SUITE, "--mirror", mirror,
                                "--packages", ",".join(PACKAGES)], capture_output=True, text=True)
        seconds = time.monotonic() - started
        if built.returncode != 0:
            raise SystemUnavailable(f"build-system.sh failed after {seconds:.0f} s:\n{built.stdout}{built.stderr}")
        image = _load(folder)
        if image is None:
            raise SystemUnavailable(f"build-system.sh left no image in {folder}:\n{built.stdout}{built.stderr}")
        say(f"built the lab's installed system in {seconds:.0f} s: {image.describe()}")
        for other in cache.iterdir():
            if other.stem == folder.name:
                continue
            if other.is_dir() and (other / "system.json").exists():
                shutil.rmtree(other, ignore_errors=True)
            elif other.suffix == ".lock":
                other.unlink(missing_ok=True)
        return image


if __name__ == "__main__":  # build ahead of a test run: python -m tests.e2e.sysimage
    print(system_image().describe())
