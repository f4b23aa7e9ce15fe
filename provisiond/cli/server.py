"""``provisiond``: run and administer the server on its own machine.

    provisiond run              migrate the database, then serve, worker (and netboot): one machine
    provisiond serve            HTTP only (admin API, installer and boot endpoints)
    provisiond worker           power operations, the reaper, hooks
    provisiond netboot          DHCP and TFTP for one segment
    provisiond demo             sample profiles + hosts, an admin token, then serve
    provisiond db upgrade       apply schema migrations
    provisiond tokens create N  print a new admin API token (stored hashed)
    provisiond users create N   a console user with a role and a password
    provisiond bootloaders install  copy pxelinux/iPXE from Debian's packages into pxelinux_dir
    provisiond settings sample  a configuration file listing every setting
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from provisiond import __version__
from provisiond.config import Settings, load_settings
from provisiond.errors import ProvisiondError

DEMO_HOSTS = Path(__file__).resolve().parent.parent / "demo" / "hosts.yaml"
PROVCTL_CONFIG = Path("~/.config/provisiond/provctl.yaml").expanduser()
#: Read when neither --config nor PROVISIOND_CONFIG names a file and it exists.
SYSTEM_CONFIG = Path("/etc/provisiond/provisiond.yaml")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="provisiond")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="PROVISIOND_CONFIG",
              help="YAML settings file (default: PROVISIOND_CONFIG, else /etc/provisiond/provisiond.yaml "
                   "if it exists).")
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """provisiond: bare-metal provisioning server."""
    if config_file is None and SYSTEM_CONFIG.is_file():
        config_file = str(SYSTEM_CONFIG)  # where the packaged services read theirs
    ctx.meta["provisiond.config_file"] = config_file
    try:
        ctx.obj = load_settings(config_file)
    except ProvisiondError as exc:
        raise click.ClickException(str(exc)) from None
    logging.basicConfig(level=ctx.obj.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _listening(settings: Settings, http_host: str | None, http_port: int | None) -> Settings:
    """The settings with the listener given on the command line: loaded
    again with it, so everything derived from it (public_url, unless set
    explicitly) follows."""
    overrides = {key: value for key, value in (("http_host", http_host), ("http_port", http_port))
                 if value is not None}
    if not overrides:
        return settings
    try:
        return load_settings(click.get_current_context().meta.get("provisiond.config_file"), overrides=overrides)
    except ProvisiondError as exc:
        raise click.ClickException(str(exc)) from None


def _count_metrics(settings: Settings) -> None:
    """Before anything imports prometheus_client: this machine's metrics
    directory (multiprocess mode), emptied when no other provisiond process
    uses it, and named to this process and its children
    (:mod:`provisiond.metric_files`)."""
    from provisiond.metric_files import prepare

    prepare(settings.run_dir)


def _services(settings: Settings) -> Any:
    from provisiond.services import Services

    return Services.build(settings)


@main.group("settings")
def settings_group() -> None:
    """Every setting, with its default and meaning."""


@settings_group.command("sample")
def settings_sample() -> None:
    """Print a configuration file listing every setting (packaging/provisiond.yaml)."""
    from provisiond.settings_doc import sample_yaml

    click.echo(sample_yaml(), nl=False)


@settings_group.command("table")
def settings_table() -> None:
    """Print the README's settings table (Markdown)."""
    from provisiond.settings_doc import markdown_table

    click.echo(markdown_table(), nl=False)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(settings: Settings) -> None:
    """Apply all schema migrations."""
    from provisiond.db import upgrade

    upgrade(settings.effective_database_url)
    click.echo(f"database is at the newest schema: {_safe_url(settings)}")


def _local_admin() -> Any:
    """Who runs ``provisiond`` on the server itself: its (Unix) user, an admin."""
    import getpass

    from provisiond.actions.principal import Principal, Role

    return Principal("cli", getpass.getuser(), Role.ADMIN)


@main.group()
def tokens() -> None:
    """API credentials: named, with a role (admin, operator, viewer) and an optional expiry."""


@tokens.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "operator", "viewer"]), default="admin", show_default=True,
              help="admin: everything; operator: hosts, installs, power; viewer: read only.")
@click.option("--expires", metavar="DURATION", help="Refused after this long: 12h, 30d, 2w (default: never).")
@click.pass_obj
def tokens_create(settings: Settings, name: str, role: str, expires: str | None) -> None:
    """Create the token NAME and print it (it is shown only once)."""
    from provisiond.actions import tokens as token_actions

    created = token_actions.create(_ready(settings), _local_admin(), name, role, expires)
    click.echo(created.token)


