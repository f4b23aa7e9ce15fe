"""The job runners: what the agent does with a run of each type in
``protocol.JOB_TYPES`` (an allow-list, checked again here: a type the agent
does not know is answered with a ``failed`` result, never looked up).

Every runner checks its payload before it touches the host, never raises
(a broken payload or a failing host is a ``failed`` result), and returns
the protocol's result fields: ``status``, ``exit_code``, ``output``,
``output_truncated``, ``error``, ``started_at`` and ``finished_at``
(ISO-8601, UTC). The idempotency key is the spool's, added there.

Processes run in a session of their own, so a timeout ends the whole
process group (a script's children too), with stdin from /dev/null and
stdout and stderr merged, kept up to ``protocol.OUTPUT_LIMIT`` bytes.

Standard library only; runs on Python 3.9.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import grp
import hashlib
import json
import logging
import os
import platform
import pwd
import re
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence

from provisiond import __version__
from provisiond.agent import protocol
from provisiond.agent.atomic import fsync_directory

log = logging.getLogger(__name__)

Result = Dict[str, Any]

#: ``systemctl`` for service jobs; None looks it up on SAFE_PATH (tests point it at a fake).
SYSTEMCTL: Optional[str] = None
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: A run without a usable timeout gets this many seconds.
DEFAULT_TIMEOUT = 3600
#: After SIGTERM to a timed-out process group, SIGKILL follows this much later.
KILL_GRACE = 3.0
#: After the main process exits, its output pipe is read this much longer
#: (until a background child that kept it open is left to run).
DRAIN_GRACE = 2.0
#: Seconds for each command that facts runs.
FACTS_COMMAND_TIMEOUT = 60
_MODE = re.compile(r"0?[0-7]{3,4}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?")


class PayloadError(Exception):
    """A payload the agent will not act on; the message says which field and why."""


def now_iso() -> str:
    """The time now, ISO-8601 in UTC, as results carry it."""
    return dt.datetime.now(dt.timezone.utc).isoformat()


def result(status: str, *, exit_code: Optional[int] = None, output: str = "", truncated: bool = False,
           error: Optional[str] = None, started_at: Optional[str] = None) -> Result:
    """A result with every field the protocol names."""
    finished = now_iso()
    return {"status": status, "exit_code": exit_code, "output": output, "output_truncated": truncated,
            "error": error, "started_at": started_at or finished, "finished_at": finished}


def failed(error: str, started_at: Optional[str] = None, output: str = "") -> Result:
    return result("failed", error=error, started_at=started_at, output=output)


# ---------------------------------------------------------------- dispatch


class Context(NamedTuple):
    """What runners need from the agent: where to keep temporary files, and
    what facts report about the agent's identity."""

    state_dir: Path
    hostname: str = ""
    machine_id: str = ""
    serial: str = ""


def run_job(run: Mapping[str, Any], context: Context) -> Result:
    """Run one delivered run (``{"type", "payload", "timeout_seconds", ...}``)
    and answer its result. Never raises."""
    started = now_iso()
    kind = run.get("type")
    runner = RUNNERS.get(kind) if isinstance(kind, str) else None
    if runner is None:
        return failed(f"unknown job type {kind}", started)
    payload = run.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        return failed("payload: expected a JSON object", started)
    timeout = _timeout(run.get("timeout_seconds"))
    try:
        return runner(payload, timeout, context)
    except PayloadError as exc:
        return failed(str(exc), started)
    except Exception as exc:  # a runner's bug must not stop the agent, nor lose the run's result
        log.exception("the %s runner failed unexpectedly", kind)
        return failed(f"the agent's {kind} runner failed: {type(exc).__name__}: {exc}", started)


def _timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return float(DEFAULT_TIMEOUT)
    return float(value)


# ---------------------------------------------------------------- processes


