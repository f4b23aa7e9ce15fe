"""The concurrent-install cap: who may install now, who waits, in what order.

A grant is decided inside the caller's write transaction after
:func:`lock_slots`, so the cap holds across gunicorn workers and provisiond
instances: SQLite serialises writers (``BEGIN IMMEDIATE``), PostgreSQL takes a
transaction-scoped advisory lock. "Wait" needs no lock: when the slots in use
plus the live waiters ahead already fill the cap, the answer can only be
stale in the waiter's disfavour, and it asks again. This module decides; the
lifecycle writes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Boolean, Connection, Integer, String, bindparam, column, func, select, text
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.states import HostState

#: Arbitrary, fixed key of the PostgreSQL advisory lock that guards the cap.
_ADVISORY_KEY = 0x70766473  # "pvds"
_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


@dataclass(frozen=True)
class Limits:
    cap: int
    retry_seconds: int
    stale_seconds: int

    @property
    def heartbeat(self) -> dt.timedelta:
        """How old a waiter's ``last_seen_at`` may grow before a poll rewrites
        it: a tenth of the staleness limit, so most polls write nothing."""
        return dt.timedelta(seconds=max(1, self.stale_seconds // 10))


@dataclass(frozen=True)
class SlotDecision:
    granted: bool
    position: int = 0  # 1-based place in the queue when not granted
    retry_after: int = 0
    message: str = ""
    in_use: int = 0  # slots in use once granted


def lock_slots(connection: Connection) -> None:
    """Serialise grants for the rest of this transaction (SQLite: the write
    transaction began IMMEDIATE and already holds the lock; PostgreSQL: a
    transaction-scoped advisory lock). Statements after it see what earlier
    grants committed."""
    if connection.dialect.name == "postgresql":
        connection.execute(_LOCK, {"key": _ADVISORY_KEY})


#: A poll in one round trip: the token's install ``w`` and its host's state,
#: the slots in use, the live waiters ahead of it (first come, first served)
#: and whether any group has a cap of its own (when none has, the global cap
#: is the only one and these counts are the whole answer). A waiter not yet
#: queued is placed at ``:now`` (where it would join). Every poll of every
#: waiting installer runs it.
POLL = text("""
    WITH w AS (
      SELECT i.id, i.host_id, i.active, i.expires_at, COALESCE(i.queued_at, :now) AS queued_at,
             i.last_seen_at, i.bound_address, h.state, h.serial
      FROM installs i JOIN hosts h ON h.id = i.host_id WHERE i.token_hash = :token_hash)
    SELECT w.id, w.host_id, w.active, w.expires_at, w.queued_at, w.last_seen_at, w.bound_address, w.state, w.serial,
      (SELECT count(*) FROM hosts WHERE state = 'installing') AS in_use,
      (SELECT count(*) FROM installs i JOIN hosts h ON h.id = i.host_id
        WHERE i.active = :yes AND h.state = 'queued' AND i.id <> w.id
          AND i.last_seen_at >= :fresh
          AND (i.queued_at < w.queued_at OR (i.queued_at = w.queued_at AND i.id < w.id))) AS ahead,
      (SELECT count(*) FROM groups g WHERE g.install_cap IS NOT NULL) AS capped
    FROM w
""").bindparams(
    bindparam("yes", type_=Boolean()), bindparam("now", type_=models.UtcDateTime()),
    bindparam("fresh", type_=models.UtcDateTime()),
).columns(
    column("id", Integer()), column("host_id", Integer()), column("active", Boolean()),
    column("expires_at", models.UtcDateTime()), column("queued_at", models.UtcDateTime()),
    column("last_seen_at", models.UtcDateTime()), column("bound_address", String()), column("state", String()),
    column("serial", String()),
    column("in_use", Integer()), column("ahead", Integer()), column("capped", Integer()),
)


@dataclass(frozen=True)
class Poll:
    """What one poll saw: the asking install, its host's state, the counts."""

    install_id: int
    host_id: int
    active: bool
    expires_at: dt.datetime
    queued_at: dt.datetime
    last_seen_at: dt.datetime | None
    state: HostState
    serial: str
    in_use: int
    ahead: int
    #: Some group has a cap of its own: the poll's counts alone cannot decide.
    capped: bool
    #: When it was asked.
    now: dt.datetime
    #: Where the install's first hardware report came from (None before it).
    bound_address: str | None = None


def poll(connection: Connection, token_hash: str, now: dt.datetime, limits: Limits) -> Poll | None:
    """The install behind a token hash and the cap's counts, or None."""
    row = connection.execute(POLL, {
        "yes": True, "token_hash": token_hash, "now": now,
        "fresh": now - dt.timedelta(seconds=limits.stale_seconds),
    }).first()
    if row is None:
        return None
    return Poll(row.id, row.host_id, row.active, row.expires_at, row.queued_at, row.last_seen_at,
                HostState(row.state), row.serial, row.in_use, row.ahead, bool(row.capped), now, row.bound_address)


