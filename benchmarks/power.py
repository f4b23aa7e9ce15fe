"""Power-cycling for an install: 50 hosts, each behind its own BMC (OpenIPMI's
``ipmi_sim`` on a loopback UDP port), armed and reset through provisiond,
against the loop operators write today, in the same run:

    for each host in turn:
        ipmitool -I lanplus -C 3 -H 127.0.0.1 -p PORT -U admin -P secret chassis bootdev pxe
        ipmitool -I lanplus -C 3 -H 127.0.0.1 -p PORT -U admin -P secret chassis power reset

(``-C 3`` names the cipher suite; without it ipmitool spends ~10 s per call
discovering one.) provisiond: one ``POST /api/v1/installs`` with
``{"serials": [all 50], "power": true, "force": true, "pace_seconds": 0}``
to ``provisiond serve``, which queues, per host, "boot from the network next
time" then "reset (power on if off)"; its power worker (a thread pool in the
gunicorn master) carries them out, one command at a time per BMC with the
minimum gap (``bmc_min_gap_ms``, 200 ms unless ``--min-gap-ms``). The time is
from the request to the moment every operation is seen done (the reset
operation of each host is polled, one request per ~20 ms while waiting), and
also to the last ``finished_at`` the operations record and to the last reset
the BMCs received (no polling overhead in these two).

Every BMC records each call of its chassis program with a timestamp: the run
checks that each machine was told "boot pxe" and then "reset", and, for
provisiond, that consecutive commands to one BMC were at least the minimum
gap apart. Goal: provisiond >= 10x faster end to end, every gap honoured.

    python benchmarks/power.py [--hosts 50] [--runs 3] [--min-gap-ms MS] [--db sqlite]
                               [--set power_workers=32 ...] [--py-spy FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.power.ipmisim
import common  # noqa: E402

from tests.power.ipmisim import PASSWORD, TOOLS, USER, SimBmc, start_ipmi_sim  # noqa: E402

POLL = 0.02  # seconds between two looks at an unfinished operation
TIMEOUT = 300.0  # seconds one side may take before the run is abandoned


# --------------------------------------------------------------------------- BMCs


def start_bmcs(root: Path, count: int, stack: contextlib.ExitStack) -> list[SimBmc]:
    """``count`` ipmi_sim, each in its own directory, machine powered on (a host
    being reinstalled is running); each is stopped when ``stack`` closes."""
    bmcs = []
    for i in range(1, count + 1):
        for attempt in range(3):  # a free port may be taken before ipmi_sim binds it
            try:
                bmc = start_ipmi_sim(root / f"bmc{i:03d}", power=True)
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        stack.callback(bmc.stop)
        bmcs.append(bmc)
    return bmcs


def hosts_yaml(serials: list[str], bmcs: list[SimBmc]) -> str:
    """The import document. The BMC address is ``localhost`` (127.0.0.1 here):
    provisiond refuses a loopback IP address as a BMC address."""
    lines = ["hosts:"]
    for i, (serial, bmc) in enumerate(zip(serials, bmcs), 1):
        lines += [
            f"  - serial: {serial}",
            f"    hostname: node{i:03d}.power.example.com",
            f'    macs: ["52:54:00:10:{i >> 8:02x}:{i & 0xff:02x}"]',
            f"    bmc: {{type: ipmi, address: localhost, port: {bmc.port}, user: {USER}, password: {PASSWORD}}}",
            "    profile: default",
        ]
    return "\n".join(lines) + "\n"


def is_boot(name: str, value: str) -> bool:
    return name == "boot" and value == "pxe"


def is_cycle(name: str, value: str) -> bool:
    """What a reset is at the chassis: ``reset 1``, or ``power 1`` for a machine that was off."""
    return (name, value) in (("reset", "1"), ("power", "1"))


def check_sequence(bmc: SimBmc) -> str | None:
    """None when the BMC was told boot pxe and then a reset (or power on), else what it was told."""
    told = [(a.name, a.value) for a in bmc.actions()]
    boot = next((i for i, a in enumerate(told) if is_boot(*a)), None)
    if boot is not None and any(is_cycle(*a) for a in told[boot + 1:]):
        return None
    return f"BMC on port {bmc.port} was told {told or 'nothing'}"


def commands(calls: list[tuple[float, str]]) -> list[tuple[float, float, str]]:
    """The chassis calls of one BMC grouped into provisiond's commands
    (start, end, what): a reset reads the power state right before it sends
    the chassis control (reset if on, power on if off), so a ``get power``
    directly followed by ``set power``/``set reset`` is one driver call."""
    grouped: list[tuple[float, float, str]] = []
    for stamp, what in calls:
        if grouped and what.split()[:2] in (["set", "power"], ["set", "reset"]) and grouped[-1][2] == "get power":
            start, _, _ = grouped.pop()
            grouped.append((start, stamp, f"get power + {what}"))
        else:
            grouped.append((stamp, stamp, what))
    return grouped


def gaps(bmcs: list[SimBmc]) -> dict[str, Any]:
    """The smallest gaps each BMC saw: between provisiond's commands, and between any two chassis calls."""
    between_commands, between_calls = [], []
    for bmc in bmcs:
        calls = bmc.calls()
        for (a, _), (b, what) in zip(calls, calls[1:]):
            between_calls.append((b - a, bmc.port, what))
        grouped = commands(calls)
        for (_, end, _), (start, _, what) in zip(grouped, grouped[1:]):
            between_commands.append((start - end, bmc.port, what))
    smallest = min(between_commands, default=(float("nan"), 0, ""))
    return {"min_command_gap_s": smallest[0], "min_command_gap_what": smallest[2],
            "min_call_gap_s": min(between_calls, default=(float("nan"), 0, ""))[0],
            "command_gaps": sorted(g for g, _, _ in between_commands)}


