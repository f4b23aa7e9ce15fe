"""The agent's configuration: one JSON file, written by the install's
``%post`` (from provisiond's ``/install/.../agent`` answer) and read at
every start.

Keys: ``server_url`` (``https://host:port``, required), ``ca_file`` (the
pinned CA, PEM, required), ``ca_fingerprint`` (SHA-256 of the CA
certificate's DER, hex; optional: when given, the agent refuses to start
on a CA file that does not match it), ``ticket`` (the one-time enrollment
ticket; removed from the file once the agent has enrolled), ``state_dir``,
``poll_wait`` and ``log_level``. Unknown keys are ignored, so an older
agent starts with a newer server's file.

Standard library only; runs on Python 3.9.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import ssl
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional
from urllib.parse import urlsplit

from provisiond.agent import protocol
from provisiond.agent.atomic import write_atomic

log = logging.getLogger(__name__)

DEFAULT_PATH = "/etc/provisiond-agent/agent.json"
ENV_VAR = "PROVISIOND_AGENT_CONFIG"
DEFAULT_STATE_DIR = "/var/lib/provisiond-agent"
DEFAULT_POLL_WAIT = 25
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
KNOWN_KEYS = ("server_url", "ca_file", "ca_fingerprint", "ticket", "state_dir", "poll_wait", "log_level")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
#: A configuration file is a few hundred bytes; anything huge is not one.
_MAX_SIZE = 64 * 1024


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and why."""


class AgentConfig(NamedTuple):
    """A checked configuration. ``path`` is where it came from (the ticket
    is removed from that file after enrollment)."""

    path: Path
    server_url: str
    ca_file: Path
    ca_fingerprint: Optional[str] = None
    ticket: Optional[str] = None
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    poll_wait: int = DEFAULT_POLL_WAIT
    log_level: str = "INFO"

    def __repr__(self) -> str:
        # The ticket is a secret: never in a log line or a traceback.
        return (f"AgentConfig(path={str(self.path)!r}, server_url={self.server_url!r}, "
                f"ca_file={str(self.ca_file)!r}, ca_fingerprint={self.ca_fingerprint!r}, "
                f"ticket={'<set>' if self.ticket else None}, state_dir={str(self.state_dir)!r}, "
                f"poll_wait={self.poll_wait!r}, log_level={self.log_level!r})")


def config_path(argument: Optional[str], environ: Optional[Mapping[str, str]] = None) -> Path:
    """``--config``, else ``$PROVISIOND_AGENT_CONFIG``, else the default."""
    environ = os.environ if environ is None else environ
    return Path(argument or environ.get(ENV_VAR) or DEFAULT_PATH)


