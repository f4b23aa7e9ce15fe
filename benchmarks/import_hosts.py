"""Bulk import: 10,000 hosts from CSV into a fresh database, then the same
file again (every row an update), on SQLite and PostgreSQL.

The timed path is the real one (POST /api/v1/import/hosts, `provctl hosts
import`): parse_import (validation of every row), then import_hosts in one
write transaction, committed. Groups are created first, as an operator
would (a CSV names groups, it does not define them). Goal: under 10 s.

    python benchmarks/import_hosts.py [--hosts 10000] [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--db", default="sqlite,postgresql", help="sqlite,postgresql (default: both)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    from provisiond.services import Services

    text = common.hosts_csv(args.hosts)
    rows, figures = [], []
    for kind in common.databases(args.db):
        with common.workspace(kind) as ws:
            svc = Services.build(ws.settings())
            _ = svc.vault  # the key exists, as after `provisiond serve`'s first start
            common.create_groups(svc)
            for case in ("fresh database (all inserts)", "same file again (all updates)"):
                t0 = time.perf_counter()
                result, parse_s, write_s = common.import_csv(svc, text)
                total = time.perf_counter() - t0
                rows.append([kind, case, f"{result.created}/{result.updated}", f"{parse_s:.2f}",
                             f"{write_s:.2f}", f"**{total:.2f}**", "yes" if total < 10 else "NO"])
                figures.append({"db": kind, "case": case, "created": result.created, "updated": result.updated,
                                "parse_s": parse_s, "write_s": write_s, "total_s": total})
            svc.db.dispose()
    common.report(
        f"Import of {args.hosts:,} hosts from CSV ({len(text) / 1e6:.1f} MB)",
        ["database", "case", "created/updated", "parse s", "write+commit s", "total s", "< 10 s"], rows,
        [("parse = parse_import (CSV + validation of every row); write = groups lookup, uniqueness checks, "
         "hosts/NICs/group links/events inserted or updated, BMC passwords encrypted, commit.")],
    )
    common.dump_json(args.json, figures)


if __name__ == "__main__":
    main()
