"""``provctl run|push|template|service|facts``, ``provctl jobs ...``,
``provctl agents ...``, ``provctl files ...`` and ``provctl handoff retry``:
jobs on hosts through their agents.

``run`` (and the other job commands) follow the job: each host's result is
printed as it arrives, and the exit status says how it ended: 0 when every
host succeeded, 12 when some failed or timed out, 13 when some did not run
(no agent, offline past the deadline, cancelled) and none failed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from provisiond.cli.client import ApiClient, JobFailed, JobNotRun, WaitTimedOut, pass_api
from provisiond.cli.output import echo_json, echo_table, echo_yaml, json_option

FAILED = ("failed", "timed_out")
NOT_RUN = ("did_not_run", "cancelled")
TERMINAL = ("succeeded", *FAILED, *NOT_RUN)


def _targets(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _follow_options(command: Any) -> Any:
    command = click.option("--wait/--no-wait", default=True, show_default=True,
                           help="Follow the job and print each host's result as it arrives.")(command)
    command = click.option("--timeout", "follow_timeout", type=click.FloatRange(min=0), default=0,
                           help="Stop following after this many seconds (0: until every host has ended).")(command)
    command = click.option("--job-timeout", type=click.IntRange(1, 86400),
                           help="Seconds the job may run on a host (default: the server's job_timeout_seconds).")(
        command)
    return json_option(command)


def _submit(api: ApiClient, body: dict[str, Any], wait: bool, follow_timeout: float, job_timeout: int | None,
            as_json: bool) -> None:
    if job_timeout:
        body["timeout_seconds"] = job_timeout
    job = api.submit_job(body)
    if not wait:
        echo_json(job) if as_json else click.echo(f"job {job['id']}: {job['summary']} on "
                                                   f"{sum(job['runs'].values())} host(s)")
        return
    follow(api, job["id"], follow_timeout, as_json)


#: How often ``follow`` looks at a job at most in its first FAST_FOR_SECONDS.
FAST_LOOK_SECONDS = 0.1
FAST_FOR_SECONDS = 10.0


def follow(api: ApiClient, job_id: int, timeout: float, as_json: bool) -> None:
    """Print each host's result as it arrives; end with the job's exit status."""
    shown: set[int] = set()
    started = time.monotonic()
    pause = 0.02
    while True:
        job = api.job(job_id, output=True)
        for run in job["hosts"]:
            if run["state"] in TERMINAL and run["run_id"] not in shown:
                shown.add(run["run_id"])
                if not as_json:
                    _print_run(run)
        if job["finished"]:
            break
        if timeout and time.monotonic() - started > timeout:
            raise WaitTimedOut(f"job {job_id} still runs on {len(job['hosts']) - len(shown)} host(s) after "
                               f"{timeout:g} s (provctl jobs show {job_id})")
        time.sleep(pause)
        # Most jobs end within seconds: look often then (each look is one cheap
        # GET), then back off for the long ones.
        pause = min(pause * 1.5, FAST_LOOK_SECONDS if time.monotonic() - started < FAST_FOR_SECONDS else 0.5)
    if as_json:
        echo_json(job)
    states = job["runs"]
    failed = sum(states.get(s, 0) for s in FAILED)
    not_run = sum(states.get(s, 0) for s in NOT_RUN)
    if failed:
        raise JobFailed(f"job {job_id}: {failed} host(s) failed" + (f", {not_run} did not run" if not_run else ""))
    if not_run:
        raise JobNotRun(f"job {job_id}: {not_run} host(s) did not run it")


def _print_run(run: dict[str, Any]) -> None:
    code = "" if run["exit_code"] is None else f" (exit {run['exit_code']})"
    click.echo(f"{run['host']}: {run['state']}{code}" + (f": {run['error']}" if run.get("error") else ""))
    output = run.get("output") or ""
    for line in output.rstrip("\n").splitlines():
        click.echo(f"  {line}")
    if run.get("output_truncated"):
        click.echo("  [output truncated]")


@click.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("targets")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--python", "interpreter", flag_value="python", help="COMMAND is a Python script's text.")
@click.option("--user", help="Run as this user on the host.")
@click.option("--cwd", help="Working directory on the host (absolute).")
@_follow_options
@pass_api
def run(api: ApiClient, targets: str, command: tuple[str, ...], interpreter: str | None, user: str | None,
        cwd: str | None, wait: bool, follow_timeout: float, job_timeout: int | None, as_json: bool) -> None:
    """Run COMMAND on TARGETS (comma-separated: serials, hostnames or globs,
    group names, or all), e.g. `provctl run web-* -- systemctl is-active nginx`."""
    import shlex

    script = command[0] if interpreter == "python" or len(command) == 1 else shlex.join(command)
    payload: dict[str, Any] = {"interpreter": interpreter or "sh", "script": script}
    if user:
        payload["user"] = user
    if cwd:
        payload["cwd"] = cwd
    _submit(api, {"type": "script", "payload": payload, "targets": _targets(targets)}, wait, follow_timeout,
            job_timeout, as_json)


@click.command("push")
@click.argument("name")
@click.argument("dest")
@click.argument("targets")
@click.option("--mode", default="0644", show_default=True)
@click.option("--owner")
@click.option("--group")
@_follow_options
@pass_api
def push(api: ApiClient, name: str, dest: str, targets: str, mode: str, owner: str | None, group: str | None,
         wait: bool, follow_timeout: float, job_timeout: int | None, as_json: bool) -> None:
    """Write the stored file NAME (provctl files put) to DEST on TARGETS;
    skipped where DEST already has its checksum."""
    payload = {"file": name, "dest": dest, "mode": mode, "owner": owner, "group": group}
    _submit(api, {"type": "file", "payload": payload, "targets": _targets(targets)}, wait, follow_timeout,
            job_timeout, as_json)


@click.command("template")
@click.argument("name")
@click.argument("dest")
@click.argument("targets")
@click.option("--mode", default="0644", show_default=True)
@click.option("--owner")
@click.option("--group")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="A job variable (top layer).")
@_follow_options
@pass_api
def template(api: ApiClient, name: str, dest: str, targets: str, mode: str, owner: str | None, group: str | None,
             variables: tuple[str, ...], wait: bool, follow_timeout: float, job_timeout: int | None,
             as_json: bool) -> None:
    """Render the stored file NAME as a Jinja2 template for each host (its
    layered variables) and write it to DEST on TARGETS."""
    values = {}
    for item in variables:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--var")
        values[key] = value
    payload = {"file": name, "dest": dest, "mode": mode, "owner": owner, "group": group, "variables": values}
    _submit(api, {"type": "template", "payload": payload, "targets": _targets(targets)}, wait, follow_timeout,
            job_timeout, as_json)


@click.command("service")
@click.argument("action", type=click.Choice(["start", "stop", "restart", "reload", "enable", "disable", "status"]))
@click.argument("unit")
@click.argument("targets")
@_follow_options
@pass_api
def service(api: ApiClient, action: str, unit: str, targets: str, wait: bool, follow_timeout: float,
            job_timeout: int | None, as_json: bool) -> None:
    """systemctl ACTION UNIT on TARGETS."""
    _submit(api, {"type": "service", "payload": {"action": action, "unit": unit}, "targets": _targets(targets)},
            wait, follow_timeout, job_timeout, as_json)


@click.command("facts")
@click.argument("serial")
@click.option("--refresh", is_flag=True, help="Ask the agent for its facts now, then show them.")
@json_option
@pass_api
def facts(api: ApiClient, serial: str, refresh: bool, as_json: bool) -> None:
    """The facts SERIAL's agent reported (OS, kernel, packages, services, hardware)."""
    if refresh:
        job = api.submit_job({"type": "facts", "payload": {}, "targets": [f"serial:{serial}"]})
        _quiet_follow(api, job["id"])
    body = api.facts(serial)
    echo_json(body) if as_json else echo_yaml(body)


