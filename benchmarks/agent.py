"""provisiond's agents side by side with SaltStack, in one run: 50 agents
(real ``provisiond-agent`` processes, the zipapp provisiond serves, run by
the system's ``python3 -I``) against ``provisiond run`` (serve, worker and
the HTTPS agent gateway), then 50 ``salt-minion`` processes against one
``salt-master``, all on 127.0.0.1 and the same cores. For each side:

- **connect time**: from starting all agents (minions) together to all of
  them enrolled (provisiond: every host HANDED_OFF or READY; Salt: every key
  accepted, what ``salt-key -L`` lists) and to all of them having answered a
  first command (provisiond: every host READY, its hand-off job run through
  its agent and recorded; Salt: every minion's first ``test.ping`` answer,
  and the end of the first ``salt '*' test.ping`` that all N answered).
  Goal: <= 5 s. The hosts' states are counted in the database every 50 ms
  (one query from this process: the admin API's host list, polled that
  often, would cost the server more CPU than the agents do).
- **run latency**: ``provctl run all -- true`` against
  ``salt '*' cmd.run /bin/true`` (Salt's command line reads ``true`` as YAML,
  i.e. the boolean, and would run ``True``), each a subprocess timed from its
  start to its exit, exit status 0 and all N results printed; ``--runs``
  times, min / median / max. Goal: provisiond <= 0.7 s and >= 5x faster.
- **idle memory per agent**: after 5 s of quiet, VmRSS (``/proc/PID/status``)
  and PSS (``/proc/PID/smaps_rollup``) summed over each agent's (minion's)
  processes; mean and max. Goal: <= 25 MiB.
- **CPU**: user + system seconds (``/proc/PID/stat``, with reaped children)
  of the server's whole process tree (provisiond: supervisor, gunicorn
  masters and workers, the worker, the gateway; on PostgreSQL also the
  backends serving the benchmark's database, the benchmark's own one
  included; Salt: the master's tree), of
  all agents (minions), and of the command line, while connecting, per run,
  and idle (10 s with every agent parked, as % of one core). On 2 cores,
  wall time >= CPU seconds / 2: these say whether a figure is CPU-bound.

provisiond's side uses the real paths: hosts created through the API,
each driven through an install as an installer does (kickstart, pre-report,
slot, ``POST /install/<token>/agent`` for the agent's configuration with its
one-time ticket, done), the zipapp (checked against its SHA-256) and CA
fetched from ``/agent/v1/``, each agent with its own configuration and
state dir. Salt 3008.4 from PyPI is installed once into its own venv
(``--salt-venv``, default /tmp/salt-venv) and reused; one master
(``auto_accept``) and N minions, each with its own config dir, id, pki,
cache, sock dirs and log (``user: root``), default settings otherwise.

The machine's 1-minute load average is printed; when it is above 1.5 the
script waits up to 2 minutes for it to drop before each side. Every process
started is stopped (process groups: SIGTERM, then SIGKILL), temp dirs and
the scratch PostgreSQL database removed. ``--py-spy DIR`` (``pip install
py-spy`` into the venv first) records provisiond's server tree while the
agents connect, while idle and during the first run (raw stacks; it costs
CPU, so figures from such a run are not the ones to quote).

    python benchmarks/agent.py [--agents 50] [--runs 3] [--db sqlite|postgresql] [--skip-salt]
                               [--salt-venv DIR] [--py-spy DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SALT_VERSION = "3008.4"
#: What the agents run: a host's own python3 (Debian's), else the first on PATH.
AGENT_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else (shutil.which("python3") or "python3")
TIMEOUT = 300.0  # seconds any one wait may take before the run is abandoned
SETTLE = 5.0  # seconds of quiet before memory is read
IDLE_WINDOW = 10.0  # seconds over which idle CPU is measured
BUSY_LOAD = 1.5  # 1-minute load average above which the script waits first
QUIET_WAIT = 120.0  # seconds it waits at most for the load to drop
POLL = 0.05  # seconds between two looks at the hosts' states (or the minions' files)
RUN_PAUSE = 2.0  # seconds between two timed runs (agents park their polls again)
TICK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- processes


def process_table() -> dict[int, int]:
    """pid -> parent pid of every process (/proc; Linux)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    return parents


def tree(roots: Sequence[int]) -> list[int]:
    """``roots`` and all their live descendants."""
    children: dict[int, list[int]] = {}
    for pid, parent in process_table().items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if Path(f"/proc/{pid}").exists():
            found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def status_kib(pid: int, key: str, path: str = "status") -> int | None:
    """A ``Key:   123 kB`` line of /proc/PID/status (or smaps_rollup), in KiB."""
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class Memory:
    """Resident memory of one agent (all its processes), MiB: RSS, of which
    anonymous (heap, stacks) and file-backed (the interpreter, shared
    libraries), and PSS (shared pages divided among their users)."""

    processes: int
    rss: float
    anon: float
    file: float
    pss: float | None


