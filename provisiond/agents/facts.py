"""A host's facts over time: which agents are due a refresh, and what
changed between two reports (said on the host's timeline).

Facts are refreshed by a ``facts`` job the worker queues every
``facts_interval_seconds`` for the accepted agents whose facts are older
than that (one job per sweep, all due hosts as its runs). A refresh that
changes nothing an operator cares about writes no event; the uptime, the
free memory and the like change on every report and are not compared.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import exists, func, select, text
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.jobs.targets import Target

#: Package changes named one by one in an event, at most (then "and N more").
NAMED_AT_MOST = 5
#: Held (PostgreSQL) by the sweep that queues facts jobs, so workers of
#: several instances never both ask the same agents; SQLite's writers are
#: serialised already.
_SWEEP_KEY = 0x70766466  # "pvdf"
_SWEEP_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


def lock_sweep(session: Session) -> None:
    """One facts sweep at a time across instances (until the transaction ends)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_SWEEP_LOCK, {"key": _SWEEP_KEY})


def due(session: Session, now: dt.datetime, interval_seconds: int, online_seconds: float) -> list[Target]:
    """The accepted agents (with a host) heard from in the last
    ``online_seconds`` whose facts are older than the interval (none yet: an
    interval after it was accepted, so a hand-off's own facts job comes
    first), and that have no facts run queued or running. An offline agent is not
    asked (its run would only end as did_not_run): it is, once it is back."""
    agent, run, job = models.Agent, models.JobRun, models.Job
    stale = now - dt.timedelta(seconds=interval_seconds)
    online = now - dt.timedelta(seconds=online_seconds)
    live_facts_run = exists().where(run.agent_id == agent.id, run.state.in_(("queued", "running")),
                                    run.job_id == job.id, job.type == "facts")
    rows = session.execute(
        select(agent.id, agent.host_id, models.Host.serial).join(models.Host, models.Host.id == agent.host_id)
        .where(agent.state == "accepted", agent.last_seen_at >= online,
               func.coalesce(agent.facts_at, agent.decided_at) < stale, ~live_facts_run)
        .order_by(models.Host.serial))
    return [Target(host_id, serial, agent_id) for agent_id, host_id, serial in rows if host_id is not None]


def changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """What changed, one phrase per part, in an operator's words; [] when
    nothing compared changed. ``old`` None or empty: the first report."""
    if not old:
        return []
    found = []
    for describe in (_os, _kernel, _cpus, _memory, _packages, _services):
        phrase = describe(old, new)
        if phrase:
            found.append(phrase)
    return found


def first(new: Mapping[str, Any]) -> str:
    """The first report, in one line."""
    os_name = _field(new, "os", "PRETTY_NAME") or "unknown OS"
    kernel = _field(new, "kernel", "release") or "unknown"
    return (f"first facts: {os_name}, kernel {kernel}, {len(_items(new, 'packages'))} package(s), "
            f"{len(_items(new, 'services'))} service(s)")


def _field(facts: Mapping[str, Any], part: str, key: str) -> Any:
    """``facts[part][key]``, or None where the report has no such mapping
    (an agent's report is taken as it comes: nothing in it may raise here)."""
    value = facts.get(part)
    return value.get(key) if isinstance(value, dict) else None


def _items(facts: Mapping[str, Any], part: str) -> list[dict[str, Any]]:
    value = facts.get(part)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _was(name: str, before: Any, after: Any) -> str | None:
    return None if before == after else f"{name} {before or '?'} -> {after or '?'}"


def _os(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    return _was("OS", _field(old, "os", "PRETTY_NAME"), _field(new, "os", "PRETTY_NAME"))


def _kernel(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    return _was("kernel", _field(old, "kernel", "release"), _field(new, "kernel", "release"))


def _cpus(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    return _was("CPUs", old.get("cpu_count"), new.get("cpu_count"))


def _memory(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    def mib(facts: Mapping[str, Any]) -> int | None:
        total = _field(facts, "memory", "total_bytes")
        return total // (1024 * 1024) if isinstance(total, int) and not isinstance(total, bool) else None
    before, after = mib(old), mib(new)
    return None if before == after else f"memory {before} MiB -> {after} MiB"


def _versions(facts: Mapping[str, Any]) -> dict[str, str]:
    return {str(p.get("name", "")): str(p.get("version", "")) for p in _items(facts, "packages")}


def _packages(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    before, after = _versions(old), _versions(new)
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(n for n in set(before) & set(after) if before[n] != after[n])
    if not (added or removed or changed):
        return None
    parts = []
    if added:
        parts.append(f"{len(added)} added ({_named([f'{n} {after[n]}' for n in added])})")
    if removed:
        parts.append(f"{len(removed)} removed ({_named(removed)})")
    if changed:
        parts.append(f"{len(changed)} changed ({_named([f'{n} {before[n]} -> {after[n]}' for n in changed])})")
    return "packages: " + ", ".join(parts)


def _named(items: list[str]) -> str:
    shown = ", ".join(items[:NAMED_AT_MOST])
    return shown + (f" and {len(items) - NAMED_AT_MOST} more" if len(items) > NAMED_AT_MOST else "")


def _states(facts: Mapping[str, Any]) -> dict[str, str]:
    return {str(s.get("unit", "")): str(s.get("active", "")) for s in _items(facts, "services")}


def _services(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    before, after = _states(old), _states(new)
    moved = [f"{unit} {before.get(unit) or 'absent'} -> {after.get(unit) or 'absent'}"
             for unit in sorted(set(before) | set(after)) if before.get(unit) != after.get(unit)]
    return f"services: {_named(moved)}" if moved else None
