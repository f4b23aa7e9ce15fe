"""`provisiond netboot`: readiness follows its services' threads."""

from __future__ import annotations

import dataclasses

from provisiond.health import readiness
from provisiond.netboot.daemon import NetbootDaemon
from provisiond.services import Services
from tests.conftest import free_port


def test_readiness_names_a_service_whose_loop_ended(settings, services):
    changed = dataclasses.replace(settings, tftp_port=free_port(), netboot_address="127.0.0.1",
                                  pxelinux_dir=settings.data_dir / "tftp")
    changed.pxelinux_dir.mkdir(parents=True)
    daemon = NetbootDaemon(Services(settings=changed, db=services.db))
    daemon.start()
    try:
        loops = daemon.loops()
        assert [loop.name for loop in loops] == ["the TFTP service"]
        assert readiness(services.db, loops) == (True, {"status": "ready", "problems": []})
        tftp = daemon.running[0]
        thread = tftp.thread
        tftp.stop()  # its loop ends, as a crashed one would
        assert thread is not None and not thread.is_alive()
        ready, body = readiness(services.db, loops)
        assert not ready and body["problems"] == ["the TFTP service is not running"]
    finally:
        daemon.stop()
