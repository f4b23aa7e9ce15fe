"""In-process kickstart composition for 10,000 hosts, on SQLite and PostgreSQL.

For every host: ``load_record`` (the DB lookup the HTTP route does, in its
own read transaction) and ``Composer.render`` are timed separately with
perf_counter_ns. Reports p50/p99/max per render, and the same for lookup +
render. The first render (Jinja2 compiles the fragments) is reported on
its own and left out of the percentiles. Goal: p99 under 1 ms for the
composition.

    python benchmarks/render.py [--hosts 10000] [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import gc
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

    from provisiond.inventory import hosts as host_store
    from provisiond.kickstart.composer import InstallContext

    rows, figures = [], []
    for kind in common.databases(args.db):
        with common.workspace(kind) as ws:
            svc = common.populated(ws, args.hosts)
            composer = svc.composer
            context = InstallContext("PREVIEW", svc.settings.public_url)
            serials = common.serials(args.hosts)

            with svc.db.read() as session:  # the one-query read gives what the ORM read gives
                for serial in serials[:100]:
                    assert host_store.load_record(session, serial) == host_store.to_record(
                        host_store.get_host(session, serial)), serial

            t0 = time.perf_counter_ns()
            with svc.db.read() as session:
                first_record = host_store.load_record(session, serials[0])
            first = composer.render(first_record, context)
            cold_ms = (time.perf_counter_ns() - t0) / 1e6

            lookups, renders, render_cpu, sizes = [], [], [], 0
            gc.collect()
            for serial in serials:
                a = time.perf_counter_ns()
                with svc.db.read() as session:
                    record = host_store.load_record(session, serial)
                b = time.perf_counter_ns()
                b_cpu = time.thread_time_ns()
                text = composer.render(record, context)
                c_cpu = time.thread_time_ns()
                c = time.perf_counter_ns()
                lookups.append(b - a)
                renders.append(c - b)
                render_cpu.append(c_cpu - b_cpu)
                sizes += len(text)
            assert first and sizes
            both = sorted(x + y for x, y in zip(lookups, renders))
            renders.sort()
            lookups.sort()
            render_cpu.sort()
            for label, values in (("render (Composer.render)", renders),
                                  ("render, thread CPU time", render_cpu),
                                  ("lookup (load_record)", lookups),
                                  ("lookup + render", both)):
                p50, p99 = common.percentile(values, 50) / 1e6, common.percentile(values, 99) / 1e6
                worst = values[-1] / 1e6
                goal = ("yes" if p99 < 1 else "NO") if label.startswith("render (") else ""
                rows.append([kind, label, f"{p50:.3f}", f"**{p99:.3f}**", f"{worst:.2f}",
                             f"{len(values) / (sum(values) / 1e9):,.0f}", goal])
                figures.append({"db": kind, "what": label, "p50_ms": p50, "p99_ms": p99, "max_ms": worst,
                                "per_s": len(values) / (sum(values) / 1e9)})
            rows.append([kind, "first render (compiles fragments)", "", "", f"{cold_ms:.1f}", "", ""])
            figures.append({"db": kind, "what": "first", "ms": cold_ms, "avg_kickstart_bytes": sizes / len(serials)})
            svc.db.dispose()
    common.report(
        f"Kickstart composition in process, {args.hosts:,} hosts (one render each)",
        ["database", "what", "p50 ms", "p99 ms", "max ms", "per s (serial)", "render p99 < 1 ms"], rows,
        [("Each host is rendered once, in serial-number order, with a PREVIEW install context; "
         "the lookup is one read transaction per host, as in GET /api/v1/hosts/<sn>/kickstart. "
         "Times are wall clock (perf_counter_ns); 'thread CPU time' (thread_time_ns) is the same renders "
         "without the time the process spent preempted by other work on the machine.")],
    )
    common.dump_json(args.json, figures)


if __name__ == "__main__":
    main()
