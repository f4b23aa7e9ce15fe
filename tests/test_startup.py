"""What every role checks before it starts: here, the secret key's
fingerprint when several instances make their first start at once."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from provisiond.startup import FINGERPRINT, check_secret_key


def test_two_first_starts_at_once_agree_on_the_key(services):
    """Two instances with the same key start on an empty database together:
    the second one's insert meets the first one's row (not yet committed when
    the second read it) and must start anyway, not die on the unique key."""
    if services.db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: the two inserts cannot interleave")
    fingerprint = services.vault.fingerprint
    other = services.db.engine.connect()
    other.begin()
    other.execute(text("INSERT INTO meta (key, value) VALUES (:k, :v)"), {"k": FINGERPRINT, "v": fingerprint})
    failure: list[BaseException] = []

    def start() -> None:
        try:
            check_secret_key(services)
        except BaseException as error:  # noqa: BLE001 - reported to the test below
            failure.append(error)

    starting = threading.Thread(target=start)
    starting.start()
    with services.db.engine.connect() as watcher:  # wait until its insert waits on ours
        while not watcher.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar():
            assert starting.is_alive(), f"it finished without meeting the other insert: {failure}"
            watcher.rollback()
    other.commit()
    other.close()
    starting.join(30)
    assert not starting.is_alive()
    assert failure == []
