"""Shared helpers for the benchmark scripts (not a benchmark itself).

Every script builds its own throw-away data dir and database (a SQLite file
in a temporary directory, or a fresh PostgreSQL database created on the
server named by ``PROVISIOND_BENCH_PG_URL``, else
``PROVISIOND_TEST_DATABASE_URL``, else the local
``postgresql://postgres@127.0.0.1:5432/test``), removes them at the end, and
stops every process it started. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = (os.environ.get("PROVISIOND_BENCH_PG_URL") or os.environ.get("PROVISIOND_TEST_DATABASE_URL")
                or "postgresql://postgres@127.0.0.1:5432/test")
PROFILES = ("default", "web_server", "mysql_server")
SITES = ("bj1", "sh1")
RACKS = tuple(f"r{n:02d}" for n in range(1, 9))
#: Groups an operator creates before importing (a CSV import names groups, it does not create them).
GROUPS = (
    [{"name": f"site-{s}", "description": f"site {s}", "priority": 0,
      "variables": {"ntp_server": f"10.{i}.0.1", "timezone": "Asia/Shanghai"}} for i, s in enumerate(SITES)]
    + [{"name": f"rack-{r}", "description": f"rack {r}", "priority": 10,
        "variables": {"ntp_server": f"10.{i + 10}.0.1"}} for i, r in enumerate(RACKS)]
)
SERIAL = "BN{:07d}"
#: Other work on the machine skews every figure: the reports say how busy it was.
_LOAD_AT_START = os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def command_line() -> str:
    """The exact command that is running, to print with the figures."""
    return " ".join(shlex.quote(a) for a in ["python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


def machine() -> str:
    import platform

    load = f", 1-min load average at start {_LOAD_AT_START:.2f}" if _LOAD_AT_START is not None else ""
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}{load}"


# --------------------------------------------------------------------------- data


def serials(count: int) -> list[str]:
    return [SERIAL.format(i) for i in range(1, count + 1)]


def hosts_csv(count: int, *, password: bool = True) -> str:
    """``count`` hosts in the import CSV format (columns: see
    provisiond/inventory/transfer.py): unique serial, hostname, IP and MACs,
    two NICs each, two groups each, the three shipped profiles in turn."""
    from provisiond.inventory.transfer import CSV_COLUMNS

    network = ipaddress.IPv4Network("10.32.0.0/12")
    base = int(network.network_address)
    lines = [",".join(CSV_COLUMNS)]
    for i in range(1, count + 1):
        ip = ipaddress.IPv4Address(base + 256 + i)
        b = i.to_bytes(3, "big")
        tail = ":".join(f"{x:02x}" for x in b)
        site, rack = SITES[i % len(SITES)], RACKS[i % len(RACKS)]
        cells = {
            "serial": SERIAL.format(i),
            "hostname": f"node{i:06d}.{site}.example.com",
            "macs": f"eth0=52:54:00:{tail};eth1=52:54:01:{tail}",
            "ip": str(ip),
            "prefix": "12",
            "gateway": "10.32.0.1",
            "dns": "10.32.0.2;10.32.0.3",
            "bmc_type": "ipmi",
            "bmc_address": str(ipaddress.IPv4Address(base + 0x80000 + i)),
            "bmc_port": "623",
            "bmc_user": "root",
            "bmc_password": f"calvin-{i}" if password else "",
            "manufacturer": "Dell Inc.",
            "model": "PowerEdge R740",
            "cpus": str(16 << (i % 3)),
            "memory_mib": str(65536 << (i % 3)),
            "disks": "sda:480;sdb:4000",
            "profile": PROFILES[i % len(PROFILES)],
            "os": "rocky-9",
            "owner": "ops",
            "groups": f"site-{site};rack-{rack}",
            "site": site,
            "rack": rack,
            "protected": "false",
            "variables": '"{""install_disk"": ""sda""}"' if i % 2 else "",
        }
        lines.append(",".join(cells[c] for c in CSV_COLUMNS))
    return "\n".join(lines) + "\n"


def import_csv(svc: Any, text: str, filename: str = "hosts.csv") -> tuple[Any, float, float]:
    """The real import path (what POST /api/v1/import/hosts and `provctl hosts
    import` run: provisiond.actions.hosts.import_file): parse_import, then
    groups + hosts in one transaction with the variable checks.
    Returns (result, parse seconds, write seconds)."""
    from types import SimpleNamespace

    from provisiond.actions import hosts as host_actions
    from provisiond.actions.principal import SYSTEM
    from provisiond.inventory.transfer import parse_import

    t0 = time.perf_counter()
    parsed = parse_import(text, filename, "csv", svc.profiles.names())
    t1 = time.perf_counter()
    counts = host_actions.import_parsed(svc, SYSTEM, parsed, filename)
    t2 = time.perf_counter()
    return SimpleNamespace(**counts), t1 - t0, t2 - t1


def create_groups(svc: Any) -> None:
    from provisiond.inventory import groups as group_store

    with svc.db.write() as session:
        for doc in GROUPS:
            group_store.upsert_group(session, group_store.parse_group(doc))


# --------------------------------------------------------------------------- databases


def pg_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(_libpq_url(PG_ADMIN_URL), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "skip PostgreSQL"
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def _libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@dataclass
class Workspace:
    """A data dir, a boot root and a migrated database, all temporary."""

    kind: str  # sqlite | postgresql
    root: Path
    database_url: str
    pg_name: str | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def pxelinux_dir(self) -> Path:
        return self.root / "pxelinux"

    def settings(self, **overrides: Any) -> Any:
        from provisiond.config import load_settings

        return load_settings(environ={}, overrides={
            "data_dir": str(self.data_dir), "database_url": self.database_url,
            "pxelinux_dir": str(self.pxelinux_dir), "log_level": "WARNING", **overrides,
        })

    def env(self, port: int, workers: int = 2) -> dict[str, str]:
        """Environment for `provisiond ...` subprocesses on this workspace."""
        return {
            **os.environ,
            "PROVISIOND_DATA_DIR": str(self.data_dir),
            "PROVISIOND_DATABASE_URL": self.database_url,
            "PROVISIOND_PXELINUX_DIR": str(self.pxelinux_dir),
            "PROVISIOND_HTTP_HOST": "127.0.0.1",
            "PROVISIOND_HTTP_PORT": str(port),
            "PROVISIOND_HTTP_WORKERS": str(workers),
            "PROVISIOND_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "PROVISIOND_LOG_LEVEL": "WARNING",
        }


@contextlib.contextmanager
def workspace(kind: str, migrate: bool = True) -> Iterator[Workspace]:
    root = Path(tempfile.mkdtemp(prefix=f"provisiond-bench-{kind}-"))
    pg_name = None
    try:
        (root / "data").mkdir()
        (root / "pxelinux").mkdir()
        if kind == "sqlite":
            url = f"sqlite:///{root / 'data' / 'provisiond.db'}"
        elif kind == "postgresql":
            import psycopg

            pg_name = f"provisiond_bench_{uuid.uuid4().hex[:10]}"
            admin = _libpq_url(PG_ADMIN_URL)
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{pg_name}"')
            url = admin.rsplit("/", 1)[0] + "/" + pg_name
        else:
            raise ValueError(kind)
        ws = Workspace(kind, root, url, pg_name)
        if migrate:
            from provisiond.db import upgrade

            upgrade(url)
        yield ws
    finally:
        if pg_name:
            import psycopg

            with psycopg.connect(_libpq_url(PG_ADMIN_URL), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        shutil.rmtree(root, ignore_errors=True)


def namespace_database_url(url: str) -> str:
    """The database as a server inside a network namespace must name it
    (tests/netboot/namespace_db.py); stops the benchmark if it cannot."""
    from tests.netboot import namespace_db

    try:
        return namespace_db.namespace_database_url(url)
    except LookupError as exc:
        raise SystemExit(str(exc)) from None


def databases(requested: str) -> list[str]:
    """The database kinds to run: those asked for, minus an unreachable PostgreSQL (said so)."""
    kinds = [k.strip() for k in requested.split(",") if k.strip()]
    for kind in kinds:
        if kind not in ("sqlite", "postgresql"):
            raise SystemExit(f"unknown database kind {kind!r} (sqlite, postgresql)")
    if "postgresql" in kinds:
        why = pg_available()
        if why:
            print(f"# PostgreSQL skipped: {PG_ADMIN_URL} does not answer ({why})", file=sys.stderr)
            kinds.remove("postgresql")
    return kinds


def populated(ws: Workspace, count: int) -> Any:
    """Services over ``ws`` with the groups and ``count`` hosts imported."""
    from provisiond.services import Services

    svc = Services.build(ws.settings())
    create_groups(svc)
    import_csv(svc, hosts_csv(count))
    return svc


def create_token(ws: Workspace, name: str = "bench") -> str:
    """An admin token made by the real command: `provisiond tokens create NAME`."""
    out = subprocess.run([sys.executable, "-m", "provisiond.cli.server", "tokens", "create", name],
                         env=ws.env(port=8080), capture_output=True, text=True, timeout=60, check=True, cwd=ws.root)
    return out.stdout.strip().splitlines()[-1]


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """provisiond as a child process in its own process group: ``run`` (serve,
    worker: what power operations need) or one ``role`` (``serve``: HTTP only)."""

    def __init__(self, ws: Workspace, workers: int = 2, port: int | None = None, role: str = "run") -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = ws.root / f"serve-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "provisiond.cli.server", role],
            env=ws.env(self.port, workers), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=ws.root,  # not the checkout: `-m` puts the cwd first on sys.path
        )

    def wait_for(self, path: str, headers: dict[str, str] | None = None, timeout: float = 30.0,
                 interval: float = 0.002) -> float:
        """Seconds from spawn to the first 200 answer to GET ``path``."""
        deadline = time.perf_counter() + timeout
        request = urllib.request.Request(self.url + path, headers=headers or {})
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"provisiond serve exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        response.read()
                        return time.perf_counter() - self.started
            except urllib.error.HTTPError as exc:
                raise RuntimeError(f"GET {path}: HTTP {exc.code}: {exc.read()[:300]!r}") from None
            except (ConnectionError, urllib.error.URLError, OSError):
                time.sleep(interval)
        raise RuntimeError(f"provisiond serve did not answer GET {path} in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        """SIGTERM to the gunicorn master (it stops its workers); if it lingers,
        SIGKILL to the process group this object created."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, 0)  # workers of a dead master would still be in the group
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- CPU accounting

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """User + system CPU seconds of each live pid (from /proc; Linux)."""
    result = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        result[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    return result


def postgres_backends(database: str) -> list[int]:
    """PostgreSQL server processes serving ``database`` (their title names it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres:") and f" {database} " in title:
            pids.append(int(entry.name))
    return pids


class CpuMeter:
    """CPU seconds spent by a set of processes between start() and stop():
    a figure that other load on the machine skews far less than wall time."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.before: dict[int, float] = {}

    def start(self) -> None:
        self.before = cpu_seconds(self.pids)

    def stop(self) -> float:
        after = cpu_seconds(self.pids)
        return sum(after[p] - self.before.get(p, 0.0) for p in after)


# --------------------------------------------------------------------------- figures


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(pct / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def report(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()) -> None:
    print(f"\n## {title}\n")
    print(f"command: `{command_line()}`  ")
    print(f"machine: {machine()}\n")
    print(table(headers, rows))
    for note in notes:
        print(f"\n{note}")
    sys.stdout.flush()


def dump_json(path: str | None, payload: Any) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2))


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ (which the server's environment copies) while inside."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
