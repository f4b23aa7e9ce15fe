"""provctl's side of the admin API: one ``requests.Session``, typed errors.

:class:`ApiClient` speaks ``/api/v1`` and turns every failure into a
:class:`ClientError` subclass: an HTTP error status into an :class:`ApiError`
(carrying the server's ``error``, ``message``, ``field`` and ``location``),
a refused or timed-out connection into :class:`Unreachable`. Which exit
status each one means is decided in :mod:`provisiond.cli.output` alone.

Where to connect comes from :func:`resolve_connection`: option > environment
(click handles those two) > config file > default. The client is built on
first use (:func:`pass_api`), so ``--help`` works without a server or token.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import quote

import click
import requests
import yaml

from provisiond import __version__

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_CONFIG = "~/.config/provisiond/provctl.yaml"
CONFIG_KEYS = frozenset({"url", "token"})
TOKEN_HINT = "create one on the server with `provisiond tokens create NAME`"

P = ParamSpec("P")
R = TypeVar("R")

#: Query parameters: ``None`` values are left out; a list repeats the key.
Params = Mapping[str, str | int | bool | None] | Iterable[tuple[str, str]]


# --------------------------------------------------------------------------- errors


class ClientError(Exception):
    """provctl could not do what was asked."""

    @property
    def message(self) -> str:
        return str(self)


class ConfigurationError(ClientError):
    """provctl's own settings (URL, config file) cannot be used."""


class MissingToken(ClientError):
    """No API token was given."""

    def __init__(self, config_file: str) -> None:
        super().__init__(
            "no API token: pass --token, set PROVISIOND_TOKEN, or put 'token:' in "
            f"{config_file}; {TOKEN_HINT}"
        )


class Unreachable(ClientError):
    """The server did not answer (connection refused, DNS failure, timeout)."""


class AnswerLost(Unreachable):
    """The request reached the server, but its answer did not come back (the
    connection broke or timed out while the server was working on it): what
    was asked may or may not have been done."""


class BadResponse(ClientError):
    """The server answered with something provctl does not understand."""


class ApiError(ClientError):
    """The server refused the request with an HTTP error status."""

    def __init__(self, status: int, code: str, message: str,
                 field: str | None = None, location: str | None = None) -> None:
        self.status = status
        self.code = code
        self.field = field
        self.location = location
        super().__init__(self._describe(message))

    def _describe(self, message: str) -> str:
        text = message
        if self.field and self.field not in text:
            text = f"{self.field}: {text}"
        if self.location and self.location not in text:
            text = f"{self.location}: {text}"
        return text


class InvalidInput(ApiError):
    """The server rejected the input (400, 413, 422)."""


class Unauthorized(ApiError):
    """The token is missing, unknown or revoked (401, 403)."""

    def _describe(self, message: str) -> str:
        return f"{message} ({TOKEN_HINT})"


class Forbidden(ApiError):
    """The token is valid but its role may not do this (403)."""


class NotFound(ApiError):
    """No such host, group or profile (404)."""


class Conflict(ApiError):
    """The request conflicts with what is stored (409): duplicate, protected, in use."""


class ServerError(ApiError):
    """The server failed (5xx) or answered with an unexpected status."""

    def _describe(self, message: str) -> str:
        return f"server error (HTTP {self.status}): {super()._describe(message)}"


class InstallFailed(ClientError):
    """The install being followed ended with the host FAILED (the reason is in the message)."""


class WaitTimedOut(ClientError):
    """``--timeout`` passed before the install being followed finished (the install goes on)."""


class JobFailed(ClientError):
    """The job being followed failed (or timed out) on some host."""


class JobNotRun(ClientError):
    """The job being followed did not run on some host (no agent, offline, cancelled); none failed."""


class CheckFailed(ClientError):
    """``profiles check`` found hosts whose kickstart does not render, or profiles lacking declarations."""


class PowerFailed(ClientError):
    """A BMC operation ended failed (the BMC and the reason are in the message)."""


_ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidInput, 413: InvalidInput, 422: InvalidInput,
    401: Unauthorized, 403: Forbidden,
    404: NotFound,
    409: Conflict,
}


