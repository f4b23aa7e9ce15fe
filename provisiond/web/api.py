"""The admin API (JSON, ``/api/v1``): hosts, groups, profiles, import/export.

Every route here needs an admin bearer token (see :mod:`provisiond.web.auth`).
Writes happen in one transaction each: a request that fails changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.orm import Session

from provisiond import events
from provisiond.errors import BadRequest, ValidationError
from provisiond.install import timeline
from provisiond.inventory import fields
from provisiond.inventory import groups as group_store
from provisiond.inventory import hosts as host_store
from provisiond.actions import audit
from provisiond.actions import groups as group_actions
from provisiond.actions import tokens as token_actions
from provisiond.actions import hosts as host_actions
from provisiond.actions import installs as install_actions
from provisiond.inventory.schema import host_to_dict
from provisiond.kickstart import secrets
from provisiond.inventory.transfer import FORMATS, export_csv, export_yaml, guess_format
from provisiond.kickstart import check
from provisiond.kickstart.composer import InstallContext
from provisiond.models import utcnow
from provisiond.web import services
from provisiond.actions.principal import Role
from provisiond.web.auth import needs, principal
from provisiond.web.bodies import flag, json_body, only_fields, raw_body

bp = Blueprint("api", __name__, url_prefix="/api/v1")

# --------------------------------------------------------------------------- helpers


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    value = request.args.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValidationError(name, f"expected a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise ValidationError(name, f"{number} is out of range ({low}-{high})")
    return number


def one_off_variables() -> dict[str, Any]:
    """``?var=name=value`` (repeatable): one-off variables, the top layer."""
    result: dict[str, Any] = {}
    for item in request.args.getlist("var"):
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValidationError("var", f"{item!r} is not name=value")
        result[key] = value
    fields.variables(result, "var")
    return result


# --------------------------------------------------------------------------- hosts


@bp.get("/hosts")
@needs(Role.VIEWER)
def list_hosts():  # type: ignore[no-untyped-def]
    where = host_store.HostFilter(
        group=request.args.get("group"), profile=request.args.get("profile"),
        state=request.args.get("state"), site=request.args.get("site"),
        rack=request.args.get("rack"), owner=request.args.get("owner"), search=request.args.get("q"),
    )
    limit = _int_arg("limit", None, 1, 100_000)
    offset = _int_arg("offset", 0, 0, 10**9) or 0
    with services().db.read() as session:
        records = host_store.list_records(session, where, limit, offset)
    secret = _secret()
    return jsonify({"hosts": [host_to_dict(r, secret) for r in records]})


@bp.post("/hosts")
@needs(Role.OPERATOR)
def create_host():  # type: ignore[no-untyped-def]
    record = host_actions.create(services(), principal(), json_body())
    return jsonify(host_to_dict(record, _secret())), 201


@bp.get("/hosts/<serial>")
@needs(Role.VIEWER)
def show_host(serial: str):  # type: ignore[no-untyped-def]
    with services().db.read() as session:
        record = host_store.load_record(session, serial)
    return jsonify(host_to_dict(record, _secret()))


@bp.put("/hosts/<serial>")
@needs(Role.OPERATOR)
def replace_host(serial: str):  # type: ignore[no-untyped-def]
    return jsonify(host_to_dict(host_actions.replace(services(), principal(), serial, json_body()), _secret()))


@bp.patch("/hosts/<serial>")
@needs(Role.OPERATOR)
def edit_host(serial: str):  # type: ignore[no-untyped-def]
    """JSON Merge Patch (RFC 7396) of the host document: mappings merge all
    the way down, ``null`` clears a field or drops a variable, anything else
    replaces (see :mod:`provisiond.inventory.patch`)."""
    return jsonify(host_to_dict(host_actions.edit(services(), principal(), serial, json_body()), _secret()))


@bp.delete("/hosts/<serial>")
@needs(Role.OPERATOR)
def delete_host(serial: str):  # type: ignore[no-untyped-def]
    force = request.args.get("force", "").lower() in ("1", "true", "yes")
    host_actions.delete(services(), principal(), serial, force)
    return "", 204


# --------------------------------------------------------------------------- the install lifecycle


@bp.post("/hosts/<serial>/install")
@needs(Role.OPERATOR)
def arm_host(serial: str):  # type: ignore[no-untyped-def]
    """Arm an install: the host's next PXE boot installs it (token not returned).

    With ``power: true`` the BMC is then told, in the same transaction, to
    boot from the network once and to reset (power on if off); the answer
    names the queued power operations. A host without a BMC is refused then,
    and nothing is armed."""
    body = json_body(required=False)
    force, power = _install_flags(body, set())
    return jsonify(install_actions.arm(services(), principal(), serial, force=force, power=power)), 201


@bp.post("/installs")
@needs(Role.OPERATOR)
def arm_hosts():  # type: ignore[no-untyped-def]
    """Arm many hosts at once (all or none), pacing their power-ons.

    Body: ``{"serials": [...], "force": bool, "power": bool, "pace_seconds": n}``;
    host i is powered on no earlier than i × pace_seconds from now."""
    body = json_body()
    force, power = _install_flags(body, {"serials", "pace_seconds"})
    serials = body.get("serials")
    if not isinstance(serials, list):
        raise ValidationError("serials", "expected a non-empty list of serial numbers")
    armed = install_actions.arm_many(services(), principal(), serials, force=force, power=power,
                                     pace_seconds=body.get("pace_seconds"))
    return jsonify({"installs": armed}), 201


def _install_flags(body: dict[str, Any], extra: set[str]) -> tuple[bool, bool]:
    only_fields(body, {"force", "power"} | extra)
    return flag(body, "force"), flag(body, "power")


@bp.post("/hosts/<serial>/cancel")
@needs(Role.OPERATOR)
def cancel_install(serial: str):  # type: ignore[no-untyped-def]
    return jsonify(host_to_dict(install_actions.cancel(services(), principal(), serial), _secret()))


@bp.get("/hosts/<serial>/install")
@needs(Role.VIEWER)
def show_install(serial: str):  # type: ignore[no-untyped-def]
    """The host's current (or latest) install, never its token."""
    with services().db.read() as session:
        host = host_store.get_host(session, serial)
        install = timeline.latest_install(session, host.id)
        body = {"serial": serial, "state": host.state, "state_reason": host.state_reason,
                "install": None if install is None else timeline.install_to_dict(install)}
    return jsonify(body)


