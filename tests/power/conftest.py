"""Fixtures for power tests: real IPMI BMCs (OpenIPMI's ipmi_sim) on loopback.

``ipmi_sim`` is a factory: ``bmc = ipmi_sim()`` (or ``ipmi_sim(power=True)``)
starts one more simulated BMC on a free UDP port with its own directory under
the test's tmp_path; every one started is stopped at teardown. The plain
functions behind it live in :mod:`tests.power.ipmisim` (for benchmarks).
Without ipmi_sim or ipmitool the test skips; under CI=true it fails.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.power.ipmisim import PASSWORD, TOOLS, SimBmc, StartBmc, start_ipmi_sim


@pytest.fixture
def ipmi_sim(tmp_path: Path) -> Iterator[StartBmc]:
    """``ipmi_sim(power=False) -> SimBmc``: a running simulated BMC, stopped at teardown."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    require(not missing, f"needs {' and '.join(missing)} (Debian packages openipmi, ipmitool)")
    started: list[SimBmc] = []

    def start(power: bool = False, password: str = PASSWORD) -> SimBmc:
        bmc = _start_on_some_port(tmp_path / f"bmc{len(started) + 1}", power, password)
        started.append(bmc)
        return bmc

    yield start
    for bmc in started:
        bmc.stop()


@pytest.fixture
def bmc(ipmi_sim: StartBmc) -> SimBmc:
    """One simulated BMC, its machine off."""
    return ipmi_sim()


def _start_on_some_port(directory: Path, power: bool, password: str, tries: int = 3) -> SimBmc:
    """Start ipmi_sim; a free port may be taken before ipmi_sim binds it, so try another."""
    for _ in range(tries - 1):
        try:
            return start_ipmi_sim(directory, power=power, password=password)
        except RuntimeError:
            pass  # ipmi_sim exited (port taken meanwhile) or never answered: once more
    return start_ipmi_sim(directory, power=power, password=password)