def _quiet_follow(api: ApiClient, job_id: int) -> None:
    while not api.job(job_id)["finished"]:
        time.sleep(0.2)


# --------------------------------------------------------------------------- jobs


@click.group("jobs")
def jobs() -> None:
    """Jobs: list, show, logs, cancel, rerun."""


@jobs.command("list")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@json_option
@pass_api
def jobs_list(api: ApiClient, limit: int, as_json: bool) -> None:
    body = api.jobs(limit)
    if as_json:
        echo_json(body)
        return
    echo_table(("ID", "CREATED", "BY", "SUMMARY", "RUNS"), [
        (j["id"], j["created_at"][:19].replace("T", " "), j["created_by"], j["summary"],
         " ".join(f"{state}={n}" for state, n in sorted(j["runs"].items()))) for j in body["jobs"]])


@jobs.command("show")
@click.argument("job_id", type=int)
@json_option
@pass_api
def jobs_show(api: ApiClient, job_id: int, as_json: bool) -> None:
    body = api.job(job_id)
    if as_json:
        echo_json(body)
        return
    echo_table(("HOST", "STATE", "EXIT", "ATTEMPTS", "ERROR"), [
        (r["host"], r["state"], r["exit_code"], r["attempts"], r["error"]) for r in body["hosts"]])