def retry_after(position: int, cap: int, limits: Limits) -> int:
    """Seconds a waiter should wait: 1 at the head of its cap's queue,
    growing to ``retry_seconds`` a cap's length back, so the queue polls gently."""
    return min(limits.retry_seconds, 1 + (position - 1) * limits.retry_seconds // max(cap, 1))


def _waiting(position: int, cap: int, limits: Limits, reason: str, queue_name: str = "") -> SlotDecision:
    retry = retry_after(position, cap, limits)
    return SlotDecision(False, position, retry, f"{reason}: position {position}{queue_name}, retry in {retry} s")


def still_waiting(seen: Poll, limits: Limits) -> SlotDecision | None:
    """The answer to a waiter's poll when the global cap alone decides (no
    group has a cap of its own) and says "wait": a read-only answer, which
    can only be stale in the waiter's disfavour (it retries). None when the
    poll might be granted, or when group caps must be weighed
    (:func:`standing`)."""
    if not seen.capped and seen.in_use + seen.ahead >= limits.cap:
        return _waiting(seen.ahead + 1, limits.cap, limits, f"concurrent install limit {limits.cap} reached")
    return None


def decide(connection: Connection, seen: Poll, limits: Limits) -> SlotDecision:
    """Grant a slot, or say where in which cap's queue the installer stands.
    ``seen`` must have been read after :func:`lock_slots`."""
    waiting = still_waiting(seen, limits)
    if waiting is not None:
        return waiting
    if seen.capped:
        held = standing(connection, seen, limits)
        if held is not None:
            return held
    return SlotDecision(True, in_use=seen.in_use + 1)


# ------------------------------------------------------------- group caps
# Every install is under the global cap and under the cap of each of its
# host's groups that has one (a rack behind one uplink). Waiters are served
# first come, first served, but only within the caps they are under: walking
# the live waiters in arrival order, a waiter whose caps all have room left
# reserves a slot in each; one that finds a cap full is held by that cap and
# reserves nothing, so a full rack never holds back hosts outside it, and
# every cap serves its own waiters in arrival order.

#: The global cap's key among group ids.
GLOBAL: int | None = None


@dataclass(frozen=True)
class Waiter:
    install_id: int
    #: Ids of the host's groups that have a cap of their own.
    groups: tuple[int, ...]


@dataclass(frozen=True)
class Standing:
    """Where one waiter stands: eligible (its caps have room for it after
    those ahead), or held by one cap, at a position in that cap's queue."""

    eligible: bool
    held_by: int | None = GLOBAL  # the holding group's id; GLOBAL for the global cap
    position: int = 0


def standings(waiters: list[Waiter], in_use: dict[int | None, int], caps: dict[int | None, int]) -> list[Standing]:
    """Each waiter's standing, for waiters in arrival order; ``caps`` and
    ``in_use`` are keyed by group id (``GLOBAL`` for the global cap)."""
    room = {key: cap - in_use.get(key, 0) for key, cap in caps.items()}
    held_by_group: list[int | None] = []  # per waiter so far: the group cap holding it, if one does
    result = []
    for index, waiter in enumerate(waiters):
        keys = [*waiter.groups, GLOBAL]  # groups first: a full group is the more specific reason
        full = [key for key in keys if room.get(key, 1) <= 0]
        if not full:
            for key in keys:
                room[key] = room.get(key, 1) - 1
            result.append(Standing(True))
            held_by_group.append(None)
            continue
        holder = full[0]
        # Its place in the holder's queue: the waiters ahead under that cap
        # that are not held back by some other group.
        ahead = sum(1 for other, group in zip(waiters[:index], held_by_group)
                    if (holder is GLOBAL or holder in other.groups) and group in (None, holder))
        result.append(Standing(False, holder, ahead + 1))
        held_by_group.append(holder)
    return result


_CAPPED_GROUPS = text("""
    SELECT g.id, g.name, g.install_cap,
      (SELECT count(*) FROM host_groups hg JOIN hosts h ON h.id = hg.host_id
        WHERE hg.group_id = g.id AND h.state = 'installing') AS in_use
    FROM groups g WHERE g.install_cap IS NOT NULL
""")
#: The live waiters ahead of install ``:w`` (queued at ``:wq``), in arrival
#: order, each with its capped groups (one row per group; none: NULL).
_WAITERS_AHEAD = text("""
    SELECT i.id, hg.group_id FROM installs i JOIN hosts h ON h.id = i.host_id
      LEFT JOIN host_groups hg ON hg.host_id = h.id
        AND hg.group_id IN (SELECT id FROM groups WHERE install_cap IS NOT NULL)
    WHERE i.active = :yes AND h.state = 'queued' AND i.id <> :w AND i.last_seen_at >= :fresh
      AND (i.queued_at < :wq OR (i.queued_at = :wq AND i.id < :w))
    ORDER BY i.queued_at, i.id
""").bindparams(bindparam("yes", type_=Boolean()), bindparam("fresh", type_=models.UtcDateTime()),
                bindparam("wq", type_=models.UtcDateTime()))
_OWN_CAPPED_GROUPS = text("""
    SELECT hg.group_id FROM host_groups hg JOIN groups g ON g.id = hg.group_id
    WHERE hg.host_id = :host_id AND g.install_cap IS NOT NULL
""")


def standing(connection: Connection, seen: Poll, limits: Limits) -> SlotDecision | None:
    """The waiter's answer weighing every cap: "wait" (naming the cap that
    holds it and its place in that cap's queue), or None when its caps all
    have room for it after the waiters ahead."""
    groups = {row.id: row for row in connection.execute(_CAPPED_GROUPS)}
    caps: dict[int | None, int] = {GLOBAL: limits.cap, **{gid: row.install_cap for gid, row in groups.items()}}
    in_use: dict[int | None, int] = {GLOBAL: seen.in_use, **{gid: row.in_use for gid, row in groups.items()}}
    ahead: dict[int, list[int]] = {}
    for install_id, group_id in connection.execute(_WAITERS_AHEAD, {
            "yes": True, "w": seen.install_id, "wq": seen.queued_at,
            "fresh": seen.now - dt.timedelta(seconds=limits.stale_seconds)}):
        ahead.setdefault(install_id, [])
        if group_id is not None:
            ahead[install_id].append(group_id)
    own = tuple(connection.scalars(_OWN_CAPPED_GROUPS, {"host_id": seen.host_id}))
    waiters = [Waiter(install_id, tuple(gids)) for install_id, gids in ahead.items()]
    mine = standings([*waiters, Waiter(seen.install_id, own)], in_use, caps)[-1]
    if mine.eligible:
        return None
    if mine.held_by is GLOBAL:
        return _waiting(mine.position, limits.cap, limits, f"concurrent install limit {limits.cap} reached")
    group = groups[mine.held_by]
    return _waiting(mine.position, group.install_cap, limits,
                    f"install limit {group.install_cap} of group {group.name} reached", f" in {group.name}")


@dataclass(frozen=True)
class Queued:
    """One waiting host, as the queue view shows it."""

    serial: str
    queued_at: dt.datetime
    stale: bool
    #: None for a stale waiter (it has lost its place until it polls again).
    standing: Standing | None


@dataclass(frozen=True)
class CapUse:
    group: str | None  # None: the global cap
    cap: int
    in_use: int


def queue(session: Session, now: dt.datetime, limits: Limits) -> tuple[list[Queued], list[CapUse]]:
    """Waiting hosts in arrival order with where each stands, and every cap
    with its slots in use (the global cap first)."""
    fresh = now - dt.timedelta(seconds=limits.stale_seconds)
    capped = {row.id: row for row in session.execute(_CAPPED_GROUPS)}
    rows = session.execute(
        select(models.Install.id, models.Host.serial, models.Install.queued_at, models.Install.last_seen_at,
               models.host_groups.c.group_id)
        .join(models.Install, models.Install.host_id == models.Host.id)
        .outerjoin(models.host_groups, (models.host_groups.c.host_id == models.Host.id)
                   & models.host_groups.c.group_id.in_(list(capped) or [-1]))
        .where(models.Install.active.is_(True), models.Host.state == HostState.QUEUED.value)
        .order_by(models.Install.queued_at, models.Install.id)
    ).all()
    waiting: dict[int, tuple[str, dt.datetime, bool, list[int]]] = {}
    for install_id, serial, queued_at, last_seen, group_id in rows:
        # A queued install has both times (the first slot request sets them).
        entry = waiting.setdefault(install_id, (serial, queued_at or now, last_seen is None or last_seen < fresh, []))
        if group_id is not None:
            entry[3].append(group_id)
    in_use = int(session.scalar(select(func.count()).select_from(models.Host)
                                .where(models.Host.state == HostState.INSTALLING.value)) or 0)
    caps: dict[int | None, int] = {GLOBAL: limits.cap, **{gid: row.install_cap for gid, row in capped.items()}}
    used: dict[int | None, int] = {GLOBAL: in_use, **{gid: row.in_use for gid, row in capped.items()}}
    live = [(install_id, entry) for install_id, entry in waiting.items() if not entry[2]]
    standing_of = dict(zip((install_id for install_id, _ in live),
                           standings([Waiter(install_id, tuple(entry[3])) for install_id, entry in live], used, caps)))
    queued = [Queued(serial, queued_at, stale, standing_of.get(install_id))
              for install_id, (serial, queued_at, stale, _groups) in waiting.items()]
    uses = [CapUse(None, limits.cap, in_use)] + [CapUse(row.name, row.install_cap, row.in_use)
                                                 for row in sorted(capped.values(), key=lambda r: r.name)]
    return queued, uses

