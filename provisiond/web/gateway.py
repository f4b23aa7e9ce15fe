"""The agent gateway (``provisiond gateway``): the agent endpoints over
HTTPS, where thousands of parked long-polls are cheap.

gunicorn with gevent workers: each parked poll is a greenlet waiting on an
event (:mod:`provisiond.jobs.parking`), not a thread or a process. Measured
on this project's 2-core machine (``../shared/pxe-lab.md``): one gevent
worker parked 10,000 idle long-polls in ~215 MB and woke them all in
seconds; a gthread worker with 10,000 threads did not finish the same
wake-up in 100 s. The certificate is provisiond's own CA's unless the
operator configures theirs (:mod:`provisiond.tls`).

The gateway serves the same application as ``serve``; over plain HTTP the
agent endpoints answer 404 (:mod:`provisiond.web.agent_api`).
"""

from __future__ import annotations

import logging
from typing import Any

from provisiond.config import Settings
from provisiond.metric_files import child_exit
from provisiond.web.server import _die_with_the_master, _Gunicorn

log = logging.getLogger("provisiond.gateway")

#: Connections one gevent worker holds at most (parked polls included).
WORKER_CONNECTIONS = 20_000


def _worker_ready(worker: Any) -> None:
    log.info("gateway worker %s ready", worker.pid)


def options(settings: Settings, certfile: str, keyfile: str, workers: int) -> dict[str, Any]:
    return {
        "bind": [settings.agent_listen],
        "workers": workers,
        "worker_class": "gevent",
        "worker_connections": WORKER_CONNECTIONS,
        "certfile": certfile,
        "keyfile": keyfile,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        # A gevent worker tells the master it lives from its own loop: a
        # parked poll does not make it look stuck.
        "timeout": 60,
        "graceful_timeout": 10,
        "keepalive": 75,
        "backlog": 4096,
        "control_socket_disable": True,
        "post_fork": _die_with_the_master,
        "post_worker_init": _worker_ready,
        "child_exit": child_exit,
    }


def run(settings: Settings, workers: int) -> None:
    from provisiond.tls import ensure

    files = ensure(settings)
    chosen = options(settings, str(files.cert), str(files.key), workers)
    log.info("agent gateway on https://%s with %d gevent worker(s); CA fingerprint %s", settings.agent_listen,
             workers, files.ca_fingerprint)
    _Gunicorn(settings, chosen).run()
