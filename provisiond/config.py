"""Typed settings: defaults → YAML file → ``PROVISIOND_*`` environment.

One frozen :class:`Settings` object is built at start-up and handed to every
part of the server. A bad value stops start-up with a
:class:`~provisiond.errors.ConfigError` naming the key and where it came from.

Environment variables are the upper-cased key with a ``PROVISIOND_`` prefix
(``PROVISIOND_DATABASE_URL``, ``PROVISIOND_HTTP_PORT``...). The YAML file is
named by ``PROVISIOND_CONFIG`` or the ``--config`` option.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from provisiond.errors import ConfigError

#: What provisiond ships inside its package (profiles, kickstart fragments,
#: boot entry templates, the hooks' README): searched after the site's own.
SHIPPED = Path(__file__).resolve().parent / "shipped"
SHIPPED_PROFILES = SHIPPED / "profiles"
SHIPPED_FRAGMENTS = SHIPPED / "fragments"
SHIPPED_BOOT_TEMPLATES = SHIPPED / "boot_templates"
SHIPPED_HOOKS = SHIPPED / "hooks"

ENV_PREFIX = "PROVISIOND_"


@dataclass(frozen=True)
class Settings:
    """Everything provisiond can be told. Paths are absolute once loaded."""

    #: Where the embedded SQLite database, the secret key, the TFTP root and
    #: the hooks live. Default: ``$STATE_DIRECTORY`` under systemd
    #: (``StateDirectory=provisiond``), else ``/var/lib/provisiond`` as root,
    #: else ``$XDG_STATE_HOME/provisiond`` (``~/.local/state/provisiond``).
    data_dir: Path = Path("/var/lib/provisiond")
    #: SQLAlchemy URL; empty means SQLite in ``data_dir``. ``postgresql://``
    #: URLs are driven by psycopg 3.
    database_url: str = ""
    #: Site directories of install profiles, searched in order before the
    #: shipped profiles (always last): a site's ``web.yaml`` may ``extends:
    #: default`` without copying the shipped one, and a site's own
    #: ``default.yaml`` shadows (and may extend) the shipped ``default``. A
    #: list in YAML, ``DIR1:DIR2`` in the environment.
    profiles_dir: tuple[Path, ...] = ()
    #: Site directories of kickstart fragments, searched the same way.
    fragments_dir: tuple[Path, ...] = ()
    #: The TFTP (and ``/boot/``) root: the boot loaders ``provisiond
    #: bootloaders install`` copies. Default: ``data_dir/tftp``.
    pxelinux_dir: Path = Path("/var/lib/provisiond/tftp")
    #: Executables run on lifecycle events, in ``on-<event>.d/`` folders
    #: (made on start if missing). Default: ``data_dir/hooks``.
    hooks_dir: Path = Path("/var/lib/provisiond/hooks")
    #: Templates of the per-MAC boot entries (pxelinux, GRUB, iPXE).
    #: Default: the shipped ones.
    boot_templates_dir: Path = SHIPPED_BOOT_TEMPLATES
    #: Fernet key that encrypts BMC secrets; created (mode 0600) on first
    #: start. Default: ``data_dir/secret.key``.
    secret_key_file: Path = Path("/var/lib/provisiond/secret.key")
    #: Address of the HTTP listener (admin API, console, installer callbacks).
    http_host: str = "127.0.0.1"
    #: Port of the HTTP listener.
    http_port: int = 8080
    #: gunicorn worker processes of `provisiond serve`.
    http_workers: int = 2
    #: A gunicorn.conf.py whose settings apply over provisiond's own (not the listeners).
    gunicorn_config: str = ""
    #: Addresses (or CIDR networks) of reverse proxies whose X-Forwarded-For
    #: and X-Forwarded-Proto are believed; from anyone else they are ignored.
    trusted_proxies: list[str] = field(default_factory=list)
    #: ``ADDRESS:PORT`` where `provisiond worker` answers /healthz and /readyz (empty: nowhere).
    worker_health_listen: str = ""
    #: ``ADDRESS:PORT`` where `provisiond netboot` answers /healthz and /readyz (empty: nowhere).
    netboot_health_listen: str = ""
    #: ``ADDRESS:PORT`` on the provisioning network: the boot endpoints (iPXE
    #: scripts, kernels, installer callbacks) are served there, and only
    #: there, apart from the admin API on http_host:http_port. Empty: one
    #: listener serves both.
    boot_listen: str = ""
    #: The URL installers use to reach this server (rendered into kickstarts,
    #: boot entries and DHCP answers). Empty: derived from http_host and
    #: http_port (netboot_address when http_host listens on every address),
    #: so a port given on the command line reaches every URL handed out.
    public_url: str = ""
    #: DEBUG, INFO, WARNING, ERROR or CRITICAL.
    log_level: str = "INFO"
    #: Largest request body accepted, in bytes (bulk imports are the big ones).
    max_body_bytes: int = 64 * 1024 * 1024
    #: Global template variables: the lowest layer of the kickstart variables.
    variables: dict[str, Any] = field(default_factory=dict)

    # -- the install lifecycle --------------------------------------------
    #: At most this many hosts INSTALLING at once (seed 004 runs 55).
    install_cap: int = 55
    #: What a waiting installer is told to wait before asking again.
    slot_retry_seconds: int = 30
    #: A waiting installer silent for this long loses its place in the queue.
    queue_stale_seconds: int = 300
    #: From arming to the slot request: after this the token dies and the
    #: reaper fails the install (timeout).
    arm_ttl_seconds: int = 6 * 3600
    #: From the slot grant to `done`: the slot's deadline.
    install_timeout_seconds: int = 2 * 3600
    #: Installer request bodies larger than this get 413.
    max_report_bytes: int = 256 * 1024
    #: A hook running longer than this is killed (and says so in the timeline).
    hook_timeout_seconds: int = 60
    #: A hook that fails (exit status, timeout) is run again, backing off, up
    #: to this many times in all.
    hook_attempts: int = 3
    #: How often the reaper in `provisiond worker` looks for expired installs.
    reaper_interval_seconds: int = 30
    #: Timeline events older than this many days are deleted (0: kept for ever).
    event_retention_days: int = 365

    # -- netboot (`provisiond netboot`) ---------------------------------------
    #: full: addresses + boot info; proxy: boot info only, beside another DHCP
    #: server; relay: full, answering only requests relayed through giaddr;
    #: off: no DHCP (TFTP only).
    dhcp_mode: str = "off"
    #: Interface the DHCP and TFTP services listen on (empty: all).
    netboot_interface: str = ""
    #: This server's address on the boot network: next-server, DHCP server id, TFTP.
    netboot_address: str = ""
    #: UDP port the DHCP service listens on.
    dhcp_port: int = 67
    #: UDP port the TFTP service listens on.
    tftp_port: int = 69
    #: Subnets served in full/relay mode: a list of mappings with keys
    #: network (CIDR), router, dns (list), pool (``start-end``, optional),
    #: lease_seconds (optional).
    dhcp_subnets: list[dict[str, Any]] = field(default_factory=list)
    #: What an unknown MAC gets: ignore (no answer) or local (boot from disk).
    unknown_mac: str = "ignore"
    #: Boot files by client architecture; iPXE clients get an HTTP script instead.
    bios_boot_file: str = "lpxelinux.0"
    #: Boot file for UEFI clients that are not yet running iPXE.
    uefi_boot_file: str = "ipxe.efi"
    #: TFTP transfers served at once; more are refused (the client retries).
    tftp_max_transfers: int = 256
    #: Seconds TFTP waits for an acknowledgement before sending a block again.
    tftp_timeout_seconds: int = 5

    # -- power (the BMC worker in `provisiond worker`) ------------------------
    #: BMCs worked on at once (threads; most of their time is spent waiting on BMCs).
    power_workers: int = 64
    #: How often the worker looks for queued operations (milliseconds; one
    #: indexed ``SELECT ... LIMIT 1`` per look).
    power_poll_ms: int = 50
    #: Milliseconds between the end of one command to a BMC and the next (0: none).
    bmc_min_gap_ms: int = 200
    #: Seconds all attempts of one operation may take (retries back off
    #: exponentially; one IPMI attempt's own timeouts are pyghmi's: a dead BMC
    #: fails its login in about 5 s).
    bmc_budget_seconds: int = 30
    #: Batch installs start one machine every this many milliseconds.
    power_pace_ms: int = 500
    #: Where the fake BMC driver keeps its hosts' state (empty: data_dir/fake-bmc).
    fake_bmc_dir: str = ""
    #: Wake-on-LAN: send raw frames on this interface (empty: UDP to wol_broadcast).
    wol_interface: str = ""
    #: Wake-on-LAN: the broadcast address of UDP magic packets.
    wol_broadcast: str = "255.255.255.255"
    #: Wake-on-LAN: the UDP port of magic packets.
    wol_port: int = 9

    # -- agents and jobs (the agent gateway, `provisiond gateway`) -----------
    #: ``ADDRESS:PORT`` of the agent gateway: HTTPS for ``provisiond-agent``
    #: (enrollment, long-polls, results). Empty: no gateway.
    agent_listen: str = "0.0.0.0:8443"
    #: The URL agents reach the gateway at (rendered into the ``post-agent``
    #: fragment). Empty: ``https://`` + the public URL's host + agent_listen's port.
    agent_public_url: str = ""
    #: Host names and addresses the gateway's certificate is made for (besides
    #: this machine's name, localhost, 127.0.0.1, ::1 and netboot_address).
    agent_server_names: list[str] = field(default_factory=list)
    #: The operator's own certificate for the gateway (PEM); empty: provisiond
    #: makes its own CA and certificate in ``data_dir/tls`` on first start.
    agent_tls_cert: str = ""
    #: The key of agent_tls_cert (PEM).
    agent_tls_key: str = ""
    #: The CA certificate that signed agent_tls_cert (PEM): what agents pin.
    agent_tls_ca: str = ""
    #: gevent workers of the agent gateway (each parks thousands of long-polls).
    agent_gateway_workers: int = 1
    #: An install's enrollment ticket is good for this long after `done`.
    enrollment_window_seconds: int = 3600
    #: A job's hosts that have not run it this long after it was made did not
    #: run it (their agents were offline).
    job_deadline_seconds: int = 3600
    #: A job's script runs at most this long on a host unless the job says otherwise.
    job_timeout_seconds: int = 600
    #: Output kept per host and job; longer output is cut and marked truncated.
    job_output_limit_bytes: int = 64 * 1024
    #: Agents refresh their facts this often (seconds; 0: only on request).
    facts_interval_seconds: int = 3600

    @property
    def run_dir(self) -> Path:
        """Sockets of this machine's processes (the workers' doorbells)."""
        return self.data_dir / "run"

    @property
    def profile_dirs(self) -> tuple[Path, ...]:
        """Where profiles are looked up: the site directories, then the shipped one."""
        return _search_path(self.profiles_dir, SHIPPED_PROFILES)

    @property
    def fragment_dirs(self) -> tuple[Path, ...]:
        """Where fragments are looked up: the site directories, then the shipped one."""
        return _search_path(self.fragments_dir, SHIPPED_FRAGMENTS)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'provisiond.db'}"


def _search_path(site: tuple[Path, ...], shipped: Path) -> tuple[Path, ...]:
    return tuple(dict.fromkeys((*site, shipped)))


_PATH_KEYS = {name for name, kind in get_type_hints(Settings).items() if kind is Path}
_PATH_LIST_KEYS = {name for name, kind in get_type_hints(Settings).items() if kind == tuple[Path, ...]}
_CHOICES = {"dhcp_mode": {"full", "proxy", "relay", "off"}, "unknown_mac": {"ignore", "local"}}
_POSITIVE_INT_KEYS = {
    "dhcp_port", "tftp_port", "tftp_max_transfers", "tftp_timeout_seconds",
    "http_workers", "install_cap", "slot_retry_seconds", "queue_stale_seconds", "arm_ttl_seconds",
    "install_timeout_seconds", "max_report_bytes", "hook_timeout_seconds", "hook_attempts", "reaper_interval_seconds",
    "power_workers", "power_poll_ms", "bmc_budget_seconds", "wol_port",
    "agent_gateway_workers", "enrollment_window_seconds", "job_deadline_seconds", "job_timeout_seconds",
    "job_output_limit_bytes",
}
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings from the three layers (plus explicit ``overrides``)."""
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG") or None
    raw: dict[str, tuple[Any, str]] = {}
    if config_file:
        for key, value in _read_yaml(Path(config_file)).items():
            raw[key] = (value, f"{config_file}")
    for key in _field_types():
        env_key = ENV_PREFIX + key.upper()
        if env_key in environ:
            raw[key] = (environ[env_key], f"environment variable {env_key}")
    for key, value in (overrides or {}).items():
        raw[key] = (value, "override")
    values = {key: _coerce(key, value, source) for key, (value, source) in raw.items()}
    if "data_dir" not in values:
        values["data_dir"] = default_data_dir(environ)
    settings = Settings(**values)
    return _finish(settings, set(values))


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """An absolute place for state, wherever provisiond is started from:
    systemd's ``StateDirectory=``, else the system's ``/var/lib/provisiond``
    as root, else the user's XDG state directory."""
    if environ.get("STATE_DIRECTORY"):
        return Path(environ["STATE_DIRECTORY"].split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/provisiond")
    state = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".local" / "state")
    return Path(state) / "provisiond"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    known = _field_types()
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown setting {key!r} in {path} (known: {', '.join(sorted(known))})")
    return data


