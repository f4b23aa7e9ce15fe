"""A hypothesis state machine drives the lifecycle with random sequences of
arm / kickstart / report / slot / done / failed / cancel / clock ticks /
reaper runs / restarts, and checks the invariants after every step:

* never more than ``cap`` hosts INSTALLING, nor more than a group's own
  cap of that group's hosts;
* every slot answer is what first come, first served within each cap says
  (a reference model, written out plainly below): granted exactly when
  every cap the host is under has room after the eligible waiters ahead of
  it, and otherwise "wait" naming the cap that holds it and its position;
* no INSTALLED host still holds an install (and so a slot);
* a host has a live install exactly when it is in flight, and a token
  authenticates only for a host in flight (no installer for a host that is
  not armed).
"""

import datetime as dt

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import func, select

from provisiond import models
from provisiond.db import Database
from provisiond.errors import NotFound, ProvisiondError
from provisiond.install.lifecycle import IN_FLIGHT, Lifecycle
from provisiond.install.slots import Limits
from provisiond.inventory.groups import GroupSpec, create_group
from provisiond.inventory.hosts import ImportRow, get_host, import_hosts
from provisiond.inventory.schema import UNSET, parse_host
from provisiond.states import HostState
from provisiond.vault import Vault
from tests.conftest import _truncate

CAP = 2
HOSTS = [f"SN{i}" for i in range(7)]
#: Two racks with caps of their own under the global cap; SN5 and SN6 are in no capped group.
GROUPS = {"rack-a": (1, ["SN0", "SN1", "SN2"]), "rack-b": (2, ["SN2", "SN3", "SN4"]), "plain": (None, ["SN5"])}
START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def make_lifecycle(vault: Vault) -> Lifecycle:
    return Lifecycle(vault=vault, hooks=None, limits=Limits(cap=CAP, retry_seconds=5, stale_seconds=120),
                     arm_ttl=dt.timedelta(seconds=600), install_timeout=dt.timedelta(seconds=900))