class Finished(NamedTuple):
    """How a process ended: its exit code (negative: the signal), its
    merged output (at most OUTPUT_LIMIT bytes) and whether it timed out."""

    returncode: Optional[int]
    output: bytes
    truncated: bool
    timed_out: bool


def run_process(argv: Sequence[str], *, timeout: float, env: Mapping[str, str], cwd: str = "/",
                user: Optional[pwd.struct_passwd] = None) -> Finished:
    """Run ``argv`` in a new session and collect its output; on timeout the
    whole process group is ended (SIGTERM, then SIGKILL after KILL_GRACE)."""
    extra: Dict[str, Any] = {}
    if user is not None and user.pw_uid != os.geteuid():
        extra = {"user": user.pw_uid, "group": user.pw_gid,
                 "extra_groups": os.getgrouplist(user.pw_name, user.pw_gid)}
    process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, cwd=cwd, env=dict(env), start_new_session=True,
                               close_fds=True, **extra)
    try:
        return _collect(process, timeout)
    finally:
        if process.stdout is not None:
            process.stdout.close()


def _collect(process: subprocess.Popen[bytes], timeout: float) -> Finished:
    assert process.stdout is not None
    fd = process.stdout.fileno()
    os.set_blocking(fd, False)
    kept = bytearray()
    truncated = timed_out = eof = False
    deadline = time.monotonic() + timeout
    drain_until: Optional[float] = None
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if process.poll() is not None:
                if eof:
                    break
                if drain_until is None:
                    drain_until = now + DRAIN_GRACE
                elif now >= drain_until:
                    break  # a background child holds the pipe: it is left to run, unread
            elif now >= deadline:
                timed_out = True
                _end_group(process)
                continue
            if eof:
                wait = min(0.1, max(0.0, deadline - now))
                try:
                    process.wait(wait)
                except subprocess.TimeoutExpired:
                    pass
                continue
            wait = 0.1 if drain_until is not None else min(0.1, max(0.0, deadline - now))
            for _key, _events in selector.select(timeout=wait):
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    eof = True
                    selector.unregister(fd)
                    break
                room = protocol.OUTPUT_LIMIT - len(kept)
                if len(chunk) > room:
                    truncated = True
                kept += chunk[:max(room, 0)]
    return Finished(process.returncode, bytes(kept), truncated, timed_out)


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL to what is left after KILL_GRACE."""
    group = process.pid  # start_new_session: the process leads its own group
    _signal_group(group, signal.SIGTERM)
    try:
        process.wait(KILL_GRACE)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(group, signal.SIGKILL)
    process.wait()


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _process_result(finished: Finished, success_codes: Sequence[int], started: str, timeout: float) -> Result:
    output = finished.output.decode("utf-8", errors="replace")
    code = finished.returncode
    if finished.timed_out:
        return result("timed_out", exit_code=None, output=output, truncated=finished.truncated,
                      error=f"timed out after {timeout:g} seconds: its process group was killed",
                      started_at=started)
    if code is not None and code < 0:
        return result("failed", exit_code=code, output=output, truncated=finished.truncated,
                      error=f"killed by signal {_signal_name(-code)}", started_at=started)
    if code in success_codes:
        return result("succeeded", exit_code=code, output=output, truncated=finished.truncated, started_at=started)
    return result("failed", exit_code=code, output=output, truncated=finished.truncated,
                  error=f"exit code {code} is not a success code ({', '.join(map(str, success_codes))})",
                  started_at=started)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _safe_env(user: Optional[pwd.struct_passwd]) -> Dict[str, str]:
    """What a job's process starts from: nothing of the agent's own
    environment, only a PATH, a UTF-8 locale and the user's HOME."""
    account = user or _current_user()
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8"}
    if account is not None:
        env.update(HOME=account.pw_dir or "/", USER=account.pw_name, LOGNAME=account.pw_name)
    else:
        env["HOME"] = "/"
    return env


