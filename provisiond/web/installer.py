"""Installer endpoints: called by the kickstart's %pre, %post and %onerror.

Authenticated by the one-time install token in the URL and nothing else (no
admin token, no trust in a MAC or an IP). A missing, wrong, expired or used
token gets a bare 404. ``done`` is idempotent: a repeat answers 200 without
a second transition. Answers are JSON, or one line of text when the caller
sends ``Accept: text/plain`` (what the shell fragments print on the console).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.orm import Session

from provisiond.errors import ValidationError
from provisiond.install.verify import parse_report
from provisiond.inventory import fields
from provisiond.inventory.hosts import to_record
from provisiond.kickstart.composer import InstallContext
from provisiond import models
from provisiond.models import utcnow
from provisiond.services import Services
from provisiond.web import services
from provisiond.web.auth import self_authenticating
from provisiond.web.bodies import json_body, raw_body

bp = Blueprint("installer", __name__, url_prefix="/install/<token>")


def _answer(code: int, message: str, **extra: Any) -> Response:
    accept = request.headers.get("Accept", "")
    if "text/plain" in accept and "application/json" not in accept:
        response = Response(message + "\n", status=code, mimetype="text/plain")
    else:
        response = jsonify({"message": message, **extra})
        response.status_code = code
    return response


def _limit() -> int:
    return services().settings.max_report_bytes


@dataclass
class _Call:
    """One installer call: its install (found by token), session and time."""

    svc: Services
    session: Session
    install: models.Install
    now: dt.datetime


@contextmanager
def _install_call(token: str, finished_ok: bool = False) -> Iterator[_Call]:
    """A write transaction on the token's install; a bad token, or a call
    from another machine than the one that reported its hardware, is a bare
    404 before the body is even read."""
    svc = services()
    now = utcnow()
    with svc.db.write() as session:
        install = svc.lifecycle.find_install(session, token, now, finished_ok=finished_ok, client=request.remote_addr)
        yield _Call(svc, session, install, now)


def _one_line(value: object, field: str) -> str:
    """A message for the timeline: one line of text (control characters
    refused, so a token holder cannot forge timeline lines), 1-1000 characters."""
    if not isinstance(value, str) or len(value) > 1000 or not value.strip():
        raise ValidationError(field, "expected one line of text (at most 1000 characters)")
    return fields.one_line(value.strip(), field)


@bp.get("/ks")
@self_authenticating
def kickstart(token: str) -> Response:
    with _install_call(token) as call:
        context = InstallContext(token, call.svc.settings.public_url)
        text = call.svc.composer.render(to_record(call.install.host), context)
        call.svc.lifecycle.kickstart_fetched(call.session, call.install, call.now, request.remote_addr)
    return Response(text, mimetype="text/plain")


@bp.post("/pre-report")
@self_authenticating
def pre_report(token: str) -> Response:
    with _install_call(token) as call:
        report = parse_report(json_body(_limit()))
        verdict = call.svc.lifecycle.report_hardware(call.session, call.install, report, call.now,
                                                     request.remote_addr)
    if not verdict.ok:
        return _answer(409, "hardware does not match the data source: " + "; ".join(verdict.differences),
                       error="hw_mismatch", differences=list(verdict.differences))
    return _answer(200, "hardware matches the data source", learned=sorted(verdict.learned))


@bp.post("/slot")
@self_authenticating
def slot(token: str) -> Response:
    svc = services()
    now = utcnow()
    raw_body(_limit())  # no body is needed; an oversized one is still refused
    decision = svc.lifecycle.request_slot(svc.db, token, now, request.remote_addr)
    if decision.granted:
        return _answer(200, "install slot granted", status="granted")
    response = _answer(429, decision.message, error="install_cap", position=decision.position,
                       retry_after=decision.retry_after)
    response.headers["Retry-After"] = str(decision.retry_after)
    return response


@bp.post("/progress")
@self_authenticating
def progress(token: str) -> Response:
    with _install_call(token) as call:
        message = _one_line(json_body(_limit()).get("message"), "message")
        call.svc.lifecycle.progress(call.session, call.install, message, call.now)
    return _answer(200, "noted")


@bp.post("/done")
@self_authenticating
def done(token: str) -> Response:
    with _install_call(token, finished_ok=True) as call:
        json_body(_limit(), required=False)
        first = call.svc.lifecycle.done(call.session, call.install, call.now)
    return _answer(200, "install recorded as done; the next boot is from the local disk" if first
                   else "install was already recorded as done", status="installed")


@bp.post("/failed")
@self_authenticating
def failed(token: str) -> Response:
    with _install_call(token) as call:
        body = json_body(_limit(), required=False)
        detail = _one_line(body.get("message") or body.get("reason") or "no detail", "message")
        call.svc.lifecycle.failed(call.session, call.install, detail, call.now)
    return _answer(200, "failure recorded")


@bp.post("/agent")
@self_authenticating
def agent_config(token: str) -> Response:
    """``%post`` asks for its agent's configuration: the gateway's URL, the
    CA fingerprint the agent pins, and a new one-time enrollment ticket
    (good from ``done`` for enrollment_window_seconds). Only while the
    install holds its slot, from the installer's own address."""
    from provisiond import tls
    from provisiond.agents import tickets
    from provisiond.errors import Conflict

    with _install_call(token) as call:
        json_body(_limit(), required=False)
        state = call.install.host.state
        if state != "installing":
            raise Conflict(f"the agent's configuration is handed out while the install runs; the host is {state}")
        settings = call.svc.settings
        if not settings.agent_public_url:
            raise Conflict("no agent gateway to hand the host to: agent_listen and agent_public_url are both "
                           "empty (set one, or drop post-agent from the profile)")
        ticket = tickets.issue(call.session, call.install, call.now)
        fingerprint = tls.ensure(settings).ca_fingerprint
    response = jsonify({"server_url": settings.agent_public_url, "ca_fingerprint": fingerprint, "ticket": ticket,
                        "ca_file": "/etc/provisiond-agent/ca.pem", "state_dir": "/var/lib/provisiond-agent"})
    response.headers["Cache-Control"] = "no-store"
    return response