@bp.get("/hosts/<serial>/events")
@needs(Role.VIEWER)
def host_events(serial: str):  # type: ignore[no-untyped-def]
    """The host's timeline after ``after`` (the ``cursor`` an earlier answer
    gave: following never misses or repeats a line); ``since``, an event id,
    is the older way in."""
    limit = _int_arg("limit", 1000, 1, 10_000) or 1000
    with services().db.read() as session:
        after = _cursor_arg(session)
        host = host_store.get_host(session, serial)
        page = events.read(session, after, host_id=host.id, limit=limit)
    return jsonify({"serial": host.serial, "events": page.events, "cursor": str(page.cursor)})


@bp.get("/events")
@needs(Role.VIEWER)
def all_events():  # type: ignore[no-untyped-def]
    """Every host's timeline after ``after``, optionally of one ``serial``
    (deleted hosts' too) or some ``kind``s; ``cursor`` to read on."""
    limit = _int_arg("limit", 1000, 1, 10_000) or 1000
    kinds = request.args.getlist("kind")
    for kind in kinds:
        if kind not in {k.value for k in events.Kind}:
            raise ValidationError("kind", f"{kind!r} is not one of {', '.join(k.value for k in events.Kind)}")
    with services().db.read() as session:
        page = events.read(session, _cursor_arg(session), serial=request.args.get("serial") or None, kinds=kinds,
                           limit=limit)
    return jsonify({"events": page.events, "cursor": str(page.cursor)})


def _cursor_arg(session: Session) -> events.Cursor:
    """``after`` (a cursor), or ``since`` (an event id, the older way in)."""
    if "after" in request.args:
        try:
            return events.Cursor.parse(request.args["after"])
        except ValueError as exc:
            raise ValidationError("after", str(exc)) from None
    since = _int_arg("since", 0, 0, 2**62) or 0
    return events.cursor_of(session, since) if since else events.Cursor()


