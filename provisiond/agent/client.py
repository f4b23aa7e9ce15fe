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
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Tuple
from urllib.parse import quote, urlsplit

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


class HTTPError(ClientError):
    """The server answered with an error status."""

    def __init__(self, status: int, error: str = "", message: str = "", retry_after: Optional[float] = None,
                 body: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(status, error, message)
        self.status = status
        self.error = error
        self.message = message
        self.retry_after = retry_after
        self.body: Dict[str, Any] = body if body is not None else {}

    def __str__(self) -> str:
        code = f" {self.error}" if self.error else ""
        return f"HTTP {self.status}{code}: {self.message or 'no message'}"

    @property
    def transient(self) -> bool:
        """Worth trying again later: the server is busy or broken, not saying no."""
        return self.status in (408, 425, 429) or self.status >= 500


class Answer(NamedTuple):
    """A 2xx answer: its status and JSON body."""

    status: int
    body: Dict[str, Any]


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
        self._context = context or tls_context(ca_file)
        parts = urlsplit(self.server_url)
        self._host, self._port, self._base = parts.hostname or "", parts.port, parts.path
        #: One kept-alive HTTPS connection (a TLS handshake per call would
        #: cost the gateway more than the call); made again after any failure.
        self._connection: Optional[http.client.HTTPSConnection] = None

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

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _call(self, path: str, body: Dict[str, Any], timeout: float, authenticated: bool = True) -> Answer:
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT}
        if authenticated:
            headers["Authorization"] = "Bearer " + self._credential
        payload = json.dumps(body).encode("utf-8")
        reused = self._connection is not None
        try:
            status, raw, answer_headers = self._exchange(path, payload, headers, timeout)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
            if not reused:
                raise ConnectionFailed(f"{self.server_url}{path}: {_reason(exc)}") from None
            # The server closed the kept connection while it was idle: the
            # call never reached it. Once more, on a new connection.
            try:
                status, raw, answer_headers = self._exchange(path, payload, headers, timeout)
            except (OSError, http.client.HTTPException, ssl.SSLError) as again:
                raise ConnectionFailed(f"{self.server_url}{path}: {_reason(again)}") from None
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            raise ConnectionFailed(f"{self.server_url}{path}: {_reason(exc)}") from None
        if status >= 300:
            raise _http_error(status, raw, answer_headers)
        if len(raw) > MAX_ANSWER:
            raise ConnectionFailed(f"{self.server_url}{path}: the answer is larger than {MAX_ANSWER} bytes")
        try:
            data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, ValueError):
            raise ConnectionFailed(f"{self.server_url}{path}: HTTP {status} with a body that is not JSON") from None
        if not isinstance(data, dict):
            raise ConnectionFailed(f"{self.server_url}{path}: HTTP {status} with JSON that is not an object")
        return Answer(status, data)

    def _exchange(self, path: str, payload: bytes, headers: Dict[str, str],
                  timeout: float) -> Tuple[int, bytes, Any]:
        """One request on the kept connection: (status, body, headers). Any
        failure, or an answer the server ends the connection after, closes it."""
        if self._connection is None:
            self._connection = http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                                           context=self._context)
        connection = self._connection
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        try:
            connection.request("POST", self._base + path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read(MAX_ANSWER + 1)
            if response.will_close or len(raw) > MAX_ANSWER or not response.isclosed():
                self.close()  # the server ends it, or a body was left unread
            return response.status, raw, response.headers
        except BaseException:  # a failure, or a signal abandoning the call: the connection's state is unknown
            self.close()
            raise


def _reason(reason: Any) -> str:
    if isinstance(reason, socket.timeout):
        return "timed out"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"the server's certificate is not trusted ({reason.verify_message or reason})"
    return str(reason) or type(reason).__name__


def _http_error(status: int, raw: bytes, headers: Any) -> HTTPError:
    body: Dict[str, Any] = {}
    try:
        parsed = json.loads(raw[:MAX_ERROR_BODY].decode("utf-8")) if raw else {}
        if isinstance(parsed, dict):
            body = parsed
    except (UnicodeDecodeError, ValueError):
        pass
    error = body.get("error")
    message = body.get("message")
    retry_after = parse_retry_after(headers.get("Retry-After") if headers is not None else None)
    if status in (301, 302, 303, 307, 308):  # the credential goes nowhere it was not configured for
        message = f"redirected to {headers.get('Location') if headers is not None else '?'}; not followed"
    return HTTPError(status=status, error=error if isinstance(error, str) else "",
                     message=message if isinstance(message, str) else http.client.responses.get(status, ""),
                     retry_after=retry_after, body=body)
