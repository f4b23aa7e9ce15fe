"""The built-in HTTP server: gunicorn, embedded, with the app built per worker."""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.app.base import BaseApplication

from provisiond.config import Settings
from provisiond.power.bell import Bell

log = logging.getLogger("provisiond.web")


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any], power_bell: Bell | None) -> None:
        self.settings = settings
        self.options = options
        self.power_bell = power_bell
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """In each worker, after the fork: its own Services (database engine,
        connections), but the master's power bell, so the power worker in the
        master wakes when this worker queues an operation."""
        from provisiond.services import Services
        from provisiond.web.app import build_app

        services = Services.build(self.settings)
        if self.power_bell is not None:
            services.power_bell = self.power_bell
        return build_app(services=services)


def _die_with_the_master(_server: Any, _worker: Any) -> None:
    """gunicorn ``post_fork``: a worker gets SIGTERM when its master dies.

    Without it a master killed with SIGKILL leaves its workers answering HTTP
    (with no netboot, power worker or reaper behind them) and holding the port,
    so a restart fails; with it the workers end with the master, as under
    systemd's control group."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: gunicorn's own parent check remains
        pass


def _warm_up(worker: Any) -> None:
    """gunicorn ``post_worker_init``: before its first request, a worker opens
    its database connection and asks the slot poll once, so the first
    installers after a start (or a worker's restart) do not wait for the
    connection, the driver's first-connect queries and the statement's
    compilation (tens of milliseconds, while other installers queue behind
    the cap's lock). A database that does not answer yet is not fatal: the
    first request connects, as it would have."""
    services = worker.wsgi.extensions["provisiond"]
    try:
        services.lifecycle.warm_up(services.db)
    except Exception as exc:  # noqa: BLE001 - any failure here only costs the first request its speed
        log.warning("worker %s: database warm-up failed (%s); the first request will connect", worker.pid, exc)


def run(settings: Settings, host: str, port: int, workers: int, power_bell: Bell | None = None) -> None:
    binds = [f"{host}:{port}"] + ([settings.boot_listen] if settings.boot_listen else [])
    log.info("serving HTTP on %s with %d workers", " and ".join(binds), workers)
    _Gunicorn(settings, {
        "bind": binds,
        "workers": workers,
        "worker_class": "sync",
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "timeout": 60,
        "graceful_timeout": 10,
        "post_fork": _die_with_the_master,
        "post_worker_init": _warm_up,
    }, power_bell).run()
