"""``provisiond``: run and administer the server on its own machine.

    provisiond serve            migrate the database, then serve HTTP
    provisiond demo             sample profiles + hosts, an admin token, then serve
    provisiond db upgrade       apply schema migrations
    provisiond tokens create N  print a new admin API token (stored hashed)
    provisiond bootloaders install  copy pxelinux/iPXE from Debian's packages into pxelinux_dir
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from provisiond.config import Settings, load_settings
from provisiond.errors import ProvisiondError

DEMO_HOSTS = Path(__file__).resolve().parent.parent / "demo" / "hosts.yaml"
PROVCTL_CONFIG = Path("~/.config/provisiond/provctl.yaml").expanduser()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="PROVISIOND_CONFIG",
              help="YAML settings file (default: PROVISIOND_CONFIG).")
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """provisiond: bare-metal provisioning server."""
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


def _services(settings: Settings) -> Any:
    from provisiond.services import Services

    return Services.build(settings)


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
    """Revoke the token NAME (refused at once here, by other instances within 5 s)."""
    from provisiond.actions import tokens as token_actions

    token_actions.revoke(_ready(settings), _local_admin(), name)
    click.echo(f"revoked {name}")


@main.command()
@click.pass_obj
def reap(settings: Settings) -> None:
    """Fail installs past their deadline (one pass; `serve` does this every
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

    svc = _ready(settings)
    with svc.db.write() as session:
        hosts = session.scalars(select(models.Host).where(models.Host.bmc_secret.is_not(None))).all()
        for host in hosts:
            host.bmc_secret = svc.vault.rotate(host.bmc_secret)
    click.echo(f"re-encrypted {len(hosts)} BMC secret(s) with {settings.secret_key_file}")


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


@main.command()
@click.option("--host", "http_host", help="Address to listen on (default: setting http_host).")
@click.option("--port", "http_port", type=int, help="Port to listen on (default: setting http_port).")
@click.option("--workers", type=int, help="HTTP worker processes (default: setting http_workers).")
@click.option("--no-netboot", is_flag=True, help="HTTP only: no DHCP/TFTP in this process.")
@click.pass_obj
def serve(settings: Settings, http_host: str | None, http_port: int | None, workers: int | None,
          no_netboot: bool) -> None:
    """Migrate the database and serve everything: HTTP (admin API, installer
    and boot endpoints) and DHCP/TFTP (`netboot`) when netboot_address names
    this server's address on the boot network (and not --no-netboot)."""
    settings = _listening(settings, http_host, http_port)
    svc = _ready(settings)
    daemon = None
    if not settings.netboot_address and not no_netboot:
        logging.getLogger("provisiond").info("netboot off: set netboot_address to serve DHCP/TFTP on a segment")
    if settings.netboot_address and not no_netboot:
        from provisiond.netboot.daemon import NetbootDaemon

        daemon = NetbootDaemon(svc)
        daemon.start()  # threads in the master process; HTTP workers fork without them
    try:
        _run_http(svc, http_host, http_port, workers)
    finally:
        if daemon is not None:
            daemon.stop()


@main.command()
@click.pass_obj
def netboot(settings: Settings) -> None:
    """Serve DHCP (per dhcp_mode) and TFTP for one boot segment, until SIGTERM."""
    from provisiond.netboot.daemon import run_until_signalled

    run_until_signalled(_ready(settings))


@main.command("power-worker")
@click.pass_obj
def power_worker(settings: Settings) -> None:
    """Carry out queued BMC operations (serve runs this too), until SIGTERM or Ctrl-C.

    Several may run against one database: each operation is claimed once
    and one BMC is never driven by two at a time."""
    import signal

    from provisiond.power.worker import PowerWorker

    worker = PowerWorker(_ready(settings))
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.5)
    except KeyboardInterrupt:
        worker.stop()
        worker.join()


@main.command()
@click.option("--host", "http_host", help="Address to listen on.")
@click.option("--port", "http_port", type=int, help="Port to listen on.")
@click.option("--no-serve", is_flag=True, help="Prepare the demo data and token, then exit.")
@click.pass_obj
def demo(settings: Settings, http_host: str | None, http_port: int | None, no_serve: bool) -> None:
    """Load the sample hosts into an empty database, write provctl's config
    with a fresh admin token, and serve."""
    from sqlalchemy import delete, func, select

    from provisiond import models
    from provisiond.actions import hosts as host_actions
    from provisiond.actions.principal import SYSTEM
    from provisiond.actions import tokens as token_actions

    settings = _listening(settings, http_host, http_port)
    svc = _ready(settings)
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
    if not no_serve:
        _run_http(svc, http_host, http_port, None)


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


def _ready(settings: Settings) -> Any:
    """Services over a database at the newest schema."""
    from provisiond.db import schema_is_current, upgrade
    from provisiond.kickstart.check import check_settings_variables

    svc = _services(settings)
    if not schema_is_current(svc.db.engine):
        upgrade(settings.effective_database_url)
    svc.vault  # create the key on first start, before any worker forks
    svc.profiles.all()  # a broken profile stops start-up with its file and key
    check_settings_variables(settings.variables, svc.profiles)  # and so does a wrong-typed global variable
    return svc


def _run_http(svc: Any, host: str | None, port: int | None, workers: int | None) -> None:
    settings = svc.settings
    from provisiond.install.reaper import Reaper
    from provisiond.web.server import run

    from provisiond.power.worker import PowerWorker

    reaper = Reaper(svc, settings.reaper_interval_seconds)
    power = PowerWorker(svc)
    reaper.start()  # in the master process; the HTTP workers fork without them
    power.start()
    try:
        run(settings, host or settings.http_host, port or settings.http_port, workers or settings.http_workers,
            svc.power_bell)
    finally:
        power.stop()
        reaper.stop()


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
