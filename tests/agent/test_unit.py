"""The agent's systemd unit: systemd accepts it, and it says what the agent
relies on (root, its state directory, no restart after a refusal)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from provisiond.agent.main import EXIT_REFUSED
from tests.conftest import require

UNIT = Path(__file__).resolve().parents[2] / "provisiond" / "shipped" / "agent" / "provisiond-agent.service"
PROGRAM = "/usr/local/bin/provisiond-agent"


def test_systemd_accepts_the_unit(tmp_path: Path):
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze (Debian package systemd) is not installed")
    program = tmp_path / "provisiond-agent"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    text = UNIT.read_text()
    assert f"ExecStart={PROGRAM} --config /etc/provisiond-agent/agent.json\n" in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(PROGRAM, str(program)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_what_the_unit_says():
    lines = {line.strip() for line in UNIT.read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {"Type=simple", "Restart=always", "RestartSec=5", "StateDirectory=provisiond-agent",
            f"RestartPreventExitStatus={EXIT_REFUSED}"} <= lines
    assert not any(line.startswith(("User=", "DynamicUser=")) for line in lines)  # root: it manages the host
