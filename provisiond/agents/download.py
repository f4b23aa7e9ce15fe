"""What provisiond hands a new system for its agent: the agent program (a
zipapp of :mod:`provisiond.agent`, built once per version and served with
its SHA-256) and its systemd unit (rendered into the ``post-agent``
kickstart fragment)."""

from __future__ import annotations

import threading
from functools import cached_property
from pathlib import Path

from provisiond import __version__
from provisiond.config import SHIPPED

UNIT_FILE = SHIPPED / "agent" / "provisiond-agent.service"


class AgentBundle:
    """The agent program for this provisiond, built into ``directory`` on
    first use (deterministic: every process builds the same bytes)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._sha256: str | None = None

    @property
    def path(self) -> Path:
        return self.directory / f"provisiond-agent-{__version__}.pyz"

    @property
    def sha256(self) -> str:
        with self._lock:
            if self._sha256 is None:
                from provisiond.agent.bundle import build_zipapp

                self.directory.mkdir(parents=True, exist_ok=True)
                self._sha256 = build_zipapp(self.path)
            return self._sha256

    @cached_property
    def unit(self) -> str:
        return UNIT_FILE.read_text(encoding="utf-8").rstrip("\n")
