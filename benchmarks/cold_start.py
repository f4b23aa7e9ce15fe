"""Cold start: from spawning `provisiond serve` to the first answered
GET /api/v1/hosts/<sn>/kickstart, with 10,000 hosts in the database.

The server is the real command (`python -m provisiond.cli.server serve`,
configured by PROVISIOND_* variables: DATA_DIR, DATABASE_URL, HTTP_PORT,
HTTP_WORKERS); the admin token is made beforehand with `provisiond tokens
create`. The clock starts just before the spawn and stops when the first
200 with the kickstart body arrives (the client retries every 2 ms until
the port answers). Each run is a fresh process on a fresh port; the server
is stopped (SIGTERM, then SIGKILL to its process group if it lingers) before
the next. Reports the median and the spread of several runs. Goal: under 1 s.

    python benchmarks/cold_start.py [--hosts 10000] [--runs 7] [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def python_startup() -> float:
    """Seconds for a bare `python -c pass`: the floor of any Python command here."""
    import subprocess

    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--db", default="sqlite,postgresql", help="sqlite,postgresql (default: both)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    rows, figures = [], []
    floor = python_startup()
    for kind in common.databases(args.db):
        with common.workspace(kind) as ws:
            svc = common.populated(ws, args.hosts)
            _ = svc.vault  # the key exists: this measures a restart, not the very first start
            svc.db.dispose()
            token = common.create_token(ws)
            auth = {"Authorization": f"Bearer {token}"}
            serial = common.serials(args.hosts)[args.hosts // 2]
            path = f"/api/v1/hosts/{serial}/kickstart"
            times = []
            for _run in range(args.runs):
                with common.Server(ws, workers=args.workers, role="serve") as server:
                    times.append(server.wait_for(path, auth, timeout=60))
                    with urllib.request.urlopen(urllib.request.Request(server.url + path, headers=auth),
                                                timeout=10) as response:
                        assert b"%pre" in response.read(), "not a kickstart"
            times.sort()
            median = statistics.median(times)
            rows.append([kind, args.runs, f"**{median:.2f}**", f"{times[0]:.2f}", f"{times[-1]:.2f}",
                         "yes" if median < 1 else "NO"])
            figures.append({"db": kind, "runs": times, "median_s": median})
    common.report(
        f"Cold start of `provisiond serve` ({args.workers} workers) to the first kickstart, {args.hosts:,} hosts",
        ["database", "runs", "median s", "min s", "max s", "< 1 s"], rows,
        [f"For scale: a bare `python -c pass` takes {floor * 1000:.0f} ms here."],
    )
    common.dump_json(args.json, {"python_floor_s": floor, "cases": figures})


if __name__ == "__main__":
    main()
