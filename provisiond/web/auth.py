"""Default-deny authentication for every route.

Every request must carry an admin bearer token unless its endpoint is on the
explicit allow-list below, or the view declares that it authenticates its
caller itself (installer views, by their one-time install token). A test
walks the URL map so that no route can be added without one of the two.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.errors import Conflict, NotFound, Unauthorized
from provisiond.inventory import fields

#: Endpoints anyone may call: they reveal nothing about hosts.
PUBLIC_ENDPOINTS = frozenset({
    "meta.health",
    "meta.openapi",
    # Kernels, initrds and stage files: installers fetch them before they hold
    # any credential, and they are the distribution's public files.
    "boot.file",
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
    from provisiond.web import services

    with services().db.read() as session:
        name = session.scalar(select(models.ApiToken.name).where(models.ApiToken.token_hash == hash_token(token.strip())))
    if name is None:
        raise Unauthorized("the bearer token is not valid")
    g.token_name = name


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