@jobs.command("logs")
@click.argument("job_id", type=int)
@click.option("--state", help="Only hosts whose run is in this state (failed, succeeded...).")
@json_option
@pass_api
def jobs_logs(api: ApiClient, job_id: int, state: str | None, as_json: bool) -> None:
    """Each host's output."""
    body = api.job(job_id, output=True, state=state)
    if as_json:
        echo_json(body)
        return
    for run in body["hosts"]:
        _print_run(run)


@jobs.command("cancel")
@click.argument("job_id", type=int)
@pass_api
def jobs_cancel(api: ApiClient, job_id: int) -> None:
    body = api.cancel_job(job_id)
    click.echo(f"job {job_id} cancelled: {body['cancelled_runs']} run(s) stopped")


@jobs.command("rerun")
@click.argument("job_id", type=int)
@click.option("--failed", is_flag=True, help="Only the hosts whose run did not succeed.")
@_follow_options
@pass_api
def jobs_rerun(api: ApiClient, job_id: int, failed: bool, wait: bool, follow_timeout: float,
               job_timeout: int | None, as_json: bool) -> None:
    job = api.rerun_job(job_id, failed)
    if wait:
        follow(api, job["id"], follow_timeout, as_json)
    else:
        echo_json(job) if as_json else click.echo(f"job {job['id']}: {job['summary']}")


# --------------------------------------------------------------------------- agents


@click.group("agents")
def agents() -> None:
    """Agents: list, accept, reject, delete (as salt-key)."""


@agents.command("list")
@click.option("--state", type=click.Choice(["pending", "accepted", "rejected", "denied", "revoked"]))
@json_option
@pass_api
def agents_list(api: ApiClient, state: str | None, as_json: bool) -> None:
    body = api.agents(state)
    if as_json:
        echo_json(body)
        return
    echo_table(("ID", "STATE", "HOST", "HOSTNAME", "SERIAL", "ONLINE", "LAST SEEN", "ADDRESS"), [
        (a["id"], a["state"], a["host"], a["hostname"], a["serial"], a["online"],
         (a["last_seen_at"] or "")[:19].replace("T", " "), a["address"]) for a in body["agents"]])


@agents.command("accept")
@click.argument("agent_id", type=int)
@click.option("--host", help="The host it acts for (serial), when its reported serial is no host's.")
@pass_api
def agents_accept(api: ApiClient, agent_id: int, host: str | None) -> None:
    body = api.agent_decision(agent_id, "accept", host)
    click.echo(f"agent {agent_id} accepted for host {body['host']}")


@agents.command("reject")
@click.argument("agent_id", type=int)
@pass_api
def agents_reject(api: ApiClient, agent_id: int) -> None:
    api.agent_decision(agent_id, "reject")
    click.echo(f"agent {agent_id} rejected")


@agents.command("delete")
@click.argument("agent_id", type=int)
@pass_api
def agents_delete(api: ApiClient, agent_id: int) -> None:
    api.delete_agent(agent_id)
    click.echo(f"agent {agent_id} deleted")


# --------------------------------------------------------------------------- files and the hand-off


@click.group("files")
def files() -> None:
    """The file store: files pushed to hosts (provctl push, provctl template)."""


@files.command("put")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Stored under this name (default: the file's name).")
@click.option("--replace", is_flag=True, help="Replace a stored file of that name.")
@pass_api
def files_put(api: ApiClient, path: Path, name: str | None, replace: bool) -> None:
    body = api.put_file(name or path.name, path.read_bytes(), replace)
    click.echo(f"{body['name']}: {body['size']} bytes, sha256 {body['sha256']}")


@files.command("list")
@json_option
@pass_api
def files_list(api: ApiClient, as_json: bool) -> None:
    body = api.files()
    if as_json:
        echo_json(body)
        return
    echo_table(("NAME", "SIZE", "SHA256", "STORED"), [
        (f["name"], f["size"], f["sha256"], f["created_at"][:19].replace("T", " ")) for f in body["files"]])


@files.command("rm")
@click.argument("name")
@pass_api
def files_rm(api: ApiClient, name: str) -> None:
    api.remove_file(name)
    click.echo(f"{name} removed")


@click.group("handoff")
def handoff() -> None:
    """The hand-off of an installed host to its agent."""


@handoff.command("retry")
@click.argument("serial")
@pass_api
def handoff_retry(api: ApiClient, serial: str) -> None:
    """Run a handed-off host's hand-off jobs again, from the first."""
    api.retry_handoff(serial)
    click.echo(f"hand-off of {serial} started again")
