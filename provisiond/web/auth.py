"""Default-deny authentication and authorization for every route.

Console pages (the ``console`` blueprint) are for people: their session
cookie, role and CSRF token are checked by
:func:`provisiond.web.console.session.gate`, with the same :func:`needs`.
Every other request must carry a bearer token (an API credential, see
:mod:`provisiond.actions.tokens`) whose role allows the route, unless its
endpoint is on the explicit allow-list below, or the view declares that it
authenticates its caller itself (installer views, by their one-time install
token). Every other route declares the role it needs with :func:`needs`; a
route that declares none is refused to everyone. A test walks the URL map so
that no route can be added without one of the three, and proves that a
viewer is refused every write and an operator every admin-only route.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import current_app, g, request
from werkzeug.wrappers import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.actions.principal import Principal, Role
from provisiond.actions.tokens import create_unaudited, hash_token
from provisiond.errors import Forbidden, Unauthorized

#: Endpoints anyone may call: they reveal nothing about hosts.
PUBLIC_ENDPOINTS = frozenset({
    "meta.health",
    "meta.ready",
    "meta.openapi",
    # Kernels, initrds and stage files: installers fetch them before they hold
    # any credential, and they are the distribution's public files.
    "boot.file",
    # The iPXE script per MAC: firmware holds no credential (as for TFTP).
    "ipxe.script",
    # The agent program, its checksum and the CA certificate agents pin:
    # an install's %post fetches them before it holds any credential.
    "agent.download",
    "agent.download_sha256",
    "agent.ca_certificate",
    "agent.unit",
    # / only sends people to the console (which asks them to log in).
    "root",
})

F = TypeVar("F", bound=Callable[..., Any])


def self_authenticating(view: F) -> F:
    """Mark a view that checks its own credential (e.g. an install token)."""
    view._provisiond_self_auth = True  # type: ignore[attr-defined]
    return view


def needs(role: Role) -> Callable[[F], F]:
    """Declare the role a route needs (checked before the view runs)."""
    def mark(view: F) -> F:
        view._provisiond_role = role  # type: ignore[attr-defined]
        return view
    return mark


def required_role(view: Any) -> Role | None:
    return getattr(view, "_provisiond_role", None)


def gate() -> Response | None:
    endpoint = request.endpoint
    if endpoint is None:  # no such route: let the 404/405 through
        return None
    if endpoint in PUBLIC_ENDPOINTS:
        return None
    if request.blueprint == "console":  # people, by their session cookie
        from provisiond.web.console.session import gate as console_gate

        return console_gate(endpoint)
    view = current_app.view_functions.get(endpoint)
    if getattr(view, "_provisiond_self_auth", False):
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("this route needs an API token: send 'Authorization: Bearer <token>'")
    credential = _credential(token.strip())
    if credential is None:
        raise Unauthorized("the bearer token is not valid (unknown, revoked or expired)")
    who = Principal("token", credential.name, credential.role)
    g.principal = who
    needed = required_role(view)
    if needed is None:  # default deny: a route that says nothing serves nobody
        raise _refused(who, endpoint, f"route {endpoint} declares no role; it serves nobody")
    if not who.role.allows(needed):
        raise _refused(who, endpoint, f"{who} is a {who.role}; this route needs the {needed} role (or a higher one)")
    return None


def _refused(who: Principal, endpoint: str, message: str) -> Forbidden:
    """A refusal, on the audit trail too (a viewer trying to write is news)."""
    from provisiond.actions.audit import record_refusal
    from provisiond.web import services

    record_refusal(services(), who, f"{request.method} {request.path}", endpoint, message)
    return Forbidden(message)


refused = _refused


@dataclass(frozen=True)
class _Credential:
    name: str
    role: Role
    expires_at: dt.datetime | None


#: A token found valid is trusted this long without asking the database again
#: (an API client sends one request after another with the same token). A
#: revocation made in this process takes effect at once; one made elsewhere
#: (`provisiond tokens revoke`, another HTTP instance) within this many seconds.
TOKEN_CACHE_SECONDS = 5.0
_TOKEN_CACHE_MAX = 1024
#: (database URL, token hash) -> (credential, monotonic time the entry goes stale)
_token_cache: dict[tuple[str, str], tuple[_Credential, float]] = {}


def _credential(token: str) -> _Credential | None:
    """The credential a token is, or None when it is not (or no longer) valid."""
    from provisiond.web import services

    db = services().db
    key = (db.url, hash_token(token))
    now = time.monotonic()
    cached = _token_cache.get(key)
    if cached is None or cached[1] <= now:
        with db.read() as session:
            row = session.execute(select(models.ApiToken.name, models.ApiToken.role, models.ApiToken.expires_at)
                                  .where(models.ApiToken.token_hash == key[1],
                                         models.ApiToken.revoked_at.is_(None))).first()
        if row is None:
            _token_cache.pop(key, None)
            return None
        if len(_token_cache) >= _TOKEN_CACHE_MAX:
            _token_cache.clear()
        cached = (_Credential(row.name, Role(row.role), row.expires_at), now + TOKEN_CACHE_SECONDS)
        _token_cache[key] = cached
    credential = cached[0]
    if credential.expires_at is not None and credential.expires_at <= models.utcnow():
        return None
    return credential


def forget_token(name: str) -> None:
    for key, (credential, _stale) in list(_token_cache.items()):
        if credential.name == name:
            _token_cache.pop(key, None)


def create_token(session: Session, name: str, role: Role = Role.ADMIN) -> str:
    """A token in the caller's transaction (tests, the demo's first start);
    operators use ``provisiond tokens create`` (audited)."""
    return create_unaudited(session, name, role)


def principal() -> Principal:
    """Who makes this request (set by :func:`gate`)."""
    who = g.get("principal")
    if who is None:
        raise Unauthorized("no credential")
    return who


def requester() -> str:
    """Who made this request, as events and logs name it: ``token ops``."""
    return str(principal())
