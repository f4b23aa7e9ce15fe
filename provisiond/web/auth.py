"""Default-deny authentication for every route.

Every request must carry an admin bearer token unless its endpoint is on the
explicit allow-list below, or the view declares that it authenticates its
caller itself (installer views, by their one-time install token). A test
walks the URL map so that no route can be added without one of the two.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.actions.principal import Principal, Role
from provisiond.db import on_commit
from provisiond.errors import Conflict, NotFound, Unauthorized
from provisiond.inventory import fields

#: Endpoints anyone may call: they reveal nothing about hosts.
PUBLIC_ENDPOINTS = frozenset({
    "meta.health",
    "meta.openapi",
    # Kernels, initrds and stage files: installers fetch them before they hold
    # any credential, and they are the distribution's public files.
    "boot.file",
    # The iPXE script per MAC: firmware holds no credential (as for TFTP).
    "ipxe.script",
})

F = TypeVar("F", bound=Callable[..., Any])


def self_authenticating(view: F) -> F:
    """Mark a view that checks its own credential (e.g. an install token)."""
    view._provisiond_self_auth = True  # type: ignore[attr-defined]
    return view


def gate() -> None:
    endpoint = request.endpoint
    if endpoint is None:  # no such route: let the 404/405 through
        return
    if endpoint in PUBLIC_ENDPOINTS:
        return
    view = current_app.view_functions.get(endpoint)
    if getattr(view, "_provisiond_self_auth", False):
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("this route needs an admin token: send 'Authorization: Bearer <token>'")
    name = _token_name(token.strip())
    if name is None:
        raise Unauthorized("the bearer token is not valid")
    g.token_name = name


#: A token found valid is trusted this long without asking the database again
#: (an API client sends one request after another with the same token). A
#: revocation made in this process takes effect at once; one made elsewhere
#: (`provisiond tokens revoke`, another HTTP instance) within this many seconds.
TOKEN_CACHE_SECONDS = 5.0
_TOKEN_CACHE_MAX = 1024
#: (database URL, token hash) -> (token name, monotonic time it expires)
_token_cache: dict[tuple[str, str], tuple[str, float]] = {}


def _token_name(token: str) -> str | None:
    """The name of the admin token, or None when it is not (or no longer) valid."""
    from provisiond.web import services

    db = services().db
    key = (db.url, hash_token(token))
    now = time.monotonic()
    cached = _token_cache.get(key)
    if cached is not None and cached[1] > now:
        return cached[0]
    with db.read() as session:
        name = session.scalar(select(models.ApiToken.name).where(models.ApiToken.token_hash == key[1]))
    if name is None:
        _token_cache.pop(key, None)
    else:
        if len(_token_cache) >= _TOKEN_CACHE_MAX:
            _token_cache.clear()
        _token_cache[key] = (name, now + TOKEN_CACHE_SECONDS)
    return name


def _forget_token(name: str) -> None:
    for key, (cached_name, _expiry) in list(_token_cache.items()):
        if cached_name == name:
            _token_cache.pop(key, None)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str) -> str:
    """Create an admin token; the plain token is returned once and never stored."""
    fields.name(name, "name")
    if session.scalar(select(models.ApiToken.id).where(models.ApiToken.name == name)) is not None:
        raise Conflict(f"a token named {name!r} already exists")
    token = "pvd_" + secrets.token_urlsafe(32)
    session.add(models.ApiToken(name=name, token_hash=hash_token(token)))
    return token


def list_tokens(session: Session) -> list[models.ApiToken]:
    return list(session.scalars(select(models.ApiToken).order_by(models.ApiToken.name)))


def revoke_token(session: Session, name: str) -> None:
    token = session.scalar(select(models.ApiToken).where(models.ApiToken.name == name))
    if token is None:
        raise NotFound(f"no token named {name!r}")
    session.delete(token)
    _forget_token(name)
    # Again after the commit: a request in between may have cached it anew.
    on_commit(session, lambda: _forget_token(name))



def principal() -> Principal:
    """Who makes this admin request (every API token is an admin for now)."""
    return Principal("token", g.get("token_name", "?"), Role.ADMIN)


def requester() -> str:
    """Who made this admin request, as events and logs name it: ``token ops``."""
    return f"token {g.get('token_name', '?')}"