@bp.get("/queue")
@needs(Role.VIEWER)
def install_queue():  # type: ignore[no-untyped-def]
    svc = services()
    now = utcnow()
    with svc.db.read() as session:
        body = timeline.queue_view(session, now, svc.lifecycle.limits)
    return jsonify(body)


@bp.get("/status")
@needs(Role.VIEWER)
def status():  # type: ignore[no-untyped-def]
    svc = services()
    with svc.db.read() as session:
        body = timeline.status_view(session, utcnow(), svc.lifecycle.limits)
    return jsonify(body)


@bp.get("/hosts/<serial>/kickstart")
@needs(Role.VIEWER)
def preview_kickstart(serial: str):  # type: ignore[no-untyped-def]
    """The composed kickstart, with a PREVIEW token in the callback URLs."""
    svc = services()
    one_off = one_off_variables()
    with svc.db.read() as session:
        record = host_store.load_record(session, serial)
    svc.guard.check_values(record.profile, one_off, "var")
    # A secret shows as the mask here: only the installer's kickstart carries it.
    masked = {name: secrets.MASK for name in _secret() if svc.composer.variables(record).get(name) is not None}
    text = svc.composer.render(record, InstallContext("PREVIEW", svc.settings.public_url), {**one_off, **masked})
    return Response(text, mimetype="text/plain")


@bp.get("/hosts/<serial>/variables")
@needs(Role.VIEWER)
def host_variables(serial: str):  # type: ignore[no-untyped-def]
    svc = services()
    with svc.db.read() as session:
        record = host_store.load_record(session, serial)
    return jsonify({"serial": serial, "profile": record.profile,
                    "variables": secrets.redact(svc.composer.variables(record, one_off_variables()), _secret())})


# --------------------------------------------------------------------------- import / export


