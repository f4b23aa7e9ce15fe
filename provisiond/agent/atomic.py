"""Files replaced whole or not at all: the agent's configuration, its run
records and the zipapp are read back after crashes and power losses, so a
half-written file must never be what a reader finds.

Standard library only; runs on Python 3.9.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (the rename lives in the
    directory, not in the file)."""
    fd = os.open(str(directory), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it (same
    file system, so the rename is atomic), fsynced before and after the
    rename. The file gets ``mode`` before it has any content, so a secret is
    never readable by others, not even for a moment."""
    directory = path.parent
    fd, temporary = tempfile.mkstemp(dir=str(directory), prefix="." + path.name + ".", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _remove(temporary)
        raise
    os.close(fd)
    try:
        os.replace(temporary, str(path))
    except BaseException:
        _remove(temporary)
        raise
    fsync_directory(directory)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
