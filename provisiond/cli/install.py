"""The install lifecycle in provctl: ``install``, ``cancel``, ``log``,
``status`` and ``queue``.

A host's timeline (its events) prints one line per event, in the style of
the install log in ``shared/seeds/004_*.txt``::

    2026-04-24 08:29> install armed by token ops, profile mysql_server; ...

Times are UTC, the clock of the server's own messages. Following (``install``
without ``--no-wait``, ``log -f``) polls the events every second with
``after=<cursor>``; an install being followed ends with exit status 0
(installed), 8 (failed: :class:`~provisiond.cli.client.InstallFailed`) or 9
(``--timeout``: :class:`~provisiond.cli.client.WaitTimedOut`).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import click

from provisiond.cli.client import ApiClient, InstallFailed, WaitTimedOut, pass_api
from provisiond.cli.output import ExitStatus, echo_fields, echo_json, echo_table, json_option
from provisiond.event_text import one_line
from provisiond.states import HostState

#: Seconds between two polls of the timeline while following.
POLL_SECONDS = 1.0
#: The states that end an install: the host stays there until it is armed again.
OUTCOMES = frozenset({HostState.INSTALLED.value, HostState.FAILED.value})
Event = dict[str, Any]


# --------------------------------------------------------------------------- formatting


def when(value: str | None) -> str | None:
    """An ISO 8601 time from the server as ``2026-04-24 08:29`` (UTC)."""
    if not value:
        return None
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def event_line(event: Mapping[str, Any]) -> str:
    """One timeline line: ``2026-04-24 08:29> message`` (control characters
    escaped, whatever the server sent)."""
    return f"{when(event['time'])}> {one_line(str(event['message']))}"


def duration(seconds: float) -> str:
    """``192`` → ``3m12s``; ``3725`` → ``1h02m05s``; ``7`` → ``7s``; ``0.7`` → ``0.7s``."""
    if seconds < 60:
        return f"{max(round(seconds, 1), 0):g}s"
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def state_text(state: str | None, reason: str | None) -> str:
    return f"{state} ({reason})" if reason else str(state)


def state_order(states: Mapping[str, int]) -> list[str]:
    """The server's states in flow order (unknown ones last, as they come)."""
    known = [s.value for s in HostState if s.value in states]
    return known + [s for s in states if s not in known]


# --------------------------------------------------------------------------- asking first


def confirm(question: str, refusal: str) -> None:
    """Ask ``question`` on stderr; ``y``/``yes`` goes on, anything else aborts
    (exit 1). With nothing on stdin to answer (closed, empty, ``</dev/null``)
    it is a usage error (exit 2): a script must say ``--yes``."""
    click.echo(f"{question} [y/N]: ", nl=False, err=True)
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        click.echo(err=True)
        raise click.Abort() from None
    except (OSError, ValueError, AttributeError):  # stdin closed
        answer = ""
    if not answer:
        click.echo(err=True)
        raise click.UsageError(f"nothing on stdin to answer the question; {refusal} (pass --yes to skip it)")
    if answer.strip().lower() not in ("y", "yes"):
        raise click.Abort()


# --------------------------------------------------------------------------- following a timeline


class Timeline:
    """A host's events, read in order; remembers where it is (the server's
    cursor: following never misses or repeats a line)."""

    def __init__(self, api: ApiClient, serial: str, since: int | str = 0) -> None:
        self.api = api
        self.serial = serial
        self.cursor = str(since) if since else ""

    def read(self) -> list[Event]:
        """Every event after the last one seen."""
        events, self.cursor = self.api.all_events(self.serial, self.cursor)
        return events

    def skip_to_end(self) -> None:
        self.read()


def _cursor(value: str) -> str:
    """A ``--since`` value, checked before any request."""
    from provisiond.event_text import Cursor

    try:
        Cursor.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    return value


def outcome_of(event: Mapping[str, Any], install_id: int) -> str | None:
    """``installed`` or ``failed`` when ``event`` ends the install ``install_id``."""
    state = (event.get("data") or {}).get("state")
    if event.get("install_id") == install_id and state in OUTCOMES:
        return str(state)
    return None