def reset_times(bmcs: list[SimBmc]) -> list[float]:
    """When each BMC passed the reset (or power on) to its chassis (time.time())."""
    found = []
    for bmc in bmcs:
        found.append(max((a.time for a in bmc.actions() if is_cycle(a.name, a.value)), default=float("nan")))
    return found


# --------------------------------------------------------------------------- HTTP


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.requests = 0

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        data = None
        headers = dict(self.headers)
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:500]!r}") from None

    def wait_done(self, operation_ids: list[int], timeout: float = TIMEOUT) -> float:
        """Look at each operation in turn until it is done or failed (one request per
        POLL while waiting); return time.time() when the last one was seen finished."""
        deadline = time.monotonic() + timeout
        for operation_id in operation_ids:
            while self.call("GET", f"/api/v1/power/{operation_id}")["status"] not in ("done", "failed"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"power operation {operation_id} not finished after {timeout} s")
                time.sleep(POLL)
        return time.time()


def stamp(value: str | None) -> float:
    return dt.datetime.fromisoformat(value).timestamp() if value else float("nan")


# --------------------------------------------------------------------------- CPU


def cpu_with_children(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and of its waited-for children (/proc; Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class Cpu:
    """CPU seconds of named groups of processes over one interval."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.before: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        found = {name: sum(cpu_with_children(p) for p in pids) for name, pids in self.groups.items()}
        me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        found["this script"] = me.ru_utime + me.ru_stime
        found["its children (ipmitool)"] = children.ru_utime + children.ru_stime
        return found

    def start(self) -> None:
        self.before = self._now()

    def stop(self) -> dict[str, float]:
        return {name: value - self.before.get(name, 0.0) for name, value in self._now().items()}


# --------------------------------------------------------------------------- the two sides


def reference(bmcs: list[SimBmc], root: Path) -> dict[str, Any]:
    """The operator's loop, as a shell script run by bash; wall time."""
    script = root / "operator-loop.sh"
    lines = ["set -e"]
    for bmc in bmcs:
        base = f"ipmitool -I lanplus -C 3 -H {bmc.host} -p {bmc.port} -U {USER} -P {PASSWORD} chassis"
        lines += [f"{base} bootdev pxe >/dev/null", f"{base} power reset >/dev/null"]
    script.write_text("\n".join(lines) + "\n")
    for bmc in bmcs:
        bmc.clear()
    cpu = Cpu({"ipmi_sim": [b.process.pid for b in bmcs]})
    cpu.start()
    started = time.time()
    t0 = time.perf_counter()
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=TIMEOUT, check=False)
    seconds = time.perf_counter() - t0
    used = cpu.stop()
    if done.returncode:
        raise RuntimeError(f"the ipmitool loop failed ({done.returncode}): {done.stderr[-2000:]}")
    wrong = [w for w in (check_sequence(b) for b in bmcs) if w]
    resets = reset_times(bmcs)
    latency = sorted(r - started for r in resets)
    g = gaps(bmcs)
    return {"seconds": seconds, "wrong": wrong, "latency": latency, "cpu": used,
            "min_set_gap_s": min(_set_gaps(bmcs), default=float("nan")), **g}


def _set_gaps(bmcs: list[SimBmc]) -> list[float]:
    """Per BMC: from "boot pxe" to the reset that followed it."""
    found = []
    for bmc in bmcs:
        actions = bmc.actions()
        boot = next((a.time for a in actions if is_boot(a.name, a.value)), None)
        cycle = next((a.time for a in actions if boot is not None and a.time >= boot and is_cycle(a.name, a.value)),
                     None)
        if boot is not None and cycle is not None:
            found.append(cycle - boot)
    return found


def machine_cpu() -> float:
    """CPU seconds the whole machine has spent (all cores, /proc/stat; Linux)."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def floor(bmcs: list[SimBmc], runs: int, gap: float = 0.0) -> dict[str, float]:
    """The BMC work alone: the same netboot for every host straight through
    provisiond's driver layer (IpmiDriver, one thread per BMC, as the power
    worker runs it), in this process, with no HTTP and no database, and with
    ``gap`` between the two commands to each BMC. No way of driving these
    BMCs through provisiond with that gap can beat it on this machine;
    returns its median wall time and the machine's CPU seconds."""
    from concurrent.futures import ThreadPoolExecutor

    from provisiond.power.base import DriverOptions, driver_for
    from provisiond.power.bmc import Pacer, Policy, carry_out

    walls, cpus = [], []
    with ThreadPoolExecutor(len(bmcs)) as pool:
        for _ in range(runs):
            pacer, policy = Pacer(gap), Policy(min_gap=gap)
            cpu, started = machine_cpu(), time.perf_counter()
            outcomes = list(pool.map(lambda b: carry_out(driver_for(b.target(), DriverOptions()), pacer, policy,
                                                         "power", "netboot", False, "netboot"), bmcs))
            walls.append(time.perf_counter() - started)
            cpus.append(machine_cpu() - cpu)
            failed = [o.message for o in outcomes if not o.ok]
            if failed:
                raise RuntimeError(f"floor run: {failed[:3]}")
    return {"seconds": statistics.median(walls), "machine_cpu_s": statistics.median(cpus)}


