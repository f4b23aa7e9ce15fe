"""The metrics directory: where the processes of one machine keep their counters.

prometheus_client's multiprocess mode gives each process a file per metric
type (``counter_<pid>.db``, ``histogram_<pid>.db``) in the directory named by
``PROMETHEUS_MULTIPROC_DIR``, and a scrape adds up every file there. The
variable must be set before prometheus_client is first imported, so the
``provisiond`` commands call :func:`prepare` before anything else starts:

* the directory is ``PROMETHEUS_MULTIPROC_DIR`` when the operator set it,
  else ``<run_dir>/metrics`` (``run_dir`` is ``<data_dir>/run``);
* it is emptied at start when no running process has files in it (the whole
  machine's provisiond is starting: its counters start again from 0, which
  Prometheus reads as the reset it is). While another process (a role
  started on its own, the supervisor of ``provisiond run``) still writes
  there, nothing is removed: the files of processes that ended stay, so the
  sums never go down mid-run;
* children (gunicorn's HTTP workers, the roles ``run`` supervises) inherit
  the variable.

A file belongs to a running process when that pid runs and started no later
than the file was last written; a pid reused after a restart or reboot does
not keep an old file alive. This module does not import prometheus_client.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

#: prometheus_client's switch to multiprocess mode (read when it is imported).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_FILE = re.compile(r"_(\d+)\.db$")


def prepare(run_dir: Path) -> Path:
    """Choose, create and (when no running process uses it) empty the
    metrics directory, and name it to this process and its children."""
    values = sys.modules.get("prometheus_client.values")
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError("prometheus_client was imported before the metrics directory was set: "
                           "call provisiond.metric_files.prepare() first")
    directory = Path(os.environ.get(MULTIPROC_ENV) or run_dir / "metrics")
    directory.mkdir(parents=True, exist_ok=True)
    clear_if_unused(directory)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def clear_if_unused(directory: Path) -> list[Path]:
    """Remove the metric files in ``directory`` unless a running process
    owns one of them; returns those removed."""
    if any(_owner_runs(path) for path in _files(directory)):
        return []
    removed = []
    for path in _files(directory):
        if not _owner_runs(path):  # asked again: a process may have started meanwhile
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def child_exit(_server: Any, worker: Any) -> None:
    """gunicorn ``child_exit`` (in the master): an HTTP worker ended. Its
    counters stay (they are part of the machine's totals); prometheus_client
    forgets its live gauges (provisiond has none today)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def _files(directory: Path) -> list[Path]:
    return [path for path in directory.glob("*.db") if _FILE.search(path.name)]


def _owner_runs(path: Path) -> bool:
    match = _FILE.search(path.name)
    assert match is not None
    pid = int(match.group(1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # runs, as another user
        pass
    try:
        written = path.stat().st_mtime
    except FileNotFoundError:
        return False
    started = _started(pid)
    return started is None or started <= written + 1  # /proc/stat's boot time is whole seconds


def _started(pid: int) -> float | None:
    """When process ``pid`` started (Unix time), or None when it cannot be told (not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None
    ticks = int(stat.rpartition(")")[2].split()[19])  # field 22, starttime, counted after the command name
    return boot + ticks / os.sysconf("SC_CLK_TCK")

