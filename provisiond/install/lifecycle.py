"""The install lifecycle: the ONLY module that writes a host's install state.

Every change is a compare-and-set (``UPDATE hosts SET state = new WHERE id =
... AND state IN (expected)``) inside the caller's write transaction and
writes an :class:`~provisiond.models.Event`. A change that the transition
table (:mod:`provisiond.states`) does not allow is refused with 409.

Timeline (the spirit of seed 004's install log)::

    armed → kickstart fetched (BOOTING) → hardware reported (VERIFYING)
      → mismatch: FAILED(hw_mismatch)
      → slot: QUEUED … → INSTALLING → done: INSTALLED (PXE → local boot,
        boot device → disk queued) | failed: FAILED(installer_error)
    an install that never calls back: FAILED(timeout) by the reaper
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, Connection, Integer, TextClause, bindparam, select, text
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from provisiond import models
from provisiond.bell import Bell
from provisiond.db import Database
from provisiond.errors import Conflict, NotFound
from provisiond import events
from provisiond.install import slots
from provisiond.install.hooks import HookCall, HookRunner
from provisiond.install.verify import HardwareReport, Verdict, compare
from provisiond.inventory.hosts import get_host, to_record
from provisiond.power import queue as power_queue
from provisiond.states import HostState, can_transition
from provisiond.vault import Vault

log = logging.getLogger("provisiond.lifecycle")

#: States in which a host holds a live install.
IN_FLIGHT = frozenset({HostState.ARMED, HostState.BOOTING, HostState.VERIFYING, HostState.QUEUED,
                       HostState.INSTALLING})
#: States of a host in service: arming one needs force.
IN_SERVICE = frozenset({HostState.HANDED_OFF, HostState.READY})
FAIL_REASONS = ("hw_mismatch", "timeout", "installer_error", "cancelled")


class IllegalTransition(Conflict):
    """The host is not in a state that allows this step."""

    code = "illegal_transition"


class Protected(Conflict):
    """The host is protected or in service; arming it needs force."""

    code = "protected"


#: Built once: every installer request starts with this lookup.
_INSTALL_BY_TOKEN = (select(models.Install).options(joinedload(models.Install.host))
                     .where(models.Install.token_hash == bindparam("token_hash")))


# ------------------------------------------------------------- the state write
# A state change is a compare-and-set of the host's state, its Event, and
# sometimes an update of the install (a waiter's heartbeat, a grant) that
# must happen only with the change. On PostgreSQL the three are ONE statement
# (data-modifying WITH clauses: atomic on its own, one round trip); SQLite has
# no such clauses and runs them one by one in the caller's transaction.

_INSTALL_SETS = {
    # A waiter's heartbeat, and its first place in the queue.
    "touch": "last_seen_at = :now, queued_at = COALESCE(queued_at, :now)",
    "grant": "last_seen_at = :now, queued_at = COALESCE(queued_at, :now), slot_granted_at = :now, "
             "expires_at = :expires_at",
}
_HOST_CAS = ("UPDATE hosts SET state = :target, state_reason = :reason, updated_at = :now "
             "WHERE id = :host_id AND state IN :expected")
_TYPES: tuple[BindParameter[Any], ...] = (
    bindparam("now", type_=models.UtcDateTime()), bindparam("expires_at", type_=models.UtcDateTime()),
    bindparam("host_id", type_=Integer()), bindparam("install_id", type_=Integer()),
    bindparam("expected", expanding=True), bindparam("data", type_=models.Event.__table__.c.data.type),
)


def _typed(sql: str) -> TextClause:
    """``sql`` with the types of the binds it uses."""
    return text(sql).bindparams(*(b for b in _TYPES if f":{b.key}" in sql))


_INSTALL_UPDATE = {name: _typed(f"UPDATE installs SET {sets} WHERE id = :install_id")
                   for name, sets in _INSTALL_SETS.items()}
_HOST_UPDATE = _typed(_HOST_CAS)
#: PostgreSQL, by install update: the compare-and-set, the install's update
#: (only if the host moved) and the event (only if it moved; its row count
#: says whether it did).
_MOVE_PG = {name: _typed(
    f"WITH moved AS ({_HOST_CAS} RETURNING id, serial)"
    + (f", install AS (UPDATE installs SET {_INSTALL_SETS[name]} WHERE id = :install_id "
       "AND EXISTS (SELECT 1 FROM moved))" if name else "")
    + f" INSERT INTO {events.INSERT_COLUMNS} SELECT id, serial, :install_id, :now, :kind, :message, :data FROM moved"
) for name in (None, *_INSTALL_SETS)}

#: A host as its hooks see it; the primary MAC is the NIC marked primary, else the first.
_HOOK_HOST = (
    select(models.Host.serial, models.Host.hostname, models.Host.ip, models.Host.profile,
           select(models.Nic.mac).where(models.Nic.host_id == models.Host.id)
           .order_by(models.Nic.primary.desc(), models.Nic.position, models.Nic.id).limit(1)
           .scalar_subquery().label("mac"))
    .where(models.Host.id == bindparam("host_id"))
)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Armed:
    serial: str
    install_id: int
    token: str  # shown once, to the caller that armed
    expires_at: dt.datetime
    #: The host row, for more work in the same transaction (its power operation).
    host: models.Host


@dataclass(frozen=True)
class Lifecycle:
    """The lifecycle's collaborators and limits, built once from settings."""

    vault: Vault
    hooks: HookRunner | None
    limits: slots.Limits
    arm_ttl: dt.timedelta
    install_timeout: dt.timedelta
    #: Rung after a commit that queued power operations (done's boot device → disk).
    power_bell: Bell | None = None

    # ----------------------------------------------------------------- arming

    def arm(self, session: Session, serial: str, now: dt.datetime, by: str, force: bool = False,
            host: models.Host | None = None) -> Armed:
        """``host``: the row, when the caller has loaded it already."""
        return self.arm_many(session, [host if host is not None else get_host(session, serial)], now, by, force)[0]

    def arm_many(self, session: Session, hosts: Sequence[models.Host], now: dt.datetime, by: str,
                 force: bool = False) -> list[Armed]:
        """Arm every host, in the caller's transaction: each is checked first
        (the first that may not be armed raises, and the caller rolls back),
        then their installs are written together (one INSERT), then each
        host moves to armed with its event."""
        whys = [self._may_arm(host, force) for host in hosts]
        tokens = [secrets.token_urlsafe(24) for _ in hosts]
        installs = [models.Install(
            host_id=host.id, token_hash=hash_token(token), token_sealed=self.vault.encrypt(token),
            profile=host.profile, armed_at=now, expires_at=now + self.arm_ttl, armed_by=by,
        ) for host, token in zip(hosts, tokens)]
        session.add_all(installs)
        session.flush()
        for host, install, why in zip(hosts, installs, whys):
            forced = f" (forced: host {why})" if why else ""
            self._move(session, host, install, {HostState(host.state)}, HostState.ARMED, None, "armed",
                       f"install armed by {by}, profile {host.profile}{forced}; token valid until "
                       f"{install.expires_at:%Y-%m-%d %H:%M} UTC", now, hook="on-armed")
        from provisiond.agents import registry

        registry.revoke_for_hosts(session, [host.id for host in hosts], now, "the host was armed for a reinstall")
        return [Armed(host.serial, install.id, token, install.expires_at, host)
                for host, install, token in zip(hosts, installs, tokens)]

    @staticmethod
    def _may_arm(host: models.Host, force: bool) -> str | None:
        """Raises if ``host`` may not be armed; else why it needed ``force`` (None if it did not)."""
        state = HostState(host.state)
        if state in IN_FLIGHT:
            raise IllegalTransition(f"host {host.serial} is already {state} (an install is under way); "
                                    "cancel it first with provctl cancel")
        why = _protection(host, state)
        if why and not force:
            raise Protected(f"host {host.serial} {why}; arming it would reinstall it: use --force if you mean it")
        return why

    def cancel(self, session: Session, serial: str, now: dt.datetime, by: str) -> None:
        host = get_host(session, serial)
        install = active_install(session, host.id)
        if install is None:
            raise IllegalTransition(f"host {serial} has no install to cancel (it is {host.state})")
        self._fail(session, host, install, "cancelled", f"install cancelled by {by}", now)

    # ---------------------------------------------------------- installer side

    def find_install(self, session: Session, token: str, now: dt.datetime, *,
                     finished_ok: bool = False, client: str | None = None) -> models.Install:
        """The install a token belongs to. Anything wrong is a bare 404: an
        unknown, expired or used token, or (``client``) a call from another
        address than the one the install's first hardware report came from."""
        install = session.scalar(_INSTALL_BY_TOKEN, {"token_hash": hash_token(token)})
        if install is None:
            raise NotFound("not found")
        _check_bound(install.bound_address, client, install.host.serial)
        if install.active and install.expires_at > now:
            return install
        if finished_ok and install.outcome == "installed":
            return install
        raise NotFound("not found")

    def kickstart_fetched(self, session: Session, install: models.Install, now: dt.datetime,
                          client: str | None) -> None:
        host = install.host
        if HostState(host.state) == HostState.ARMED:
            self._move(session, host, install, {HostState.ARMED}, HostState.BOOTING, None, "kickstart",
                       f"installer fetched its kickstart (profile {install.profile}) from {client or 'unknown'}", now)
        else:
            _event(session, host.id, install.id, "kickstart",
                   f"installer fetched its kickstart again from {client or 'unknown'}", now)

    def report_hardware(self, session: Session, install: models.Install, report: HardwareReport,
                        now: dt.datetime, client: str | None = None) -> Verdict:
        host = install.host
        state = HostState(host.state)
        if state not in (HostState.BOOTING, HostState.VERIFYING):
            raise IllegalTransition(f"host {host.serial} is {state}; the hardware report comes after the "
                                    "kickstart and before the slot request")
        verdict = compare(to_record(host), report)
        install.booted_mac = report.boot_mac
        if install.bound_address is None:
            install.bound_address = client  # from now on its token works from this machine only
        data = {"reported": _report_data(report)}
        if not verdict.ok:
            _event(session, host.id, install.id, "hardware", "hardware mismatch: " + "; ".join(verdict.differences),
                   now, {**data, "differences": list(verdict.differences)})
            self._fail(session, host, install, "hw_mismatch", "install halted in %pre: hardware does not match", now)
            return verdict
        for attribute, value in verdict.learned.items():
            setattr(host, attribute, value)
        learned = f"; learned {', '.join(sorted(verdict.learned))} from the report" if verdict.learned else ""
        memory = (f"{report.memory_mib or '?'} MiB "
                  f"{'installed' if report.memory_source == 'smbios' else 'of MemTotal'}")
        message = (f"hardware matches the data source: serial {report.serial}, {report.cpus or '?'} CPUs, "
                   f"{memory}, {len(report.disks)} disk(s){learned}")
        if state == HostState.BOOTING:
            self._move(session, host, install, {HostState.BOOTING}, HostState.VERIFYING, None, "hardware",
                       message, now, data)
        else:
            _event(session, host.id, install.id, "hardware", message, now, data)
        return verdict

    def request_slot(self, db: Database, token: str, now: dt.datetime,
                     client: str | None = None) -> slots.SlotDecision:
        """Grant a slot or say where in the queue the installer waits: the
        slot endpoint's whole work. It is the hot path (every poll of every
        waiting installer), so it runs Core statements on this thread's kept
        connection and opens a transaction only when something must change:

        1. one read-only statement answers a poll when that is the whole
           answer: the installer already has its slot, or it is queued, the
           global cap is full and its heartbeat (``last_seen_at``) is recent
           (when groups have caps of their own, three more reads weigh them);
        2. a wait to record (joining the queue, or a heartbeat) is a short
           transaction without the cap's lock: the "wait" read in 1 can only
           be stale in the waiter's disfavour, and a compare-and-set guards
           the state change;
        3. a poll that may be granted is decided under the cap's lock, on
           counts read after taking it, and the lock is held for the decision
           and its writes only.
        """
        seen, waiting = db.ask(lambda connection: self._read_only_answer(connection, token, now, client))
        if seen.state == HostState.INSTALLING:
            return slots.SlotDecision(True)  # a repeated request: it already has one
        if waiting is not None:
            if seen.state == HostState.QUEUED and not self._heartbeat_due(seen, now):
                return waiting
            with db.kept_write() as connection:
                self._record_wait(connection, seen, waiting, now)
            return waiting
        with db.kept_write() as connection:
            slots.lock_slots(connection)
            seen = self._slot_poll(connection, token, now, client)
            if seen.state == HostState.INSTALLING:
                return slots.SlotDecision(True)
            decision = slots.decide(connection, seen, self.limits)
            if decision.granted:
                self._grant(connection, seen, decision, now)
                self._queue_hooks(connection, "on-installing", seen.host_id, HostState.INSTALLING, None, now)
            else:
                self._record_wait(connection, seen, decision, now)
        return decision

    def _read_only_answer(self, connection: Connection, token: str, now: dt.datetime,
                          client: str | None) -> tuple[slots.Poll, slots.SlotDecision | None]:
        """The poll, and "wait" when reads alone can say so (None: it may be
        granted, which is decided under the lock)."""
        seen = self._slot_poll(connection, token, now, client)
        waiting = slots.still_waiting(seen, self.limits)
        if waiting is None and seen.capped and seen.state != HostState.INSTALLING:
            waiting = slots.standing(connection, seen, self.limits)
        return seen, waiting

    def warm_up(self, db: Database) -> None:
        """What a fresh worker does before its first request: open this
        thread's kept connection, ask the slot poll once (for a token nobody
        holds) and run the state write's statements once about host 0 (there
        is none: they change nothing), so the first grants do not compile
        them while holding the cap's lock."""
        now = models.utcnow()
        db.ask(lambda connection: slots.poll(connection, hash_token(""), now, self.limits))
        nothing = {"host_id": 0, "install_id": 0, "expected": [HostState.VERIFYING.value], "target": "",
                   "reason": None, "now": now, "expires_at": now, "kind": "", "message": "", "data": {}}
        with db.kept_write() as connection:
            if _is_postgresql(connection):
                for statement in _MOVE_PG.values():
                    connection.execute(statement, nothing)
            else:
                for statement in (_HOST_UPDATE, *_INSTALL_UPDATE.values()):
                    connection.execute(statement, nothing)

    def _heartbeat_due(self, seen: slots.Poll, now: dt.datetime) -> bool:
        return seen.last_seen_at is None or now - seen.last_seen_at >= self.limits.heartbeat

    def _record_wait(self, connection: Connection, seen: slots.Poll, decision: slots.SlotDecision,
                     now: dt.datetime) -> None:
        """The waiter's heartbeat (and first place in the queue); a host still
        VERIFYING joins the queue."""
        if seen.state == HostState.VERIFYING:
            self._set_state(connection, seen.host_id, seen.serial, seen.install_id, {seen.state}, HostState.QUEUED,
                            None, "slot", decision.message, now, {"position": decision.position}, install="touch")
        else:
            connection.execute(_INSTALL_UPDATE["touch"], {"install_id": seen.install_id, "now": now})

    def _grant(self, connection: Connection, seen: slots.Poll, decision: slots.SlotDecision,
               now: dt.datetime) -> None:
        expires_at = now + self.install_timeout
        self._set_state(connection, seen.host_id, seen.serial, seen.install_id, {seen.state}, HostState.INSTALLING,
                        None, "slot", f"install slot granted ({decision.in_use} of {self.limits.cap} in use); "
                        f"must finish by {expires_at:%H:%M:%S} UTC", now, install="grant",
                        install_params={"expires_at": expires_at})

    def _slot_poll(self, connection: Connection, token: str, now: dt.datetime,
                   client: str | None = None) -> slots.Poll:
        """The token's install as a slot request sees it; a bad token (or a
        call from another machine than the one that reported) is a bare 404,
        a host not between hardware report and install a 409."""
        seen = slots.poll(connection, hash_token(token), now, self.limits)
        if seen is None or not seen.active or seen.expires_at <= now:
            raise NotFound("not found")
        _check_bound(seen.bound_address, client, seen.serial)
        if seen.state not in (HostState.VERIFYING, HostState.QUEUED, HostState.INSTALLING):
            raise IllegalTransition(f"host {seen.serial} is {seen.state}; a slot is requested after the "
                                    "hardware report")
        return seen

    def progress(self, session: Session, install: models.Install, message: str, now: dt.datetime) -> None:
        _event(session, install.host_id, install.id, "progress", message, now)

    def done(self, session: Session, install: models.Install, now: dt.datetime) -> bool:
        """``%post`` finished. Returns False for a repeated call (no second transition)."""
        if not install.active:
            return False
        host = install.host
        self._move(session, host, install, {HostState.INSTALLING}, HostState.INSTALLED, None, "installed",
                   "install done: slot freed, token revoked, PXE answer is now local boot", now, hook="on-installed")
        _finish(install, "installed", now)
        power_queue.queue_after_install(session, host, install.id, now, self.power_bell)
        return True

    # ------------------------------------------------------------- the hand-off

    def handed_off(self, session: Session, host_id: int, serial: str, install_id: int | None, now: dt.datetime,
                   message: str) -> None:
        """The install's agent enrolled: INSTALLED → HANDED_OFF."""
        self._set_state(session, host_id, serial, install_id, {HostState.INSTALLED}, HostState.HANDED_OFF, None,
                        "handoff", message, now)

    def ready(self, session: Session, host_id: int, serial: str, now: dt.datetime, message: str) -> None:
        """Every hand-off job succeeded: HANDED_OFF → READY."""
        self._set_state(session, host_id, serial, None, {HostState.HANDED_OFF}, HostState.READY, None, "handoff",
                        message, now)

    def failed(self, session: Session, install: models.Install, message: str, now: dt.datetime) -> None:
        self._fail(session, install.host, install, "installer_error", f"installer reported failure: {message}", now)

    # ------------------------------------------------------------------ reaper

    def reap(self, session: Session, now: dt.datetime) -> list[str]:
        """Fail every install past its deadline, freeing its slot. Never
        re-arms. Several reapers (instances) may run at once: on PostgreSQL
        each takes the installs no other holds (``SKIP LOCKED``), and an
        install that another reaper or a late callback ended meanwhile is
        left alone quietly (its compare-and-set lost; nothing else of the
        pass is undone)."""
        expired = session.scalars(
            select(models.Install).where(models.Install.active.is_(True), models.Install.expires_at <= now)
            .order_by(models.Install.id).with_for_update(skip_locked=True)
        ).all()
        reaped = []
        for install in expired:
            host = install.host
            stage = "install slot deadline" if host.state == HostState.INSTALLING.value else "install deadline"
            try:
                with session.begin_nested():
                    self._fail(session, host, install, "timeout", f"{stage} passed at "
                               f"{install.expires_at:%Y-%m-%d %H:%M:%S} UTC without a callback", now)
            except IllegalTransition as lost:
                session.refresh(install)
                log.debug("reaper: install %d of %s ended elsewhere meanwhile (%s)", install.id, host.serial, lost)
                continue
            reaped.append(host.serial)
        return reaped

    # ---------------------------------------------------------------- internals

    def _fail(self, session: Session, host: models.Host, install: models.Install, reason: str, message: str,
              now: dt.datetime) -> None:
        state = HostState(host.state)
        self._move(session, host, install, {state}, HostState.FAILED, reason, "failed" if reason != "cancelled"
                   else "cancelled", f"{message} ({state} → failed: {reason})", now, hook="on-failed")
        _finish(install, reason, now)

    def _move(self, session: Session, host: models.Host, install: models.Install | None,
              expected: Iterable[HostState], target: HostState, reason: str | None, kind: str, message: str,
              now: dt.datetime, data: dict[str, Any] | None = None, hook: str | None = None) -> None:
        """:meth:`_set_state` for a loaded host, which learns its new state;
        then the hook, once the transaction has committed."""
        self._set_state(session, host.id, host.serial, install.id if install else None, expected, target, reason,
                        kind, message, now, data)
        # The UPDATE wrote them: the loaded row learns them without a second UPDATE at flush.
        set_committed_value(host, "state", target.value)
        set_committed_value(host, "state_reason", reason)
        if hook is not None:
            self._queue_hooks(session, hook, host.id, target, reason, now)

    def _queue_hooks(self, target: Session | Connection, hook: str, host_id: int, state: HostState,
                     reason: str | None, now: dt.datetime) -> None:
        """Queue the event's hooks in the change's own transaction: they run
        (in the worker) exactly when the change committed, once each."""
        runner = self.hooks
        scripts = runner.executables(hook) if runner is not None else []
        if runner is None or not scripts:  # the host is read for its hooks only when there are some
            return
        runner.enqueue(target, _hook_call(target, hook, host_id, state, reason), scripts, host_id, now)

    @staticmethod
    def _set_state(session: Session | Connection, host_id: int, serial: str, install_id: int | None,
                   expected: Iterable[HostState], target: HostState, reason: str | None, kind: str, message: str,
                   now: dt.datetime, data: dict[str, Any] | None = None, install: str | None = None,
                   install_params: dict[str, Any] | None = None) -> None:
        """THE write of a host's state: a compare-and-set from one of
        ``expected`` to ``target`` and its Event, in the caller's transaction;
        with ``install`` (a key of ``_INSTALL_SETS``), that update of the
        install too, only if the host moved. An illegal step, or a host no
        longer in an expected state, is a 409 (and the caller's transaction
        is rolled back)."""
        expected = set(expected)
        for state in expected:
            if not can_transition(state, target):
                raise IllegalTransition(f"host {serial}: {state} → {target} is not allowed")
        event = events.line(kind, message, host_id=host_id, install_id=install_id, time=now, data={
            **(data or {}), "state": target.value, **({"reason": reason} if reason else {})})
        params = {**event, "expected": [s.value for s in expected], "target": target.value, "reason": reason,
                  **(install_params or {})}
        one_statement = _is_postgresql(session)
        moved = _rowcount(session.execute(_MOVE_PG[install] if one_statement else _HOST_UPDATE, params))
        if moved == 1 and not one_statement:
            if install:
                session.execute(_INSTALL_UPDATE[install], params)
            events.write(session, [event])
        if moved != 1:
            actual = session.scalar(select(models.Host.state).where(models.Host.id == host_id))
            raise IllegalTransition(f"host {serial} is {actual}, not {'/'.join(sorted(expected))}; "
                                    f"it cannot become {target}")