def provisiond(api: Api, server: common.Server, bmcs: list[SimBmc], serials: list[str], first: bool,
               py_spy: str | None) -> dict[str, Any]:
    """One POST /api/v1/installs for every host; time until every operation is done."""
    if not first:  # the hosts are armed from the previous run: cancel (untimed)
        for serial in serials:
            api.call("POST", f"/api/v1/hosts/{serial}/cancel")
    for bmc in bmcs:
        bmc.clear()
    cpu = Cpu({"gunicorn master (power worker)": [server.process.pid],
               "gunicorn HTTP workers": server.worker_pids(), "ipmi_sim": [b.process.pid for b in bmcs]})
    spy = start_py_spy(py_spy, server.process.pid) if py_spy else None
    requests_before = api.requests
    cpu.start()
    started = time.time()
    answer = api.call("POST", "/api/v1/installs",
                      {"serials": serials, "power": True, "force": True, "pace_seconds": 0})
    answered = time.time()
    installs = answer["installs"]
    resets = [i["power_operations"][-1] for i in installs]
    seen = api.wait_done(resets)
    used = cpu.stop()
    polls = api.requests - requests_before - 1
    if spy and py_spy:
        stop_py_spy(spy, py_spy)
    # What the operations recorded (after the clock stopped).
    wanted = {op for i in installs for op in i["power_operations"]}
    operations = []
    for serial in serials:
        for op in api.call("GET", f"/api/v1/hosts/{serial}/power")["operations"]:
            if op["id"] in wanted:
                operations.append(op)
    failed = [f"{op['serial']}: {op['message']}" for op in operations if op["status"] != "done"]
    if len(operations) != len(wanted):
        failed.append(f"{len(wanted) - len(operations)} operations missing from the hosts' lists")
    wrong = [w for w in (check_sequence(b) for b in bmcs) if w]
    bmc_resets = reset_times(bmcs)
    first_call = min((c[0] for b in bmcs for c in b.calls()), default=float("nan"))
    g = gaps(bmcs)
    return {
        "seconds_seen": seen - started,
        "seconds_finished_at": max(stamp(op["finished_at"]) for op in operations) - started,
        "seconds_bmc": max(bmc_resets) - started,
        "latency": sorted(r - started for r in bmc_resets),
        "post_s": answered - started,
        "first_started_s": min(stamp(op["started_at"]) for op in operations) - started,
        "first_bmc_call_s": first_call - started,
        "operations": operations, "failed": failed, "wrong": wrong, "cpu": used, "polls": polls,
        **g,
    }


