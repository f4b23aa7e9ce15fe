"""The metrics directory (:mod:`provisiond.metric_files`): whose it is, and
when its files are removed. The directory shared by real processes is in
tests/test_metrics.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from provisiond.metric_files import MULTIPROC_ENV, clear_if_unused, prepare

def test_the_directory_is_cleared_only_when_no_running_process_uses_it(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = directory / f"counter_{int(ended.stdout)}.db"
    mine = directory / f"counter_{os.getpid()}.db"  # written now, by this running process
    for path in (dead, mine, directory / "README"):
        path.write_bytes(b"")
    assert clear_if_unused(directory) == []  # this process still writes here: everything stays
    assert dead.exists() and mine.exists()
    os.utime(mine, (0, 0))  # as if written before this process started: a reused pid's old file
    assert sorted(clear_if_unused(directory)) == sorted([dead, mine])
    assert [path.name for path in directory.iterdir()] == ["README"]


def test_the_directory_is_the_operators_when_set(tmp_path: Path) -> None:
    chosen = tmp_path / "chosen"
    script = ("import sys; from pathlib import Path; from provisiond.metric_files import prepare; "
              "print(prepare(Path(sys.argv[1])))")
    for environment, expected in (({MULTIPROC_ENV: str(chosen)}, chosen), ({}, tmp_path / "run" / "metrics")):
        env = {**{k: v for k, v in os.environ.items() if k != MULTIPROC_ENV}, **environment}
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert Path(done.stdout.strip()) == expected and expected.is_dir()


def test_preparing_after_prometheus_client_counts_in_process_is_refused(tmp_path: Path) -> None:
    """In this process the counters already live in memory (tests, one-off
    commands): a metrics directory set now would be silently ignored."""
    with pytest.raises(RuntimeError, match="imported before the metrics directory was set"):
        prepare(tmp_path)
    assert MULTIPROC_ENV not in os.environ
