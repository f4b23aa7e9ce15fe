"""API credentials: named, with a role and an optional expiry.

The plain token is shown once, when it is created, and never stored: only
its SHA-256. A revoked token is kept (marked), so the audit trail can still
name it; it is refused by every HTTP worker of every instance within
:data:`provisiond.web.auth.TOKEN_CACHE_SECONDS` (each worker caches a
token's check that long; the one that revoked it forgets it at once).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.actions.audit import audited
from provisiond.actions.principal import Principal, Role
from provisiond.db import on_commit
from provisiond.errors import Conflict, NotFound, ValidationError
from provisiond.inventory import fields
from provisiond.services import Services

_DURATION = re.compile(r"(\d+)([hdw])")
_UNITS = {"h": dt.timedelta(hours=1), "d": dt.timedelta(days=1), "w": dt.timedelta(weeks=1)}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_expiry(value: str | None, now: dt.datetime) -> dt.datetime | None:
    """``30d``, ``12h``, ``2w`` from now; empty or ``never``: no expiry."""
    if value in (None, "", "never"):
        return None
    match = _DURATION.fullmatch(str(value).strip())
    if not match or int(match.group(1)) == 0:
        raise ValidationError("expires", f"{value!r} is not a duration (e.g. 12h, 30d, 2w, or never)")
    return now + int(match.group(1)) * _UNITS[match.group(2)]


def parse_role(value: Any) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ValidationError("role", f"{value!r} is not one of {', '.join(r.value for r in Role)}") from None


@dataclass(frozen=True)
class Created:
    name: str
    role: Role
    expires_at: dt.datetime | None
    token: str  # shown once


def create(svc: Services, who: Principal, name: str, role: Role | str = Role.ADMIN,
           expires: str | None = None) -> Created:
    with audited(svc, who, "tokens.create", Role.ADMIN, [str(name)]) as act:
        role = parse_role(role)
        fields.name(name, "name")
        expires_at = parse_expiry(expires, models.utcnow())
        with svc.db.write() as session:
            token = _create(session, name, role, expires_at)
            act.done(session, f"token {name} created ({role}"
                              f"{', expires ' + expires_at.isoformat() if expires_at else ''})")
    return Created(name, role, expires_at, token)


def _create(session: Session, name: str, role: Role, expires_at: dt.datetime | None) -> str:
    if session.scalar(select(models.ApiToken.id).where(models.ApiToken.name == name)) is not None:
        raise Conflict(f"a token named {name!r} already exists", field="name")
    token = "pvd_" + secrets.token_urlsafe(32)
    session.add(models.ApiToken(name=name, token_hash=hash_token(token), role=role.value, expires_at=expires_at))
    return token


def listing(svc: Services, who: Principal) -> list[dict[str, Any]]:
    from provisiond.actions.audit import authorize

    authorize(who, Role.ADMIN, "tokens.list")
    now = models.utcnow()
    with svc.db.read() as session:
        tokens = session.scalars(select(models.ApiToken).order_by(models.ApiToken.name)).all()
        return [_to_dict(token, now) for token in tokens]


def _to_dict(token: models.ApiToken, now: dt.datetime) -> dict[str, Any]:
    state = ("revoked" if token.revoked_at else "expired" if token.expires_at and token.expires_at <= now
             else "active")
    return {"name": token.name, "role": token.role, "state": state, "created_at": token.created_at.isoformat(),
            "expires_at": token.expires_at.isoformat() if token.expires_at else None,
            "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None}


def revoke(svc: Services, who: Principal, name: str) -> None:
    from provisiond.web.auth import forget_token

    with audited(svc, who, "tokens.revoke", Role.ADMIN, [name]) as act:
        with svc.db.write() as session:
            token = session.scalar(select(models.ApiToken).where(models.ApiToken.name == name))
            if token is None or token.revoked_at is not None:
                raise NotFound(f"no token named {name!r}" + (" (it is revoked already)" if token else ""))
            token.revoked_at = models.utcnow()
            forget_token(name)
            # Again after the commit: a request in between may have cached it anew.
            on_commit(session, lambda: forget_token(name))
            act.done(session, f"token {name} revoked")


def create_unaudited(session: Session, name: str, role: Role = Role.ADMIN,
                     expires_at: dt.datetime | None = None) -> str:
    """For tests and the demo's first start: a token in the caller's transaction."""
    return _create(session, name, role, expires_at)
