"""Assemble the Flask app: services, auth gate, blueprints, error handlers."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from provisiond.config import Settings, load_settings
from provisiond.errors import Overloaded, ProvisiondError, RetryLater
from provisiond.services import Services
from provisiond.web.proxies import TrustedProxies
from provisiond.web import agent_api, api, auth, boot, installer, ipxe, jobs_api, listeners, meta, metrics, power
from provisiond.web import console

log = logging.getLogger("provisiond.web")


def build_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    settings = settings or (services.settings if services else load_settings())
    services = services or Services.build(settings)
    app = Flask("provisiond")
    # No MAX_CONTENT_LENGTH: werkzeug would cut a chunked body at it without
    # a word; provisiond.web.bodies reads every body and refuses one that is
    # too large with 413 (settings.max_body_bytes).
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["provisiond"] = services
    app.before_request(lambda: listeners.guard(settings.boot_listen))
    app.before_request(auth.gate)
    app.register_blueprint(meta.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(power.bp)
    app.register_blueprint(jobs_api.bp)
    app.register_blueprint(agent_api.bp)
    app.register_blueprint(installer.bp)
    app.register_blueprint(ipxe.bp)
    app.register_blueprint(boot.bp)
    app.register_blueprint(console.bp)
    app.add_url_rule("/", "root", console.views.root)
    _register_error_handlers(app)
    if settings.trusted_proxies:
        app.wsgi_app = TrustedProxies(app.wsgi_app, settings.trusted_proxies)  # type: ignore[method-assign]
    return app


def _wants_a_line() -> bool:
    """An installer endpoint asked for ``Accept: text/plain`` (its answers
    are one line for the console, errors too)."""
    accept = request.headers.get("Accept", "")
    return (request.blueprint == "installer" and "text/plain" in accept
            and "application/json" not in accept)


def _for_people() -> bool:
    """The console (or a console-looking path) asked: errors are HTML pages."""
    return request.blueprint == "console" or request.path == "/" or request.path.startswith("/console")


def _error_page(status: int, title: str, message: str) -> Response:
    from flask import render_template

    response = Response(render_template("console/error.html", status=status, title=title, message=message),
                        status=status, mimetype="text/html")
    return response


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ProvisiondError)
    def provisiond_error(exc: ProvisiondError):  # type: ignore[no-untyped-def]
        if exc.status >= 500 and not isinstance(exc, Overloaded):  # being busy is not an error
            log.error("%s: %s", exc.code, exc.message)
        if _for_people():
            response = _error_page(exc.status, exc.code.replace("_", " "), exc.message)
        elif _wants_a_line():  # an installer's shell prints it on the console
            return Response(exc.message + "\n", status=exc.status, mimetype="text/plain")
        else:
            response = jsonify(exc.to_json())
            response.status_code = exc.status
        if exc.status == 401 and not _for_people():
            response.headers["WWW-Authenticate"] = 'Bearer realm="provisiond"'
        if isinstance(exc, RetryLater):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        if _for_people():
            return _error_page(exc.code or 500, exc.name or "error", exc.description or "")
        name = (exc.name or "error").lower().replace(" ", "_")
        response = jsonify({"error": name, "message": exc.description})
        response.status_code = exc.code or 500
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error")
        if _for_people():
            return _error_page(500, "internal error", "Something went wrong on the server; see its log.")
        response = jsonify({"error": "internal_error", "message": "internal error; see the server log"})
        response.status_code = 500
        return response