def spread(values: list[float]) -> str:
    """``median / max`` in ms, or ``-`` when there are none (e.g. no separate bootdev operations)."""
    return f"{ms(statistics.median(values))} / {ms(values[-1])}" if values else "-"


def breakdown(operations: list[dict[str, Any]], bmcs: list[SimBmc]) -> dict[str, Any]:
    """Where the time went: from the operations' own started_at / finished_at, and
    from what the BMCs recorded."""
    netboot = sorted(stamp(o["finished_at"]) - stamp(o["started_at"]) for o in operations)
    # At the BMCs: the reset command's read of the power state, then the control.
    read_to_reset, edges = [], []
    for bmc in bmcs:
        grouped = commands(bmc.calls())
        read_to_reset += [end - start for start, end, what in grouped if what.startswith("get power + ")]
        if grouped:
            edges += [(grouped[0][0], 1), (grouped[-1][1], -1)]
    running = peak = 0
    for _, step in sorted(edges):
        running += step
        peak = max(peak, running)
    return {"netboot_s": netboot, "read_to_reset_s": sorted(read_to_reset),
            "peak_hosts": peak, "claim_passes": len({o["started_at"] for o in operations})}


# --------------------------------------------------------------------------- py-spy


def start_py_spy(path: str, pid: int) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    fmt = "flamegraph" if path.endswith(".svg") else "speedscope" if path.endswith(".json") else "raw"
    process = subprocess.Popen([exe, "record", "--pid", str(pid), "--subprocesses", "--threads", "--nonblocking",
                                "--rate", "200", "--format", fmt, "--output", path],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # let it attach
    return process


def stop_py_spy(process: subprocess.Popen[bytes], path: str) -> None:
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        err = b""
    if process.returncode not in (0, -signal.SIGINT) and not Path(path).exists():
        print(f"# py-spy failed: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
    else:
        print(f"# py-spy profile of the gunicorn master and workers: {path}", file=sys.stderr)


# --------------------------------------------------------------------------- main




def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3, help="runs of each side, alternating (default 3)")
    parser.add_argument("--min-gap-ms", type=int, help="bmc_min_gap_ms for provisiond (default: its own, 200)")
    parser.add_argument("--db", default="sqlite", help="sqlite or postgresql (default sqlite)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn HTTP workers (default 2)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="another provisiond setting for the server, e.g. power_workers=50 (repeatable)")
    parser.add_argument("--py-spy", metavar="FILE",
                        help="CPU profile of the server during the first provisiond run (py-spy in the venv; "
                             ".svg flamegraph, .json speedscope, else raw collapsed stacks)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"needs {' and '.join(missing)} (Debian packages openipmi, ipmitool)")
    extra = {}
    if args.min_gap_ms is not None:
        extra["PROVISIOND_BMC_MIN_GAP_MS"] = str(args.min_gap_ms)
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected NAME=VALUE")
        extra[f"PROVISIOND_{name.strip().upper()}"] = value

    kinds = common.databases(args.db)
    rows, detail_rows, time_rows, cpu_rows, floor_rows, figures = [], [], [], [], [], []
    settings = None
    for kind in kinds:
        with common.workspace(kind) as ws, contextlib.ExitStack() as stack, common.environment(extra):
            from provisiond.config import load_settings

            settings = load_settings(environ=ws.env(8080))
            gap = settings.bmc_min_gap_ms / 1000
            bmcs = start_bmcs(ws.root / "bmcs", args.hosts, stack)
            serials = [f"PW{i:05d}" for i in range(1, args.hosts + 1)]
            token = common.create_token(ws)
            server = stack.enter_context(common.Server(ws, workers=args.workers))
            server.wait_for("/healthz")
            api = Api(server.url, token)
            imported = api.call("POST", "/api/v1/import/hosts?filename=hosts.yaml", hosts_yaml(serials, bmcs),
                                "application/yaml")
            assert imported["created"] == args.hosts, imported
            # Warm-up (untimed): the power worker imports pyghmi on first use; ipmitool is read from disk.
            warm = api.call("POST", f"/api/v1/hosts/{serials[0]}/power", {"action": "status"})
            api.wait_done([warm["id"]], timeout=60)
            bmcs[0].ipmitool("power", "status")

            ref_seconds, prov_seconds = [], []
            for run in range(1, args.runs + 1):
                ref = reference(bmcs, ws.root)
                prov = provisiond(api, server, bmcs, serials, run == 1, args.py_spy if run == 1 else None)
                parts = breakdown(prov["operations"], bmcs)
                ok = not (ref["wrong"] or prov["wrong"] or prov["failed"])
                gap_ok = prov["min_command_gap_s"] >= gap
                ratio = ref["seconds"] / prov["seconds_seen"]
                ref_seconds.append(ref["seconds"])
                prov_seconds.append(prov["seconds_seen"])
                rows.append([kind, run, f"**{ref['seconds']:.2f}**", f"**{prov['seconds_seen']:.2f}**",
                             f"{prov['seconds_finished_at']:.2f}", f"{prov['seconds_bmc']:.2f}",
                             f"**{ratio:.1f}x**", f"{ref['seconds'] / prov['seconds_bmc']:.1f}x",
                             f"{prov['min_command_gap_s'] * 1000:.1f} ({ms(gap)})",
                             "yes" if ok and gap_ok and ratio >= 10 else "NO"])
                detail_rows.append([
                    kind, run, ms(statistics.median(ref["latency"])), ms(ref["latency"][-1]),
                    ms(common.percentile(prov["latency"], 50)), ms(common.percentile(prov["latency"], 99)),
                    ms(prov["latency"][-1]),
                    f"{prov['min_command_gap_s'] * 1000:.1f} (before {prov['min_command_gap_what']})",
                    f"{prov['min_call_gap_s'] * 1000:.1f}", f"{ref['min_set_gap_s'] * 1000:.1f}",
                    "all" if ok else "; ".join((ref["wrong"] + prov["wrong"] + prov["failed"])[:3])])
                time_rows.append([
                    kind, run, ms(prov["post_s"]), ms(prov["first_started_s"]), ms(prov["first_bmc_call_s"]),
                    spread(parts["netboot_s"]), spread(parts["read_to_reset_s"]),
                    parts["peak_hosts"], parts["claim_passes"], prov["polls"]])
                cpu_rows.append([kind, run, "reference", f"{ref['seconds']:.2f}",
                                 ", ".join(f"{k} {v:.2f}" for k, v in ref["cpu"].items() if v > 0.005)])
                cpu_rows.append([kind, run, "provisiond", f"{prov['seconds_seen']:.2f}",
                                 ", ".join(f"{k} {v:.2f}" for k, v in prov["cpu"].items() if v > 0.005)])
                figures.append({"db": kind, "run": run, "min_gap_s": gap, "reference": ref,
                                "provisiond": {**prov, "breakdown": parts}})
            if args.runs > 1:
                med_ref, med_prov = statistics.median(ref_seconds), statistics.median(prov_seconds)
                rows.append([kind, "median", f"**{med_ref:.2f}**", f"**{med_prov:.2f}**", "", "",
                             f"**{med_ref / med_prov:.1f}x**", "", "", ""])
            loop = statistics.median(ref_seconds)
            least, gapped = floor(bmcs, max(3, args.runs)), floor(bmcs, max(3, args.runs), gap)
            floor_rows.append([kind, f"{loop:.2f}", f"{least['seconds']:.2f}", f"{least['machine_cpu_s']:.2f}",
                               f"{loop / least['seconds']:.1f}x", f"{gapped['seconds']:.2f} ({ms(gap)})",
                               f"{loop / gapped['seconds']:.1f}x", f"{statistics.median(prov_seconds):.2f}"])
            figures.append({"db": kind, "floor": least, "floor_with_gap": gapped})

    assert settings is not None
    common.report(
        f"Arm and power-cycle {args.hosts} hosts (one ipmi_sim each): provisiond vs an ipmitool loop",
        ["database", "run", "ipmitool loop s", "provisiond s", "provisiond s (finished_at)",
         "provisiond s (last reset at a BMC)", "ratio", "ratio (last reset)", "smallest gap ms (configured)",
         "goal"],
        rows,
        [f"provisiond settings: bmc_min_gap_ms {settings.bmc_min_gap_ms}, power_workers {settings.power_workers}, "
         f"power_poll_ms {settings.power_poll_ms}, gunicorn {args.workers} HTTP workers, {', '.join(kinds)}"
         + (f"; --set {' '.join(args.set)}" if args.set else ""),
         "ipmitool loop: `ipmitool -I lanplus -C 3 -H 127.0.0.1 -p PORT -U admin -P secret chassis bootdev pxe` "
         "then `... chassis power reset`, host after host, in one bash script. provisiond: from sending "
         f"`POST /api/v1/installs` ({args.hosts} serials, power, force, pace_seconds 0) to seeing every operation done "
         f"(polling GET /api/v1/power/<id> every {POLL * 1000:.0f} ms), to the last finished_at recorded, and "
         "to the last reset a BMC received. Ratio = ipmitool loop / provisiond. Goal: ratio >= 10, every "
         "machine told boot pxe then reset, no two provisiond commands to one BMC closer than the gap. "
         "Every machine is on when a run starts; runs alternate loop / provisiond on the same BMCs and server "
         "(hosts cancelled between runs, untimed), after one untimed power status through each side (it loads pyghmi in the server)."],
    )
    print()
    print(common.table(
        ["database", "run", "loop: arm→reset p50 ms", "loop: max ms", "provisiond: POST→reset p50 ms", "p99 ms",
         "max ms", "smallest gap between provisiond's commands to one BMC, ms",
         "smallest gap between any two chassis calls, ms", "loop: boot pxe → reset at one BMC, min ms",
         "each BMC told boot pxe then reset"],
        detail_rows))
    print("\nTimes are when each BMC's chassis program ran (time.time() in the script, bash's `$EPOCHREALTIME` at the "
          "BMC), so a gap is a lower bound of the real one. provisiond's commands: one driver call each "
          "(set boot device; read power + reset, the reset's read of the power state just before the chassis "
          "control counts as part of it; its own gap is in the next column).")
    print()
    print(common.table(
        ["database", "run", "POST answered ms", "first operation started ms", "first BMC call ms",
         "netboot op p50 / max ms", "read power → reset at the BMC p50 / max ms", "peak hosts in progress", "claim passes",
         "poll requests"],
        time_rows))
    print("\nTimes in ms after sending the POST. Operation durations are finished_at - started_at as the server "
          "records them (started_at is the time at which the worker's claiming pass began; it includes the wait "
          "for the BMC's gap). 'read power → reset' is measured at the BMC, within one command: a few ms; far "
          "more means a stalled exchange. A host is in progress from its first to its last BMC call.")
    print()
    print(common.table(["database", "run", "side", "wall s", "CPU seconds over the run"], cpu_rows))
    print()
    print(common.table(["database", "ipmitool loop s (median)", "floor s (median)", "machine CPU s in the floor",
                        "loop / floor", "floor with the gap s (gap ms)", "loop / floor with the gap",
                        "provisiond s (median)"], floor_rows))
    print("\nFloor: the same netboots straight through provisiond's driver layer (IpmiDriver, one thread per "
          "BMC) in the benchmark's process, with no HTTP and no database, without a gap and with the configured "
          "one: the BMC work alone, on the same two cores as the simulated BMCs. 'loop / floor' is the most any "
          "way of driving these BMCs through provisiond could reach on this machine.")
    sys.stdout.flush()
    common.dump_json(args.json, figures)


if __name__ == "__main__":
    main()
