"""Console pages. Each reads with the same queries the API's GET routes use
and acts through the same actions its POST routes call; nothing here
decides anything about hosts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import case, func, select

from flask import g, make_response, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from provisiond.actions import agents as agent_actions
from provisiond.actions import installs as install_actions
from provisiond.actions import users as user_actions
from provisiond import models
from provisiond.actions.principal import Role
from provisiond.errors import ProvisiondError, RetryLater, ValidationError
from provisiond.install import lifecycle, timeline, verify
from provisiond.inventory import groups as group_store
from provisiond.inventory import hosts as host_store
from provisiond.inventory.schema import host_to_dict
from provisiond.kickstart import secrets
from provisiond.models import utcnow
from provisiond.states import HostState
from provisiond.web import services
from provisiond.web.auth import needs
from provisiond.web.console import bp, session

PAGE_SIZES = (25, 50, 100, 200)


# --------------------------------------------------------------------------- logging in and out


@bp.get("/login")
def login() -> Any:
    if g.get("console_session") is None and request.cookies.get(session.COOKIE):
        found = user_actions.session_of(services(), request.cookies[session.COOKIE])
        if found is not None:  # logged in already
            return redirect(session.safe_next(request.args.get("next")), 303)
    return _login_page(None, 200)


def _login_page(message: str | None, status: int, name: str = "") -> Response:
    response = make_response(render_template("console/login.html", message=message, name=name,
                                             next=request.values.get("next", "")), status)
    return session.set_cookies(response)


@bp.post("/login")
def login_post() -> Any:
    expected = request.cookies.get(session.LOGIN_COOKIE, "")
    session.check_csrf(expected)
    name = request.form.get("name", "").strip()
    try:
        found = user_actions.login(services(), name, request.form.get("password", ""), request.remote_addr)
    except ProvisiondError as exc:
        response = _login_page(exc.message, exc.status, name)
        if isinstance(exc, RetryLater):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    response = redirect(session.safe_next(request.form.get("next")), 303)
    return session.start(response, found)


@bp.post("/logout")
@needs(Role.VIEWER)
def logout() -> Any:
    user_actions.logout(services(), session.principal(), request.cookies.get(session.COOKIE, ""))
    response = redirect(url_for("console.login", bye=1), 303)
    return session.end(response)


# --------------------------------------------------------------------------- the dashboard


@bp.get("/")
@needs(Role.VIEWER)
def dashboard() -> Any:
    return render_template("console/dashboard.html", **_dashboard())


@bp.get("/live/dashboard")
@needs(Role.VIEWER)
def dashboard_live() -> Any:
    return render_template("console/_dashboard.html", **_dashboard())


def _dashboard() -> dict[str, Any]:
    svc = services()
    now = utcnow()
    with svc.db.read() as db:
        status = timeline.status_view(db, now, svc.lifecycle.limits)
        queue = timeline.queue_view(db, now, svc.lifecycle.limits)
        failed = host_store.list_records(db, host_store.HostFilter(state=HostState.FAILED.value), limit=20)
        failures = []
        for record in failed:
            host = host_store.get_host(db, record.serial)
            last = timeline.recent_events(db, host_id=host.id, kinds=("failed", "cancelled", "hardware"), limit=1)
            failures.append({"record": record, "event": last[-1] if last else None})
        recent = timeline.recent_events(db, limit=15)
        agent_counts = _agent_counts(db, now)
    return {"status": status, "queue": queue, "failures": failures, "recent": list(reversed(recent)),
            "agents": agent_counts, "now": now}


def _agent_counts(db: Any, now: Any) -> dict[str, int]:
    """Accepted agents online (seen within the agents list's own
    ONLINE_SECONDS) and offline, and those waiting for a decision: counted
    by the database, not by listing every agent every 2 s."""
    seen = now - dt.timedelta(seconds=agent_actions.ONLINE_SECONDS)
    online = case((models.Agent.last_seen_at >= seen, 1), else_=0)
    row = db.execute(select(
        func.coalesce(func.sum(case((models.Agent.state == "accepted", online), else_=0)), 0),
        func.coalesce(func.sum(case((models.Agent.state == "accepted", 1 - online), else_=0)), 0),
        func.coalesce(func.sum(case((models.Agent.state == "pending", 1), else_=0)), 0))).one()
    return {"online": int(row[0]), "offline": int(row[1]), "pending": int(row[2])}


# --------------------------------------------------------------------------- hosts


@bp.get("/hosts")
@needs(Role.VIEWER)
def hosts() -> Any:
    args = request.args
    where = host_store.HostFilter(state=args.get("state") or None, group=args.get("group") or None,
                                  profile=args.get("profile") or None, owner=args.get("owner") or None,
                                  search=args.get("q") or None)
    sort = args.get("sort", "serial")
    if sort not in host_store.SORTS:
        sort = "serial"
    descending = args.get("dir") == "desc"
    size = _int(args.get("size"), 50)
    size = size if size in PAGE_SIZES else 50
    page = max(1, _int(args.get("page"), 1))
    svc = services()
    with svc.db.read() as db:
        total, records = host_store.page_records(db, where, sort, descending, size, (page - 1) * size)
        groups = [group.name for group, _n in group_store.list_groups(db)]
        owners = host_store.owners(db)
    pages = max(1, (total + size - 1) // size)
    return render_template("console/hosts.html", records=records, total=total, page=page, pages=pages, size=size,
                           sizes=PAGE_SIZES, sort=sort, descending=descending, where=where, groups=groups,
                           owners=owners, profiles=sorted(svc.profiles.names()), sorts=list(host_store.SORTS),
                           query=_query)


def _query(**changes: Any) -> str:
    """This page's URL with some arguments changed (None drops one)."""
    args = {key: value for key, value in request.args.items() if value}
    for key, value in changes.items():
        if value is None:
            args.pop(key, None)
        else:
            args[key] = str(value)
    return url_for("console.hosts", **args)  # type: ignore[arg-type]


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


