"""The job runners against real processes and files: scripts (sh and
Python, exit codes, success codes, timeouts that end the whole process
group, capped output, a clean environment, cwd, another user), files
(checked, atomic, verified), services (a fake systemctl) and facts."""

from __future__ import annotations

import base64
import datetime as dt
import grp
import hashlib
import json
import os
import pwd
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from provisiond.agent import protocol, runners
from provisiond.agent.runners import Context


@pytest.fixture
def context(tmp_path: Path) -> Context:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    return Context(state_dir=state, hostname="h1", machine_id="m1", serial="S1")


def run(context: Context, kind: str, payload: Any, timeout: float = 30) -> dict[str, Any]:
    result = runners.run_job({"run_id": 1, "type": kind, "payload": payload, "timeout_seconds": timeout}, context)
    assert set(result) == {"status", "exit_code", "output", "output_truncated", "error", "started_at",
                           "finished_at"}
    assert result["status"] in protocol.RESULT_STATUSES
    for key in ("started_at", "finished_at"):
        assert dt.datetime.fromisoformat(result[key]).utcoffset() == dt.timedelta(0)
    return result


def script(context: Context, text: str, **payload: Any) -> dict[str, Any]:
    timeout = payload.pop("timeout", 30)
    return run(context, "script", {"interpreter": "sh", "script": text, **payload}, timeout)


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# ---------------------------------------------------------------- dispatch


def test_an_unknown_job_type_fails_without_running_anything(context: Context):
    result = run(context, "shell", {"script": "touch /tmp/never"})
    assert result["status"] == "failed" and result["error"] == "unknown job type shell"
    assert run(context, "eval", {})["error"] == "unknown job type eval"


def test_a_payload_that_is_not_an_object_fails(context: Context):
    assert run(context, "script", ["echo"])["error"] == "payload: expected a JSON object"


@pytest.mark.parametrize(("payload", "field"), [
    ({"script": ""}, "payload.script"),
    ({"script": "true", "interpreter": "perl"}, "payload.interpreter"),
    ({"script": "true", "args": "a b"}, "payload.args"),
    ({"script": "true", "env": {"A-B": "1"}}, "payload.env"),
    ({"script": "true", "env": {"A": 1}}, "payload.env"),
    ({"script": "true", "cwd": "tmp"}, "payload.cwd"),
    ({"script": "true", "cwd": "/tmp/../etc"}, "payload.cwd"),
    ({"script": "true", "user": "no body"}, "payload.user"),
    ({"script": "true", "success_codes": []}, "payload.success_codes"),
    ({"script": "true", "success_codes": ["0"]}, "payload.success_codes"),
])
def test_script_payloads_are_checked_first(context: Context, payload: dict[str, Any], field: str):
    result = run(context, "script", payload)
    assert result["status"] == "failed" and result["error"].startswith(field), result


# ---------------------------------------------------------------- scripts


def test_a_shell_script_with_arguments(context: Context):
    result = script(context, 'echo "hello $1 and $2"; echo oops >&2', args=["a b", "c"])
    assert result["status"] == "succeeded" and result["exit_code"] == 0 and result["error"] is None
    assert result["output"] == "hello a b and c\noops\n"  # stdout and stderr merged
    assert result["output_truncated"] is False


def test_a_python_script(context: Context):
    result = run(context, "script", {"interpreter": "python", "args": ["x"],
                                     "script": "import sys\nprint(sys.argv[1:], sys.version_info >= (3, 9))"})
    assert result["status"] == "succeeded" and result["output"] == "['x'] True\n"


def test_exit_codes_and_success_codes(context: Context):
    failed = script(context, "echo before; exit 3")
    assert failed["status"] == "failed" and failed["exit_code"] == 3 and failed["output"] == "before\n"
    assert "exit code 3" in failed["error"]
    assert script(context, "exit 3", success_codes=[0, 3])["status"] == "succeeded"
    assert script(context, "exit 0", success_codes=[1])["status"] == "failed"


def test_a_process_killed_by_a_signal(context: Context):
    result = script(context, "kill -KILL $$")
    assert result["status"] == "failed" and result["exit_code"] == -9 and "SIGKILL" in result["error"]


def test_the_script_file_is_private_and_removed(context: Context):
    result = script(context, 'ls -l "$0"; stat -c %a "$0"')
    assert result["output"].splitlines()[-1] == "700"
    assert list((context.state_dir / "scripts").iterdir()) == []