def _current_user() -> Optional[pwd.struct_passwd]:
    try:
        return pwd.getpwuid(os.geteuid())
    except KeyError:
        return None


# ---------------------------------------------------------------- script


class ScriptJob(NamedTuple):
    interpreter: str
    script: str
    args: List[str]
    env: Dict[str, str]
    user: Optional[str]
    cwd: Optional[str]
    success_codes: List[int]


def check_script(payload: Mapping[str, Any]) -> ScriptJob:
    interpreter = payload.get("interpreter") or "sh"
    if interpreter not in protocol.SCRIPT_INTERPRETERS:
        raise PayloadError(f"payload.interpreter: {interpreter!r} is not one of "
                           f"{', '.join(protocol.SCRIPT_INTERPRETERS)}")
    script = payload.get("script")
    if not isinstance(script, str) or not script.strip() or "\x00" in script:
        raise PayloadError("payload.script: expected the script's text")
    args = payload.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) and "\x00" not in a for a in args):
        raise PayloadError("payload.args: expected a list of strings")
    env = payload.get("env") or {}
    if not isinstance(env, dict) or not all(
            isinstance(k, str) and _ENV_NAME.fullmatch(k) and isinstance(v, str) and "\x00" not in v
            for k, v in env.items()):
        raise PayloadError("payload.env: expected a mapping of variable names to strings")
    user = payload.get("user")
    if user is not None and (not isinstance(user, str) or not _NAME.fullmatch(user)):
        raise PayloadError(f"payload.user: {user!r} is not a user name")
    cwd = payload.get("cwd")
    if cwd is not None and not (cwd == "/" or protocol.valid_destination(cwd)):
        raise PayloadError(f"payload.cwd: {cwd!r} is not an absolute path without '..'")
    codes = payload.get("success_codes")
    if codes is None:
        codes = [0]
    if not isinstance(codes, list) or not codes or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in codes):
        raise PayloadError("payload.success_codes: expected a non-empty list of exit codes")
    return ScriptJob(interpreter, script, list(args), dict(env), user, cwd, list(codes))


def run_script(payload: Mapping[str, Any], timeout: float, context: Context) -> Result:
    """A shell or Python script, written to a private temporary file and run
    with ``/bin/sh FILE ARGS...`` or ``python FILE ARGS...`` (the agent's own
    interpreter), as ``user`` when given."""
    started = now_iso()
    job = check_script(payload)
    account = None
    if job.user is not None:
        try:
            account = pwd.getpwnam(job.user)
        except KeyError:
            return failed(f"unknown user {job.user}", started)
    env = _safe_env(account)
    env.update(job.env)
    cwd = job.cwd or _home(account)
    directory = _script_directory(context.state_dir, account)
    try:
        script = directory / ("job.py" if job.interpreter == "python" else "job.sh")
        fd = os.open(str(script), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
        try:
            os.write(fd, job.script.encode("utf-8"))
            if account is not None:
                os.fchown(fd, account.pw_uid, account.pw_gid)
        finally:
            os.close(fd)
        program = (sys.executable or "/usr/bin/python3") if job.interpreter == "python" else "/bin/sh"
        try:
            finished = run_process([program, str(script), *job.args], timeout=timeout, env=env, cwd=cwd,
                                   user=account)
        except OSError as exc:
            return failed(f"cannot start {job.interpreter}: {_os_error(exc)}", started)
        except subprocess.SubprocessError as exc:
            return failed(f"cannot start {job.interpreter}: {exc}", started)
    finally:
        shutil.rmtree(str(directory), ignore_errors=True)
    return _process_result(finished, job.success_codes, started, timeout)


def _home(account: Optional[pwd.struct_passwd]) -> str:
    """Where a script starts when its job names no ``cwd``: its user's home
    (as ``su -`` would), or / when that is not a directory."""
    account = account or _current_user()
    home = account.pw_dir if account is not None else "/"
    return home if home and os.path.isdir(home) else "/"


def _script_directory(state_dir: Path, account: Optional[pwd.struct_passwd]) -> Path:
    """A fresh private directory for one script. The agent's own (state_dir,
    0700) when it runs as the agent's user; a directory owned by the job's
    user in the system's temporary directory otherwise (it could not reach
    state_dir)."""
    if account is None or account.pw_uid == os.geteuid():
        parent = state_dir / "scripts"
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="run-", dir=str(parent)))
    directory = Path(tempfile.mkdtemp(prefix="provisiond-agent-"))
    os.chown(str(directory), account.pw_uid, account.pw_gid)
    return directory