def wait_for_outcome(timeline: Timeline, install_id: int, timeout: float | None,
                     show: Callable[[Event], None]) -> tuple[Event | None, list[Event]]:
    """Poll until the install ends or ``timeout`` seconds pass; ``show`` each
    event as it comes. Returns the event that ended it (``None``: timed out)
    and every event seen."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen: list[Event] = []
    while True:
        ended: Event | None = None
        for event in timeline.read():
            seen.append(event)
            show(event)
            if ended is None and outcome_of(event, install_id):
                ended = event  # the rest of the batch (same transaction) is shown too
        if ended is not None:
            return ended, seen
        pause = POLL_SECONDS
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, seen
            pause = min(pause, left)
        time.sleep(pause)


def failure_detail(ended: Mapping[str, Any], seen: list[Event], install_id: int) -> str:
    """Why the install failed: the hardware differences for a mismatch, else
    the failure event's message."""
    for event in reversed(seen):
        differences = (event.get("data") or {}).get("differences")
        if event.get("install_id") == install_id and event.get("kind") == "hardware" and differences:
            return "; ".join(str(d) for d in differences)
    return str(ended["message"])


# --------------------------------------------------------------------------- commands


@click.command("install")
@click.argument("serial", required=False)
@click.option("--group", "group", metavar="GROUP", help="Install every host of GROUP (batch).")
@click.option("--file", "hosts_file", type=click.File("r"), metavar="FILE",
              help="Install the hosts whose serial numbers FILE lists, one per line (# comments; - for stdin).")
@click.option("--pace", type=click.FloatRange(min=0, max=3600), metavar="SECONDS",
              help="Batch: seconds between two power-ons (default: the server's power_pace_ms).")
@click.option("--no-power", is_flag=True,
              help="Do not touch the BMC: you power the machine on or PXE-boot it yourself.")
@click.option("--force", is_flag=True, help="Arm even a protected host or one in service (ready, handed_off).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--no-wait", is_flag=True, help="Arm and return; do not follow the install.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop following after SECONDS (exit 9); the install itself goes on. Default: until it ends.")
@json_option
@pass_api
def install(api: ApiClient, serial: str | None, group: str | None, hosts_file: Any, pace: float | None,
            no_power: bool, force: bool, yes: bool, no_wait: bool, timeout: float | None, as_json: bool) -> None:
    """Reinstall SERIAL (or a batch: --group / --file) and follow it to its end.

    Shows the host and asks first unless --yes. Arms the install, then
    through the host's BMC sets the boot device to PXE for the next boot
    only and resets the machine (powers it on if it is off) — unless
    --no-power. Then follows the install's timeline (times in UTC) until
    the host is installed (exit 0) or failed (exit 8, with the reason), or
    until --timeout (exit 9). Ctrl-C stops following (exit 1); the install
    goes on (`provctl log SERIAL -f` picks it up, `provctl cancel SERIAL`
    stops it).

    A batch arms every host or none, starts the machines --pace seconds
    apart and lets the install cap do the rest; it exits 0 when all are
    installed and 8 when any failed.

    With --json: the arm answer (--no-wait), or the install document and
    the events seen once it ends; the timeline then goes to stderr.

    \b
    provctl install 712DM2Y
    provctl install 712DM2Y --yes --no-wait --json
    provctl install --group rack12 --yes
    """
    sources = sum(x is not None for x in (serial, group, hosts_file))
    if sources != 1:
        raise click.UsageError("give exactly one of SERIAL, --group GROUP or --file FILE")
    if serial is None:
        serials = _batch_serials(api, group, hosts_file)
        _install_batch(api, serials, pace, not no_power, force, yes, no_wait, timeout, as_json)
        return
    if pace is not None:
        raise click.UsageError("--pace applies to a batch (--group or --file)")
    _install_one(api, serial, not no_power, force, yes, no_wait, timeout, as_json)