def test_the_environment_is_minimal_plus_the_jobs(context: Context, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AGENT_SECRET", "leaked")
    result = script(context, 'echo "$PATH|$LANG|$HOME|${AGENT_SECRET:-unset}|$GREETING"', env={"GREETING": "hi"})
    home = pwd.getpwuid(os.geteuid()).pw_dir
    assert result["output"] == f"{runners.SAFE_PATH}|C.UTF-8|{home}|unset|hi\n"


def test_the_job_may_override_the_safe_environment(context: Context):
    assert script(context, 'echo "$LANG"', env={"LANG": "de_DE.UTF-8"})["output"] == "de_DE.UTF-8\n"


def test_cwd(context: Context, tmp_path: Path):
    assert script(context, "pwd", cwd=str(tmp_path))["output"] == f"{tmp_path}\n"
    assert script(context, "pwd", cwd="/")["output"] == "/\n"
    missing = script(context, "pwd", cwd=str(tmp_path / "missing"))
    assert missing["status"] == "failed" and "cannot start" in missing["error"]


def test_stdin_is_empty(context: Context):
    assert script(context, "cat; echo done")["output"] == "done\n"


def test_a_timeout_kills_the_whole_process_group(context: Context, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runners, "KILL_GRACE", 0.5)
    pids = tmp_path / "pids"
    started = time.monotonic()
    # A grandchild that ignores SIGTERM: SIGKILL to the group ends it too.
    result = script(context, f"""
        sh -c 'trap "" TERM; sleep 300' &
        echo $! > {pids}
        sleep 300 &
        echo $! >> {pids}
        echo waiting
        wait
    """, timeout=1)
    elapsed = time.monotonic() - started
    assert result["status"] == "timed_out" and result["exit_code"] is None
    assert "timed out after 1 seconds" in result["error"] and result["output"] == "waiting\n"
    assert elapsed < 10
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), f"process {pid} of the timed-out job still runs"


def test_a_background_child_holding_the_output_does_not_hold_the_job(context: Context, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runners, "DRAIN_GRACE", 0.5)
    pid_file = tmp_path / "daemon"
    started = time.monotonic()
    result = script(context, f"sleep 60 & echo $! > {pid_file}; echo started")
    try:
        assert result["status"] == "succeeded" and result["output"] == "started\n"
        assert time.monotonic() - started < 10
    finally:
        os.kill(int(pid_file.read_text()), 9)


def test_output_is_capped(context: Context):
    result = run(context, "script", {"interpreter": "python", "script": (
        "import sys\n"
        f"sys.stdout.write('x' * {protocol.OUTPUT_LIMIT + 5000})\n"
        "sys.stdout.flush()\n"
        "sys.stderr.write('end')\n")})
    assert result["status"] == "succeeded"  # the process was read to its end, not blocked on a full pipe
    assert result["output_truncated"] is True
    assert len(result["output"].encode()) == protocol.OUTPUT_LIMIT and set(result["output"]) == {"x"}


def test_output_that_is_not_utf8_is_replaced(context: Context):
    result = script(context, r"printf 'caf\351\n'")
    assert result["output"] == "caf\ufffd\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_run_as_another_user(context: Context):
    nobody = pwd.getpwnam("nobody")
    result = script(context, 'id -u; id -g; id -G; pwd; echo "$HOME $USER"; touch "$0.x" && echo wrote', user="nobody")
    assert result["status"] == "succeeded", result
    uid, gid, groups, cwd, env, wrote = result["output"].splitlines()
    assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid)
    assert "0" not in groups.split()  # root's groups are not kept
    home = nobody.pw_dir if os.path.isdir(nobody.pw_dir) else "/"
    assert cwd == home and env == f"{nobody.pw_dir} nobody" and wrote == "wrote"


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_another_user_cannot_read_the_agents_state(context: Context):
    (context.state_dir / "credential").write_text("secret")
    os.chmod(context.state_dir / "credential", 0o600)
    result = script(context, f"cat {context.state_dir}/credential", user="nobody")
    assert result["status"] == "failed" and "secret" not in result["output"]


def test_an_unknown_user(context: Context):
    result = script(context, "true", user="no-such-user-here")
    assert result["status"] == "failed" and result["error"] == "unknown user no-such-user-here"


# ---------------------------------------------------------------- files


def file_payload(dest: Path | str, content: bytes, **extra: Any) -> dict[str, Any]:
    return {"dest": str(dest), "content_b64": base64.b64encode(content).decode(),
            "sha256": hashlib.sha256(content).hexdigest(), **extra}


def test_a_file_is_written_with_its_mode(context: Context, tmp_path: Path):
    dest = tmp_path / "etc" / "motd"
    dest.parent.mkdir()
    result = run(context, "file", file_payload(dest, b"welcome\n", mode="0640"))
    assert result["status"] == "succeeded" and "wrote 8 bytes" in result["output"]
    assert dest.read_bytes() == b"welcome\n" and stat.S_IMODE(dest.stat().st_mode) == 0o640
    assert [p.name for p in dest.parent.iterdir()] == ["motd"]  # no temporary file left