def _os_error(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


# ---------------------------------------------------------------- service


def systemctl() -> str:
    """The ``systemctl`` service jobs run."""
    return SYSTEMCTL or shutil.which("systemctl", path=SAFE_PATH) or "/bin/systemctl"


def run_service(payload: Mapping[str, Any], timeout: float, context: Context) -> Result:
    """``systemctl ACTION UNIT``, for an action in SERVICE_ACTIONS and a
    unit name that is only a unit name (never an option)."""
    started = now_iso()
    action, unit = payload.get("action"), payload.get("unit")
    if action not in protocol.SERVICE_ACTIONS:
        raise PayloadError(f"payload.action: {action!r} is not one of {', '.join(protocol.SERVICE_ACTIONS)}")
    if not isinstance(unit, str) or not protocol.UNIT_NAME.fullmatch(unit) or unit.startswith("-"):
        raise PayloadError(f"payload.unit: {unit!r} is not a systemd unit name")
    try:
        finished = run_process([systemctl(), action, unit], timeout=timeout, env=_safe_env(None))
    except OSError as exc:
        return failed(f"cannot run systemctl: {_os_error(exc)}", started)
    return _process_result(finished, [0], started, timeout)


# ---------------------------------------------------------------- file


class FileJob(NamedTuple):
    dest: str
    content: bytes
    sha256: str
    mode: int
    owner: Optional[str]
    group: Optional[str]


def check_file(payload: Mapping[str, Any]) -> FileJob:
    dest = payload.get("dest")
    if not isinstance(dest, str) or not protocol.valid_destination(dest):
        raise PayloadError(f"payload.dest: {dest!r} is not an absolute path without '..'")
    expected = payload.get("sha256")
    if not isinstance(expected, str) or not _SHA256.fullmatch(expected.lower()):
        raise PayloadError("payload.sha256: expected the content's SHA-256 in hex")
    encoded = payload.get("content_b64")
    if not isinstance(encoded, str):
        raise PayloadError("payload.content_b64: expected the content in base64")
    try:
        content = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError("payload.content_b64: not valid base64") from None
    mode = payload.get("mode")
    mode = "0644" if mode is None else str(mode)
    if not _MODE.fullmatch(mode):
        raise PayloadError(f"payload.mode: {mode!r} is not an octal file mode (like 0644)")
    owner, group = payload.get("owner"), payload.get("group")
    for key, value in (("owner", owner), ("group", group)):
        if value is not None and (not isinstance(value, str) or not _NAME.fullmatch(value)):
            raise PayloadError(f"payload.{key}: {value!r} is not a user or group name")
    return FileJob(dest, content, expected.lower(), int(mode, 8), owner, group)


def run_file(payload: Mapping[str, Any], timeout: float, context: Context) -> Result:
    """Put a file in place: its checksum checked before writing, written
    beside its destination, fsynced, renamed over it, and read back."""
    started = now_iso()
    job = check_file(payload)
    actual = hashlib.sha256(job.content).hexdigest()
    if actual != job.sha256:
        return failed(f"the content's SHA-256 is {actual}, not the {job.sha256} the job says: not written", started)
    try:
        uid, gid = _owner(job)
    except LookupError as exc:
        return failed(str(exc.args[0]), started)
    dest = Path(job.dest)
    if not dest.parent.is_dir():
        return failed(f"the directory {dest.parent} does not exist", started)
    current = _current_state(dest)
    if current is not None and current == (job.sha256, job.mode, _resolved(uid, current[2]),
                                           _resolved(gid, current[3])):
        return result("succeeded", output="unchanged", started_at=started)
    if current is not None:
        # Kept unless the job names them: replacing a file keeps its ownership.
        uid = current[2] if uid is None else uid
        gid = current[3] if gid is None else gid
    try:
        _replace(dest, job.content, job.mode, uid, gid)
        written = _sha256_of(dest)
    except OSError as exc:
        return failed(f"cannot write {dest}: {_os_error(exc)}", started)
    if written != job.sha256:
        return failed(f"{dest} reads back with SHA-256 {written}, not {job.sha256}", started)
    return result("succeeded", output=f"wrote {len(job.content)} bytes to {dest} (mode {job.mode:04o}, "
                                      f"sha256 {job.sha256})", started_at=started)


def _owner(job: FileJob) -> tuple[Optional[int], Optional[int]]:
    uid = gid = None
    if job.owner is not None:
        try:
            uid = pwd.getpwnam(job.owner).pw_uid
        except KeyError:
            raise LookupError(f"unknown user {job.owner}") from None
    if job.group is not None:
        try:
            gid = grp.getgrnam(job.group).gr_gid
        except KeyError:
            raise LookupError(f"unknown group {job.group}") from None
    return uid, gid


def _resolved(wanted: Optional[int], current: int) -> int:
    return current if wanted is None else wanted


def _current_state(dest: Path) -> Optional[tuple[str, int, int, int]]:
    """(sha256, mode, uid, gid) of a regular file at ``dest``; None when
    there is none (or a symlink or something else: it is replaced)."""
    try:
        fd = os.open(str(dest), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        digest = hashlib.sha256()
        while True:
            chunk = os.read(fd, 1024 * 1024)
            if not chunk:
                break
            digest.update(chunk)
        return digest.hexdigest(), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid
    finally:
        os.close(fd)


def _replace(dest: Path, content: bytes, mode: int, uid: Optional[int], gid: Optional[int]) -> None:
    fd, temporary = tempfile.mkstemp(dir=str(dest.parent), prefix="." + dest.name + ".", suffix=".provisiond")
    try:
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            if uid is not None or gid is not None:
                os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
            os.fchmod(fd, mode)  # after chown, which clears set-id bits
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, str(dest))
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    fsync_directory(dest.parent)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- facts


def run_facts(payload: Mapping[str, Any], timeout: float, context: Context) -> Result:
    """The host's facts as JSON in ``output``."""
    started = now_iso()
    facts = collect_facts(context)
    text = json.dumps(facts, sort_keys=True)
    encoded = text.encode("utf-8")
    if len(encoded) > protocol.OUTPUT_LIMIT:
        # Cut JSON is no JSON: the biggest parts go first.
        facts["packages"], facts["services"] = [], []
        facts.setdefault("errors", {})["size"] = f"{len(encoded)} bytes of facts: packages and services left out"
        text = json.dumps(facts, sort_keys=True)
    return result("succeeded", output=text, started_at=started)


def collect_facts(context: Context) -> Dict[str, Any]:
    """Everything facts reports; each part best-effort (a part that cannot
    be read is null or empty, and why is under ``errors``)."""
    errors: Dict[str, str] = {}
    facts: Dict[str, Any] = {
        "hostname": _part(errors, "hostname", lambda: platform.node() or context.hostname, context.hostname),
        "machine_id": context.machine_id,
        "serial": context.serial,
        "agent_version": __version__,
        "python": platform.python_version(),
        "os": _part(errors, "os", read_os_release, {}),
        "kernel": _part(errors, "kernel", _kernel, {}),
        "uptime_seconds": _part(errors, "uptime_seconds", _uptime, None),
        "cpu_count": os.cpu_count(),
        "memory": _part(errors, "memory", _memory, {}),
        "packages": _part(errors, "packages", _packages, []),
        "services": _part(errors, "services", _services, []),
    }
    facts["errors"] = errors
    return facts


def _part(errors: Dict[str, str], name: str, read: Callable[[], Any], default: Any) -> Any:
    try:
        return read()
    except Exception as exc:  # facts are best-effort: one part must not lose the others
        errors[name] = f"{type(exc).__name__}: {exc}"
        return default


def read_os_release(paths: Sequence[str] = ("/etc/os-release", "/usr/lib/os-release")) -> Dict[str, str]:
    """os-release(5) as a mapping (quotes and escapes undone)."""
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        fields: Dict[str, str] = {}
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            fields[key.strip()] = value
        return fields
    raise FileNotFoundError("no /etc/os-release nor /usr/lib/os-release")


def _kernel() -> Dict[str, str]:
    uname = os.uname()
    return {"sysname": uname.sysname, "release": uname.release, "version": uname.version,
            "machine": uname.machine}


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def _memory() -> Dict[str, int]:
    """Total and available memory in bytes, from /proc/meminfo."""
    wanted = {"MemTotal": "total_bytes", "MemAvailable": "available_bytes", "SwapTotal": "swap_total_bytes"}
    memory: Dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in wanted:
            parts = rest.split()
            memory[wanted[key]] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return memory


def _command(argv: Sequence[str]) -> Optional[str]:
    """A command's stdout, or None when the command is not there."""
    program = shutil.which(argv[0], path=SAFE_PATH)
    if program is None:
        return None
    done = subprocess.run([program, *argv[1:]], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, env=_safe_env(None), timeout=FACTS_COMMAND_TIMEOUT,
                          check=False)
    return done.stdout.decode("utf-8", errors="replace")


def _packages() -> List[Dict[str, str]]:
    """Installed packages from rpm or dpkg, whichever has some (Debian can
    have an rpm binary with an empty database)."""
    listed = _command(["rpm", "-qa", "--qf", "%{NAME} %{VERSION}-%{RELEASE}\n"])
    packages = _name_version(listed)
    if packages:
        return packages
    listed = _command(["dpkg-query", "-W", "-f", "${Status}\t${Package} ${Version}\n"])
    installed = [line.partition("\t")[2] for line in (listed or "").splitlines()
                 if line.partition("\t")[0].endswith(" installed")]
    return _name_version("\n".join(installed))


def _name_version(text: Optional[str]) -> List[Dict[str, str]]:
    packages = []
    for line in (text or "").splitlines():
        name, _, version = line.strip().partition(" ")
        if name:
            packages.append({"name": name, "version": version.strip()})
    return sorted(packages, key=lambda p: (p["name"], p["version"]))


def _services() -> List[Dict[str, str]]:
    """systemd's service units and their states (none without systemctl)."""
    program = SYSTEMCTL or shutil.which("systemctl", path=SAFE_PATH)
    if program is None:
        return []
    done = subprocess.run([program, "list-units", "--type=service", "--all", "--no-legend", "--plain",
                           "--no-pager"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, env=_safe_env(None), timeout=FACTS_COMMAND_TIMEOUT,
                          check=False)
    services = []
    for line in done.stdout.decode("utf-8", errors="replace").splitlines():
        parts = line.split(None, 4)
        if len(parts) >= 4:
            services.append({"unit": parts[0], "load": parts[1], "active": parts[2], "sub": parts[3],
                             "description": parts[4] if len(parts) > 4 else ""})
    return services


RUNNERS: Dict[str, Callable[[Mapping[str, Any], float, Context], Result]] = {
    "script": run_script, "service": run_service, "file": run_file, "facts": run_facts,
}
assert tuple(RUNNERS) == protocol.JOB_TYPES, "every job type in the protocol has a runner here"
