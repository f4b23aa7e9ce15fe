"""The workers' doorbell: a ring from any process (an HTTP worker, another
machine through PostgreSQL's NOTIFY) wakes a listening worker's one wait."""

from __future__ import annotations

import os

from provisiond.bell import Bell
from provisiond.db import Database


def test_a_ring_wakes_the_wait_and_an_unrung_wait_times_out(tmp_path):
    listener, ringer = Bell(tmp_path, "power"), Bell(tmp_path, "power")
    listener.listen()
    try:
        assert listener.wait(0.01) is False
        ringer.ring()
        assert listener.wait(30) is True
        assert listener.wait(0.01) is False  # answered: the next wait sleeps again
    finally:
        listener.close()


def test_many_rings_never_block_and_one_wait_answers_them_all(tmp_path):
    listener, ringer = Bell(tmp_path, "power"), Bell(tmp_path, "power")
    listener.listen()
    try:
        for _ in range(20_000):  # far more than the socket buffer holds
            ringer.ring()
        assert listener.wait(0) is True
        assert listener.wait(0.01) is False
    finally:
        listener.close()


def test_another_process_rings_and_every_listener_hears(tmp_path):
    first, second = Bell(tmp_path, "power"), Bell(tmp_path, "power")
    first.listen()
    child = os.fork()
    if child == 0:  # another worker process: it listens too, then exits
        second.listen()
        os._exit(0 if second.wait(30) else 1)
    try:
        import time

        deadline = time.monotonic() + 10
        while len(list(tmp_path.glob("power-*.bell"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        Bell(tmp_path, "power").ring()  # an HTTP worker
        assert first.wait(30) is True
        assert os.waitpid(child, 0)[1] == 0
    finally:
        first.close()


def test_a_bell_whose_listener_died_is_removed_and_a_ring_never_raises(tmp_path):
    gone = Bell(tmp_path, "power")
    gone.listen()
    gone._socket.close()  # its process died without tidying up: the file stays
    gone._socket = None
    Bell(tmp_path, "power").ring()
    assert list(tmp_path.glob("power-*.bell")) == []
    Bell(tmp_path / "nowhere", "power").ring()


def test_on_postgresql_a_ring_reaches_a_listener_elsewhere_by_notify(db_url, tmp_path):
    database = Database(db_url)
    try:
        listener = Bell(tmp_path / "machine-a", "power", database)
        ringer = Bell(tmp_path / "machine-b", "power", database)  # no socket of the listener's to find
        listener.listen()
        try:
            assert listener.wait(0.01) is False
            ringer.ring()
            assert listener.wait(30) is (not database.is_sqlite)
        finally:
            listener.close()
    finally:
        database.dispose()