def _check_bound(bound: str | None, client: str | None, serial: str) -> None:
    """A call with an install's token from another address than the one its
    first hardware report came from is refused as a wrong token is (a token
    copied from a boot entry is useless anywhere else)."""
    if bound is not None and client is not None and client != bound:
        log.warning("install token of host %s used from %s, but its install is bound to %s: refused",
                    serial, client, bound)
        raise NotFound("not found")


def protection(host: Any) -> str | None:
    """Why arming ``host`` (a row or a record) needs force: it is protected
    or in service; None if it does not."""
    return _protection(host, HostState(host.state))


def _protection(host: models.Host, state: HostState) -> str | None:
    if host.protected:
        return "is protected"
    if state in IN_SERVICE:
        return f"is in service ({state})"
    return None


def active_install(session: Session, host_id: int) -> models.Install | None:
    return session.scalar(
        select(models.Install).where(models.Install.host_id == host_id, models.Install.active.is_(True))
    )


def _finish(install: models.Install, outcome: str, now: dt.datetime) -> None:
    install.active = False
    install.outcome = outcome
    install.finished_at = now


def _event(session: Session | Connection, host_id: int, install_id: int | None, kind: str, message: str, now: dt.datetime,
           data: dict[str, Any] | None = None) -> None:
    events.record(session, kind, message, host_id=host_id, install_id=install_id, data=data, time=now)