@bp.get("/hosts/<serial>")
@needs(Role.VIEWER)
def host(serial: str) -> Any:
    return render_template("console/host.html", **_host(serial), did=request.args.get("did"))


@bp.get("/live/hosts/<serial>")
@needs(Role.VIEWER)
def host_live(serial: str) -> Any:
    return render_template("console/_host_live.html", **_host(serial))


def _host(serial: str) -> dict[str, Any]:
    svc = services()
    with svc.db.read() as db:
        record = host_store.load_record(db, serial)
        row = host_store.get_host(db, serial)
        install = timeline.latest_install(db, row.id)
        lines = timeline.recent_events(db, host_id=row.id, limit=200)
        reports = timeline.recent_events(db, host_id=row.id, kinds=("hardware",), limit=1)
    reported = next((e["data"].get("reported") for e in reversed(reports) if e["data"].get("reported")), None)
    differences: list[str] = []
    if reported:
        try:
            differences = list(verify.compare(record, verify.parse_report(
                {k: v for k, v in reported.items() if k in verify.REPORT_KEYS})).differences)
        except ProvisiondError:
            differences = []
    return {"record": record, "document": host_to_dict(record, secrets.names(svc.profiles)),
            "hardware": _hardware(record, reported or {}, differences),
            "install": None if install is None else timeline.install_to_dict(install), "events": lines,
            "reported": reported, "differences": differences, "protection": lifecycle.protection(record),
            "in_flight": HostState(record.state) in lifecycle.IN_FLIGHT}


def _hardware(record: Any, reported: dict[str, Any], differences: list[str]) -> list[tuple[Any, ...]]:
    """Rows of expected against reported hardware; a row is marked when the
    verifier's differences (:func:`provisiond.install.verify.compare`) name it."""
    def disks(items: Any) -> str | None:
        return ", ".join(f"{d.get('name') or '?'} {d.get('size_gb') or '?'} GB" for d in items) if items else None

    def differs(*words: str) -> bool:
        return any(word.lower() in line.lower() for line in differences for word in words)

    primary = next((nic.mac for nic in record.nics if nic.primary), None)
    expected_disks = None if record.disks is None else [{"name": d.name, "size_gb": d.size_gb} for d in record.disks]
    return [
        ("Serial number", record.serial, reported.get("serial"), differs("serial number")),
        ("Manufacturer", record.manufacturer, reported.get("manufacturer"), False),
        ("Model", record.model, reported.get("model"), False),
        ("CPUs", record.cpus, reported.get("cpus"), differs("CPU count")),
        ("Memory (MiB)", record.memory_mib, reported.get("memory_mib"), differs("memory:")),
        ("Disks", disks(expected_disks), disks(reported.get("disks")), differs("disk ")),
        ("Boot MAC", primary, reported.get("boot_mac"), differs("MAC", "NICs")),
    ]


@bp.get("/hosts/<serial>/reinstall")
@needs(Role.OPERATOR)
def reinstall_confirm(serial: str) -> Any:
    return render_template("console/reinstall.html", **_host(serial), error=None)


@bp.post("/hosts/<serial>/reinstall")
@needs(Role.OPERATOR)
def reinstall(serial: str) -> Any:
    """Arm the host (``installs.arm``, as ``POST /api/v1/hosts/<serial>/install``).
    A protected or in-service host needs its hostname typed: then it is
    armed with force."""
    svc = services()
    power = request.form.get("power") == "on"
    try:
        with svc.db.read() as db:
            record = host_store.load_record(db, serial)
        why = lifecycle.protection(record)
        if why and request.form.get("confirm", "").strip() != record.hostname:
            raise ValidationError("confirm", f"host {record.serial} {why}: type its hostname, {record.hostname}, "
                                             "to confirm the reinstall")
        install_actions.arm(svc, session.principal(), serial, force=bool(why), power=power)
    except ProvisiondError as exc:
        if exc.status == 404:
            raise
        return render_template("console/reinstall.html", **_host(serial), error=exc.message), exc.status
    return redirect(url_for("console.host", serial=serial, did="reinstall"), 303)


@bp.post("/hosts/<serial>/cancel")
@needs(Role.OPERATOR)
def cancel(serial: str) -> Any:
    """End the host's install (``installs.cancel``, as the API's cancel)."""
    try:
        install_actions.cancel(services(), session.principal(), serial)
    except ProvisiondError as exc:
        if exc.status == 404:
            raise
        return render_template("console/host.html", **_host(serial), did=None, error=exc.message), exc.status
    return redirect(url_for("console.host", serial=serial, did="cancel"), 303)


def root() -> Any:
    """``/``: the console."""
    return redirect(url_for("console.dashboard"), 302)