def _install_one(api: ApiClient, serial: str, power: bool, force: bool, yes: bool, no_wait: bool,
                 timeout: float | None, as_json: bool) -> None:
    say = _say(as_json)
    host = api.get_host(serial)
    summary: list[tuple[str, Any]] = [("host", host["serial"]), ("hostname", host["hostname"]),
                                      ("profile", host["profile"]),
                                      ("state", state_text(host.get("state"), host.get("state_reason")))]
    if host.get("protected"):
        summary.append(("protected", True))
    summary.append(("power", _power_plan(host) if power else "not touched (--no-power)"))
    echo_fields(summary, err=as_json)
    if not yes:
        confirm(f"Install {serial} now? Its next PXE boot reinstalls it and wipes its disks",
                f"not arming {serial}")

    timeline = Timeline(api, serial)
    if not no_wait:
        timeline.skip_to_end()  # follow from here: only what arming and the install write
    armed = api.arm(serial, force=force, power=power)
    if no_wait:
        if as_json:
            echo_json(armed)
        else:
            click.echo(f"armed {serial}: install {armed['install_id']}; its next PXE boot installs it "
                       f"(the token is valid until {when(armed['expires_at'])} UTC)"
                       + (f"; power operation {', '.join(map(str, armed['power_operations']))} queued"
                          if armed.get("power_operations") else ""))
        return

    install_id = int(armed["install_id"])
    try:
        ended, seen = wait_for_outcome(timeline, install_id, timeout, lambda e: say(event_line(e)))
    except KeyboardInterrupt:
        click.echo(f"\nprovctl: stopped following; the install of {serial} goes on "
                   f"(`provctl log {serial} -f` follows it, `provctl cancel {serial}` stops it)", err=True)
        click.get_current_context().exit(ExitStatus.ERROR)
    document = api.get_install(serial)
    if as_json:
        echo_json({**document, "events": seen})
    if ended is None:
        assert timeout is not None
        raise WaitTimedOut(f"gave up waiting after {duration(timeout)}: host {serial} is "
                           f"{state_text(document['state'], document.get('state_reason'))}; the install goes on "
                           f"(`provctl log {serial} -f` follows it, `provctl cancel {serial}` stops it)")
    if outcome_of(ended, install_id) == HostState.FAILED.value:
        reason = (ended.get("data") or {}).get("reason") or "failed"
        raise InstallFailed(f"install of {serial} failed: {reason}: {failure_detail(ended, seen, install_id)}")
    say(f"{serial} is installed")


def _power_plan(host: dict[str, Any]) -> str:
    bmc = host.get("bmc") or {}
    kind = bmc.get("type")
    if not kind:
        return "no BMC in the data source: the server will refuse; use --no-power"
    where = bmc.get("address") or "primary MAC"
    if kind == "wol":
        return f"Wake-on-LAN to {where} (power on only; the boot device stays as it is)"
    return f"{kind} {where}: boot device PXE (next boot only), then reset (power on if off)"


def _batch_serials(api: ApiClient, group: str | None, hosts_file: Any) -> list[str]:
    if group is not None:
        api.get_group(group)  # 404 (exit 3) for a group that does not exist
        serials = [h["serial"] for h in api.list_hosts({"group": group})["hosts"]]
        if not serials:
            raise click.UsageError(f"group {group} has no hosts")
        return serials
    serials = []
    for number, line in enumerate(hosts_file, 1):
        text = line.split("#", 1)[0].strip()
        if text:
            if " " in text or "\t" in text:
                raise click.UsageError(f"{hosts_file.name}:{number}: one serial number per line, got {text!r}")
            serials.append(text)
    if not serials:
        raise click.UsageError(f"{hosts_file.name} lists no serial numbers")
    return serials