@tokens.command("list")
@click.pass_obj
def tokens_list(settings: Settings) -> None:
    """List tokens: NAME ROLE STATE CREATED EXPIRES (never the token itself)."""
    from provisiond.actions import tokens as token_actions

    for token in token_actions.listing(_ready(settings), _local_admin()):
        click.echo("\t".join([token["name"], token["role"], token["state"], token["created_at"][:16],
                              (token["expires_at"] or "never")[:16]]))


@tokens.command("revoke")
@click.argument("name")
@click.pass_obj
def tokens_revoke(settings: Settings, name: str) -> None:
    """Revoke the token NAME (refused by every instance within 5 s)."""
    from provisiond.actions import tokens as token_actions

    token_actions.revoke(_ready(settings), _local_admin(), name)
    click.echo(f"revoked {name}")


@main.group()
def users() -> None:
    """Console users: named, with a role (admin, operator, viewer) and a password."""


@users.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "operator", "viewer"]), required=True,
              help="admin: everything; operator: hosts, installs, power; viewer: read only.")
@click.option("--password-file", type=click.File("r"), help="Read the password from the first line of this "
                                                            "file ('-': standard input) instead of a prompt.")
@click.pass_obj
def users_create(settings: Settings, name: str, role: str, password_file: Any) -> None:
    """Create the console user NAME (the password is asked for twice, unless
    --password-file gives it; it is stored as an Argon2 hash)."""
    from provisiond.actions import users as user_actions

    if password_file is not None:
        password = password_file.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    user_actions.create(_ready(settings), _local_admin(), name, role, password)
    click.echo(f"created user {name} ({role})")


@users.command("list")
@click.pass_obj
def users_list(settings: Settings) -> None:
    """List users: NAME ROLE STATE CREATED."""
    from provisiond.actions import users as user_actions

    for user in user_actions.listing(_ready(settings), _local_admin()):
        click.echo("\t".join([user["name"], user["role"], user["state"], user["created_at"][:16]]))


@users.command("disable")
@click.argument("name")
@click.pass_obj
def users_disable(settings: Settings, name: str) -> None:
    """Disable the user NAME: refused from now on, open sessions ended."""
    from provisiond.actions import users as user_actions

    user_actions.disable(_ready(settings), _local_admin(), name)
    click.echo(f"disabled {name}")


@main.command()
@click.pass_obj
def reap(settings: Settings) -> None:
    """Fail installs past their deadline (one pass; `worker` does this every
    reaper_interval_seconds)."""
    from provisiond.install.reaper import reap_once

    reaped = reap_once(_ready(settings))
    click.echo(f"reaped {len(reaped)} install(s){': ' + ', '.join(reaped) if reaped else ''}")


@main.group()
def secrets() -> None:
    """BMC secret encryption key."""


@secrets.command("rotate")
@click.pass_obj
def secrets_rotate(settings: Settings) -> None:
    """Re-encrypt every BMC secret with the current key.

    To rotate: move secret.key to secret.key.old, run this command (a new
    key is created; the old one still decrypts), then delete secret.key.old.
    """
    from sqlalchemy import select

    from provisiond import models

    from provisiond.startup import record_rotation

    svc = _ready(settings, rotating=True)
    with svc.db.write() as session:
        hosts = session.scalars(select(models.Host).where(models.Host.bmc_secret.is_not(None))).all()
        for host in hosts:
            host.bmc_secret = svc.vault.rotate(host.bmc_secret)
        installs = session.scalars(select(models.Install).where(models.Install.active.is_(True))).all()
        for install in installs:
            install.token_sealed = svc.vault.rotate(install.token_sealed)
    record_rotation(svc)
    click.echo(f"re-encrypted {len(hosts)} BMC secret(s) and {len(installs)} install token(s) with "
               f"{settings.secret_key_file}; restart every instance with this key file")


@main.group()
def bootloaders() -> None:
    """Boot loader binaries in the TFTP root (pxelinux_dir)."""


@bootloaders.command("install")
@click.option("--from", "system_root", type=click.Path(file_okay=False, exists=True, path_type=Path), default="/",
              show_default=True, help="Filesystem root the Debian packages are installed under.")