def test_lifecycle_invariants(db_url, tmp_path):
    vault = Vault(tmp_path / "secret.key")

    class Lifecycles(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            if not db_url.startswith("sqlite"):
                _truncate(db_url)
            else:
                _clear_sqlite(db_url)
            self.db = Database(db_url)
            self.lifecycle = make_lifecycle(vault)
            self.now = START
            self.tokens: dict[str, str] = {}
            rows = [ImportRow(parse_host({"serial": sn, "hostname": sn.lower(), "macs": [f"52:54:00:00:00:1{i}"],
                                          "profile": "default",
                                          "groups": [g for g, (_, members) in GROUPS.items() if sn in members]},
                                         {"default"})[0], UNSET, f"t:{i}")
                    for i, sn in enumerate(HOSTS)]
            with self.db.write() as session:
                for name, (cap, _members) in GROUPS.items():
                    create_group(session, GroupSpec(name, "", 0, {}, cap))
                session.flush()
                import_hosts(session, rows, vault, "test")

        def teardown(self) -> None:
            self.db.dispose()

        def _do(self, action) -> None:  # one unit of work; a refused step changes nothing
            try:
                with self.db.write() as session:
                    action(session)
            except ProvisiondError:
                pass

        def _install(self, session, serial):
            token = self.tokens.get(serial)
            if token is None:
                raise NotFound("no token")
            return self.lifecycle.find_install(session, token, self.now)

        @rule(serial=st.sampled_from(HOSTS))
        def arm(self, serial):
            def step(session):
                self.tokens[serial] = self.lifecycle.arm(session, serial, self.now, "test").token
            self._do(step)

        @rule(serial=st.sampled_from(HOSTS))
        def kickstart(self, serial):
            self._do(lambda s: self.lifecycle.kickstart_fetched(s, self._install(s, serial), self.now, "test"))

        @rule(serial=st.sampled_from(HOSTS), good=st.booleans())
        def report(self, serial, good):
            from provisiond.install.verify import parse_report

            report = parse_report({"serial": serial if good else "WRONG", "nics": [],
                                   "boot_mac": f"52:54:00:00:00:1{HOSTS.index(serial)}"})
            self._do(lambda s: self.lifecycle.report_hardware(s, self._install(s, serial), report, self.now))

        @rule(serial=st.sampled_from(HOSTS))
        def rush(self, serial):
            """A whole healthy boot up to the slot request, so the cap is often contended."""
            self.arm(serial)
            self.kickstart(serial)
            self.report(serial, True)
            self.slot(serial)

        @rule(serial=st.sampled_from(HOSTS))
        def slot(self, serial):
            """As the slot endpoint does: a read-only answer when it suffices,
            else a short write, under the cap's lock when it may grant."""
            token = self.tokens.get(serial)
            if token is None:
                return
            expected = reference_answer(self.db, token, self.now)
            try:
                answer = self.lifecycle.request_slot(self.db, token, self.now)
            except ProvisiondError:
                return
            with self.db.read() as session:
                state = HostState(get_host(session, serial).state)
            assert state == (HostState.INSTALLING if answer.granted else HostState.QUEUED), (answer, state)
            if expected is not None:
                granted, cap, position = expected
                assert answer.granted == granted, (serial, answer, expected)
                if not granted:
                    assert answer.position == position, (serial, answer, expected)
                    assert (f"of group {cap} reached" if cap else "concurrent install limit") in answer.message

        @rule(serial=st.sampled_from(HOSTS))
        def done(self, serial):
            def step(session):
                token = self.tokens.get(serial)
                if token is None:
                    return
                install = self.lifecycle.find_install(session, token, self.now, finished_ok=True)
                self.lifecycle.done(session, install, self.now)
            self._do(step)

        @rule(serial=st.sampled_from(HOSTS))
        def failed(self, serial):
            self._do(lambda s: self.lifecycle.failed(s, self._install(s, serial), "boom", self.now))

        @rule(serial=st.sampled_from(HOSTS))
        def cancel(self, serial):
            self._do(lambda s: self.lifecycle.cancel(s, serial, self.now, "test"))

        @rule(seconds=st.sampled_from([1, 60, 400, 1000]))
        def tick(self, seconds):
            self.now += dt.timedelta(seconds=seconds)

        @rule()
        def reap(self):
            self._do(lambda s: self.lifecycle.reap(s, self.now))

        @rule()
        def restart(self):
            self.db.dispose()
            self.db = Database(db_url)
            self.lifecycle = make_lifecycle(vault)

        @invariant()
        def at_most_cap_installing(self):
            with self.db.read() as session:
                installing = set(session.scalars(select(models.Host.serial)
                                                 .where(models.Host.state == HostState.INSTALLING.value)))
            assert len(installing) <= CAP
            for name, (cap, members) in GROUPS.items():
                if cap is not None:
                    assert len(installing & set(members)) <= cap, (name, installing)

        @invariant()
        def live_install_exactly_when_in_flight(self):
            with self.db.read() as session:
                rows = session.execute(
                    select(models.Host.serial, models.Host.state, func.count(models.Install.id))
                    .outerjoin(models.Install, (models.Install.host_id == models.Host.id)
                               & models.Install.active.is_(True))
                    .group_by(models.Host.serial, models.Host.state)
                ).all()
            for serial, state, active in rows:
                in_flight = HostState(state) in IN_FLIGHT
                assert active == (1 if in_flight else 0), (serial, state, active)
                assert not (state == HostState.INSTALLED.value and active)

        @invariant()
        def tokens_only_work_for_hosts_in_flight(self):
            with self.db.read() as session:
                for serial, token in self.tokens.items():
                    try:
                        install = self.lifecycle.find_install(session, token, self.now)
                    except NotFound:
                        continue
                    assert HostState(install.host.state) in IN_FLIGHT, serial

    run_state_machine_as_test(Lifecycles, settings=settings(
        max_examples=30, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))


def _clear_sqlite(url: str) -> None:
    database = Database(url)
    with database.engine.begin() as conn:
        for table in reversed(models.Base.metadata.sorted_tables):
            conn.execute(table.delete())
    database.dispose()


def reference_answer(db, token, now):
    """What first come, first served within each cap says about this slot
    request, from the data as it is before the request: (granted, the cap
    holding it (a group name, None for the global cap), its position); None
    when the request will not be decided (no such live install, not yet
    verified, already installing)."""
    from provisiond.install.lifecycle import hash_token

    fresh = now - dt.timedelta(seconds=120)
    with db.read() as session:
        rows = session.execute(
            select(models.Install.id, models.Install.token_hash, models.Install.queued_at,
                   models.Install.last_seen_at, models.Install.active, models.Install.expires_at, models.Host.serial,
                   models.Host.state)
            .join(models.Host, models.Host.id == models.Install.host_id)).all()
    me = next((r for r in rows if r.token_hash == hash_token(token)), None)
    if me is None or not me.active or me.expires_at <= now or me.state not in ("verifying", "queued"):
        return None
    installing = {r.serial for r in rows if r.active and r.state == "installing"}
    my_time = me.queued_at or now
    ahead = sorted((r for r in rows if r.active and r.state == "queued" and r.id != me.id
                    and r.last_seen_at is not None and r.last_seen_at >= fresh
                    and (r.queued_at, r.id) < (my_time, me.id)), key=lambda r: (r.queued_at, r.id))

    def caps_of(serial):
        return [g for g, (cap, members) in GROUPS.items() if cap is not None and serial in members] + [None]

    def size(cap):
        return CAP if cap is None else GROUPS[cap][0]

    room = {cap: size(cap) - sum(1 for s in installing if cap is None or s in GROUPS[cap][1])
            for cap in [None, *[g for g, (c, _) in GROUPS.items() if c is not None]]}
    held = {}  # serial ahead -> the group holding it (None: eligible or held by the global cap)
    for r in [*ahead, me]:
        full = [cap for cap in caps_of(r.serial) if room[cap] <= 0]
        if r is me:
            if not full:
                return True, None, 0
            cap = full[0]
            position = 1 + sum(1 for other in ahead if (cap is None or other.serial in GROUPS[cap][1])
                               and held[other.serial] in (None, cap))
            return False, cap, position
        if full:
            held[r.serial] = full[0]
        else:
            held[r.serial] = None
            for cap in caps_of(r.serial):
                room[cap] -= 1
    raise AssertionError("unreachable")
