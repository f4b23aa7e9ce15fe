"""The HTTP role (``provisiond serve``): gunicorn, embedded, HTTP only.

The gunicorn master runs nothing but gunicorn: no thread is started in it
before it forks its workers (the power worker, the reaper and the work queue
run in ``provisiond worker``; DHCP and TFTP in ``provisiond netboot``). Each
worker builds its own services (database engine, connections) after the
fork. gunicorn's control socket is off (several instances on one machine
would share ``~/.gunicorn/gunicorn.ctl``); ``gunicorn_config`` names a
``gunicorn.conf.py`` whose settings apply over provisiond's own, the
listeners excepted.

Every worker writes its metrics to the machine's metrics directory, set up
before gunicorn starts (:mod:`provisiond.metric_files`); ``child_exit`` tells
prometheus_client when one ends.
"""

from __future__ import annotations

import logging
import runpy
from typing import Any

from gunicorn.app.base import BaseApplication

from provisiond.config import Settings
from provisiond.errors import ConfigError
from provisiond.metric_files import child_exit

log = logging.getLogger("provisiond.web")


#: Kept over a ``gunicorn_config``: the listeners (provisiond's settings)
#: and the hooks it cannot run without (a worker dying with its master, the
#: warm-up, the metrics of a worker that ended).
_PROVISIONDS_OWN = ("bind", "post_fork", "post_worker_init", "child_exit")


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        if self.settings.gunicorn_config:
            self._load_file(self.settings.gunicorn_config)
            for key in _PROVISIONDS_OWN:  # the listeners are provisiond's settings; its hooks it needs
                self.cfg.set(key, self.options[key])

    def _load_file(self, path: str) -> None:
        """A gunicorn.conf.py: every name in it that is a gunicorn setting
        is set (as ``gunicorn -c`` does; other names are ignored)."""
        try:
            names = runpy.run_path(path)
        except Exception as exc:
            raise ConfigError(f"gunicorn_config {path} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        for key, value in names.items():
            if key in self.cfg.settings:
                try:
                    self.cfg.set(key, value)
                except Exception as exc:
                    raise ConfigError(f"gunicorn_config {path}: {key} = {value!r}: {exc}") from exc

    def load(self) -> Any:
        """In each worker, after the fork: its own Services."""
        from provisiond.services import Services
        from provisiond.web.app import build_app

        return build_app(services=Services.build(self.settings))


def _die_with_the_master(_server: Any, _worker: Any) -> None:
    """gunicorn ``post_fork``: a worker gets SIGTERM when its master dies.

    Without it a master killed with SIGKILL leaves its workers answering HTTP
    and holding the port, so a restart fails; with it the workers end with
    the master, as under systemd's control group."""
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


def options(settings: Settings, host: str, port: int, workers: int) -> dict[str, Any]:
    binds = [f"{host}:{port}"] + ([settings.boot_listen] if settings.boot_listen else [])
    return {
        "bind": binds,
        "workers": workers,
        "worker_class": "sync",
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "timeout": 60,
        "graceful_timeout": 10,
        "control_socket_disable": True,
        "post_fork": _die_with_the_master,
        "post_worker_init": _warm_up,
        "child_exit": child_exit,
    }


def run(settings: Settings, host: str, port: int, workers: int) -> None:
    chosen = options(settings, host, port, workers)
    log.info("serving HTTP on %s with %d workers", " and ".join(chosen["bind"]), workers)
    _Gunicorn(settings, chosen).run()
