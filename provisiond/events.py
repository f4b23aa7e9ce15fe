"""Timeline lines: what every event message must be before it is written.

An event is one line of a host's timeline (``provctl log``, the API, the
console). Its message may carry text from outside provisiond (an installer's
progress report, a hardware report, a hook's output), so it is made one
line here, whatever path it takes: line breaks and other control characters
become visible escapes (``\\n``, ``\\x1b``), so nobody can forge a second
line or drive a terminal's escape sequences through a timeline.
"""

from __future__ import annotations

import re

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
    text = CONTROL.sub(_escape, message)
    if len(text) > MESSAGE_LIMIT:
        text = text[:MESSAGE_LIMIT] + "…"
    return text


def has_control(text: str) -> bool:
    """True when ``text`` holds a character that :func:`one_line` would escape."""
    return CONTROL.search(text) is not None
