"""Enrollment tickets: how an install's new system enrolls its agent with no
operator.

The install's ``%post`` asks for the agent's configuration with the install
token (``POST /install/<token>/agent``, bound to the installer's address like
every installer call): the answer carries a new one-time ticket, bound to that
host and that install. The install token itself is never a ticket: boot
entries expose it. The ticket is good from the install's ``done`` for
``enrollment_window_seconds`` and dead once used; asking again (an installer
retrying) replaces it. Only its SHA-256 is stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.errors import Conflict, Gone, NotFound

PREFIX = "pvt_"


def _hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def issue(session: Session, install: models.Install, now: dt.datetime) -> str:
    """A new ticket for ``install`` (replacing one asked for before)."""
    ticket = PREFIX + secrets.token_urlsafe(32)
    row = session.scalar(select(models.EnrollmentTicket).where(models.EnrollmentTicket.install_id == install.id))
    if row is None:
        session.add(models.EnrollmentTicket(install_id=install.id, host_id=install.host_id, ticket_hash=_hash(ticket),
                                            created_at=now))
    else:
        if row.used_at is not None:
            raise Conflict("this install's agent has enrolled already; its ticket is used")
        row.ticket_hash = _hash(ticket)
        row.created_at = now
    return ticket


@dataclass(frozen=True)
class Redeemed:
    host_id: int
    install_id: int


def redeem(session: Session, ticket: str, now: dt.datetime, window: dt.timedelta) -> Redeemed:
    """Use a ticket once: its host and install. Refused (nothing changed) if
    it is unknown (404), used (410), not yet good (409: the install has not
    reported done) or past its window (410), or if its install is no longer
    the host's newest (410: the host was armed again)."""
    if not isinstance(ticket, str) or not ticket.startswith(PREFIX):
        raise NotFound("unknown enrollment ticket", code="ticket_unknown")
    row = session.scalar(select(models.EnrollmentTicket).where(models.EnrollmentTicket.ticket_hash == _hash(ticket))
                         .with_for_update())
    if row is None:
        raise NotFound("unknown enrollment ticket", code="ticket_unknown")
    if row.used_at is not None:
        raise Gone("this enrollment ticket was used already", code="ticket_used")
    install = session.get(models.Install, row.install_id)
    assert install is not None
    if install.outcome != "installed" or install.finished_at is None:
        raise Conflict(f"the install of this ticket has not finished (it is {install.outcome or 'under way'})",
                       code="ticket_not_yet")
    if now > install.finished_at + window:
        raise Gone(f"this enrollment ticket expired at {(install.finished_at + window):%Y-%m-%d %H:%M:%S} UTC",
                   code="ticket_expired")
    newer = session.scalar(select(models.Install.id).where(models.Install.host_id == row.host_id,
                                                           models.Install.id > install.id))
    if newer is not None:
        raise Gone("the host was armed for another install since this ticket was issued", code="ticket_expired")
    used = session.execute(update(models.EnrollmentTicket).where(
        models.EnrollmentTicket.id == row.id, models.EnrollmentTicket.used_at.is_(None)).values(used_at=now))
    if used.rowcount != 1:  # type: ignore[attr-defined]
        raise Gone("this enrollment ticket was used already", code="ticket_used")
    return Redeemed(row.host_id, row.install_id)