def api_error(response: requests.Response) -> ApiError:
    """The typed error for an HTTP error response (JSON body or not)."""
    kind = _ERRORS_BY_STATUS.get(response.status_code, ServerError)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "message" not in body:
        snippet = " ".join(response.text.split())[:200]
        return kind(response.status_code, "http_error", f"HTTP {response.status_code} {response.reason}: {snippet}")
    return kind(
        response.status_code, str(body.get("error", "error")), str(body["message"]),
        field=_optional_str(body.get("field")), location=_optional_str(body.get("location")),
    )


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


# --------------------------------------------------------------------------- where to connect


@dataclass(frozen=True)
class ConnectionSettings:
    url: str
    token: str | None
    config_file: str


def resolve_connection(url: str | None, token: str | None, config_file: str | None) -> ConnectionSettings:
    """``url``/``token`` from the option or environment win over the config
    file, which wins over the default URL. ``config_file=None`` means the
    default file, which may be absent; a named file must exist."""
    path = Path(config_file or DEFAULT_CONFIG).expanduser()
    stored = read_config_file(path, required=config_file is not None)
    resolved = url or stored.get("url") or DEFAULT_URL
    if not resolved.startswith(("http://", "https://")):
        raise ConfigurationError(f"the server URL must start with http:// or https://, got {resolved!r}")
    return ConnectionSettings(url=resolved.rstrip("/"), token=token or stored.get("token") or None,
                              config_file=str(path))


def read_config_file(path: Path, required: bool) -> dict[str, str]:
    """provctl's YAML config: a mapping with ``url`` and ``token``."""
    if not path.exists():
        if required:
            raise ConfigurationError(f"config file {path} does not exist")
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"config file {path} must be a mapping with url and token")
    unknown = sorted(str(k) for k in data if k not in CONFIG_KEYS)
    if unknown:
        raise ConfigurationError(f"config file {path}: unknown key(s) {', '.join(unknown)} (known: token, url)")
    for key, value in data.items():
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"config file {path}: {key} must be text")
    return {k: v for k, v in data.items() if v}


# --------------------------------------------------------------------------- the client


