"""Timeline lines are one line, whatever text reaches them."""

import pytest

from provisiond.events import MESSAGE_LIMIT, has_control, one_line


@pytest.mark.parametrize(("text", "line"), [
    ("plain text", "plain text"),
    ("a\nb", "a\\nb"),
    ("a\r\nb", "a\\r\\nb"),
    ("tab\there", "tab\\there"),
    ("\x1b[2Jcleared", "\\x1b[2Jcleared"),
    ("next\u2028line", "next\\u2028line"),
    ("c1\x85control", "c1\\x85control"),
    ("ünïcode ✓", "ünïcode ✓"),
])
def test_control_characters_become_visible_escapes(text, line):
    assert one_line(text) == line
    assert len(one_line(text).splitlines()) == 1
    assert has_control(text) == (text != line)


def test_a_long_message_is_cut_and_marked():
    assert one_line("x" * (MESSAGE_LIMIT + 10)) == "x" * MESSAGE_LIMIT + "…"


# --------------------------------------------------------------------------- the cursor

import random  # noqa: E402
import threading  # noqa: E402

from sqlalchemy import text as sql_text  # noqa: E402

from provisiond import events  # noqa: E402
from provisiond.db import Database  # noqa: E402


def _write(connection, message: str) -> None:
    events.record(connection, events.Kind.HOST, message, host_id=None)


def test_a_line_committed_late_is_neither_skipped_nor_repeated(db_url):
    """Transaction A writes first (a lower id) and commits last: a reader
    following by "id > last seen" would take B's line and skip A's; the
    cursor shows neither until both are in, then both, A's first."""
    database = Database(db_url)
    try:
        cursor = events.Cursor()
        with database.engine.connect() as a:
            a.begin()
            _write(a, "A, written first, committed last")
            if database.is_sqlite:  # one writer at a time: B waits for A, ids are commit order
                a.commit()
                with database.engine.begin() as b:
                    _write(b, "B")
            else:
                with database.engine.begin() as b:
                    _write(b, "B")
                with database.engine.connect() as reader:
                    early = events.read(reader, cursor)
                assert early.events == [] and early.cursor == cursor  # A's transaction still runs
                a.commit()
        with database.engine.connect() as reader:
            page = events.read(reader, cursor)
        assert [e["message"] for e in page.events] == ["A, written first, committed last", "B"]
        with database.engine.connect() as reader:
            assert events.read(reader, page.cursor).events == []
    finally:
        database.dispose()


def test_a_follower_sees_every_line_once_under_concurrent_writers(db_url):
    """Several writers, each holding its transaction open a random while
    (one line or a few each); a follower reading with the cursor the whole
    time sees every committed line exactly once, each writer's in order;
    rolled-back lines never."""
    database = Database(db_url, pool_size=10) if not db_url.startswith("sqlite") else Database(db_url)
    written: dict[str, list[str]] = {}
    stop = threading.Event()
    seen: list[dict] = []

    class RolledBack(Exception):
        pass

    def writer(name: str) -> None:
        rng = random.Random(name)
        mine = written.setdefault(name, [])
        for n in range(15):
            lines = [f"{name} {n}.{i}" for i in range(rng.choice((1, 1, 3)))]
            try:
                with (database.write() if database.is_sqlite else database.engine.begin()) as connection:
                    for message in lines:
                        _write(connection, message)
                        if not database.is_sqlite:  # hold the transaction open a while
                            connection.execute(sql_text("SELECT pg_sleep(:s)"), {"s": rng.random() * 0.02})
                    if rng.random() < 0.1:
                        raise RolledBack
            except RolledBack:
                continue
            mine.extend(lines)

    def follower() -> None:
        cursor = events.Cursor()
        while True:
            done = stop.is_set()
            with database.engine.connect() as connection:
                page = events.read(connection, cursor, limit=7)
            seen.extend(page.events)
            cursor = page.cursor
            if done and not page.events:
                return

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(4)]
    reading = threading.Thread(target=follower)
    reading.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    reading.join(60)
    database.dispose()
    messages = [e["message"] for e in seen]
    assert len(messages) == len(set(messages)), "a line was seen twice"
    assert sorted(messages) == sorted(m for lines in written.values() for m in lines), "a line was missed"
    for name, lines in written.items():
        assert [m for m in messages if m.startswith(f"{name} ")] == lines, f"{name}'s lines out of order"


def test_deleting_a_host_keeps_its_timeline_found_by_serial(client, auth, demo_data, arm):
    arm("712DM2Y")
    before = client.get("/api/v1/hosts/712DM2Y/events", headers=auth).get_json()["events"]
    assert client.post("/api/v1/hosts/712DM2Y/cancel", headers=auth).status_code == 200
    assert client.delete("/api/v1/hosts/712DM2Y?force=true", headers=auth).status_code == 204
    kept = client.get("/api/v1/events?serial=712dm2y", headers=auth).get_json()["events"]
    assert [e["id"] for e in kept][:len(before)] == [e["id"] for e in before]
    assert kept[-1]["message"] == "host 712DM2Y removed from the data source"
    assert all(e["serial"] == "712DM2Y" for e in kept)
    assert client.get("/api/v1/events?kind=nonsense", headers=auth).status_code == 400
    assert client.get("/api/v1/events?after=x:y", headers=auth).status_code == 400