def _field_types() -> dict[str, Any]:
    return get_type_hints(Settings)


def _coerce(key: str, value: Any, source: str) -> Any:
    kind = _field_types()[key]
    where = f"setting {key!r} from {source}"
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        positive = key in _POSITIVE_INT_KEYS
        if number < 0 or (key == "http_port" and not 0 < number < 65536) or (positive and number < 1):
            raise ConfigError(f"{where}: {number} is out of range")
        return number
    if kind is Path:
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value).expanduser()
    if kind == tuple[Path, ...]:
        items = [part for part in value.split(os.pathsep) if part] if isinstance(value, str) else value
        if isinstance(items, os.PathLike):
            items = [items]
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, (str, os.PathLike)) and str(i)
                                                          for i in items):
            raise ConfigError(f"{where}: expected a directory or a list of directories, got {value!r}")
        return tuple(Path(item).expanduser() for item in items)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(sorted(_CHOICES[key]))}")
        if key in ("netboot_address", "wol_broadcast") and value:
            import ipaddress

            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                raise ConfigError(f"{where}: {value!r} is not an IPv4 address") from None
        if key == "log_level" and value.upper() not in _LOG_LEVELS:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(sorted(_LOG_LEVELS))}")
        if key == "agent_public_url" and value and not value.startswith("https://"):
            raise ConfigError(f"{where}: {value!r} must start with https:// (agents speak HTTPS only)")
        if key == "public_url" and value and not value.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: {value!r} must start with http:// or https://")
        if key in ("boot_listen", "worker_health_listen", "netboot_health_listen", "agent_listen") and value:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"{where}: {value!r} is not ADDRESS:PORT (e.g. 10.0.0.1:8080)")
        if key == "database_url" and value and "://" not in value:
            raise ConfigError(f"{where}: {value!r} is not a database URL (e.g. postgresql://user@host/db)")
        return value.upper() if key == "log_level" else value
    if key == "dhcp_subnets":
        value = _yaml_value(value, where)
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise ConfigError(f"{where}: expected a list of subnet mappings (network, router, dns, pool)")
        return [dict(item) for item in value]
    if key == "agent_server_names":
        value = _yaml_value(value, where) if not (isinstance(value, str) and "," in value) else value.split(",")
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
            raise ConfigError(f"{where}: expected a list of host names or addresses")
        return [item.strip() for item in value]
    if key == "trusted_proxies":
        value = _yaml_value(value, where) if not (isinstance(value, str) and "," in value) else value.split(",")
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of addresses or networks")
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(str(item).strip(), strict=False)
            except ValueError:
                raise ConfigError(f"{where}: {item!r} is not an address or a network (10.0.0.0/8)") from None
        return [str(item).strip() for item in value]
    if key == "variables":
        value = _yaml_value(value, where)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where}: expected a mapping of variable names to values")
        return dict(value)
    raise ConfigError(f"{where}: unsupported setting type")  # pragma: no cover