def load(path: Path) -> AgentConfig:
    """Read and check the configuration file at ``path``."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_SIZE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration {path}: {exc.strerror or exc}") from None
    if len(raw) > _MAX_SIZE:
        raise ConfigError(f"the configuration {path} is larger than {_MAX_SIZE} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"the configuration {path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"the configuration {path} must be a JSON object")
    return parse(data, path)


def parse(data: Mapping[str, Any], path: Path) -> AgentConfig:
    """Check every key of a configuration (see the module's docstring)."""
    unknown = sorted(set(data) - set(KNOWN_KEYS))
    if unknown:
        log.warning("configuration %s: ignoring unknown key(s) %s", path, ", ".join(unknown))
    return AgentConfig(
        path=path,
        server_url=_server_url(data.get("server_url")),
        ca_file=_absolute(data.get("ca_file"), "ca_file"),
        ca_fingerprint=_fingerprint(data.get("ca_fingerprint")),
        ticket=_ticket(data.get("ticket")),
        state_dir=_absolute(_given(data, "state_dir", DEFAULT_STATE_DIR), "state_dir"),
        poll_wait=_poll_wait(_given(data, "poll_wait", DEFAULT_POLL_WAIT)),
        log_level=_log_level(_given(data, "log_level", "INFO")),
    )


def _given(data: Mapping[str, Any], key: str, default: Any) -> Any:
    """A key's value, or its default when it is missing or null."""
    value = data.get(key)
    return default if value is None else value


def _server_url(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError("server_url is required: the provisiond agent gateway, https://host:port")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as exc:
        raise ConfigError(f"server_url {value!r} is not a URL: {exc}") from None
    if parts.scheme != "https":
        raise ConfigError(f"server_url {value!r} must be https:// (the credential never travels in clear)")
    if not parts.hostname:
        raise ConfigError(f"server_url {value!r} has no host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(f"server_url {value!r} must be https://host:port, without user, query or fragment")
    return value.rstrip("/")


def _absolute(value: Any, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} is required: an absolute path")
    if not value.startswith("/") or "\x00" in value:
        raise ConfigError(f"{key} {value!r} must be an absolute path")
    return Path(value)


def normalise_fingerprint(value: str) -> str:
    """``AB:CD:...``, ``sha256:abcd...`` or plain hex, as lower-case hex."""
    text = value.strip().lower()
    if text.startswith("sha256:") or text.startswith("sha256/"):
        text = text[len("sha256:"):]
    return text.replace(":", "").replace(" ", "")


def _fingerprint(value: Any) -> Optional[str]:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _HEX64.fullmatch(normalise_fingerprint(value)):
        raise ConfigError(f"ca_fingerprint {value!r} is not a SHA-256 in hex (64 hex digits)")
    return normalise_fingerprint(value)


def _ticket(value: Any) -> Optional[str]:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 512 or not value.isprintable():
        raise ConfigError("ticket must be text (the one-time enrollment ticket from the install)")
    return value


def _poll_wait(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= protocol.POLL_MAX_WAIT:
        raise ConfigError(f"poll_wait {value!r} must be whole seconds from 0 to {protocol.POLL_MAX_WAIT}")
    return value


def _log_level(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise ConfigError(f"log_level {value!r} must be one of {', '.join(LOG_LEVELS)}")
    return value.upper()


# ---------------------------------------------------------------- the pinned CA


def ca_certificates(ca_file: Path) -> list[bytes]:
    """The DER of each certificate in the PEM file ``ca_file``."""
    try:
        text = ca_file.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ConfigError(f"ca_file {ca_file}: cannot read it: {exc.strerror or exc}") from None
    blocks = _PEM_CERT.findall(text)
    if not blocks:
        raise ConfigError(f"ca_file {ca_file} holds no PEM certificate")
    try:
        return [ssl.PEM_cert_to_DER_cert(block) for block in blocks]
    except ValueError as exc:
        raise ConfigError(f"ca_file {ca_file} holds a broken certificate: {exc}") from None


def check_ca(config: AgentConfig) -> None:
    """Refuse a CA file that is not the one the configuration pins: with a
    fingerprint, the file must hold exactly that one certificate (a second
    one would be trusted too, and the pin would mean nothing)."""
    certificates = ca_certificates(config.ca_file)
    if config.ca_fingerprint is None:
        return
    if len(certificates) != 1:
        raise ConfigError(f"ca_file {config.ca_file} holds {len(certificates)} certificates; ca_fingerprint "
                          "pins exactly one")
    actual = hashlib.sha256(certificates[0]).hexdigest()
    if actual != config.ca_fingerprint:
        raise ConfigError(f"ca_file {config.ca_file} has the SHA-256 fingerprint {actual}, not the "
                          f"ca_fingerprint {config.ca_fingerprint} of the configuration: refusing to trust it")


# ---------------------------------------------------------------- after enrollment


def drop_ticket(path: Path) -> None:
    """Remove ``ticket`` from the configuration file (it is single-use and a
    secret): the file is rewritten atomically, with its mode kept, and the
    other keys as they were."""
    try:
        raw = path.read_bytes()
        data = json.loads(raw.decode("utf-8"))
        mode = os.stat(path).st_mode & 0o7777
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot rewrite the configuration {path}: {exc}") from None
    if not isinstance(data, dict) or "ticket" not in data:
        return
    del data["ticket"]
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_atomic(path, text.encode("utf-8"), mode=mode & 0o777)
