"""A timeline line as text, and a reader's place in the timeline: what
:mod:`provisiond.events` writes and reads, and what ``provctl`` prints,
without the database (so the command line starts without SQLAlchemy)."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Characters that end a line for someone (Python's ``splitlines``, a
#: terminal, a browser) or control a terminal: C0 and C1 controls, DEL, and
#: the Unicode line and paragraph separators.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: Longest message kept; a longer one is cut and marked.
MESSAGE_LIMIT = 8000


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def one_line(message: str) -> str:
    """``message`` as one timeline line: control characters escaped, and
    at most :data:`MESSAGE_LIMIT` characters."""
    text_ = CONTROL.sub(_escape, message)
    if len(text_) > MESSAGE_LIMIT:
        text_ = text_[:MESSAGE_LIMIT] + "…"
    return text_


def has_control(value: str) -> bool:
    """True when ``value`` holds a character that :func:`one_line` would escape."""
    return CONTROL.search(value) is not None


@dataclass(frozen=True, order=True)
class Cursor:
    """Where a reader is: after the event (txid, id). ``0:0`` is the start."""

    txid: int = 0
    id: int = 0

    def __str__(self) -> str:
        return f"{self.txid}:{self.id}"

    @classmethod
    def parse(cls, value: str | None) -> Cursor:
        """``txid:id`` (what :func:`read` hands out), or a bare event id."""
        if not value:
            return cls()
        txid, sep, event_id = value.partition(":")
        if not sep:
            txid, event_id = "0", txid
        if not (txid.isdigit() and event_id.isdigit()) or len(value) > 40:
            raise ValueError(f"{value!r} is not a cursor (TXID:ID, as an earlier answer gave it)")
        return cls(int(txid), int(event_id))