def _is_postgresql(session: Session | Connection) -> bool:
    bind = session.get_bind() if isinstance(session, Session) else session
    return bind.dialect.name == "postgresql"


def _rowcount(result: Any) -> int:
    """Rows an UPDATE or INSERT touched (a CursorResult's count)."""
    return int(result.rowcount)


def _hook_call(connection: Session | Connection, hook: str, host_id: int, state: HostState,
               reason: str | None) -> HookCall:
    """What a hook is told about the host: read in one statement, so a
    change made without loading the host needs no ORM objects."""
    row = connection.execute(_HOOK_HOST, {"host_id": host_id}).one()
    return HookCall(hook, row.serial, row.hostname, row.mac or "", row.ip, row.profile, state.value, reason)


def _report_data(report: HardwareReport) -> dict[str, Any]:
    return {
        "serial": report.serial, "manufacturer": report.manufacturer, "model": report.model,
        "cpus": report.cpus, "memory_mib": report.memory_mib, "memory_source": report.memory_source,
        "memtotal_mib": report.memtotal_mib, "boot_mac": report.boot_mac,
        "disks": [{"name": d.name, "size_gb": d.size_gb, "model": d.model} for d in report.disks],
        "nics": [{"mac": n.mac, "name": n.name, "link": n.link} for n in report.nics],
    }
