"""TFTP: a PXE boot storm and one large transfer, provisiond against tftpd-hpa.

Two network namespaces joined by a veth pair (created here, deleted at the
end): the server 10.32.0.1, the clients 10.32.0.254. 10,000 hosts are
imported; the boot root holds the real ``lpxelinux.0`` and ``ldlinux.c32``
(syslinux packages) and a 32 MiB file.

Storm: ``--clients`` (200) curl processes start at once, each fetching what
a BIOS PXE client fetches, one file after the other (a shell running three
curl commands): ``lpxelinux.0``,
``ldlinux.c32`` and its own ``pxelinux.cfg/01-<mac>`` (the MAC of host i).
provisiond renders the per-MAC entries live; tftpd-hpa (``in.tftpd -L -s``)
serves the same entries, pre-rendered: the files provisiond served in the
first run are copied into its root. Total time from the first spawn to the
last exit, and failed transfers (a missing file, or a loader whose bytes
differ). Runs alternate provisiond / tftpd-hpa, ``--runs`` times each.

Large: one curl ``--tftp-blksize 1468`` of the 32 MiB file from each server.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO, dump_json, namespace_database_url, populated, report, workspace  # noqa: E402
from benchmarks.dhcp import SERVER_IP, veth_pair  # noqa: E402

HOSTS = 10_000
LOADERS = {"lpxelinux.0": Path("/usr/lib/PXELINUX/lpxelinux.0"),
           "ldlinux.c32": Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")}
BIG = "big.img"
BIG_SIZE = 32 * 1024 * 1024

SERVE = textwrap.dedent("""
    import logging, sys
    from provisiond.config import load_settings
    from provisiond.netboot.tftp import TftpService
    from provisiond.services import Services
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    service = TftpService(Services.build(settings))
    service.start()
    print("ready", flush=True)
    sys.stdin.read()
    service.stop()
""")


def mac(i: int) -> str:
    """Host i's eth0 MAC, as benchmarks.common.hosts_csv makes it, dashed."""
    return "52-54-00-" + "-".join(f"{x:02x}" for x in i.to_bytes(3, "big"))


