"""Typed SQLAlchemy models: the data source (design §4) and its timeline.

Schema changes go through Alembic (``provisiond/migrations``); a test checks
that the migrations and these models describe the same schema.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    FetchedValue,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from provisiond.states import HostState


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC in and out, on PostgreSQL and on SQLite (which
    stores no offset and hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: provisiond stores only timezone-aware UTC times")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


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
    #: At most this many of the group's hosts install at once (a rack behind
    #: one uplink); None: only the global cap applies.
    install_cap: Mapped[int | None] = mapped_column(Integer)

    hosts: Mapped[list[Host]] = relationship(secondary=host_groups, back_populates="groups")


class Host(Base):
    """One physical server, keyed by its serial number."""

    __tablename__ = "hosts"
    __table_args__ = (UniqueConstraint("serial_key", name="uq_hosts_serial_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    #: The serial number in lower case: unique, and what every lookup by
    #: serial number compares (serials are the same whatever their case).
    serial_key: Mapped[str] = mapped_column(String(64))
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

    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    nics: Mapped[list[Nic]] = relationship(
        back_populates="host", cascade="all, delete-orphan", order_by="Nic.position"
    )
    groups: Mapped[list[Group]] = relationship(secondary=host_groups, back_populates="hosts")


class Install(Base):
    """One requested install of one host, from arming to done/failed.

    The one-time token is stored as its SHA-256 (for authentication) and
    sealed with the vault (so the netboot side can render the host's boot
    entry); it is never stored in clear.
    """

    __tablename__ = "installs"

    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_sealed: Mapped[str] = mapped_column(Text)
    profile: Mapped[str] = mapped_column(String(64))
    #: True from arming until done, failed or cancelled.
    active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    outcome: Mapped[str | None] = mapped_column(String(32))  # installed, hw_mismatch, timeout, ...
    armed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    #: The token dies at this time; the reaper fails the install after it.
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    armed_by: Mapped[str | None] = mapped_column(String(64))
    booted_mac: Mapped[str | None] = mapped_column(String(17))
    #: The address the first %pre report came from: later installer calls
    #: with this token from anywhere else are refused as a wrong token is.
    bound_address: Mapped[str | None] = mapped_column(String(45))
    #: First slot request, for first-come first-served queueing.
    queued_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, index=True)
    #: Last slot request of a waiting installer; long-silent waiters lose their place.
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    slot_granted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    host: Mapped[Host] = relationship()


class PowerOperation(Base):
    """A queued out-of-band operation (boot device, power) for the power layer.

    BMC work never runs inside an HTTP request: requests queue it here and a
    worker (:mod:`provisiond.power.worker`) carries it out. Only
    :mod:`provisiond.power.queue` writes these rows. Operations on one BMC
    (``bmc_key``) run one at a time, oldest first.
    """

    __tablename__ = "power_operations"

    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(32))  # bootdev, power
    argument: Mapped[str] = mapped_column(String(32))  # disk, pxe, status / on, off, reset, status
    persistent: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)  # queued, running, done, failed
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    #: Which BMC: operations with the same key never run at the same time.
    bmc_key: Mapped[str | None] = mapped_column(String(300), index=True)
    #: What the BMC answered (``on``, ``pxe (next boot only)``, ...).
    result: Mapped[str | None] = mapped_column(String(200))
    requested_by: Mapped[str | None] = mapped_column(String(64))
    install_id: Mapped[int | None] = mapped_column(ForeignKey("installs.id", ondelete="SET NULL"))
    #: Not started before this time (a batch paces its power-ons).
    not_before: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    #: A running operation whose worker is gone past this time is run again.
    lease_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: When its last command to the BMC ended: the next operation on that BMC
    #: (whichever worker claims it) keeps bmc_min_gap_ms from then.
    last_command_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


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
    """A named API credential with a role; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    #: admin, operator or viewer (provisiond.actions.principal.Role).
    role: Mapped[str] = mapped_column(String(16), default="admin", server_default="admin")
    #: The token is refused from this time on (None: never expires).
    expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    #: Revoked tokens are kept, refused, so the audit trail can name them.
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class AuditEntry(Base):
    """Who did what, to which hosts, when, with what outcome. Only
    :mod:`provisiond.actions.audit` writes these rows."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    time: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    principal: Mapped[str] = mapped_column(String(128), index=True)  # "token ops", "user ana"
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64), index=True)  # "hosts.edit", "installs.arm"
    #: The serial numbers (or names) acted on, as ``|SN1|SN2|`` for lookups.
    targets: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(String(16))  # ok, refused, error
    status: Mapped[int] = mapped_column(Integer)  # the HTTP status it was (or would be) answered with
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Event(Base):
    """One line of a host's timeline: every arrow of the flow writes one.
    Only :mod:`provisiond.events` writes these rows."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_serial", "serial"), Index("ix_events_cursor", text("COALESCE(txid, 0)"), "id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    #: NULL once the host is deleted: its events stay, found by ``serial``.
    host_id: Mapped[int | None] = mapped_column(
        ForeignKey("hosts.id", ondelete="SET NULL", name="fk_events_host_id_hosts"), index=True)
    serial: Mapped[str | None] = mapped_column(String(64))
    #: PostgreSQL: the writing transaction's id (the column's default), for
    #: readers' cursors; NULL on SQLite.
    txid: Mapped[int | None] = mapped_column(BigInteger, server_default=FetchedValue())
    install_id: Mapped[int | None] = mapped_column(ForeignKey("installs.id", ondelete="SET NULL"))
    time: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Lease(Base):
    """A dynamic DHCP lease from a subnet's pool (full and relay mode).

    Hosts in the data source keep their static address and need no row here.
    One row per address: allocating is an INSERT (or a guarded UPDATE of an
    expired row), so two netboot daemons sharing the database never hand
    out the same address.
    """

    __tablename__ = "leases"

    id: Mapped[int] = mapped_column(primary_key=True)
    ip: Mapped[str] = mapped_column(String(15), unique=True)
    mac: Mapped[str] = mapped_column(String(17), index=True)
    #: The configured subnet (CIDR) the address belongs to.
    subnet: Mapped[str] = mapped_column(String(18))
    state: Mapped[str] = mapped_column(String(16))  # offered, bound, released, declined
    #: What the client called itself (option 12), for the operator.
    client_hostname: Mapped[str | None] = mapped_column(String(253))
    #: Offered: the hold on the offer; bound: the lease end; declined: the
    #: end of the quarantine. The address is free after this time.
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class WorkItem(Base):
    """Deferred work (a hook to run; agent jobs next), claimed by a worker
    with a lease and retried with backoff. Only :mod:`provisiond.worker.queue`
    writes these rows."""

    __tablename__ = "work_items"
    __table_args__ = (Index("ix_work_items_state_run_after", "state", "run_after"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # hook
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    host_id: Mapped[int | None] = mapped_column(
        ForeignKey("hosts.id", ondelete="SET NULL", name="fk_work_items_host_id_hosts"))
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued, running, done, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    #: Not claimed before this time (a retry's backoff).
    run_after: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    #: A running item whose worker is gone past this time is claimed again.
    lease_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class Meta(Base):
    """Facts about this installation that every instance must agree on
    (``secret_key_fingerprint``)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Agent(Base):
    """A ``provisiond-agent`` that enrolled (or asked to): its identity, its
    state and the SHA-256 of its credential. Only
    :mod:`provisiond.agents.registry` writes these rows.

    States: ``pending`` (no ticket; an operator accepts or rejects it),
    ``accepted`` (acts for its host), ``rejected``, ``denied`` (claimed the
    identity of an accepted agent with another credential: a rebuilt host
    or an impostor), ``revoked`` (its host was armed for a reinstall, or an
    operator deleted it)."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int | None] = mapped_column(
        ForeignKey("hosts.id", ondelete="SET NULL", name="fk_agents_host_id_hosts"), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    credential_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hostname: Mapped[str] = mapped_column(String(253), default="")
    machine_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    serial: Mapped[str] = mapped_column(String(64), default="")
    version: Mapped[str] = mapped_column(String(32), default="")
    address: Mapped[str | None] = mapped_column(String(45))
    #: The install whose enrollment ticket accepted it (None: an operator did).
    install_id: Mapped[int | None] = mapped_column(
        ForeignKey("installs.id", ondelete="SET NULL", name="fk_agents_install_id_installs"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(128))
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    facts_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class EnrollmentTicket(Base):
    """The one-time ticket an install hands its new system's agent: good
    from the install's ``done`` for ``enrollment_window_seconds``, dead once
    used. Only its SHA-256 is kept."""

    __tablename__ = "enrollment_tickets"

    id: Mapped[int] = mapped_column(primary_key=True)
    install_id: Mapped[int] = mapped_column(
        ForeignKey("installs.id", ondelete="CASCADE", name="fk_enrollment_tickets_install_id_installs"), unique=True)
    host_id: Mapped[int] = mapped_column(
        ForeignKey("hosts.id", ondelete="CASCADE", name="fk_enrollment_tickets_host_id_hosts"), index=True)
    ticket_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class StoredFile(Base):
    """A file in provisiond's file store (``provctl files put``), pushed to
    hosts by ``file`` jobs. Kept by name; content and checksum together."""

    __tablename__ = "files"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")


class Job(Base):
    """One job: a type from the allow-list, its payload, the hosts it was
    for (one :class:`JobRun` each). Only :mod:`provisiond.jobs.store` writes
    these rows."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    #: What the agent is sent (a file job names its stored file; its content
    #: is added at delivery).
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: SHA-256 of the canonical JSON payload: what the audit trail records.
    digest: Mapped[str] = mapped_column(String(64))
    #: One line for people: ``script: systemctl is-active sshd``.
    summary: Mapped[str] = mapped_column(Text, default="")
    #: The target expressions as given (serials, globs, groups, ``all``).
    targets: Mapped[list[Any]] = mapped_column(default=list)
    #: run (an operator's) or handoff (a profile's, after an install).
    purpose: Mapped[str] = mapped_column(String(16), default="run")
    #: For hand-off jobs: which step of the profile's list (0-based).
    step: Mapped[int | None] = mapped_column(Integer)
    timeout_seconds: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    #: Hosts that have not started it by then did not run it.
    deadline: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class JobRun(Base):
    """One job on one host: delivered at least once under a lease, its
    result recorded once. Ends in exactly one terminal state."""

    __tablename__ = "job_runs"
    __table_args__ = (UniqueConstraint("job_id", "host_id", name="uq_job_runs_job_host"),
                      Index("ix_job_runs_agent_state", "agent_id", "state"),
                      Index("ix_job_runs_state_lease", "state", "lease_until"))

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE", name="fk_job_runs_job_id_jobs"),
                                        index=True)
    host_id: Mapped[int | None] = mapped_column(
        ForeignKey("hosts.id", ondelete="SET NULL", name="fk_job_runs_host_id_hosts"), index=True)
    serial: Mapped[str] = mapped_column(String(64))
    agent_id: Mapped[int | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL", name="fk_job_runs_agent_id_agents"))
    #: queued, running, succeeded, failed, timed_out, did_not_run, cancelled
    state: Mapped[str] = mapped_column(String(16))
    #: This host's own payload over the job's (a template rendered for it).
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    #: Delivered again after this time if no result came.
    lease_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    output: Mapped[str] = mapped_column(Text, default="")
    output_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    #: The agent's idempotency key of the recorded result.
    result_key: Mapped[str | None] = mapped_column(String(64))


class User(Base):
    """A console user: a name, a role (as API credentials have) and an
    Argon2 hash of the password (:mod:`provisiond.passwords`). Disabled users
    are kept, refused, so the audit trail can still name them. Only
    :mod:`provisiond.actions.users` writes these rows."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    #: admin, operator or viewer (provisiond.actions.principal.Role).
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    #: Refused from this time on (None: enabled).
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class ConsoleSession(Base):
    """A logged-in console session: the cookie carries its token, the row
    only the token's SHA-256 and the session's CSRF token. Logging out,
    disabling the user or the expiry ends it on every instance at once."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE", name="fk_console_sessions_user_id_users"), index=True)
    #: Every state-changing request of the session carries it back.
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    address: Mapped[str | None] = mapped_column(String(45))


class LoginFailure(Base):
    """A failed console login, counted for the rate limit per user name and
    per address (kept in the database: every worker and instance counts the
    same failures)."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    address: Mapped[str] = mapped_column(String(45), index=True)
    time: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