def test_the_default_mode_is_0644(context: Context, tmp_path: Path):
    run(context, "file", file_payload(tmp_path / "f", b"x"))
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644


def test_a_file_is_replaced_atomically(context: Context, tmp_path: Path):
    dest = tmp_path / "conf"
    dest.write_bytes(b"old")
    inode = dest.stat().st_ino
    result = run(context, "file", file_payload(dest, b"new"))
    assert result["status"] == "succeeded" and dest.read_bytes() == b"new"
    assert dest.stat().st_ino != inode  # renamed over, never rewritten in place


def test_the_same_content_is_left_unchanged(context: Context, tmp_path: Path):
    dest = tmp_path / "conf"
    dest.write_bytes(b"same")
    os.chmod(dest, 0o644)
    inode, mtime = dest.stat().st_ino, dest.stat().st_mtime_ns
    result = run(context, "file", file_payload(dest, b"same", mode="0644"))
    assert result["status"] == "succeeded" and result["output"] == "unchanged"
    assert (dest.stat().st_ino, dest.stat().st_mtime_ns) == (inode, mtime)


def test_the_same_content_with_another_mode_gets_the_mode(context: Context, tmp_path: Path):
    dest = tmp_path / "conf"
    dest.write_bytes(b"same")
    os.chmod(dest, 0o666)
    result = run(context, "file", file_payload(dest, b"same", mode="0600"))
    assert result["status"] == "succeeded" and result["output"] != "unchanged"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


def test_a_checksum_mismatch_is_refused_before_writing(context: Context, tmp_path: Path):
    dest = tmp_path / "conf"
    payload = file_payload(dest, b"content")
    payload["sha256"] = hashlib.sha256(b"other").hexdigest()
    result = run(context, "file", payload)
    assert result["status"] == "failed" and "not written" in result["error"]
    assert not dest.exists()


@pytest.mark.parametrize("dest", ["relative/path", "/etc/../etc/passwd", "/tmp/./x", "/tmp//x", "/", ""])
def test_bad_destinations_are_refused(context: Context, dest: str):
    result = run(context, "file", file_payload(dest, b"x"))
    assert result["status"] == "failed" and result["error"].startswith("payload.dest")


@pytest.mark.parametrize(("change", "field"), [
    ({"content_b64": "not base64!"}, "payload.content_b64"),
    ({"sha256": "abc"}, "payload.sha256"),
    ({"mode": "rw-r--r--"}, "payload.mode"),
    ({"mode": "0999"}, "payload.mode"),
    ({"owner": "bad name"}, "payload.owner"),
])
def test_bad_file_payloads(context: Context, tmp_path: Path, change: dict[str, Any], field: str):
    result = run(context, "file", {**file_payload(tmp_path / "f", b"x"), **change})
    assert result["status"] == "failed" and result["error"].startswith(field), result
    assert not (tmp_path / "f").exists()


def test_a_missing_directory_or_unknown_owner(context: Context, tmp_path: Path):
    assert "does not exist" in run(context, "file", file_payload(tmp_path / "no" / "f", b"x"))["error"]
    assert run(context, "file", file_payload(tmp_path / "f", b"x", owner="no-such-user-here"))["error"] == (
        "unknown user no-such-user-here")
    assert run(context, "file", file_payload(tmp_path / "f", b"x", group="no-such-group-here"))["error"] == (
        "unknown group no-such-group-here")
    assert not (tmp_path / "f").exists()


def test_a_directory_in_the_way(context: Context, tmp_path: Path):
    (tmp_path / "d").mkdir()
    result = run(context, "file", file_payload(tmp_path / "d", b"x"))
    assert result["status"] == "failed" and "cannot write" in result["error"]