def _install_batch(api: ApiClient, serials: list[str], pace: float | None, power: bool, force: bool, yes: bool,
                   no_wait: bool, timeout: float | None, as_json: bool) -> None:
    say = _say(as_json)
    if not as_json or not yes:
        echo_table(("HOST", "HOSTNAME", "PROFILE", "STATE"),
                   [(h["serial"], h["hostname"], h["profile"], state_text(h.get("state"), h.get("state_reason")))
                    for h in (api.get_host(s) for s in serials)], err=as_json)
    if not yes:
        confirm(f"Install these {len(serials)} hosts now? Their next PXE boot reinstalls them and wipes their "
                "disks", "not arming them")
    timelines = {serial: Timeline(api, serial) for serial in serials}
    if not no_wait:
        for timeline in timelines.values():
            timeline.skip_to_end()
    armed = api.arm_many(serials, force=force, power=power, pace=pace)
    if no_wait:
        if as_json:
            echo_json({"installs": armed})
        else:
            for item in armed:
                click.echo(f"armed {item['serial']}: install {item['install_id']}")
        return
    installs = {item["serial"]: int(item["install_id"]) for item in armed}
    outcomes = _follow_batch(timelines, installs, timeout, say)
    if as_json:
        echo_json({"installs": [{"serial": s, "install_id": installs[s], "outcome": outcomes.get(s)}
                                for s in serials]})
    failed = [s for s in serials if outcomes.get(s) == HostState.FAILED.value]
    waiting = [s for s in serials if s not in outcomes]
    if waiting:
        raise WaitTimedOut(f"gave up waiting: {len(waiting)} of {len(serials)} installs still under way "
                           f"({', '.join(waiting[:10])}{' ...' if len(waiting) > 10 else ''}); they go on")
    if failed:
        raise InstallFailed(f"{len(failed)} of {len(serials)} installs failed: {', '.join(failed)} "
                            "(`provctl log SERIAL` says why)")
    say(f"all {len(serials)} hosts are installed")


def _follow_batch(timelines: dict[str, Timeline], installs: dict[str, int], timeout: float | None,
                  say: Callable[[str], None]) -> dict[str, str]:
    """Print every host's events (``SERIAL  line``) until all have ended or ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    outcomes: dict[str, str] = {}
    try:
        while len(outcomes) < len(installs):
            for serial, timeline in timelines.items():
                if serial in outcomes:
                    continue
                for event in timeline.read():
                    say(f"{serial}  {event_line(event)}")
                    outcome = outcome_of(event, installs[serial])
                    if outcome and serial not in outcomes:
                        outcomes[serial] = outcome
            if deadline is not None and time.monotonic() >= deadline:
                break
            if len(outcomes) < len(installs):
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        click.echo("\nprovctl: stopped following; the installs go on (`provctl status` shows them)", err=True)
        click.get_current_context().exit(ExitStatus.ERROR)
    return outcomes


@click.command("cancel")
@click.argument("serial")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_api
def cancel(api: ApiClient, serial: str, yes: bool, as_json: bool) -> None:
    """Cancel the install under way on SERIAL.

    The host becomes failed (cancelled), its install token dies and its
    install slot is freed. Asks first unless --yes."""
    if not yes:
        host = api.get_host(serial)
        confirm(f"Cancel the install of {serial} ({host['hostname']}, "
                f"{state_text(host.get('state'), host.get('state_reason'))})?", f"not cancelling {serial}")
    host = api.cancel(serial)
    if as_json:
        echo_json(host)
    else:
        click.echo(f"cancelled the install of {serial}: it is {state_text(host.get('state'), host.get('state_reason'))}")


@click.command("log")
@click.argument("serial")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they come, until Ctrl-C.")
@click.option("--since", default="", metavar="CURSOR", callback=lambda _ctx, _param, value: _cursor(value),
              help="Only the events after this cursor (the `cursor` of --json output; an event id works too).")
@json_option
@pass_api
def log(api: ApiClient, serial: str, follow: bool, since: str, as_json: bool) -> None:
    """Print the timeline of SERIAL (-f: follow it).

    One line per event, oldest first: `2026-04-24 08:29> message` (UTC).
    -f keeps printing new events until Ctrl-C (exit 0).

    With --json: the server's events document; with --json -f, one JSON
    event per line instead (JSON Lines), as they come.
    """
    timeline = Timeline(api, serial, since)
    if not follow:
        events = timeline.read()
        if as_json:
            echo_json({"serial": serial, "events": events, "cursor": timeline.cursor})
        else:
            for event in events:
                click.echo(event_line(event))
        return

    def show(event: Event) -> None:
        click.echo(json.dumps(event, ensure_ascii=False) if as_json else event_line(event))

    try:
        while True:
            for event in timeline.read():
                show(event)
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        return  # Ctrl-C is how following ends


@click.command("status")
@click.argument("serial", required=False)
@json_option
@pass_api
def status(api: ApiClient, serial: str | None, as_json: bool) -> None:
    """Hosts per state, or the install of SERIAL.

    Without SERIAL: hosts per state, install slots in use, hosts waiting.
    With SERIAL: that host's state and its current (or latest) install."""
    if serial is None:
        body = api.status()
        if as_json:
            echo_json(body)
            return
        echo_fields([("hosts", body["hosts"]),
                     ("install slots", f"{body['in_use']} of {body['cap']} in use"),
                     ("waiting", body["waiting"])])
        click.echo()
        echo_table(("STATE", "HOSTS"), [(state, body["states"][state]) for state in state_order(body["states"])])
        return

    document = api.get_install(serial)
    if as_json:
        echo_json(document)
        return
    fields: list[tuple[str, Any]] = [("host", serial),
                                     ("state", state_text(document["state"], document.get("state_reason")))]
    record = document.get("install")
    if record is None:
        fields.append(("install", "none yet (`provctl install` arms one)"))
    else:
        outcome = record.get("outcome") or ("under way" if record.get("active") else None)
        fields += [
            ("install", f"{record['id']}, profile {record['profile']}"),
            ("armed", f"{_utc(record['armed_at'])} by {record.get('armed_by') or '?'}"),
            ("expires", _utc(record.get("expires_at")) if record.get("active") else None),
            ("booted from", record.get("booted_mac")),
            ("queued", _utc(record.get("queued_at"))),
            ("slot granted", _utc(record.get("slot_granted_at"))),
            ("finished", _utc(record.get("finished_at"))),
            ("outcome", outcome),
        ]
        if document["state"] == HostState.QUEUED.value:
            fields.append(("queue", _queue_place(api.queue(), serial)))
    echo_fields(fields)


