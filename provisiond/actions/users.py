"""Console users: create, list, disable; logging in and out.

A user is a principal as an API credential is (``user ana``, with a role):
the console calls the same actions the API does with it, so the audit trail
names who clicked. Passwords are hashed with Argon2id
(:mod:`provisiond.passwords`). A login makes a server-side session: the
browser's cookie holds a random token, the database its SHA-256 and the
session's CSRF token, so logging out, disabling the user or the session's
expiry ends it on every instance at once.

Failed logins are counted in the database (every worker and instance sees
the same count): more than :data:`FAILURES_PER_USER_AND_ADDRESS` for one
name from one address, or :data:`FAILURES_PER_ADDRESS` from one address for
any names, within :data:`FAILURE_WINDOW`, and further attempts are refused
with 429 until the oldest of them leaves the window (a right password too).
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select

from provisiond import models, passwords
from provisiond.actions.audit import audited, authorize
from provisiond.actions.principal import Principal, Role
from provisiond.actions.tokens import hash_token, parse_role
from provisiond.errors import Conflict, NotFound, TooManyRequests, Unauthorized, ValidationError
from provisiond.inventory import fields
from provisiond.services import Services

#: How long a console session lasts from its login.
SESSION_LIFETIME = dt.timedelta(hours=12)
FAILURE_WINDOW = dt.timedelta(minutes=15)
FAILURES_PER_USER_AND_ADDRESS = 5
FAILURES_PER_ADDRESS = 20
REFUSED_LOGIN = "wrong user name or password"


def _principal(user: models.User) -> Principal:
    return Principal("user", user.name, Role(user.role))


def _check_password(password: Any) -> str:
    if not isinstance(password, str) or len(password) < passwords.MIN_LENGTH:
        raise ValidationError("password", f"a password needs at least {passwords.MIN_LENGTH} characters")
    if len(password) > 1024:
        raise ValidationError("password", "a password has at most 1024 characters")
    return password


def create(svc: Services, who: Principal, name: str, role: Role | str, password: str) -> dict[str, Any]:
    with audited(svc, who, "users.create", Role.ADMIN, [f"user {name}"]) as act:
        fields.name(name, "name")
        role = parse_role(role)
        password_hash = passwords.hash_password(_check_password(password))
        with svc.db.write() as session:
            if session.scalar(select(models.User.id).where(models.User.name == name)) is not None:
                raise Conflict(f"a user named {name!r} already exists", field="name")
            user = models.User(name=name, role=role.value, password_hash=password_hash, created_by=str(who))
            session.add(user)
            session.flush()
            act.done(session, f"user {name} created ({role})")
            return _to_dict(user)


def listing(svc: Services, who: Principal) -> list[dict[str, Any]]:
    authorize(who, Role.ADMIN, "users.list")
    with svc.db.read() as session:
        return [_to_dict(user) for user in session.scalars(select(models.User).order_by(models.User.name))]


def _to_dict(user: models.User) -> dict[str, Any]:
    return {"name": user.name, "role": user.role, "state": "disabled" if user.disabled_at else "active",
            "created_at": user.created_at.isoformat(), "created_by": user.created_by,
            "disabled_at": user.disabled_at.isoformat() if user.disabled_at else None}


def disable(svc: Services, who: Principal, name: str) -> None:
    """Refuse the user from now on; their open sessions end at once."""
    with audited(svc, who, "users.disable", Role.ADMIN, [f"user {name}"]) as act:
        with svc.db.write() as session:
            user = session.scalar(select(models.User).where(models.User.name == name))
            if user is None or user.disabled_at is not None:
                raise NotFound(f"no user named {name!r}" + (" (it is disabled already)" if user else ""))
            user.disabled_at = models.utcnow()
            ended = session.scalar(select(func.count()).select_from(models.ConsoleSession)
                                   .where(models.ConsoleSession.user_id == user.id))
            session.execute(delete(models.ConsoleSession).where(models.ConsoleSession.user_id == user.id))
            act.done(session, f"user {name} disabled; {ended or 0} session(s) ended")


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True)
class UserSession:
    principal: Principal
    csrf_token: str
    expires_at: dt.datetime
    #: The cookie's value: only in the answer to a login.
    token: str | None = None


def login(svc: Services, name: str, password: str, address: str | None) -> UserSession:
    """A new session for ``name`` if ``password`` is theirs; 401 if not (or
    the user is unknown or disabled: the same answer, after the same work),
    429 past the rate limit."""
    name, address = str(name)[:64], (address or "unknown")[:45]
    who = Principal("user", name, Role.VIEWER)  # the role is known once the password is
    with audited(svc, who, "users.login", Role.VIEWER, [f"user {name}"]) as act:
        now = models.utcnow()
        _rate_limit(svc, name, address, now)
        with svc.db.read() as session:
            user = session.scalar(select(models.User).where(models.User.name == name))
        stored_hash = user.password_hash if user is not None and user.disabled_at is None else None
        if not passwords.verify(stored_hash, str(password)) or user is None:
            with svc.db.write() as session:
                session.add(models.LoginFailure(name=name, address=address, time=now))
            raise Unauthorized(REFUSED_LOGIN)
        act.who = _principal(user)
        token, csrf = "pvs_" + secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires_at = now + SESSION_LIFETIME
        with svc.db.write() as session:
            session.execute(delete(models.LoginFailure).where(models.LoginFailure.name == name,
                                                              models.LoginFailure.address == address))
            session.execute(delete(models.ConsoleSession).where(models.ConsoleSession.expires_at <= now))
            session.execute(delete(models.LoginFailure).where(models.LoginFailure.time <= now - FAILURE_WINDOW))
            session.add(models.ConsoleSession(token_hash=hash_token(token), user_id=user.id, csrf_token=csrf,
                                              created_at=now, expires_at=expires_at, address=address))
            stored = session.get(models.User, user.id)
            if stored is not None and passwords.needs_rehash(stored.password_hash):
                stored.password_hash = passwords.hash_password(password)
            act.done(session, f"{act.who} logged in from {address}")
    return UserSession(act.who, csrf, expires_at, token)


def _rate_limit(svc: Services, name: str, address: str, now: dt.datetime) -> None:
    failures = models.LoginFailure
    since = now - FAILURE_WINDOW
    with svc.db.read() as session:
        pair = session.execute(select(func.count(), func.min(failures.time)).where(
            failures.name == name, failures.address == address, failures.time > since)).one()
        anyone = session.execute(select(func.count(), func.min(failures.time)).where(
            failures.address == address, failures.time > since)).one()
    for (count, oldest), limit, whose in ((pair, FAILURES_PER_USER_AND_ADDRESS, f"for {name} from {address}"),
                                          (anyone, FAILURES_PER_ADDRESS, f"from {address}")):
        if count >= limit:
            retry = max(1, int((oldest + FAILURE_WINDOW - now).total_seconds()) + 1)
            raise TooManyRequests(f"too many failed logins {whose}: try again in {_minutes(retry)}",
                                  retry_after=retry)


def _minutes(seconds: int) -> str:
    return f"{seconds} s" if seconds < 120 else f"{(seconds + 59) // 60} minutes"


def session_of(svc: Services, token: str) -> UserSession | None:
    """The live session a cookie's token is, or None (unknown, expired,
    logged out, or its user disabled)."""
    with svc.db.read() as session:
        row = session.execute(
            select(models.User.name, models.User.role, models.ConsoleSession.csrf_token,
                   models.ConsoleSession.expires_at)
            .join(models.User, models.User.id == models.ConsoleSession.user_id)
            .where(models.ConsoleSession.token_hash == hash_token(token),
                   models.ConsoleSession.expires_at > models.utcnow(), models.User.disabled_at.is_(None))).first()
    if row is None:
        return None
    return UserSession(Principal("user", row.name, Role(row.role)), row.csrf_token, row.expires_at)


def logout(svc: Services, who: Principal, token: str) -> None:
    with audited(svc, who, "users.logout", Role.VIEWER, [f"user {who.name}"]) as act:
        with svc.db.write() as session:
            session.execute(delete(models.ConsoleSession).where(models.ConsoleSession.token_hash == hash_token(token)))
            act.done(session, f"{who} logged out")