class Provisiond:
    name = "provisiond"

    def __init__(self, ws: Any, ns: str) -> None:
        env = {
            **os.environ, "PYTHONPATH": str(REPO),
            "PROVISIOND_DATA_DIR": str(ws.data_dir), "PROVISIOND_DATABASE_URL": namespace_database_url(ws.database_url),
            "PROVISIOND_PXELINUX_DIR": str(ws.pxelinux_dir), "PROVISIOND_PUBLIC_URL": f"http://{SERVER_IP}:8080",
            "PROVISIOND_NETBOOT_ADDRESS": SERVER_IP, "PROVISIOND_NETBOOT_INTERFACE": "eth0",
            "PROVISIOND_TFTP_PORT": "69", "PROVISIOND_LOG_LEVEL": "INFO",
        }
        self.log_path = ws.root / "provisiond-tftp.log"
        self.process = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVE], env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log_path.open("a"), cwd=ws.root)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            self.process.wait(timeout=30)
            raise RuntimeError(f"provisiond's TFTP service did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class TftpdHpa:
    name = "tftpd-hpa"

    def __init__(self, root: Path, ns: str) -> None:
        # -L: foreground; -s: chroot-like root; -u root: the temporary root is mode 0700.
        self.process = subprocess.Popen(["ip", "netns", "exec", ns, "in.tftpd", "-L", "-s", "-u", "root",
                                         "-a", f"{SERVER_IP}:69", str(root)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        time.sleep(0.5)
        if self.process.poll() is not None:
            raise RuntimeError("in.tftpd exited at once")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def storm(client_ns: str, out: Path, clients: int) -> tuple[float, int, list[str]]:
    """(seconds, failed transfers, failure notes)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    base = f"tftp://{SERVER_IP}"
    processes = []
    t0 = time.perf_counter()
    for i in range(1, clients + 1):
        d = out / str(i)
        d.mkdir()
        # One after the other, as the firmware and pxelinux ask (one curl per
        # file: curl 7.88 fails every TFTP URL after the first in one invocation,
        # "getpeername() failed with errno 107").
        script = " && ".join(f"curl -sS --max-time 120 -o {d / name.replace('/', '_')} {base}/{name}"
                             for name in (*LOADERS, f"pxelinux.cfg/01-{mac(i)}"))
        processes.append(subprocess.Popen(["ip", "netns", "exec", client_ns, "sh", "-c", script],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    notes = []
    for p in processes:
        _, err = p.communicate(timeout=180)
        if p.returncode:
            notes.append(err.decode(errors="replace").strip()[:200])
    seconds = time.perf_counter() - t0
    failed = 0
    for i in range(1, clients + 1):
        d = out / str(i)
        for name, source in LOADERS.items():
            if not (d / name).exists() or not filecmp.cmp(d / name, source, shallow=False):
                failed += 1
        cfg = d / f"pxelinux.cfg_01-{mac(i)}"
        if not cfg.exists() or cfg.stat().st_size == 0:
            failed += 1
    return seconds, failed, notes


def big(client_ns: str, out: Path) -> tuple[float, bool]:
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    result = subprocess.run(["ip", "netns", "exec", client_ns, "curl", "-sS", "--max-time", "120",
                             "--tftp-blksize", "1468", "-o", str(out), f"tftp://{SERVER_IP}/{BIG}"],
                            capture_output=True, text=True, timeout=180)
    seconds = time.perf_counter() - t0
    ok = result.returncode == 0 and out.exists() and out.stat().st_size == BIG_SIZE
    out.unlink(missing_ok=True)
    return seconds, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--json")
    args = parser.parse_args()
    for tool in ("in.tftpd", "curl", "ip"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} (apt-get install tftpd-hpa curl iproute2; do not start the service)")
    for source in LOADERS.values():
        if not source.exists():
            raise SystemExit(f"needs {source} (apt-get install pxelinux syslinux-common)")
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    results: dict[str, Any] = {"storm": {"provisiond": [], "tftpd-hpa": []}, "big": {}}
    with workspace(args.db) as ws:
        populated(ws, HOSTS).db.dispose()
        for name, source in LOADERS.items():
            shutil.copy(source, ws.pxelinux_dir / name)
        with (ws.pxelinux_dir / BIG).open("wb") as f:
            f.write(os.urandom(BIG_SIZE))
        hpa_root = ws.root / "tftpd-hpa"
        (hpa_root / "pxelinux.cfg").mkdir(parents=True)
        for name in (*LOADERS, BIG):
            os.link(ws.pxelinux_dir / name, hpa_root / name)
        tag = "pt" + uuid.uuid4().hex[:6]
        with veth_pair(tag) as (server_ns, client_ns):
            out = ws.root / "out"
            for run in range(args.runs):
                for kind in ("provisiond", "tftpd-hpa"):
                    server = Provisiond(ws, server_ns) if kind == "provisiond" else TftpdHpa(hpa_root, server_ns)
                    try:
                        seconds, failed, notes = storm(client_ns, out, args.clients)
                    finally:
                        server.stop()
                    results["storm"][kind].append({"seconds": seconds, "failed": failed, "errors": notes[:5]})
                    print(f"# storm run {run + 1} {kind}: {seconds:.2f} s, {failed} failed {notes[:2]}",
                          file=sys.stderr)
                    if kind == "provisiond" and run == 0:
                        # tftpd-hpa serves what provisiond rendered, from disk.
                        for i in range(1, args.clients + 1):
                            rendered = out / str(i) / f"pxelinux.cfg_01-{mac(i)}"
                            if rendered.exists():
                                shutil.copy(rendered, hpa_root / "pxelinux.cfg" / f"01-{mac(i)}")
            for kind in ("provisiond", "tftpd-hpa"):
                server = Provisiond(ws, server_ns) if kind == "provisiond" else TftpdHpa(hpa_root, server_ns)
                try:
                    seconds, ok = big(client_ns, ws.root / "big.out")
                finally:
                    server.stop()
                results["big"][kind] = {"seconds": seconds, "ok": ok, "mib_per_s": 32 / seconds}
                print(f"# 32 MiB {kind}: {seconds:.2f} s ok={ok}", file=sys.stderr)
    p_runs, h_runs = results["storm"]["provisiond"], results["storm"]["tftpd-hpa"]
    p_med = statistics.median(r["seconds"] for r in p_runs)
    h_med = statistics.median(r["seconds"] for r in h_runs)
    p_failed, h_failed = sum(r["failed"] for r in p_runs), sum(r["failed"] for r in h_runs)
    storm_ok = p_med <= 1.5 * h_med and p_failed == 0
    pb, hb = results["big"]["provisiond"], results["big"]["tftpd-hpa"]
    big_ratio = pb["mib_per_s"] / hb["mib_per_s"]
    rows = [
        [f"storm, {args.clients} clients x 3 files", "provisiond", f"**{p_med:.2f}**",
         ", ".join(f"{r['seconds']:.2f}" for r in p_runs), p_failed, "", "yes" if storm_ok else "NO"],
        [f"storm, {args.clients} clients x 3 files", "tftpd-hpa", f"**{h_med:.2f}**",
         ", ".join(f"{r['seconds']:.2f}" for r in h_runs), h_failed, "", ""],
        ["storm", "ratio provisiond / tftpd-hpa (time)", f"{p_med / h_med:.2f}x", "", "", "", ""],
        ["32 MiB, blksize 1468", "provisiond", f"**{pb['seconds']:.2f}**", "", 0 if pb["ok"] else 1,
         f"{pb['mib_per_s']:.1f}", "yes" if big_ratio >= 0.5 and pb["ok"] else "NO"],
        ["32 MiB, blksize 1468", "tftpd-hpa", f"**{hb['seconds']:.2f}**", "", 0 if hb["ok"] else 1,
         f"{hb['mib_per_s']:.1f}", ""],
        ["32 MiB", "ratio provisiond / tftpd-hpa (throughput)", f"{big_ratio:.2f}x", "", "", "", ""],
    ]
    report(f"TFTP boot storm and large transfer, provisiond vs tftpd-hpa over a veth pair, {HOSTS:,} hosts "
           f"({args.db})", ["case", "server", "median s", "runs s", "failed transfers", "MiB/s", "goal"], rows,
           [f"Storm: {args.clients} client shells started at once, each running `curl tftp://{SERVER_IP}/lpxelinux.0 && "
            "curl .../ldlinux.c32 && curl .../pxelinux.cfg/01-<its mac>` (curl's default blksize 512); time from the first "
            "spawn to the last exit, so curl start-up (600 processes on the same cores) is in both figures. "
            "provisiond renders each 01-<mac> from the database (tftp_max_transfers at its default 256, log level "
            "INFO); tftpd-hpa (`in.tftpd -L -s`) reads the same entries pre-rendered from disk. "
            "Goals: storm <= 1.5x tftpd-hpa's time with 0 failed; 32 MiB >= 0.5x tftpd-hpa's throughput."])
    dump_json(args.json, results)


if __name__ == "__main__":
    main()
