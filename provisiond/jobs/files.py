"""The file store (``provctl files put|list|rm``): files pushed to hosts by
``file`` jobs, kept with their SHA-256; and ``template`` jobs' rendering,
per host, in the kickstart composer's sandbox."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.errors import Conflict, NotFound, ValidationError
from provisiond.inventory import fields
from provisiond.inventory.hosts import load_record
from provisiond.jobs.targets import Target
from provisiond.jobs.types import JobSpec
from provisiond.kickstart.composer import Composer

MAX_FILE_BYTES = 16 * 1024 * 1024


def put(session: Session, name: str, content: bytes, by: str, now: dt.datetime, replace: bool = False) -> models.StoredFile:
    fields.name(name, "name", 128)
    if len(content) > MAX_FILE_BYTES:
        raise ValidationError("content", f"larger than {MAX_FILE_BYTES} bytes")
    row = session.scalar(select(models.StoredFile).where(models.StoredFile.name == name))
    sha256 = hashlib.sha256(content).hexdigest()
    if row is not None and not replace:
        raise Conflict(f"a file named {name!r} is stored already (replace it with --replace)", field="name")
    if row is None:
        row = models.StoredFile(name=name)
        session.add(row)
    row.content, row.sha256, row.size, row.created_at, row.created_by = content, sha256, len(content), now, by
    session.flush()
    return row


def get(session: Session, name: str) -> models.StoredFile:
    row = session.scalar(select(models.StoredFile).where(models.StoredFile.name == name))
    if row is None:
        raise NotFound(f"no stored file named {name!r}")
    return row


def remove(session: Session, name: str) -> None:
    session.delete(get(session, name))


def listing(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(select(models.StoredFile.name, models.StoredFile.sha256, models.StoredFile.size,
                                  models.StoredFile.created_at, models.StoredFile.created_by)
                           .order_by(models.StoredFile.name)).all()
    return [{"name": r.name, "sha256": r.sha256, "size": r.size, "created_at": r.created_at.isoformat(),
             "created_by": r.created_by} for r in rows]


def content_reader(session: Session) -> Any:
    """``read(name) -> (bytes, sha256)`` for deliveries, one read per name."""
    cache: dict[str, tuple[bytes, str]] = {}

    def read(name: str) -> tuple[bytes, str]:
        if name not in cache:
            row = get(session, name)
            cache[name] = (row.content, row.sha256)
        return cache[name]
    return read


def run_payloads(session: Session, composer: Composer, spec: JobSpec,
                 targets: Sequence[Target]) -> dict[int, dict[str, Any]]:
    """Per-host payloads: a template rendered for each host (else none).
    A file job's file must exist when the job is made."""
    if spec.type == "file":
        get(session, spec.payload["file"])
        return {}
    if spec.type != "template":
        return {}
    source = get(session, spec.payload["file"]).content.decode("utf-8", errors="strict")
    payloads = {}
    for target in targets:
        if target.agent_id is None:
            continue
        record = load_record(session, target.serial)
        text = composer.render_text(record, source, spec.payload.get("variables"), name=spec.payload["file"])
        data = text.encode()
        payloads[target.host_id] = {key: spec.payload[key] for key in ("dest", "mode", "owner", "group")} | {
            "content_b64": base64.b64encode(data).decode(), "sha256": hashlib.sha256(data).hexdigest()}
    return payloads