def memory(pids: Sequence[int]) -> Memory:
    def total(key: str, path: str = "status") -> float | None:
        values = [status_kib(p, key, path) for p in pids]
        return sum(v for v in values if v is not None) / 1024 if all(v is not None for v in values) else None

    live = [p for p in pids if status_kib(p, "VmRSS") is not None]
    return Memory(len(live), total("VmRSS") or 0.0, total("RssAnon") or 0.0, total("RssFile") or 0.0,
                  total("Pss", "smaps_rollup"))


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """User + system CPU seconds of each live pid and of its reaped children (/proc; Linux)."""
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            found[pid] = sum(int(f) for f in fields[11:15]) / TICK
    return found


def children_cpu() -> float:
    """CPU seconds of this script's reaped children (the command lines it ran)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    """CPU seconds of this script (its polling of states and logs)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Cpu:
    """CPU seconds of named groups of processes between start() and stop();
    a process started in between counts from its start. ``cli``: this
    script's reaped children (the command lines it ran); ``self``: this script."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.before: dict[str, dict[int, float]] = {}
        self.cli_before = self.self_before = self.started = 0.0

    def start(self) -> Cpu:
        self.before = {name: cpu_seconds(pids()) for name, pids in self.groups.items()}
        self.cli_before, self.self_before, self.started = children_cpu(), own_cpu(), time.perf_counter()
        return self

    def stop(self) -> dict[str, float]:
        used = {}
        for name, pids in self.groups.items():
            after = cpu_seconds(pids())
            used[name] = sum(after[p] - self.before[name].get(p, 0.0) for p in after)
        used["cli"] = children_cpu() - self.cli_before
        used["self"] = own_cpu() - self.self_before
        used["wall"] = time.perf_counter() - self.started
        return used


class Processes:
    """Processes this script started, each in its own process group; stopped
    (SIGTERM to each group, then SIGKILL to those that linger) on close."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []

    def spawn(self, command: Sequence[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
        handle = log.open("ab")
        self._logs.append(handle)
        process = subprocess.Popen(list(command), stdout=handle, stderr=subprocess.STDOUT, cwd=cwd,
                                   start_new_session=True)
        self.started.append(process)
        return process

    def stop(self, grace: float = 10.0, last_first: bool = False) -> None:
        """``last_first``: signal the last started first (Salt's minions before their master)."""
        order = list(reversed(self.started)) if last_first else self.started
        for process in order:
            signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in order:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
        for process in order:  # the leader may be gone and its children not
            signal_group(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        for handle in self._logs:
            handle.close()
        self.started.clear()


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def become_subreaper() -> None:
    """Orphans of our children (a minion's child whose parent died first)
    become ours, so they can be reaped instead of lingering as zombies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap_orphans() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def wait_until(what: str, check: Callable[[], Any], timeout: float = TIMEOUT, interval: float = POLL) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


def wait_for_quiet(limit: float = QUIET_WAIT) -> float:
    """The 1-minute load average once it is at most BUSY_LOAD, or after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    load = os.getloadavg()[0]
    if load > BUSY_LOAD:
        print(f"# load average {load:.2f} > {BUSY_LOAD}: waiting up to {limit:.0f} s for it to drop",
              file=sys.stderr)
    while load > BUSY_LOAD and time.monotonic() < deadline:
        time.sleep(5)
        load = os.getloadavg()[0]
    return load


def timed(command: Sequence[str], cwd: Path, timeout: float = 120.0
          ) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Run ``command``; (time.time() at its start, wall seconds, the finished process)."""
    wall = time.time()
    started = time.perf_counter()
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)
    return wall, time.perf_counter() - started, done


def cli_floor(command: Sequence[str], cwd: Path, times: int = 3) -> float:
    """Median wall time of a command that only starts the CLI (what every run pays before its work)."""
    return statistics.median(timed(command, cwd)[1] for _ in range(times))


class Spy:
    """py-spy recording a process tree into a file (raw collapsed stacks), or nothing."""

    def __init__(self, directory: Path | None, name: str, pid: int) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        if directory is None:
            return
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{name}.txt"
        self.process = subprocess.Popen([exe, "record", "--pid", str(pid), "--subprocesses", "--nonblocking",
                                         "--rate", "250", "--format", "raw", "--output", str(self.path)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # let it attach

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            _, err = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        print(f"# py-spy: {self.path}" if self.path.exists() else f"# py-spy failed: {err.decode()[-500:]}",
              file=sys.stderr)


# --------------------------------------------------------------------------- HTTP


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         context: ssl.SSLContext | None = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        **(headers or {}), **({"Content-Type": "application/json"} if data is not None else {})})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {url}: HTTP {exc.code}: {exc.read()[:500]!r}") from None


class Api:
    """The admin API with the benchmark's admin token."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.headers = url, {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        raw = http(method, f"{self.url}/api/v1{path}", body, self.headers)
        return json.loads(raw) if raw else None



# --------------------------------------------------------------------------- provisiond




def gateway_answers(port: int, ca: Path) -> bool:
    if not ca.exists():
        return False
    try:
        http("GET", f"https://127.0.0.1:{port}/healthz", context=ssl.create_default_context(cafile=str(ca)))
        return True
    except (OSError, RuntimeError):
        return False


def install_token(svc: Any, serial: str) -> str:
    """The install token, as the boot entry hands it to the installer (the API never shows it)."""
    from sqlalchemy import select

    from provisiond import models

    with svc.db.read() as session:
        install = session.scalars(select(models.Install).join(models.Host).where(
            models.Host.serial == serial, models.Install.active.is_(True))).one()
        return str(svc.vault.decrypt(install.token_sealed))


def create_hosts(api: Api, count: int) -> list[str]:
    serials = [f"AG{n:05d}" for n in range(1, count + 1)]
    for number, serial in enumerate(serials, 1):
        mac = f"52:54:00:20:{number >> 8:02x}:{number & 0xff:02x}"
        api.call("POST", "/hosts", {"serial": serial, "hostname": f"node{number:03d}.agents.test",
                                    "profile": "default", "nics": [{"mac": mac, "primary": True}]})
    return serials


def install(api: Api, svc: Any, serial: str) -> dict[str, Any]:
    """Arm ``serial`` and go through its install as an installer does; the agent's configuration."""
    api.call("POST", f"/hosts/{serial}/install", {})
    base = f"{api.url}/install/{install_token(svc, serial)}"
    http("GET", f"{base}/ks")
    mac = api.call("GET", f"/hosts/{serial}")["nics"][0]["mac"]
    http("POST", f"{base}/pre-report", {"serial": serial, "cpus": 2, "memory_mib": 2048, "boot_mac": mac,
                                        "disks": [], "nics": [{"name": "eth0", "mac": mac, "link": True}]})
    http("POST", f"{base}/slot")
    config = json.loads(http("POST", f"{base}/agent"))
    http("POST", f"{base}/done")
    return dict(config)


@dataclass
class Agent:
    serial: str
    home: Path
    process: subprocess.Popen[bytes] | None = None


def prepare_agents(api: Api, svc: Any, serials: list[str], root: Path) -> list[Agent]:
    """Each agent's home as %post leaves it: the zipapp (checked against its
    SHA-256), the CA, and the configuration with its ticket."""
    program = http("GET", f"{api.url}/agent/v1/provisiond-agent.pyz")
    expected = http("GET", f"{api.url}/agent/v1/provisiond-agent.pyz.sha256").decode().split()[0]
    if hashlib.sha256(program).hexdigest() != expected:
        raise RuntimeError("the served agent does not match its checksum")
    ca = http("GET", f"{api.url}/agent/v1/ca.pem")
    agents = []
    for serial in serials:
        home = root / "agents" / serial
        home.mkdir(parents=True)
        (home / "provisiond-agent.pyz").write_bytes(program)
        (home / "ca.pem").write_bytes(ca)
        config = {**install(api, svc, serial), "ca_file": str(home / "ca.pem"), "state_dir": str(home / "state")}
        (home / "agent.json").write_text(json.dumps(config))
        agents.append(Agent(serial, home))
    return agents


def host_states(svc: Any) -> dict[str, int]:
    """How many hosts are in each state: one cheap query in this process
    (the admin API's host list, polled 20 times a second, would cost the
    server more CPU than it spends on the agents)."""
    from sqlalchemy import func, select

    from provisiond import models

    with svc.db.read() as session:
        return {str(state): int(n) for state, n in session.execute(
            select(models.Host.state, func.count()).group_by(models.Host.state))}


def check_alive(agents: list[Agent]) -> None:
    for agent in agents:
        if agent.process is not None and agent.process.poll() is not None:
            raise RuntimeError(f"agent {agent.serial} exited ({agent.process.returncode}):\n"
                               f"{agent_log(agent)[-2000:]}")


@dataclass
class ProvisiondLab:
    ws: common.Workspace
    server: common.Server
    svc: Any
    api: Api
    token: str
    agents: list[Agent]
    procs: Processes

    def agent_pids(self) -> list[int]:
        return [a.process.pid for a in self.agents if a.process]

    def server_pid(self) -> int:
        return self.server.process.pid

    def server_tree(self) -> list[int]:
        backends = common.postgres_backends(self.ws.pg_name) if self.ws.pg_name else []
        return tree([self.server.process.pid]) + backends

    def agent_trees(self) -> list[int]:
        return tree(self.agent_pids())

    def cpu(self) -> Cpu:
        return Cpu({"server": self.server_tree, "agents": self.agent_trees})


def wait_connected(lab: ProvisiondLab, spy_dir: Path | None) -> dict[str, Any]:
    """Start every agent together; seconds from the first one's start to all
    hosts enrolled (HANDED_OFF or READY) and to all READY (the hosts' states
    read from the database every POLL), and the CPU spent meanwhile."""
    spy = Spy(spy_dir, "provisiond-connect", lab.server.process.pid)
    cpu = lab.cpu().start()
    started = time.perf_counter()
    for agent in lab.agents:
        agent.process = lab.procs.spawn([AGENT_PYTHON, "-I", str(agent.home / "provisiond-agent.pyz"),
                                         "--config", str(agent.home / "agent.json")],
                                        agent.home / "agent.log", agent.home)
    spawned = time.perf_counter() - started
    enrolled = None
    deadline = time.monotonic() + TIMEOUT
    count = len(lab.agents)
    while time.monotonic() < deadline:
        states = host_states(lab.svc)
        now = time.perf_counter() - started
        if enrolled is None and states.get("handed_off", 0) + states.get("ready", 0) == count:
            enrolled = now
        if states.get("ready", 0) == count:
            used = cpu.stop()
            spy.stop()
            return {"spawned_s": spawned, "enrolled_s": enrolled or now, "ready_s": now, "cpu": used}
        check_alive(lab.agents)
        time.sleep(POLL)
    late = next((a for a in lab.agents if "enrolled with" not in agent_log(a)), lab.agents[-1])
    raise RuntimeError(f"not every host READY after {TIMEOUT:g} s: {host_states(lab.svc)}\n"
                       f"agent {late.serial}'s log ends:\n{agent_log(late)[-1000:]}\n"
                       f"provisiond's log ends:\n{lab.server.log()[-1500:]}")


def agent_log(agent: Agent) -> str:
    path = agent.home / "agent.log"
    return path.read_text(errors="replace") if path.exists() else ""


def job_timeline(svc: Any, started: float) -> dict[str, float]:
    """Where the latest job's time went, from the database, in seconds after ``started`` (time.time())."""
    from sqlalchemy import func, select

    from provisiond import models

    run = models.JobRun
    with svc.db.read() as session:
        job = session.scalars(select(models.Job).order_by(models.Job.id.desc()).limit(1)).one()
        first_out, last_out, first_in, last_in = session.execute(
            select(func.min(run.delivered_at), func.max(run.delivered_at), func.min(run.finished_at),
                   func.max(run.finished_at)).where(run.job_id == job.id)).one()

    def at(value: dt.datetime | None) -> float:
        if value is None:
            return float("nan")
        value = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return value.timestamp() - started

    return {"job_id": job.id, "created": at(job.created_at), "first_delivered": at(first_out),
            "last_delivered": at(last_out), "first_result": at(first_in), "last_result": at(last_in)}


def provctl_run(lab: ProvisiondLab, count: int, spy_dir: Path | None) -> dict[str, Any]:
    """One timed `provctl run all -- true`; checks its exit status and the N results it printed."""
    command = [sys.executable, "-m", "provisiond.cli.provctl", "--url", lab.server.url, "--token", lab.token,
               "run", "all", "--", "true"]
    spy = Spy(spy_dir, "provisiond-run", lab.server.process.pid)
    cpu = lab.cpu().start()
    wall, seconds, done = timed(command, lab.ws.root)
    used = cpu.stop()
    spy.stop()
    results = len(re.findall(r"^\S+: succeeded \(exit 0\)$", done.stdout, re.MULTILINE))
    if done.returncode != 0 or results != count:
        raise RuntimeError(f"provctl run: exit {done.returncode}, {results}/{count} results:\n"
                           f"{done.stdout[-1500:]}\n{done.stderr[-1500:]}")
    return {"seconds": seconds, "results": results, "returncode": done.returncode, "cpu": used,
            **job_timeline(lab.svc, wall)}


def measure_idle(lab: ProvisiondLab | SaltLab, spy_dir: Path | None = None) -> dict[str, Any]:
    """After SETTLE s: each agent's memory, the server's, and CPU over IDLE_WINDOW s."""
    time.sleep(SETTLE)
    per_agent = [memory(tree([pid])) for pid in lab.agent_pids()]
    spy = Spy(spy_dir, "provisiond-idle", lab.server_pid())
    used = lab.cpu().start()
    time.sleep(IDLE_WINDOW)
    cpu = used.stop()
    spy.stop()
    server = memory(tree([lab.server_pid()]))
    return {"memory": per_agent, "idle_cpu_pct": {k: 100 * v / cpu["wall"] for k, v in cpu.items() if k != "wall"},
            "server_rss_mib": server.rss, "server_processes": server.processes}


def run_provisiond(kind: str, count: int, runs: int, spy_dir: Path | None) -> dict[str, Any]:
    """provisiond's figures: see the module's docstring."""
    from provisiond.services import Services

    with common.workspace(kind) as ws:
        gateway_port = common.free_port()
        svc = Services.build(ws.settings())
        svc.vault  # noqa: B018 - the secret key exists before the roles start
        token = common.create_token(ws)
        extra = {"PROVISIOND_AGENT_LISTEN": f"127.0.0.1:{gateway_port}",
                 "PROVISIOND_AGENT_SERVER_NAMES": "127.0.0.1", "PROVISIOND_LOG_LEVEL": "WARNING"}
        procs = Processes()
        with common.environment(extra), common.Server(ws, workers=2, role="run") as server:
            try:
                server.wait_for("/healthz", timeout=60)
                wait_until("the agent gateway", lambda: gateway_answers(gateway_port, ws.data_dir / "tls" / "ca.pem"),
                           60)
                api = Api(server.url, token)
                agents = prepare_agents(api, svc, create_hosts(api, count), ws.root)
                lab = ProvisiondLab(ws, server, svc, api, token, agents, procs)
                connect = wait_connected(lab, spy_dir)
                accepted = sum(1 for a in api.call("GET", "/agents")["agents"] if a.get("state") == "accepted")
                idle = measure_idle(lab, spy_dir)
                check_alive(agents)
                floor = cli_floor([sys.executable, "-m", "provisiond.cli.provctl", "--help"], ws.root)
                timed_runs = []
                for run in range(runs):
                    time.sleep(RUN_PAUSE)
                    timed_runs.append(provctl_run(lab, count, spy_dir if run == 0 else None))
                return {"connect": connect, "accepted_agents": accepted, **idle, "runs": timed_runs,
                        "cli_floor_s": floor}
            finally:
                procs.stop()
                svc.db.dispose()


# --------------------------------------------------------------------------- Salt


def salt_bin(venv: Path, name: str) -> str:
    return str(venv / "bin" / name)


def ensure_salt(venv: Path) -> str:
    """Salt ``SALT_VERSION`` in its own venv (made once, then reused); its version line."""
    if not Path(salt_bin(venv, "salt-master")).exists():
        print(f"# installing salt=={SALT_VERSION} into {venv} (once)", file=sys.stderr)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run([salt_bin(venv, "pip"), "install", "-q", f"salt=={SALT_VERSION}"], check=True, timeout=1800)
    done = subprocess.run([salt_bin(venv, "salt"), "--version"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"salt --version failed ({done.returncode}): {done.stderr.strip()[-1000:]}")
    return done.stdout.strip()


@dataclass
class SaltLab:
    """One salt-master and its minions, each in its own directory under ``root``."""

    root: Path
    venv: Path
    procs: Processes = field(default_factory=Processes)
    publish_port: int = field(default_factory=common.free_port)
    ret_port: int = field(default_factory=common.free_port)
    master: subprocess.Popen[bytes] | None = None
    minions: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def master_dir(self) -> Path:
        return self.root / "master"

    def minion_dir(self, number: int) -> Path:
        return self.root / self.minion_id(number)

    @staticmethod
    def minion_id(number: int) -> str:
        return f"m{number:03d}"

    def start_master(self) -> None:
        root = self.master_dir
        root.mkdir(parents=True)
        (root / "master").write_text("\n".join([
            f"root_dir: {root}", "interface: 127.0.0.1", f"publish_port: {self.publish_port}",
            f"ret_port: {self.ret_port}", "auto_accept: True", "user: root",
            f"pki_dir: {root}/pki", f"cachedir: {root}/cache", f"sock_dir: {root}/sock",
            f"log_file: {root}/master.log", ""]))
        self.master = self.procs.spawn([salt_bin(self.venv, "salt-master"), "-c", str(root), "-l", "warning"],
                                       self.root / "master.out", self.root)
        wait_until("salt-master's ports", lambda: port_open(self.publish_port) and port_open(self.ret_port), 60)

    def write_minion(self, number: int) -> Path:
        """A minion's config; its log file has a time stamp per line (info level)."""
        root = self.minion_dir(number)
        root.mkdir(parents=True)
        (root / "minion").write_text("\n".join([
            f"id: {self.minion_id(number)}", "master: 127.0.0.1", f"publish_port: {self.publish_port}",
            f"master_port: {self.ret_port}", f"root_dir: {root}", "user: root",
            f"pki_dir: {root}/pki", f"cachedir: {root}/cache", f"sock_dir: {root}/sock",
            f"log_file: {root}/minion.log", "log_level_logfile: info", "log_fmt_logfile: '%(created)f %(message)s'",
            ""]))
        return root

    def start_minions(self, homes: list[Path]) -> None:
        self.minions = [self.procs.spawn([salt_bin(self.venv, "salt-minion"), "-c", str(home), "-l", "warning"],
                                         home / "minion.out", home) for home in homes]

    def cli(self, *args: str) -> list[str]:
        return [salt_bin(self.venv, "salt"), "-c", str(self.master_dir), *args]

    def accepted(self) -> int:
        done = subprocess.run([salt_bin(self.venv, "salt-key"), "-c", str(self.master_dir), "-L", "--out=json"],
                              capture_output=True, text=True, timeout=120, check=False)
        try:
            return len(json.loads(done.stdout).get("minions", []))
        except ValueError:
            return 0

    def accepted_files(self) -> int:
        """The accepted keys as files: what `salt-key -L` reads."""
        keys = self.master_dir / "pki" / "minions"
        return len(list(keys.iterdir())) if keys.is_dir() else 0

    def logs(self) -> list[Path]:
        return [self.minion_dir(n) / "minion.log" for n in range(1, len(self.minions) + 1)]

    def agent_pids(self) -> list[int]:
        return [m.pid for m in self.minions]

    def server_pid(self) -> int:
        assert self.master is not None
        return self.master.pid

    def cpu(self) -> Cpu:
        return Cpu({"server": lambda: tree([self.server_pid()]), "agents": lambda: tree(self.agent_pids())})

    def master_log(self) -> str:
        path = self.master_dir / "master.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(line for line in lines if "[ERROR" in line or "[WARNING" in line or "Error" in line)[-2000:]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def minion_log_times(path: Path) -> dict[str, float]:
    """time.time() of a minion's "ready to receive requests" and of its first
    answer to a test.ping, from its log file (``%(created)f %(message)s``); NaN if absent."""
    ready = answered = float("nan")
    pings: set[str] = set()
    text = path.read_text(errors="replace") if path.exists() else ""
    for line in text.splitlines():
        stamp, _, message = line.partition(" ")
        if message.startswith("Minion is ready to receive requests") and ready != ready:
            ready = float(stamp)
        elif found := re.match(r"User \S+ Executing command test\.ping with jid (\d+)", message):
            pings.add(found.group(1))
        elif (found := re.match(r"Returning information for job: (\d+)", message)) and found.group(1) in pings:
            answered = min(answered, float(stamp)) if answered == answered else float(stamp)
    return {"ready": ready, "answered": answered}


def salt_wait_connected(lab: SaltLab, count: int) -> dict[str, Any]:
    """Start every minion together; seconds after that to all keys accepted,
    to the last minion ready to receive requests (its log), to the end of
    the first ``salt '*' test.ping`` that all ``count`` minions answered, and
    to the last minion's answer to it (its log); the CPU spent meanwhile.
    The waits look at files (the accepted keys, the minions' logs): a
    `salt-key` or `salt` process in a polling loop costs ~1 s of CPU each and
    would slow the minions down."""
    homes = [lab.write_minion(n) for n in range(1, count + 1)]
    cpu = lab.cpu().start()
    started = time.time()
    lab.start_minions(homes)
    wait_until("all minion keys accepted", lambda: lab.accepted_files() >= count)
    accepted = time.time() - started
    wait_until("all minions ready", lambda: all(minion_log_times(log)["ready"] > 0 for log in lab.logs()),
               interval=0.25)
    deadline, pings, answers = time.monotonic() + TIMEOUT, 0, 0
    while time.monotonic() < deadline:
        done = subprocess.run(lab.cli("*", "test.ping", "--out=txt"), capture_output=True, text=True,
                              timeout=180, check=False, cwd=lab.root)
        pings += 1
        answers = len(re.findall(r"^m\d{3}: True$", done.stdout, re.MULTILINE))
        if answers == count:
            ping = time.time() - started
            used = cpu.stop()
            logged = [minion_log_times(log) for log in lab.logs()]
            return {"accepted_s": accepted, "ping_s": ping, "pings": pings, "cpu": used,
                    "ready_s": max(t["ready"] for t in logged) - started,
                    "answered_s": max(t["answered"] for t in logged) - started}
        print(f"# salt test.ping: {answers}/{count} answered (exit {done.returncode}): "
              f"{done.stderr.strip()[-300:]}", file=sys.stderr)
    raise RuntimeError(f"not all {count} minions answered `salt '*' test.ping` in {TIMEOUT:g} s ({pings} pings, "
                       f"{answers} answered the last); master log:\n{lab.master_log()}")


def salt_run(lab: SaltLab, count: int) -> dict[str, Any]:
    """One timed `salt '*' cmd.run /bin/true`; checks its exit status and the N returns it printed."""
    cpu = lab.cpu().start()
    _, seconds, done = timed(lab.cli("*", "cmd.run", "/bin/true"), lab.root, timeout=300)
    used = cpu.stop()
    results = len(re.findall(r"^m\d{3}:\s*$", done.stdout, re.MULTILINE))
    if done.returncode != 0 or results != count:
        raise RuntimeError(f"salt cmd.run: exit {done.returncode}, {results}/{count} returns:\n"
                           f"{done.stdout[-1500:]}\n{done.stderr[-1500:]}")
    return {"seconds": seconds, "results": results, "returncode": done.returncode, "cpu": used}


def run_salt(venv: Path, count: int, runs: int) -> dict[str, Any]:
    """Salt's figures: see the module's docstring."""
    version = ensure_salt(venv)
    lab = SaltLab(Path(tempfile.mkdtemp(prefix="salt-bench-")), venv)
    try:
        lab.start_master()
        connect = salt_wait_connected(lab, count)
        if lab.accepted() != count:
            raise RuntimeError(f"`salt-key -L` does not list {count} accepted keys")
        idle = measure_idle(lab)
        floor = cli_floor(lab.cli("--version"), lab.root)
        timed_runs = []
        for _ in range(runs):
            time.sleep(RUN_PAUSE)
            timed_runs.append(salt_run(lab, count))
        return {"version": version, "connect": connect, **idle, "runs": timed_runs, "cli_floor_s": floor}
    finally:
        lab.procs.stop(last_first=True)  # minions first, while their master still answers
        reap_orphans()
        shutil.rmtree(lab.root, ignore_errors=True)


# --------------------------------------------------------------------------- the report


def spread(values: Sequence[float]) -> str:
    """``median (min–max)`` in seconds."""
    ordered = sorted(values)
    return f"**{statistics.median(ordered):.2f}** ({ordered[0]:.2f}–{ordered[-1]:.2f})"


def mean_max(values: Sequence[float | None]) -> str:
    if not values or any(v is None for v in values):
        return "n/a"
    known = [v for v in values if v is not None]
    return f"**{statistics.mean(known):.1f}** (max {max(known):.1f})"


def anon_file(memories: Sequence[Memory]) -> str:
    return f"{statistics.mean(m.anon for m in memories):.1f} / {statistics.mean(m.file for m in memories):.1f}"


def ratio(salt: float | None, prov: float | None) -> str:
    return f"{salt / prov:.1f}x" if salt and prov else ""


def yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def cpu_cell(used: dict[str, float], own: bool = False) -> str:
    """CPU seconds: server / agents / command line (/ this script)."""
    cell = f"{used['server']:.1f} / {used['agents']:.1f} / {used['cli']:.1f}"
    return cell + (f" / {used['self']:.1f}" if own else "")


def median_cpu(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {k: statistics.median(r["cpu"][k] for r in runs) for k in ("server", "agents", "cli")}


def summary_rows(prov: dict[str, Any], salt: dict[str, Any] | None, count: int) -> list[list[str]]:
    none = "(not run)"
    c, sc = prov["connect"], (salt or {}).get("connect", {})

    def salt_cell(text: Callable[[dict[str, Any]], str]) -> str:
        return text(salt) if salt else none

    run_med = statistics.median(r["seconds"] for r in prov["runs"])
    salt_med = statistics.median(r["seconds"] for r in salt["runs"]) if salt else None
    rss = statistics.mean(m.rss for m in prov["memory"])
    salt_rss = statistics.mean(m.rss for m in salt["memory"]) if salt else None
    return [
        [f"all {count} enrolled, s: hosts HANDED_OFF / minion keys accepted (`salt-key -L`)",
         f"{c['enrolled_s']:.2f}", salt_cell(lambda s: f"{sc['accepted_s']:.2f}"),
         ratio(sc.get("accepted_s"), c["enrolled_s"]), "", ""],
        [f"all {count} ready for commands, s: enrolled (agents poll from then on) / minions 'ready to receive "
         "requests' (their logs)", f"{c['enrolled_s']:.2f}", salt_cell(lambda s: f"{sc['ready_s']:.2f}"),
         ratio(sc.get("ready_s"), c["enrolled_s"]), "", ""],
        [f"all {count} answered a first command, s: hosts READY (hand-off facts job recorded) / last minion's "
         "first test.ping answer (its log)", f"**{c['ready_s']:.2f}**",
         salt_cell(lambda s: f"**{sc['answered_s']:.2f}**"), ratio(sc.get("answered_s"), c["ready_s"]),
         "<= 5 s", yes(c["ready_s"] <= 5)],
        ["the same as the operator sees it, s: all hosts READY / end of the first `salt '*' "
         f"test.ping` all {count} answered", f"{c['ready_s']:.2f}",
         salt_cell(lambda s: f"{sc['ping_s']:.2f} ({sc['pings']} ping(s))"), ratio(sc.get("ping_s"), c["ready_s"]),
         "", ""],
        ["CPU s while connecting: server / agents / command lines / this script", cpu_cell(c["cpu"], True),
         salt_cell(lambda s: cpu_cell(sc["cpu"], True)), "", "", ""],
        [f"`provctl run all -- true` / `salt '*' cmd.run /bin/true`, {count} hosts, s, median (min–max)",
         spread([r["seconds"] for r in prov["runs"]]), salt_cell(lambda s: spread([r["seconds"] for r in s["runs"]])),
         ratio(salt_med, run_med), "<= 0.7 s, >= 5x",
         yes(run_med <= 0.7 and (salt_med is None or salt_med / run_med >= 5))],
        ["CPU s per run, median: server / agents / command line", cpu_cell(median_cpu(prov["runs"])),
         salt_cell(lambda s: cpu_cell(median_cpu(s["runs"]))), "", "", ""],
        ["the command line started alone (`provctl --help` / `salt --version`), s, median of 3",
         f"{prov['cli_floor_s']:.2f}", salt_cell(lambda s: f"{s['cli_floor_s']:.2f}"), "", "", ""],
        ["idle RSS per agent / minion, MiB, mean (max)", mean_max([m.rss for m in prov["memory"]]),
         salt_cell(lambda s: mean_max([m.rss for m in s["memory"]])), ratio(salt_rss, rss), "<= 25 MiB",
         yes(rss <= 25)],
        ["of which anonymous (heap) / file-backed (interpreter, libraries), MiB, mean", anon_file(prov["memory"]),
         salt_cell(lambda s: anon_file(s["memory"])), "", "", ""],
        ["idle PSS per agent / minion, MiB, mean (max)", mean_max([m.pss for m in prov["memory"]]),
         salt_cell(lambda s: mean_max([m.pss for m in s["memory"]])), "", "", ""],
        ["processes per agent / minion", str(max(m.processes for m in prov["memory"])),
         salt_cell(lambda s: str(max(m.processes for m in s["memory"]))), "", "", ""],
        [f"idle CPU over {IDLE_WINDOW:.0f} s, % of one core: server tree / all {count} agents together",
         f"{prov['idle_cpu_pct']['server']:.1f} / {prov['idle_cpu_pct']['agents']:.1f}",
         salt_cell(lambda s: f"{s['idle_cpu_pct']['server']:.1f} / {s['idle_cpu_pct']['agents']:.1f}"), "", "", ""],
        ["server resident memory, MiB (processes)", f"{prov['server_rss_mib']:.0f} ({prov['server_processes']})",
         salt_cell(lambda s: f"{s['server_rss_mib']:.0f} ({s['server_processes']})"), "", "", ""],
    ]


def run_rows(prov: dict[str, Any], salt: dict[str, Any] | None) -> list[list[str]]:
    rows = []
    for i, r in enumerate(prov["runs"]):
        s = salt["runs"][i] if salt and i < len(salt["runs"]) else None
        rows.append([str(i + 1), f"{r['seconds']:.3f}", f"{r['results']}", ms(r["created"]),
                     f"{ms(r['first_delivered'])} / {ms(r['last_delivered'])}",
                     f"{ms(r['first_result'])} / {ms(r['last_result'])}", ms(r["seconds"] - r["last_result"]),
                     cpu_cell(r["cpu"]), f"{s['seconds']:.3f}" if s else "", f"{s['results']}" if s else "",
                     cpu_cell(s["cpu"]) if s else ""])
    return rows


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def python_version(executable: str) -> str:
    done = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return (done.stdout or done.stderr).strip()


def report(prov: dict[str, Any], salt: dict[str, Any] | None, salt_note: str, kind: str, count: int,
           loads: dict[str, float]) -> None:
    common.report(
        f"{count} agents: provisiond vs SaltStack ({kind})",
        ["measure", "provisiond", "Salt", "Salt / provisiond", "goal", "met"],
        summary_rows(prov, salt, count),
        ["1-min load average when each side began: "
         + ", ".join(f"{side} {load:.2f}" for side, load in loads.items())
         + f". provisiond: `provisiond run` (serve with 2 HTTP workers, worker, agent gateway), {kind}; agents: "
         f"the served zipapp run by `{AGENT_PYTHON} -I` ({python_version(AGENT_PYTHON)}), poll_wait default. "
         + salt_note,
         "Connect times count from starting the first of all agents (minions) together; provisiond's are seen "
         f"by counting the hosts' states in the database every {POLL * 1000:.0f} ms (one query from the "
         "benchmark's process). Salt's: the master's accepted keys (the "
         "files `salt-key -L` lists; checked with it once after), then the minions' logs (`log_level_logfile: "
         "info`, a time stamp per line: 'Minion is ready to receive requests!', and the first 'Returning "
         "information for job' of a test.ping), then `salt '*' test.ping` until one is answered by all. "
         f"Memory after {SETTLE:.0f} s of quiet, summed over each agent's (minion's) processes. CPU seconds "
         "include reaped children (an agent's job, a minion's job process). Salt runs `cmd.run /bin/true`: "
         "its command line parses `true` as YAML, the boolean, and would run `True`."],
    )
    print()
    print(common.table(
        ["run", "provctl s", "results", "job created ms", "delivered first / last ms", "results first / last ms",
         "last result → provctl exit ms", "CPU s server / agents / provctl", "salt cmd.run s", "returns",
         "CPU s master / minions / salt"],
        run_rows(prov, salt)))
    print("\nprovisiond's times are from the database (jobs.created_at, job_runs.delivered_at and finished_at), "
          "in ms after provctl was started. 'last result → provctl exit': provctl noticing that the job "
          "finished (it polls the job, pausing 20 ms, x1.5 each time, up to 0.5 s), and exiting.")
    sys.stdout.flush()


def plain(figures: Any) -> Any:
    """The figures as JSON-ready values."""
    if isinstance(figures, Memory):
        return figures.__dict__
    if isinstance(figures, dict):
        return {k: plain(v) for k, v in figures.items()}
    if isinstance(figures, list):
        return [plain(v) for v in figures]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each side (default 3)")
    parser.add_argument("--db", default="sqlite", choices=("sqlite", "postgresql"))
    parser.add_argument("--skip-salt", action="store_true", help="provisiond's figures only")
    parser.add_argument("--salt-venv", type=Path, default=Path("/tmp/salt-venv"),
                        help=f"venv for salt=={SALT_VERSION} (made once if missing; default /tmp/salt-venv)")
    parser.add_argument("--py-spy", type=Path, metavar="DIR",
                        help="record provisiond's server tree with py-spy while connecting, idle and in the first run")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if not common.databases(args.db):
        raise SystemExit(f"{args.db} is not available")
    become_subreaper()
    loads = {"provisiond": wait_for_quiet()}
    try:
        prov = run_provisiond(args.db, args.agents, args.runs, args.py_spy)
    finally:
        reap_orphans()
    salt, salt_note = None, "Salt: skipped (--skip-salt)."
    if not args.skip_salt:
        try:
            loads["Salt"] = wait_for_quiet()
            salt = run_salt(args.salt_venv, args.agents, args.runs)
            salt_note = (f"Salt: {salt['version']} (PyPI, its own venv {args.salt_venv}), one salt-master "
                         f"(auto_accept) and {args.agents} salt-minions, default settings otherwise.")
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            salt_note = f"Salt: could not be measured: {type(exc).__name__}: {exc}"
            print(f"# {salt_note}", file=sys.stderr)
    report(prov, salt, salt_note, args.db, args.agents, loads)
    common.dump_json(args.json, plain({"db": args.db, "agents": args.agents, "load_at_start_of_each_side": loads,
                                       "provisiond": prov, "salt": salt, "salt_note": salt_note}))


if __name__ == "__main__":
    main()