def _yaml_value(value: Any, where: str) -> Any:
    """A structured setting given as text (an environment variable) is YAML."""
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from exc


#: http_host values that mean "every address": no use in a URL.
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})


#: Paths that live in ``data_dir`` unless set on their own.
_FOLLOW_DATA_DIR = {"secret_key_file": "secret.key", "pxelinux_dir": "tftp", "hooks_dir": "hooks"}


def _finish(settings: Settings, given: set[str]) -> Settings:
    """Make paths absolute; the key file, TFTP root and hooks follow ``data_dir`` unless set;
    ``public_url`` follows the HTTP listener unless set."""
    changes: dict[str, Any] = {}
    for key in _PATH_KEYS:
        changes[key] = getattr(settings, key).resolve()
    for key in _PATH_LIST_KEYS:
        changes[key] = tuple(path.resolve() for path in getattr(settings, key))
    for key, name in _FOLLOW_DATA_DIR.items():
        if key not in given:
            changes[key] = changes["data_dir"] / name
    if not settings.public_url:
        changes["public_url"] = derived_public_url(settings)
    if not settings.agent_public_url and settings.agent_listen:
        changes["agent_public_url"] = derived_agent_url(changes.get("public_url") or settings.public_url,
                                                        settings.agent_listen)
    return dataclasses.replace(settings, **changes)


def derived_agent_url(public_url: str, agent_listen: str) -> str:
    """Where agents reach the gateway: the public URL's host, the gateway's port."""
    from urllib.parse import urlsplit

    host = urlsplit(public_url).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{agent_listen.rpartition(':')[2]}"


def derived_public_url(settings: Settings) -> str:
    """Where installers reach provisiond: the boot listener when there is
    one, else ``http://<http_host>:<http_port>``; a wildcard address is
    named by the netboot address (else 127.0.0.1)."""
    host, port = settings.http_host, settings.http_port
    if settings.boot_listen:
        address, _, listen_port = settings.boot_listen.rpartition(":")
        host, port = address.strip("[]"), int(listen_port)
    if host in _WILDCARDS:
        host = settings.netboot_address or "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"