@bp.post("/import/hosts")
@needs(Role.OPERATOR)
def import_hosts():  # type: ignore[no-untyped-def]
    """Upsert hosts from a YAML, JSON or CSV body, all or nothing."""
    svc = services()
    filename = request.args.get("filename") or "upload"
    fmt = request.args.get("format") or _format_from_content_type() or guess_format(filename)
    if fmt not in FORMATS:
        raise ValidationError("format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    try:
        text = raw_body().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest(f"{filename} is not UTF-8 text") from None
    return jsonify(host_actions.import_file(svc, principal(), text, filename, fmt))


def _format_from_content_type() -> str | None:
    mimetype = request.mimetype or ""
    if "csv" in mimetype:
        return "csv"
    if "yaml" in mimetype:
        return "yaml"
    if mimetype == "application/json":
        return "json"
    return None


@bp.get("/export/hosts")
@needs(Role.VIEWER)
def export_hosts():  # type: ignore[no-untyped-def]
    fmt = request.args.get("format", "yaml")
    if fmt not in ("yaml", "csv"):
        raise ValidationError("format", f"{fmt!r} is not one of yaml, csv")
    with services().db.read() as session:
        records = host_store.list_records(session)
        secret = _secret()
        groups = [group_store.group_to_dict(g, secret=secret) for g, _n in group_store.list_groups(session)]
    if fmt == "csv":
        return Response(export_csv(records, secret), mimetype="text/csv")
    return Response(export_yaml(records, groups, secret), mimetype="application/yaml")


# --------------------------------------------------------------------------- groups


@bp.get("/groups")
@needs(Role.VIEWER)
def list_groups():  # type: ignore[no-untyped-def]
    with services().db.read() as session:
        rows = group_store.list_groups(session)
        body = [group_store.group_to_dict(g, n, _secret()) for g, n in rows]
    return jsonify({"groups": body})


@bp.post("/groups")
@needs(Role.ADMIN)
def create_group():  # type: ignore[no-untyped-def]
    return jsonify(group_actions.create(services(), principal(), json_body())), 201


@bp.get("/groups/<name>")
@needs(Role.VIEWER)
def show_group(name: str):  # type: ignore[no-untyped-def]
    with services().db.read() as session:
        group = group_store.get_group(session, name)
        body = group_store.group_to_dict(group, len(group.hosts), _secret())
    return jsonify(body)


@bp.patch("/groups/<name>")
@needs(Role.ADMIN)
def edit_group(name: str):  # type: ignore[no-untyped-def]
    return jsonify(group_actions.edit(services(), principal(), name, json_body()))


@bp.delete("/groups/<name>")
@needs(Role.ADMIN)
def delete_group(name: str):  # type: ignore[no-untyped-def]
    group_actions.delete(services(), principal(), name)
    return "", 204


# --------------------------------------------------------------------------- profiles


@bp.get("/profiles")
@needs(Role.VIEWER)
def list_profiles():  # type: ignore[no-untyped-def]
    profiles = services().profiles.all()
    return jsonify({"profiles": [
        {"name": p.name, "extends": p.extends, "description": p.description, "os": p.os}
        for p in sorted(profiles.values(), key=lambda p: p.name)
    ]})


@bp.get("/checks/profiles")
@needs(Role.VIEWER)
def check_profiles():  # type: ignore[no-untyped-def]
    """Render every host's kickstart and check every profile's declarations:
    for profiles and fragments edited on disk, and data older than the checks."""
    svc = services()
    with svc.db.read() as session:
        checked, failures = check.check_hosts(session, svc.composer, svc.settings.public_url)
    problems = check.check_profiles(svc.profiles, svc.composer)
    return jsonify({"hosts": checked, "failures": [dataclasses.asdict(f) for f in failures],
                    "profiles": [dataclasses.asdict(p) for p in problems],
                    "ok": not failures and not problems})


@bp.get("/profiles/<name>")
@needs(Role.VIEWER)
def show_profile(name: str):  # type: ignore[no-untyped-def]
    body = services().profiles.get(name).to_dict()
    body["variables"] = secrets.redact(body["variables"], _secret())
    return jsonify(body)


# --------------------------------------------------------------------------- credentials and the audit trail


@bp.get("/tokens")
@needs(Role.ADMIN)
def list_tokens():  # type: ignore[no-untyped-def]
    return jsonify({"tokens": token_actions.listing(services(), principal())})


@bp.post("/tokens")
@needs(Role.ADMIN)
def create_token():  # type: ignore[no-untyped-def]
    """``{"name", "role", "expires"}``: the token is in this answer, and never again."""
    body = json_body()
    only_fields(body, {"name", "role", "expires"})
    expires = body.get("expires")
    if expires is not None and not isinstance(expires, str):
        raise ValidationError("expires", "expected a duration such as 30d, or never")
    created = token_actions.create(services(), principal(), body.get("name"), body.get("role", "admin"), expires)
    return jsonify({"name": created.name, "role": created.role.value, "token": created.token,
                    "expires_at": created.expires_at.isoformat() if created.expires_at else None}), 201


@bp.delete("/tokens/<name>")
@needs(Role.ADMIN)
def revoke_token(name: str):  # type: ignore[no-untyped-def]
    token_actions.revoke(services(), principal(), name)
    return "", 204


@bp.get("/audit")
@needs(Role.VIEWER)
def audit_trail():  # type: ignore[no-untyped-def]
    """Who did what, to which hosts, when, with what outcome; newest first.
    Filters: principal (``token ops``), host, action, since, until (ISO 8601);
    ``before`` (an entry id) pages back."""
    where = audit.AuditFilter(principal=request.args.get("principal") or None,
                              host=request.args.get("host") or None, action=request.args.get("action") or None,
                              since=_time_arg("since"), until=_time_arg("until"))
    limit = _int_arg("limit", 100, 1, 10_000) or 100
    before = _int_arg("before", None, 1, 2**62)
    with services().db.read() as session:
        return jsonify({"entries": audit.entries(session, where, limit, before)})


def _time_arg(name: str) -> dt.datetime | None:
    value = request.args.get(name)
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(name, f"{value!r} is not an ISO 8601 time (2026-12-04T10:00:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _secret() -> frozenset[str]:
    """The variable names the profiles declare secret: masked in answers."""
    return secrets.names(services().profiles)
