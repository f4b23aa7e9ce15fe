"""Install-slot decisions under load: 500 installers asking for slots.

500 hosts are armed, have fetched their kickstart and passed the hardware
check (in-process, through the lifecycle); planner statistics are refreshed
(ANALYZE, as autovacuum does). Then `provisiond serve` (gunicorn, 4 sync
workers) takes `POST /install/<token>/slot`:

1. first requests: each installer asks once (one `curl --parallel`, 8 at
   once): the first 55 (the default cap) are granted, the rest join the
   queue (a state change, an event and a durable commit each);
2. polls at a steady 500/s (an open loop: each poll is sent at its time,
   whatever the answers, as independent installers do), round robin over
   the 500 tokens;
3. polls by wrk, with 8 and then 500 connections and no pause between
   requests (a closed loop: the server's capacity, and latency under a
   backlog of 500).
   A queued installer whose heartbeat is recent is answered by one read-only
   statement without the cap's lock; a poll that may be granted is decided
   under the lock.

Reports decisions/s and p50/p99 latency on PostgreSQL and SQLite.
Goal: >= 500 decisions/s and p99 under 50 ms on PostgreSQL.

    python benchmarks/slots.py [--installers 500] [--db postgresql,sqlite] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

LUA = r"""
local tokens = {%(tokens)s}
local i = 0
granted, waiting, other = 0, 0, 0
local threads = {}

