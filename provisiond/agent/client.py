"""The agent's HTTPS client for provisiond's agent endpoints
(:mod:`provisiond.agent.protocol`).

It trusts one CA only: the pinned ``ca_file`` (never the system's store),
with host name checking on, so the credential goes to provisiond's gateway
and nowhere else. Redirects are refused for the same reason. Every answer
but a 2xx becomes an :class:`HTTPError` carrying what the agent acts on:
the status, the JSON ``error`` code and ``message``, and ``Retry-After``.
A network or TLS failure becomes a :class:`ConnectionFailed`.

Standard library only; runs on Python 3.9.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import json
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional
from urllib.parse import quote

from provisiond import __version__
from provisiond.agent import protocol

#: Seconds for a call that is not a long-poll.
CALL_TIMEOUT = 30.0
#: A long-poll's socket timeout is its wait and this much more (the server
#: answers after ``wait``; the rest is for the network and a busy server).
POLL_SLACK = 15.0
#: The largest answer read: a run carries a file's content, base64.
MAX_ANSWER = 256 * 1024 * 1024
#: The most of an error answer read (it is a small JSON object).
MAX_ERROR_BODY = 64 * 1024
USER_AGENT = f"provisiond-agent/{__version__}"


class ClientError(Exception):
    """A call did not get a usable answer."""


class ConnectionFailed(ClientError):
    """No answer: the server is unreachable, the TLS handshake failed, the
    call timed out, or the answer was not JSON. Worth trying again later."""


@dataclass
class HTTPError(ClientError):
    """The server answered with an error status."""

    status: int
    error: str = ""
    message: str = ""
    retry_after: Optional[float] = None
    body: Dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        code = f" {self.error}" if self.error else ""
        return f"HTTP {self.status}{code}: {self.message or 'no message'}"

    @property
    def transient(self) -> bool:
        """Worth trying again later: the server is busy or broken, not saying no."""
        return self.status in (408, 425, 429) or self.status >= 500


@dataclass(frozen=True)
class Answer:
    """A 2xx answer: its status and JSON body."""

    status: int
    body: Dict[str, Any]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would send the credential to an address the agent was not
    configured with: it is an error instead."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


def tls_context(ca_file: Path) -> ssl.SSLContext:
    """A client context that trusts ``ca_file`` alone, checks host names and
    speaks TLS 1.2 or later."""
    context = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def parse_retry_after(value: Optional[str], now: Optional[dt.datetime] = None) -> Optional[float]:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; None when
    absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    now = now or dt.datetime.now(dt.timezone.utc)
    return max(0.0, (when - now).total_seconds())


class Client:
    """Calls to one provisiond gateway as one agent."""

    def __init__(self, server_url: str, ca_file: Path, credential: str,
                 context: Optional[ssl.SSLContext] = None) -> None:
        self.server_url = server_url.rstrip("/")
        self._credential = credential
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context or tls_context(ca_file)), _NoRedirects())

    def __repr__(self) -> str:
        return f"Client({self.server_url!r})"  # never the credential

    # ------------------------------------------------------------ the calls

    def enroll(self, *, hostname: str, machine_id: str, serial: str, ticket: Optional[str] = None) -> Answer:
        """Introduce this agent (201 accepted by ticket, 202 pending, 200
        known already). Unauthenticated: the credential is in the body."""
        body: Dict[str, Any] = {"credential": self._credential, "hostname": hostname, "machine_id": machine_id,
                                "serial": serial, "version": __version__}
        if ticket:
            body["ticket"] = ticket
        return self._call(protocol.ENROLL, body, CALL_TIMEOUT, authenticated=False)

    def poll(self, wait: float) -> Answer:
        """Wait up to ``wait`` seconds for runs (a heartbeat too)."""
        return self._call(protocol.POLL, {"wait": wait}, float(wait) + POLL_SLACK)

    def send_result(self, run_id: Any, result: Dict[str, Any]) -> Answer:
        """Upload one run's result (with its idempotency key)."""
        path = protocol.RESULT.format(run_id=quote(str(run_id), safe=""))
        return self._call(path, result, CALL_TIMEOUT)

    # ------------------------------------------------------------ the wire

    def _call(self, path: str, body: Dict[str, Any], timeout: float, authenticated: bool = True) -> Answer:
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT}
        if authenticated:
            headers["Authorization"] = "Bearer " + self._credential
        request = urllib.request.Request(self.server_url + path, data=json.dumps(body).encode("utf-8"),
                                         headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=timeout) as response:
                status = response.status
                raw = response.read(MAX_ANSWER + 1)
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        except urllib.error.URLError as exc:
            raise ConnectionFailed(f"{self.server_url}{path}: {_reason(exc.reason)}") from None
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            raise ConnectionFailed(f"{self.server_url}{path}: {_reason(exc)}") from None
        if len(raw) > MAX_ANSWER:
            raise ConnectionFailed(f"{self.server_url}{path}: the answer is larger than {MAX_ANSWER} bytes")
        try:
            data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, ValueError):
            raise ConnectionFailed(f"{self.server_url}{path}: HTTP {status} with a body that is not JSON") from None
        if not isinstance(data, dict):
            raise ConnectionFailed(f"{self.server_url}{path}: HTTP {status} with JSON that is not an object")
        return Answer(status, data)


def _reason(reason: Any) -> str:
    if isinstance(reason, socket.timeout):
        return "timed out"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"the server's certificate is not trusted ({reason.verify_message or reason})"
    return str(reason) or type(reason).__name__


def _http_error(exc: urllib.error.HTTPError) -> HTTPError:
    body: Dict[str, Any] = {}
    try:
        raw = exc.read(MAX_ERROR_BODY)
        parsed = json.loads(raw.decode("utf-8")) if raw else {}
        if isinstance(parsed, dict):
            body = parsed
    except (OSError, UnicodeDecodeError, ValueError, http.client.HTTPException):
        pass
    finally:
        exc.close()
    error = body.get("error")
    message = body.get("message")
    headers = exc.headers
    retry_after = parse_retry_after(headers.get("Retry-After") if headers is not None else None)
    if exc.code in (301, 302, 303, 307, 308):
        message = f"redirected to {headers.get('Location') if headers is not None else '?'}; not followed"
    return HTTPError(status=exc.code, error=error if isinstance(error, str) else "",
                     message=message if isinstance(message, str) else (exc.reason or ""),
                     retry_after=retry_after, body=body)
