"""The agent's zipapp: runs on its own (isolated mode, so nothing of the
source tree or the virtual environment can be imported), is deterministic,
and holds only the agent."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

from provisiond import __version__
from provisiond.agent import bundle
from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]


def base_python() -> str:
    """An interpreter outside the virtual environment (provisiond is not
    installed there), else this one."""
    return getattr(sys, "_base_executable", None) or sys.executable


def test_the_zipapp_runs_in_isolated_mode(tmp_path: Path):
    pyz = tmp_path / "provisiond-agent.pyz"
    digest = bundle.build_zipapp(pyz)
    assert digest == hashlib.sha256(pyz.read_bytes()).hexdigest()
    assert stat.S_IMODE(pyz.stat().st_mode) == 0o755
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    done = subprocess.run([base_python(), "-I", str(pyz), "--version"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"provisiond-agent {__version__}\n"


def test_the_zipapp_imports_from_itself(tmp_path: Path):
    pyz = tmp_path / "agent.pyz"
    bundle.build_zipapp(pyz)
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import provisiond, provisiond.agent.main as m; "
             "print(m.__file__); print('flask' in sys.modules)")
    done = subprocess.run([sys.executable, "-I", "-c", probe, str(pyz)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    where, flask = done.stdout.splitlines()
    assert where.startswith(str(pyz) + os.sep) and flask == "False"


def test_the_zipapp_runs_by_its_shebang(tmp_path: Path):
    require(shutil.which("python3") is not None, "no python3 on PATH for the zipapp's #!/usr/bin/env python3")
    pyz = tmp_path / "provisiond-agent"
    bundle.build_zipapp(pyz)
    done = subprocess.run([str(pyz), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("provisiond-agent "), done.stderr


def test_a_bad_configuration_exits_2_saying_why(tmp_path: Path):
    pyz = tmp_path / "agent.pyz"
    bundle.build_zipapp(pyz)
    done = subprocess.run([base_python(), "-I", str(pyz), "--config", str(tmp_path / "missing.json")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "cannot read the configuration" in done.stderr


def test_the_build_is_deterministic(tmp_path: Path):
    (tmp_path / "a").mkdir()
    first = bundle.build_zipapp(tmp_path / "a" / "agent.pyz")
    second = bundle.build_zipapp(tmp_path / "agent.pyz")
    assert first == second
    assert (tmp_path / "a" / "agent.pyz").read_bytes() == (tmp_path / "agent.pyz").read_bytes()


def test_it_holds_the_agent_and_nothing_else(tmp_path: Path):
    pyz = tmp_path / "agent.pyz"
    bundle.build_zipapp(pyz)
    with zipfile.ZipFile(pyz) as archive:
        names = archive.namelist()
        infos = archive.infolist()
    agent_files = sorted(p.name for p in (REPO / "provisiond" / "agent").glob("*.py"))
    assert names == sorted(names)
    assert set(names) == {"__main__.py", "provisiond/__init__.py", *(f"provisiond/agent/{n}" for n in agent_files)}
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    with zipfile.ZipFile(pyz) as archive:
        assert archive.read("provisiond/__init__.py") == (REPO / "provisiond" / "__init__.py").read_bytes()


def test_it_is_replaced_atomically(tmp_path: Path):
    pyz = tmp_path / "agent.pyz"
    pyz.write_bytes(b"old")
    inode = pyz.stat().st_ino
    bundle.build_zipapp(pyz)
    assert pyz.stat().st_ino != inode and [p.name for p in tmp_path.iterdir()] == ["agent.pyz"]