function setup(thread)
  thread:set("offset", #threads * 7)
  thread:set("granted", 0)
  thread:set("waiting", 0)
  thread:set("other", 0)
  table.insert(threads, thread)
end

function request()
  i = i + 1
  local token = tokens[((i + offset) %% #tokens) + 1]
  return wrk.format("POST", "/install/" .. token .. "/slot", {["Content-Length"] = "0"})
end

function response(status, headers, body)
  if status == 200 then granted = granted + 1
  elseif status == 429 then waiting = waiting + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local g, w, o = 0, 0, 0
  for _, t in ipairs(threads) do
    g = g + t:get("granted"); w = w + t:get("waiting"); o = o + t:get("other")
  end
  io.write(string.format(
    "RESULT {\"requests\": %%d, \"duration_us\": %%d, \"granted\": %%d, \"waiting\": %%d, \"other\": %%d, " ..
    "\"socket_errors\": %%d, \"p50_us\": %%d, \"p99_us\": %%d, \"max_us\": %%d}\n",
    summary.requests, summary.duration, g, w, o,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def prepare(svc, count: int) -> list[str]:
    """Arm every host and take it through kickstart and hardware check."""
    from provisiond.install.verify import parse_report
    from provisiond.inventory.hosts import load_record
    from provisiond.models import utcnow

    tokens = []
    now = utcnow()
    for serial in common.serials(count):
        with svc.db.write() as session:
            token = svc.lifecycle.arm(session, serial, now, "benchmark").token
            install = svc.lifecycle.find_install(session, token, now)
            svc.lifecycle.kickstart_fetched(session, install, now, "benchmark")
            record = load_record(session, serial)
            report = parse_report({
                "serial": serial, "boot_mac": record.primary_mac, "nics": [], "cpus": record.cpus,
                "memory_mib": record.memory_mib,
                "disks": [{"name": d.name, "size_gb": d.size_gb} for d in record.disks or ()],
            })
            assert svc.lifecycle.report_hardware(session, install, report, now).ok
        tokens.append(token)
    return tokens


def join(url: str, tokens: list[str], concurrency: int, workdir: Path) -> dict[str, float]:
    """Every installer's first slot request (it joins the queue, or is one of
    the first ``cap`` granted): a state change, an event and a durable commit
    each. Sent by one ``curl --parallel`` with ``concurrency`` transfers at
    once (an event loop in C: the client costs little CPU)."""
    config = workdir / "join.curl"
    config.write_text("".join(f'url = "{url}/install/{token}/slot"\noutput = "/dev/null"\n' for token in tokens))
    start = time.perf_counter()
    out = subprocess.run(["curl", "-s", "--parallel", "--parallel-immediate", "--parallel-max", str(concurrency),
                          "-X", "POST", "-H", "Content-Length: 0", "-w", "%{http_code} %{time_total}\n",
                          "-K", str(config)], capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    answers = [(int(code), float(seconds)) for code, seconds in (line.split() for line in out.stdout.splitlines())]
    if len(answers) != len(tokens):
        raise RuntimeError(f"curl answered {len(answers)} of {len(tokens)} requests: {out.stderr[-500:]}")
    latencies = sorted(seconds for _, seconds in answers)
    return {"requests": len(answers), "rps": len(answers) / elapsed,
            "granted": sum(status == 200 for status, _ in answers),
            "waiting": sum(status == 429 for status, _ in answers),
            "other": sum(status not in (200, 429) for status, _ in answers),
            "p50_us": latencies[len(latencies) // 2] * 1e6, "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
            "max_us": latencies[-1] * 1e6, "socket_errors": 0}


def open_loop(url: str, tokens: list[str], rate: int, duration: int) -> dict[str, float]:
    """Polls arriving at a fixed ``rate`` whatever the answers, round robin
    over the installers' tokens: an open loop, as many independent
    installers are (wrk's closed loop waits for each answer before the next
    request, so a slow server is asked less). Each poll is its own
    connection, as a sync worker closes it anyway; latency counts from the
    poll's scheduled time, so time spent waiting for a connection is in it."""
    import asyncio
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80

    async def poll(index: int, at: float) -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, at - loop.time()))
        status = 0
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"POST /install/{tokens[index % len(tokens)]}/slot HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            await reader.read()
            writer.close()
        except (OSError, ValueError, IndexError):
            pass
        return status, loop.time() - at

    async def run() -> tuple[list[tuple[int, float]], float]:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.2
        answers = await asyncio.gather(*(poll(i, start + i / rate) for i in range(rate * duration)))
        return list(answers), loop.time() - start

    answers, _elapsed = asyncio.run(run())
    latencies = sorted(seconds for _, seconds in answers)
    # Decisions per second of the schedule: all answered means the rate was
    # sustained; how late the answers came is the latency.
    return {"requests": len(answers), "rps": sum(status in (200, 429) for status, _ in answers) / duration,
            "granted": sum(status == 200 for status, _ in answers),
            "waiting": sum(status == 429 for status, _ in answers),
            "other": sum(status not in (200, 429) for status, _ in answers),
            "p50_us": latencies[len(latencies) // 2] * 1e6, "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
            "max_us": latencies[-1] * 1e6, "socket_errors": 0}


def run_wrk(url: str, script: Path, duration: int, connections: int, threads: int) -> dict[str, float]:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
               "--latency", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    result = json.loads(line[len("RESULT "):])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def row(kind: str, what: str, result: dict[str, float], ok: bool | None) -> list[Any]:
    return [kind, what, f"**{result['rps']:,.0f}**", f"{result['p50_us'] / 1000:.1f}",
            f"**{result['p99_us'] / 1000:.1f}**", f"{result['max_us'] / 1000:.0f}", f"{result['granted']:,}",
            f"{result['waiting']:,}", result["other"] + result["socket_errors"],
            "" if ok is None else "yes" if ok else "NO"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--installers", type=int, default=500)
    parser.add_argument("--db", default="postgresql,sqlite")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--moderate", type=int, default=8, help="connections of the latency run (default 8)")
    parser.add_argument("--rate", type=int, default=500, help="polls/s of the open-loop run (default 500)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    rows, figures = [], []
    for kind in common.databases(args.db):
        with common.workspace(kind) as ws:
            svc = common.populated(ws, args.installers)
            tokens = prepare(svc, args.installers)
            with svc.db.engine.connect() as conn:  # fresh planner statistics, as autovacuum keeps them
                conn.execute(text("ANALYZE"))
                conn.commit()
            svc.db.dispose()
            script = ws.root / "slots.lua"
            script.write_text(LUA % {"tokens": ", ".join(f'"{t}"' for t in tokens)})
            with common.Server(ws, workers=args.workers) as server:
                server.wait_for("/healthz")
                first = join(server.url, tokens, args.moderate, ws.root)
                ok = first["rps"] >= 500 and first["p99_us"] < 50_000 and not first["other"]
                rows.append(row(kind, f"first requests, {args.moderate} at once", first, ok))
                figures.append({"db": kind, "phase": "first request", "connections": args.moderate, **first})
                steady = open_loop(server.url, tokens, args.rate, args.duration)
                ok = steady["rps"] >= 500 and steady["p99_us"] < 50_000 and not steady["other"]
                rows.append(row(kind, f"polls, {args.rate}/s open loop", steady, ok))
                figures.append({"db": kind, "phase": "polls, open loop", "rate": args.rate, **steady})
                for connections in (args.moderate, args.installers):  # the backlog of 500 would skew the next run
                    result = run_wrk(server.url, script, args.duration, connections, args.threads)
                    ok = result["rps"] >= 500 and result["p99_us"] < 50_000 and not result["other"]
                    rows.append(row(kind, f"polls, {connections} connections", result, ok))
                    figures.append({"db": kind, "phase": "polls", "connections": connections, **result})
    common.report(
        f"POST /install/<token>/slot: {args.installers} installers, cap 55, gunicorn {args.workers} sync workers",
        ["database", "requests", "decisions/s", "p50 ms", "p99 ms", "max ms", "200 granted", "429 waiting",
         "errors", "goal"],
        rows,
        [f"First requests: each installer's first POST .../slot, {args.moderate} at once (queue joins and "
         f"grants: state change + event + durable commit under the cap's lock). Open loop: {args.rate} polls/s "
         f"for {args.duration} s, round robin over the tokens, each at its scheduled time whatever the answers "
         f"(Python asyncio, a connection per poll; latency from the scheduled time). Polls: wrk -t{args.threads} "
         f"-d{args.duration}s with {args.moderate} and then {args.installers} connections (every installer at "
         "once, no pause between requests), round robin over the installers' tokens: a waiter with a recent "
         "heartbeat is answered by one read-only statement; grants and heartbeats are decided under the lock "
         "(BEGIN IMMEDIATE + flock on SQLite, an advisory lock on PostgreSQL). With sync workers, latency under "
         "N closed-loop connections is about N / throughput: real installers pause for Retry-After between "
         "polls. wrk shares the 2 cores with the server."],
    )
    common.dump_json(args.json, figures)


if __name__ == "__main__":
    main()
