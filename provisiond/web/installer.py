"""Installer endpoints: called by the kickstart's %pre, %post and %onerror.

Authenticated by the one-time install token in the URL and nothing else (no
admin token, no trust in a MAC or an IP). A missing, wrong, expired or used
token gets a bare 404. ``done`` is idempotent: a repeat answers 200 without
a second transition. Answers are JSON, or one line of text when the caller
sends ``Accept: text/plain`` (what the shell fragments print on the console).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from provisiond.errors import ValidationError
from provisiond.install.verify import parse_report
from provisiond.inventory.hosts import to_record
from provisiond.kickstart.composer import InstallContext
from provisiond.models import utcnow
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


@bp.get("/ks")
@self_authenticating
def kickstart(token: str) -> Response:
    svc = services()
    now = utcnow()
    with svc.db.write() as session:
        install = svc.lifecycle.find_install(session, token, now)
        text = svc.composer.render(to_record(install.host), InstallContext(token, svc.settings.public_url))
        svc.lifecycle.kickstart_fetched(session, install, now, request.remote_addr)
    return Response(text, mimetype="text/plain")


@bp.post("/pre-report")
@self_authenticating
def pre_report(token: str) -> Response:
    svc = services()
    now = utcnow()
    with svc.db.write() as session:
        install = svc.lifecycle.find_install(session, token, now)  # a bad token is 404 before anything else
        report = parse_report(json_body(_limit()))
        verdict = svc.lifecycle.report_hardware(session, install, report, now)
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
    with svc.db.write() as session:
        decision = svc.lifecycle.request_slot(session, token, now)
    if decision.granted:
        return _answer(200, "install slot granted", status="granted")
    response = _answer(429, decision.message, error="install_cap", position=decision.position,
                       retry_after=decision.retry_after)
    response.headers["Retry-After"] = str(decision.retry_after)
    return response


@bp.post("/progress")
@self_authenticating
def progress(token: str) -> Response:
    svc = services()
    now = utcnow()
    with svc.db.write() as session:
        install = svc.lifecycle.find_install(session, token, now)
        message = json_body(_limit()).get("message")
        if not isinstance(message, str) or not message.strip() or len(message) > 1000:
            raise ValidationError("message", "expected one line of text (at most 1000 characters)")
        svc.lifecycle.progress(session, install, message.strip(), now)
    return _answer(200, "noted")


@bp.post("/done")
@self_authenticating
def done(token: str) -> Response:
    svc = services()
    now = utcnow()
    with svc.db.write() as session:
        install = svc.lifecycle.find_install(session, token, now, finished_ok=True)
        json_body(_limit(), required=False)
        first = svc.lifecycle.done(session, install, now)
    return _answer(200, "install recorded as done; the next boot is from the local disk" if first
                   else "install was already recorded as done", status="installed")


@bp.post("/failed")
@self_authenticating
def failed(token: str) -> Response:
    svc = services()
    now = utcnow()
    with svc.db.write() as session:
        install = svc.lifecycle.find_install(session, token, now)
        body = json_body(_limit(), required=False)
        detail = body.get("message") or body.get("reason") or "no detail"
        if not isinstance(detail, str) or len(detail) > 1000:
            raise ValidationError("message", "expected text (at most 1000 characters)")
        svc.lifecycle.failed(session, install, detail.strip(), now)
    return _answer(200, "failure recorded")
