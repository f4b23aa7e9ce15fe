"""What every role checks before it starts (``serve``, ``worker``, ``netboot``,
and the one-machine ``run``/``demo``), so that an instance that would do
harm refuses to start and says why:

- the database schema is current (``serve``, ``worker`` and ``netboot``
  refuse an out-of-date one and name the command to run; the one-machine
  command migrates for itself, under the migration lock);
- the secret key is the one the database was sealed with: the database
  keeps its fingerprint; a second instance with another key (or none, which
  would silently make a new one) could not unseal the first one's install
  tokens, and its hosts would boot locally instead of installing;
- every profile loads, and the settings' variables fit their types.
"""

from __future__ import annotations

import logging

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from provisiond import models
from provisiond.db import schema_revision, upgrade
from provisiond.errors import ConfigError
from provisiond.services import Services
from provisiond.vault import key_fingerprint

log = logging.getLogger("provisiond")

FINGERPRINT = "secret_key_fingerprint"


def ready(svc: Services, *, migrate: bool = False, rotating: bool = False) -> Services:
    """Run every check; returns ``svc`` once it may start."""
    ensure_schema(svc, migrate)
    check_secret_key(svc, rotating=rotating)
    svc.profiles.all()  # a broken profile stops start-up with its file and key
    from provisiond.kickstart.check import check_settings_variables

    check_settings_variables(svc.settings.variables, svc.profiles)
    return svc


def ensure_schema(svc: Services, migrate: bool) -> None:
    from provisiond.migrations import HEAD

    current = schema_revision(svc.db.engine)
    if current == HEAD:
        return
    if migrate:
        upgrade(svc.settings.effective_database_url)
        return
    where = f"at revision {current}" if current else "empty"
    raise ConfigError(f"the database schema is {where}; this provisiond needs revision {HEAD}: run "
                      "`provisiond db upgrade` (once, from any one machine), then start it again")


def check_secret_key(svc: Services, *, rotating: bool = False) -> None:
    """Refuse a key the database was not sealed with, and never make a new
    one silently once secrets exist. ``rotating``: ``secrets rotate`` may
    make the new key while the old one (``secret.key.old``) is the sealing one."""
    key_file = svc.settings.secret_key_file
    old = key_file.with_name(key_file.name + ".old")
    with svc.db.read() as session:
        stored = session.scalar(select(models.Meta.value).where(models.Meta.key == FINGERPRINT))
        sealed = stored is not None or _secrets_exist(session)
    present = key_fingerprint(key_file)
    if present is None and sealed:
        if rotating and key_fingerprint(old) is not None and stored in (None, key_fingerprint(old)):
            pass  # the rotation's new key, made below; the old one still decrypts (a wrong one fails there)
        else:
            raise ConfigError(
                f"secret_key_file {key_file} is missing, but this database holds secrets sealed with a key "
                f"(fingerprint {stored or 'unknown'}): copy that key from the first instance (mode 0600); "
                "provisiond never makes a new one when secrets exist")
    if present is not None and stored is not None and present != stored and not (
            rotating and key_fingerprint(old) == stored):
        raise ConfigError(
            f"secret_key_file {key_file} holds the key {present}, but this database was sealed with the key "
            f"{stored}: use the same key file on every instance (to change keys: provisiond secrets rotate)")
    fingerprint = svc.vault.fingerprint  # makes the key on a first start
    if stored is None:
        try:
            with svc.db.write() as session:
                if session.scalar(select(models.Meta.value).where(models.Meta.key == FINGERPRINT)) is None:
                    session.execute(insert(models.Meta).values(key=FINGERPRINT, value=fingerprint))
        except IntegrityError:
            pass  # another instance inserted it between our read and our insert: compared below
        with svc.db.read() as session:  # two first starts at once: the one that committed first wins
            stored = session.scalar(select(models.Meta.value).where(models.Meta.key == FINGERPRINT))
        if stored != fingerprint:
            raise ConfigError(f"another instance sealed this database with the key {stored} a moment ago; "
                              f"this one has {fingerprint}: copy its key file here")


def record_rotation(svc: Services) -> None:
    """After ``secrets rotate``: the database is sealed with the new key."""
    from sqlalchemy import update

    with svc.db.write() as session:
        session.execute(update(models.Meta).where(models.Meta.key == FINGERPRINT)
                        .values(value=svc.vault.fingerprint))


def _secrets_exist(session: object) -> bool:
    count = session.scalar(select(func.count()).select_from(models.Host)  # type: ignore[attr-defined]
                           .where(models.Host.bmc_secret.is_not(None)))
    installs = session.scalar(select(func.count()).select_from(models.Install)  # type: ignore[attr-defined]
                              .where(models.Install.active.is_(True)))
    return bool(count or installs)
