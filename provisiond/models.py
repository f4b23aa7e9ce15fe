"""Typed SQLAlchemy models: the data source (design §4) and its timeline.

Schema changes go through Alembic (``provisiond/migrations``); a test checks
that the migrations and these models describe the same schema.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,

)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from provisiond.states import HostState


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


host_groups = Table(
    "host_groups",
    Base.metadata,
    Column("host_id", ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Group(Base):
    """A set of hosts that shares template variables (a rack, a site, a role)."""

    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    #: Higher priority wins when two groups of a host set the same variable.
    priority: Mapped[int] = mapped_column(Integer, default=0)
    variables: Mapped[dict[str, Any]] = mapped_column(default=dict)

    hosts: Mapped[list[Host]] = relationship(secondary=host_groups, back_populates="groups")


class Host(Base):
    """One physical server, keyed by its serial number."""

    __tablename__ = "hosts"

    id: Mapped[int] = mapped_column(primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    hostname: Mapped[str] = mapped_column(String(253), unique=True)
    ip: Mapped[str | None] = mapped_column(String(15), unique=True)
    prefix: Mapped[int | None] = mapped_column(Integer)
    gateway: Mapped[str | None] = mapped_column(String(15))
    dns: Mapped[list[Any]] = mapped_column(default=list)

    bmc_type: Mapped[str | None] = mapped_column(String(16))
    bmc_address: Mapped[str | None] = mapped_column(String(253))
    bmc_port: Mapped[int | None] = mapped_column(Integer)
    bmc_user: Mapped[str | None] = mapped_column(String(64))
    #: Fernet token of the BMC password; never returned, logged or rendered.
    bmc_secret: Mapped[str | None] = mapped_column(Text)

    manufacturer: Mapped[str | None] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(128))
    expected_cpus: Mapped[int | None] = mapped_column(Integer)
    expected_memory_mib: Mapped[int | None] = mapped_column(Integer)
    #: ``[{"name": "sda", "size_gb": 480}, ...]``
    expected_disks: Mapped[list[Any] | None] = mapped_column(JSON)

    profile: Mapped[str] = mapped_column(String(64))
    os: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(128))
    site: Mapped[str | None] = mapped_column(String(64), index=True)
    rack: Mapped[str | None] = mapped_column(String(64), index=True)
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), default=HostState.IDLE.value, index=True)
    state_reason: Mapped[str | None] = mapped_column(String(32))
    variables: Mapped[dict[str, Any]] = mapped_column(default=dict)

    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    nics: Mapped[list[Nic]] = relationship(
        back_populates="host", cascade="all, delete-orphan", order_by="Nic.position"
    )
    groups: Mapped[list[Group]] = relationship(secondary=host_groups, back_populates="hosts")


class Nic(Base):
    """A network interface of a host. MACs are unique across all hosts."""

    __tablename__ = "nics"

    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    #: Lower-case, colon-separated: ``52:54:00:12:34:56``.
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    name: Mapped[str | None] = mapped_column(String(32))
    primary: Mapped[bool] = mapped_column(Boolean, default=False)
    position: Mapped[int] = mapped_column(Integer, default=0)

    host: Mapped[Host] = relationship(back_populates="nics")


class ApiToken(Base):
    """A bearer token for the admin API; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Event(Base):
    """One line of a host's timeline: every arrow of the flow writes one."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
