"""Who is at the console: login sessions, roles and CSRF tokens.

Console views are authenticated by the session cookie (not a bearer
token): :func:`gate` runs for every request to the ``console`` blueprint
(from :func:`provisiond.web.auth.gate`). Each view declares the role it
needs with :func:`provisiond.web.auth.needs`, as API views do, or is on
:data:`PUBLIC` (the login form, the static files). Every request that may
change something (any method but GET and HEAD) must carry the session's
CSRF token, in the form field ``csrf_token`` or the ``X-CSRF-Token`` header
(htmx sends it); without it the request is refused with 403 before the
view runs, so nothing changes.

The cookie: ``HttpOnly``, ``SameSite=Lax``, ``Secure`` when the request came
over TLS (directly or through a trusted proxy's ``X-Forwarded-Proto``), and
expiring with the session (:data:`provisiond.actions.users.SESSION_LIFETIME`).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, g, redirect, request, url_for
from werkzeug.wrappers import Response

from provisiond.actions import users as user_actions
from provisiond.actions.principal import Principal
from provisiond.errors import Forbidden, Unauthorized
from provisiond.web import services

COOKIE = "provisiond_session"
#: Before login: the double-submit token of the login form itself.
LOGIN_COOKIE = "provisiond_login"
#: Endpoints anyone may call: the login form and the vendored static files.
PUBLIC = frozenset({"console.login", "console.login_post", "console.static"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfRefused(Forbidden):
    """This form was not sent by a page of this console (its security token
    is missing or wrong): nothing was changed. Reload the page and try again."""

    code = "csrf"


def gate(endpoint: str) -> Response | None:
    """Before every console request: who it is, whether their role allows
    the view, and (for a write) the CSRF token. Returns a redirect to the
    login form for a page asked without a session."""
    from provisiond.web.auth import refused, required_role

    g.console = True
    if endpoint in PUBLIC:
        return None
    token = request.cookies.get(COOKIE)
    found = user_actions.session_of(services(), token) if token else None
    if found is None:
        if request.method in SAFE_METHODS:
            return _to_login()
        raise Unauthorized("you are not logged in (or your session has ended): log in again")
    g.principal = found.principal
    g.console_session = found
    view = current_app.view_functions.get(endpoint)
    needed = required_role(view)
    if needed is None:
        raise refused(found.principal, endpoint, f"route {endpoint} declares no role; it serves nobody")
    if not found.principal.role.allows(needed):
        raise refused(found.principal, endpoint,
                      f"{found.principal} is a {found.principal.role}; this needs the {needed} role (or a higher one)")
    if request.method not in SAFE_METHODS:
        check_csrf(found.csrf_token)
    return None


def check_csrf(expected: str) -> None:
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused()


def _to_login() -> Response:
    target = url_for("console.login", next=request.full_path.rstrip("?"))
    if request.headers.get("HX-Request"):  # a live panel of an ended session: the whole page goes
        response = Response("", 200)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target, 303)


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path of this console, never elsewhere."""
    default = url_for("console.dashboard")
    if not value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/console") or "\\" in value:
        return default
    return value


def principal() -> Principal:
    return g.console_session.principal  # type: ignore[no-any-return]


def csrf_token() -> str:
    """For templates: the session's token, or before login the login form's."""
    found = g.get("console_session")
    if found is not None:
        return found.csrf_token  # type: ignore[no-any-return]
    token = g.get("login_csrf") or request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    g.login_csrf = token
    return token  # type: ignore[no-any-return]


def set_cookies(response: Response, **extra: Any) -> Response:
    """The login form's double-submit cookie, when one was made for it."""
    if g.get("login_csrf") and request.cookies.get(LOGIN_COOKIE) != g.login_csrf:
        response.set_cookie(LOGIN_COOKIE, g.login_csrf, httponly=True, samesite="Lax", secure=request.is_secure,
                            path="/console")
    return response


def start(response: Response, found: user_actions.UserSession) -> Response:
    max_age = int((found.expires_at - user_actions.models.utcnow()).total_seconds())
    response.set_cookie(COOKIE, found.token or "", max_age=max_age, expires=found.expires_at, httponly=True,
                        samesite="Lax", secure=request.is_secure, path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/console")
    return response


def end(response: Response) -> Response:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Lax", secure=request.is_secure)
    return response