@click.pass_obj
def bootloaders_install(settings: Settings, system_root: Path) -> None:
    """Copy pxelinux, its modules and iPXE from Debian's packages (pxelinux,
    syslinux-common, ipxe) into pxelinux_dir. Nothing is copied unless every
    required file is there."""
    from provisiond.netboot.bootloaders import Outcome, install

    copied = install(settings.pxelinux_dir, system_root=system_root)
    for item in copied:
        if item.outcome != Outcome.UNCHANGED:
            click.echo(f"{item.outcome}\t{item.name}\t(from {item.source}, package {item.package})")
    changed = sum(item.outcome != Outcome.UNCHANGED for item in copied)
    click.echo(f"{changed} of {len(copied)} boot loader file(s) written to {settings.pxelinux_dir}")


@bootloaders.command("status")
@click.pass_obj
def bootloaders_status(settings: Settings) -> None:
    """Show which required boot loader files pxelinux_dir holds."""
    from provisiond.netboot.bootloaders import status

    missing = 0
    for source, name, present in status(settings.pxelinux_dir):
        missing += not present
        click.echo(f"{'ok' if present else 'MISSING'}\t{name}\t(package {source.package})")
    if missing:
        raise click.ClickException(f"{missing} file(s) missing from {settings.pxelinux_dir}: "
                                   "run `provisiond bootloaders install`")


def _listen_options(command: Any) -> Any:
    for option in reversed([
        click.option("--host", "http_host", help="Address to listen on (default: setting http_host)."),
        click.option("--port", "http_port", type=int, help="Port to listen on (default: setting http_port)."),
        click.option("--workers", type=click.IntRange(1, 256), help="HTTP worker processes (default: setting "
                                                                       "http_workers)."),
    ]):
        command = option(command)
    return command


@main.command()
@_listen_options
@click.pass_obj
def serve(settings: Settings, http_host: str | None, http_port: int | None, workers: int | None) -> None:
    """Serve HTTP (admin API, installer and boot endpoints): gunicorn and
    nothing else. Refuses a database whose schema is not current. Power
    operations, the reaper and hooks run in `provisiond worker`, DHCP/TFTP
    in `provisiond netboot`; `provisiond run` runs all of them."""
    _count_metrics(settings)
    from provisiond.web.server import run as run_http

    settings = _listening(settings, http_host, http_port)
    _ready(settings)
    run_http(settings, settings.http_host, settings.http_port, workers or settings.http_workers)


@main.command()
@click.pass_obj
def worker(settings: Settings) -> None:
    """Run the background work until SIGTERM: power operations, the reaper
    (and event pruning), hooks. Any number may run against one database.
    /healthz, /readyz and /metrics at worker_health_listen (if set)."""
    _count_metrics(settings)
    from provisiond.worker.process import run_until_signalled

    run_until_signalled(_ready(settings))


@main.command()
@click.option("--workers", type=click.IntRange(1, 64), help="gevent worker processes (default: setting "
                                                            "agent_gateway_workers).")
@click.pass_obj
def gateway(settings: Settings, workers: int | None) -> None:
    """Serve the agent endpoints over HTTPS at agent_listen (gunicorn with
    gevent workers: parked long-polls are cheap). Makes provisiond's own CA
    and certificate in data_dir/tls on first start unless agent_tls_* are
    set. Refuses a database whose schema is not current."""
    if not settings.agent_listen:
        raise click.ClickException("agent_listen is empty: set it (e.g. 0.0.0.0:8443) to run the agent gateway")
    _count_metrics(settings)
    from provisiond.web.gateway import run as run_gateway

    _ready(settings)
    run_gateway(settings, workers or settings.agent_gateway_workers)


@main.command()
@click.pass_obj
def netboot(settings: Settings) -> None:
    """Serve DHCP (per dhcp_mode) and TFTP for one boot segment, until SIGTERM.
    /healthz, /readyz and /metrics at netboot_health_listen (if set)."""
    _count_metrics(settings)
    from provisiond.netboot.daemon import run_until_signalled

    run_until_signalled(_ready(settings))


@main.command("run")
@_listen_options
@click.pass_obj
def run_all(settings: Settings, http_host: str | None, http_port: int | None, workers: int | None) -> None:
    """Everything on this machine, for the quick start and small sites:
    migrate the database, then run `serve`, `worker`, (when agent_listen is
    set, as by default) `gateway` and (when netboot_address is set)
    `netboot` as child processes until SIGTERM or Ctrl-C. If one of them
    stops, the others are stopped too."""
    _count_metrics(settings)
    settings = _listening(settings, http_host, http_port)
    _ready(settings, migrate=True)
    _run_roles(settings, http_host, http_port, workers)


