"""HTTP service. Blueprints are split by who calls them: ``api`` (operators,
provctl, the UI) and, in later issues, the installer and the agent."""

from __future__ import annotations

from flask import current_app

from provisiond.services import Services


def services() -> Services:
    return current_app.extensions["provisiond"]  # type: ignore[no-any-return]
