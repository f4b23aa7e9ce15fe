"""provisiond: bare-metal provisioning server.

``create_app`` builds the Flask application: settings, database, blueprints
(split by who calls them) and the JSON error handlers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from provisiond.config import Settings

__version__ = "0.1.0"


def create_app(settings: Settings | None = None) -> Flask:
    from provisiond.web.app import build_app

    return build_app(settings)