def test_a_symlink_is_replaced_not_followed(context: Context, tmp_path: Path):
    target = tmp_path / "target"
    target.write_bytes(b"x")
    link = tmp_path / "link"
    link.symlink_to(target)
    result = run(context, "file", file_payload(link, b"x"))
    assert result["status"] == "succeeded" and result["output"] != "unchanged"
    assert not link.is_symlink() and link.read_bytes() == b"x"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_owner_and_group(context: Context, tmp_path: Path):
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name
    dest = tmp_path / "owned"
    result = run(context, "file", file_payload(dest, b"x", owner="nobody", group=group, mode="4755"))
    assert result["status"] == "succeeded", result
    info = dest.stat()
    assert (info.st_uid, info.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert stat.S_IMODE(info.st_mode) == 0o4755  # set after chown, which clears set-id bits
    again = run(context, "file", file_payload(dest, b"y"))  # no owner given: the file's is kept
    assert again["status"] == "succeeded" and (dest.stat().st_uid, dest.stat().st_gid) == (nobody.pw_uid,
                                                                                             nobody.pw_gid)


def test_a_file_that_reads_back_wrong_fails(context: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runners, "_sha256_of", lambda path: "0" * 64)
    result = run(context, "file", file_payload(tmp_path / "f", b"x"))
    assert result["status"] == "failed" and "reads back" in result["error"]


# ---------------------------------------------------------------- services


@pytest.fixture
def fake_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A systemctl that records its arguments and exits with the code in ``exit``."""
    calls = tmp_path / "calls"
    program = tmp_path / "systemctl"
    program.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho "systemctl $1 done"\n'
                       f'exit $(cat {tmp_path}/exit 2>/dev/null || echo 0)\n')
    program.chmod(0o755)
    monkeypatch.setattr(runners, "SYSTEMCTL", str(program))
    return calls


def test_a_service_action(context: Context, fake_systemctl: Path):
    result = run(context, "service", {"action": "restart", "unit": "nginx.service"})
    assert result["status"] == "succeeded" and result["output"] == "systemctl restart done\n"
    assert fake_systemctl.read_text() == "restart nginx.service\n"


def test_a_failing_service_action(context: Context, fake_systemctl: Path):
    (fake_systemctl.parent / "exit").write_text("3")
    result = run(context, "service", {"action": "status", "unit": "sshd.service"})
    assert result["status"] == "failed" and result["exit_code"] == 3


@pytest.mark.parametrize("payload", [
    {"action": "mask", "unit": "nginx.service"},
    {"action": "start", "unit": "nginx"},
    {"action": "start", "unit": "a b.service"},
    {"action": "start", "unit": "--force.service"},
    {"action": "start", "unit": "x.service; reboot"},
    {"action": "start"},
])
def test_service_payloads_are_checked(context: Context, fake_systemctl: Path, payload: dict[str, Any]):
    result = run(context, "service", payload)
    assert result["status"] == "failed" and result["error"].startswith("payload.")
    assert not fake_systemctl.exists()


def test_no_systemctl(context: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runners, "SYSTEMCTL", str(tmp_path / "missing"))
    result = run(context, "service", {"action": "start", "unit": "x.service"})
    assert result["status"] == "failed" and "cannot run systemctl" in result["error"]


# ---------------------------------------------------------------- facts


def test_facts(context: Context):
    result = run(context, "facts", {})
    assert result["status"] == "succeeded"
    facts = json.loads(result["output"])
    assert set(facts) >= {"hostname", "machine_id", "serial", "os", "kernel", "uptime_seconds", "python",
                          "cpu_count", "memory", "packages", "services", "agent_version", "errors"}
    assert (facts["machine_id"], facts["serial"]) == ("m1", "S1")
    assert facts["kernel"]["sysname"] == "Linux" and facts["cpu_count"] >= 1
    assert facts["memory"]["total_bytes"] > 0 and facts["uptime_seconds"] > 0
    assert isinstance(facts["packages"], list) and isinstance(facts["services"], list)
    if Path("/var/lib/dpkg/status").exists():
        assert any(p["name"] == "bash" for p in facts["packages"])


def test_facts_never_raise(context: Context, monkeypatch: pytest.MonkeyPatch):
    def broken() -> Any:
        raise OSError("no /proc here")

    monkeypatch.setattr(runners, "_uptime", broken)
    monkeypatch.setattr(runners, "_packages", broken)
    facts = json.loads(run(context, "facts", {})["output"])
    assert facts["uptime_seconds"] is None and facts["packages"] == []
    assert "no /proc here" in facts["errors"]["packages"]


def test_services_from_a_fake_systemctl(context: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    program = tmp_path / "systemctl"
    program.write_text("#!/bin/sh\nprintf 'ssh.service loaded active running OpenBSD Secure Shell server\\n"
                       "x.service not-found inactive dead x.service\\n'\n")
    program.chmod(0o755)
    monkeypatch.setattr(runners, "SYSTEMCTL", str(program))
    facts = json.loads(run(context, "facts", {})["output"])
    assert facts["services"][0] == {"unit": "ssh.service", "load": "loaded", "active": "active", "sub": "running",
                                    "description": "OpenBSD Secure Shell server"}
    assert len(facts["services"]) == 2


def test_os_release_parsing(tmp_path: Path):
    (tmp_path / "os-release").write_text('NAME="Rocky Linux"\nVERSION_ID=\'9.3\'\n# comment\nID=rocky\n'
                                         'PRETTY_NAME="A \\"quoted\\" name"\n')
    assert runners.read_os_release([str(tmp_path / "missing"), str(tmp_path / "os-release")]) == {
        "NAME": "Rocky Linux", "VERSION_ID": "9.3", "ID": "rocky", "PRETTY_NAME": 'A "quoted" name'}
