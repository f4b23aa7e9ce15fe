"""The web console: server-rendered pages for people, over the same actions
the API calls (with the logged-in user as the principal, so the audit trail
names who clicked).

Pages read with plain HTML (they work without JavaScript); htmx, vendored
in ``static/``, refreshes their live parts every :data:`POLL_SECONDS`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request, url_for

from provisiond.actions.principal import Role
from provisiond.states import HostState

#: The vendored htmx (static/VENDORED.md).
HTMX = "htmx-2.0.11.min.js"
#: How often live panels are refreshed.
POLL_SECONDS = 2

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates", static_folder="static")


@bp.after_request
def _headers(response: Any) -> Any:
    """No framing (clickjacking), no caching of pages that show hosts, no
    referrer to other sites, no sniffing."""
    response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "console.static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.app_template_global()
def state_badge_class(state: str) -> str:
    return {"failed": "bad", "ready": "good", "installed": "good", "handed_off": "good", "idle": "quiet"}.get(
        state, "busy")


@bp.app_context_processor
def _context() -> dict[str, Any]:
    from provisiond.web.console.session import csrf_token

    found = g.get("console_session")
    who = found.principal if found is not None else None
    return {"who": who, "can_operate": who is not None and who.role.allows(Role.OPERATOR),
            "csrf_token": csrf_token, "htmx": url_for("console.static", filename=HTMX), "poll": POLL_SECONDS,
            "states": [state.value for state in HostState]}


from provisiond.web.console import views  # noqa: E402,F401  (registers the routes)