def _utc(value: str | None) -> str | None:
    return None if value is None else f"{when(value)} UTC"


def _queue_place(queue: Mapping[str, Any], serial: str) -> str | None:
    for waiter in queue["waiting"]:
        if waiter["serial"] == serial:
            return f"{_place(waiter)}, waiting {duration(waiter['waiting_seconds'])}"
    return None


def _place(waiter: Mapping[str, Any]) -> str:
    """Where a waiter stands, in words: which cap holds it, and its place in that cap's queue."""
    if waiter.get("stale"):
        return "stale (the installer stopped asking)"
    if waiter.get("next"):
        return "next (its caps have room)"
    cap = f"group {waiter['held_by']}'s cap" if waiter.get("held_by") else "the global cap"
    return f"position {waiter['position']} for {cap}"


@click.command("queue")
@json_option
@pass_api
def queue(api: ApiClient, as_json: bool) -> None:
    """Install slots in use, and the hosts waiting.

    The cap, which hosts hold a slot, and the hosts waiting for one, first
    come first served (a stale waiter's installer stopped asking and keeps
    no place)."""
    body = api.queue()
    if as_json:
        echo_json(body)
        return
    group_caps = [f"{c['group']} {c['in_use']} of {c['cap']}" for c in body.get("caps", []) if c.get("group")]
    echo_fields([("install slots", f"{body['in_use']} of {body['cap']} in use"),
                 *([("group caps", group_caps)] if group_caps else []),
                 ("installing", body["installing"]),
                 ("waiting", len(body["waiting"]))])
    if body["waiting"]:
        click.echo()
        echo_table(("POSITION", "CAP", "SERIAL", "WAITING", "QUEUED-AT", "STALE"), [
            (w.get("position"), "-" if w.get("stale") or w.get("next") else (w.get("held_by") or "global"),
             w["serial"], duration(w.get("waiting_seconds") or 0), when(w.get("queued_at")), bool(w.get("stale")))
            for w in body["waiting"]
        ])


def _say(as_json: bool) -> Callable[[str], None]:
    """Readable progress: on stdout, or on stderr when stdout carries --json."""
    return lambda text: click.echo(text, err=as_json)