class ApiClient:
    """The admin API at ``url``, authenticated with ``token``."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0,
                 config_file: str = DEFAULT_CONFIG) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.config_file = config_file
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"provctl/{__version__}"

    def close(self) -> None:
        self.session.close()

    # ----------------------------------------------------------------- transport

    def request(self, method: str, path: str, *, params: Params | None = None, json: Any = None,
                data: bytes | None = None, content_type: str | None = None) -> requests.Response:
        """One request to ``/api/v1<path>``; any failure raises a :class:`ClientError`."""
        if not self.token:
            raise MissingToken(self.config_file)
        headers = {"Authorization": f"Bearer {self.token}"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            response = self.session.request(method, f"{self.url}/api/v1{path}", params=params, json=json,
                                            data=data, headers=headers, timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            if method != "GET" and _was_sent(exc):
                raise AnswerLost(f"provisiond at {self.url} received the request ({method} /api/v1{path}) but its "
                                 f"answer was lost ({_reason(exc)}): it may or may not have been carried out") from None
            raise Unreachable(f"cannot reach provisiond at {self.url}: {_reason(exc)} "
                              "(is it running? set --url or PROVISIOND_URL)") from None
        except requests.RequestException as exc:
            raise ConfigurationError(f"cannot send a request to {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise api_error(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise BadResponse(f"{method} {path}: expected JSON, got {response.headers.get('Content-Type')!r} "
                              f"(is {self.url} a provisiond server?)") from None

    def text(self, path: str, params: Params | None = None) -> str:
        return self.request("GET", path, params=params).content.decode("utf-8")

    # ----------------------------------------------------------------- hosts

    def list_hosts(self, filters: Mapping[str, str | int | None]) -> dict[str, Any]:
        return dict(self.json("GET", "/hosts", params=filters))

    def get_host(self, serial: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/hosts/{_segment(serial)}"))

    def create_host(self, document: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.json("POST", "/hosts", json=document))

    def patch_host(self, serial: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.json("PATCH", f"/hosts/{_segment(serial)}", json=changes))

    def delete_host(self, serial: str, force: bool = False) -> None:
        self.request("DELETE", f"/hosts/{_segment(serial)}", params={"force": "true" if force else None})

    def kickstart(self, serial: str, variables: Iterable[str] = ()) -> str:
        return self.text(f"/hosts/{_segment(serial)}/kickstart", params=[("var", v) for v in variables])

    def variables(self, serial: str, variables: Iterable[str] = ()) -> dict[str, Any]:
        return dict(self.json("GET", f"/hosts/{_segment(serial)}/variables",
                              params=[("var", v) for v in variables]))

    def import_hosts(self, body: bytes, filename: str, fmt: str | None) -> dict[str, Any]:
        content_type = {"csv": "text/csv", "json": "application/json", "yaml": "application/yaml"}.get(
            fmt or "", "application/octet-stream")
        try:
            return dict(self.json("POST", "/import/hosts", params={"filename": filename, "format": fmt},
                                  data=body, content_type=content_type))
        except AnswerLost as lost:
            raise AnswerLost(
                f"{lost}. The import of {filename} may or may not have been committed. Imports are all or "
                f"nothing, so either every host in it was written or none was: check with `provctl hosts list` "
                f"(or `provctl hosts show SERIAL` for one of them), or run the same import again, which is safe "
                f"(hosts are added or updated by serial number)") from None

    def export_hosts(self, fmt: str) -> str:
        return self.text("/export/hosts", params={"format": fmt})

    # ----------------------------------------------------------------- groups

    def list_groups(self) -> dict[str, Any]:
        return dict(self.json("GET", "/groups"))

    def get_group(self, name: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/groups/{_segment(name)}"))

    def create_group(self, document: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.json("POST", "/groups", json=document))

    def patch_group(self, name: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.json("PATCH", f"/groups/{_segment(name)}", json=changes))

    def delete_group(self, name: str) -> None:
        self.request("DELETE", f"/groups/{_segment(name)}")

    # ----------------------------------------------------------------- profiles

    def list_profiles(self) -> dict[str, Any]:
        return dict(self.json("GET", "/profiles"))

    def check_profiles(self) -> dict[str, Any]:
        return dict(self.json("GET", "/checks/profiles"))

    def get_profile(self, name: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/profiles/{_segment(name)}"))

    # ----------------------------------------------------------------- the install lifecycle

    def arm(self, serial: str, force: bool = False, power: bool = False) -> dict[str, Any]:
        return dict(self.json("POST", f"/hosts/{_segment(serial)}/install", json={"force": force, "power": power}))

    def arm_many(self, serials: list[str], force: bool, power: bool, pace: float | None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"serials": serials, "force": force, "power": power}
        if pace is not None:
            body["pace_seconds"] = pace
        return list(self.json("POST", "/installs", json=body)["installs"])

    # ----------------------------------------------------------------- power

    def power(self, serial: str, action: str) -> dict[str, Any]:
        return dict(self.json("POST", f"/hosts/{_segment(serial)}/power", json={"action": action}))

    def bootdev(self, serial: str, device: str, persistent: bool) -> dict[str, Any]:
        return dict(self.json("POST", f"/hosts/{_segment(serial)}/bootdev",
                              json={"device": device, "persistent": persistent}))

    def power_operation(self, operation_id: int) -> dict[str, Any]:
        return dict(self.json("GET", f"/power/{operation_id}"))

    def cancel(self, serial: str) -> dict[str, Any]:
        return dict(self.json("POST", f"/hosts/{_segment(serial)}/cancel"))

    def get_install(self, serial: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/hosts/{_segment(serial)}/install"))

    def events(self, serial: str, after: str = "", limit: int = 1000) -> tuple[list[dict[str, Any]], str]:
        """The host's events after the cursor ``after``, oldest first (one
        page), and the cursor to read on from."""
        where = {"since": after} if after.isdigit() else {"after": after or None}  # an event id, or a cursor
        body = self.json("GET", f"/hosts/{_segment(serial)}/events", params={**where, "limit": limit})
        return list(body["events"]), str(body["cursor"])

    def all_events(self, serial: str, after: str = "", page: int = 1000) -> tuple[list[dict[str, Any]], str]:
        """Every event after the cursor ``after``, page by page, and the cursor."""
        result: list[dict[str, Any]] = []
        while True:
            batch, after = self.events(serial, after, page)
            result.extend(batch)
            if len(batch) < page:
                return result, after

    # ----------------------------------------------------------------- agents and jobs

    def agents(self, state: str | None = None) -> dict[str, Any]:
        return self.json("GET", "/agents", params={"state": state})

    def agent_decision(self, agent_id: int, decision: str, host: str | None = None) -> dict[str, Any]:
        body = {"host": host} if host else {}
        return self.json("POST", f"/agents/{agent_id}/{decision}", json=body)

    def delete_agent(self, agent_id: int) -> None:
        self.request("DELETE", f"/agents/{agent_id}")

    def submit_job(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.json("POST", "/jobs", json=body)

    def jobs(self, limit: int) -> dict[str, Any]:
        return self.json("GET", "/jobs", params={"limit": limit})

    def job(self, job_id: int, output: bool = False, state: str | None = None) -> dict[str, Any]:
        return self.json("GET", f"/jobs/{job_id}",
                         params={"output": "true" if output else None, "state": state})

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        return self.json("POST", f"/jobs/{job_id}/cancel")

    def rerun_job(self, job_id: int, failed: bool) -> dict[str, Any]:
        return self.json("POST", f"/jobs/{job_id}/rerun", json={"failed": failed})

    def facts(self, serial: str) -> dict[str, Any]:
        return self.json("GET", f"/hosts/{quote(serial, safe='')}/facts")

    def retry_handoff(self, serial: str) -> dict[str, Any]:
        return self.json("POST", f"/hosts/{quote(serial, safe='')}/handoff/retry")

    def files(self) -> dict[str, Any]:
        return self.json("GET", "/files")

    def put_file(self, name: str, content: bytes, replace: bool) -> dict[str, Any]:
        return self.json("PUT", f"/files/{quote(name, safe='')}",
                         params={"replace": "true" if replace else None}, data=content,
                         content_type="application/octet-stream")

    def remove_file(self, name: str) -> None:
        self.request("DELETE", f"/files/{quote(name, safe='')}")

    def audit(self, filters: Mapping[str, str | int | None]) -> dict[str, Any]:
        return dict(self.json("GET", "/audit", params=filters))

    def queue(self) -> dict[str, Any]:
        return dict(self.json("GET", "/queue"))

    def status(self) -> dict[str, Any]:
        return dict(self.json("GET", "/status"))


def _segment(value: str) -> str:
    return quote(value, safe="")


def _was_sent(exc: requests.RequestException) -> bool:
    """True when the request went out before the failure: a read timeout, or
    the connection broken while waiting for the answer (not a refused
    connection, a failed name lookup or a connect timeout)."""
    if isinstance(exc, requests.ReadTimeout):
        return True
    if isinstance(exc, requests.ConnectTimeout):
        return False
    text = str(exc)
    return "Connection aborted" in text or "RemoteDisconnected" in text or isinstance(
        exc, requests.exceptions.ChunkedEncodingError)


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if "RemoteDisconnected" in str(exc):
        return "the server closed the connection without answering"
    text = str(exc)
    for reason in ("Connection refused", "Name or service not known", "No route to host",
                   "Network is unreachable", "Connection reset"):
        if reason in text:
            return reason.lower()
    return "connection failed"


# --------------------------------------------------------------------------- click plumbing


@dataclass
class Connection:
    """The click context object: how to connect, resolved on first use."""

    url: str | None
    token: str | None
    config_file: str | None
    timeout: float
    _client: ApiClient | None = field(default=None, repr=False)

    def client(self) -> ApiClient:
        if self._client is None:
            settings = resolve_connection(self.url, self.token, self.config_file)
            self._client = ApiClient(settings.url, settings.token, self.timeout, settings.config_file)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def pass_api(command: Callable[Concatenate[ApiClient, P], R]) -> Callable[P, R]:
    """Call ``command`` with the :class:`ApiClient` as its first argument."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        connection = click.get_current_context().find_object(Connection)
        if connection is None:
            raise RuntimeError("provctl commands run under the provctl group")
        return command(connection.client(), *args, **kwargs)

    return wrapper