@main.command()
@click.option("--host", "http_host", help="Address to listen on.")
@click.option("--port", "http_port", type=int, help="Port to listen on.")
@click.option("--no-serve", is_flag=True, help="Prepare the demo data and token, then exit.")
@click.pass_obj
def demo(settings: Settings, http_host: str | None, http_port: int | None, no_serve: bool) -> None:
    """Load the sample hosts into an empty database, write provctl's config
    with a fresh admin token, make the console user demo with a fresh
    password, print both, and run everything (as `provisiond run`)."""
    if not no_serve:
        _count_metrics(settings)
    from sqlalchemy import delete, func, select

    from provisiond import models
    from provisiond.actions import hosts as host_actions
    from provisiond.actions.principal import SYSTEM
    from provisiond.actions import tokens as token_actions

    settings = _listening(settings, http_host, http_port)
    svc = _ready(settings, migrate=True)
    with svc.db.read() as session:
        empty = not session.scalar(select(func.count()).select_from(models.Host))
    if empty:
        result = host_actions.import_file(svc, SYSTEM, DEMO_HOSTS.read_text(), DEMO_HOSTS.name, "yaml")
        click.echo(f"loaded {result['created']} sample hosts from {DEMO_HOSTS}")
    with svc.db.write() as session:  # a fresh demo token each start; the old one is gone
        session.execute(delete(models.ApiToken).where(models.ApiToken.name == "demo"))
    token = token_actions.create(svc, SYSTEM, "demo", "admin").token
    url = _client_url(settings)
    _write_provctl_config(url, token)
    click.echo(f"provctl is set up in {PROVCTL_CONFIG} (server {url}, token 'demo')")
    click.echo("try: provctl hosts list; provctl profiles render 712DM2Y")
    password = _demo_user(svc)
    click.echo(f"web console: {url}/console/ (user demo, password {password}; an admin, made afresh each start)")
    svc.hooks.prepare()  # where hooks go is there when demo says it is ready (the worker may start later)
    if not no_serve:
        _run_roles(settings, http_host, http_port, None)


def _demo_user(svc: Any) -> str:
    """The console user ``demo`` (an admin) with a fresh password: the old
    one, and its sessions, are gone."""
    import secrets as random

    from sqlalchemy import delete

    from provisiond import models
    from provisiond.actions import users as user_actions
    from provisiond.actions.principal import SYSTEM

    with svc.db.write() as session:
        session.execute(delete(models.User).where(models.User.name == "demo"))
    password = random.token_urlsafe(12)
    user_actions.create(svc, SYSTEM, "demo", "admin", password)
    return password


def _client_url(settings: Settings) -> str:
    """Where provctl on this machine reaches the admin API."""
    from provisiond.config import derived_public_url

    return derived_public_url(dataclasses.replace(settings, netboot_address="", boot_listen=""))


def _write_provctl_config(url: str, token: str) -> None:
    import yaml

    PROVCTL_CONFIG.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(PROVCTL_CONFIG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump({"url": url, "token": token}, handle)


def _ready(settings: Settings, migrate: bool = False, rotating: bool = False) -> Any:
    """Services that passed the start-up checks (:mod:`provisiond.startup`):
    a current schema (``migrate``: bring it there), the database's own
    secret key, loadable profiles."""
    from provisiond.startup import ready

    return ready(_services(settings), migrate=migrate, rotating=rotating)


def _run_roles(settings: Settings, http_host: str | None, http_port: int | None, workers: int | None) -> None:
    """``serve``, ``worker`` and (with netboot_address) ``netboot`` as child
    processes, supervised (:mod:`provisiond.cli.supervise`)."""
    from provisiond.cli.supervise import Supervisor

    config = click.get_current_context().meta.get("provisiond.config_file")
    base = [sys.executable, "-m", "provisiond.cli.server", *(["--config", config] if config else [])]
    # Every child derives the same public_url from the listener given here
    # (netboot hands it to installers): through the environment, which
    # every role reads, not only serve's command line.
    for name, value in (("HTTP_HOST", http_host), ("HTTP_PORT", http_port)):
        if value is not None:
            os.environ[f"PROVISIOND_{name}"] = str(value)
    roles = {"serve": [*base, "serve", *(["--workers", str(workers)] if workers else [])], "worker": [*base, "worker"]}
    if settings.agent_listen:
        roles["gateway"] = [*base, "gateway"]
    if settings.netboot_address:
        roles["netboot"] = [*base, "netboot"]
    else:
        logging.getLogger("provisiond").info("netboot off: set netboot_address to serve DHCP/TFTP on a segment")
    raise SystemExit(Supervisor(roles).run())


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.effective_database_url).render_as_string(hide_password=True)


def entry() -> None:
    try:
        main(standalone_mode=True)
    except ProvisiondError as exc:
        click.echo(f"provisiond: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    entry()
