"""The package as an operator gets it: the wheel is built, installed into a
fresh virtual environment outside the source tree, and run from there —
`provisiond --version`, `provisiond demo` (HTTP, worker and netboot, with
the shipped profiles, fragments, boot templates and hook folders) and then
`provisiond serve` alone on the same state. The systemd units are checked
by systemd itself against that installation."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

import provisiond
from tests.conftest import free_port, require

REPO = Path(__file__).resolve().parents[1]
DEMO_MAC = "00:26:b9:35:e9:aa"  # 712DM2Y in provisiond/demo/hosts.yaml


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    (built,) = out.glob("provisiond-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment (no site packages) with the wheel and its dependencies."""
    venv = tmp_path_factory.mktemp("venv") / "provisiond"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=600)
    return venv


@pytest.fixture
def operator(tmp_path: Path) -> dict[str, str]:
    """An environment like a fresh machine's: no PROVISIOND_* settings, no
    source tree on the path, state where systemd would put it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVISIOND_", "PYTHON"))}
    env.update(HOME=str(tmp_path / "home"), STATE_DIRECTORY=str(tmp_path / "state"))
    return env


def test_the_wheel_carries_the_shipped_data_and_the_licence(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {name.split("/", 2)[2] for name in names if name.startswith("provisiond/shipped/")}
    in_tree = {str(p.relative_to(REPO / "provisiond" / "shipped")) for p in (REPO / "provisiond" / "shipped").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert shipped == in_tree
    assert any(name.endswith(".dist-info/LICENSE") or "/licenses/LICENSE" in name for name in names)
    assert "provisiond/demo/hosts.yaml" in names and "provisiond/migrations/env.py" in names
    metadata = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert f"Version: {provisiond.__version__}" in metadata and "Apache-2.0" in metadata


def test_version_is_the_package_version(installed: Path, operator: dict[str, str], tmp_path: Path):
    for program in ("provisiond", "provctl"):
        done = subprocess.run([installed / "bin" / program, "--version"], capture_output=True, text=True,
                              cwd=tmp_path, env=operator, timeout=60)
        assert done.stdout == f"{program}, version {provisiond.__version__}\n", done.stderr


def test_demo_then_serve_from_the_installed_package(installed: Path, operator: dict[str, str], tmp_path: Path):
    require(shutil.which("tftp") is not None, "tftp-hpa's client (tftp) is not installed")
    port, tftp_port = free_port(), free_port()
    env = {**operator, "PROVISIOND_HTTP_PORT": str(port), "PROVISIOND_NETBOOT_ADDRESS": "127.0.0.1",
           "PROVISIOND_TFTP_PORT": str(tftp_port)}
    with _running(installed, "demo", env, tmp_path, port):
        state = tmp_path / "state"
        assert (state / "provisiond.db").is_file() and (state / "secret.key").stat().st_mode & 0o777 == 0o600
        assert sorted(p.name for p in (state / "hooks").iterdir()) == [
            "README.md", "on-armed.d", "on-failed.d", "on-installed.d", "on-installing.d"]
        kickstart = subprocess.run([installed / "bin" / "provctl", "profiles", "render", "712DM2Y"], cwd=tmp_path,
                                   env=env, capture_output=True, text=True, timeout=60)
        assert kickstart.returncode == 0, kickstart.stderr
        assert "%packages" in kickstart.stdout and "mysql" in kickstart.stdout  # shipped profile and fragments
        token = yaml.safe_load((tmp_path / "home" / ".config" / "provisiond" / "provctl.yaml").read_text())["token"]
        assert requests.get(f"http://127.0.0.1:{port}/api/v1/hosts/712DM2Y", timeout=10,
                            headers={"Authorization": f"Bearer {token}"}).json()["serial"] == "712DM2Y"
        entry = tmp_path / "entry"
        fetched = subprocess.run(["tftp", "127.0.0.1", str(tftp_port), "-c", "get",
                                  "pxelinux.cfg/01-" + DEMO_MAC.replace(":", "-"), str(entry)],
                                 capture_output=True, text=True, timeout=60)
        assert fetched.returncode == 0 and "LOCALBOOT" in entry.read_text().upper(), fetched  # a shipped template
    with _running(installed, "serve", env, tmp_path, port):
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()["status"] == "ready"


def test_systemd_accepts_the_units_against_the_installation(installed: Path, tmp_path: Path):
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze (Debian package systemd) is not installed")
    for unit in (REPO / "packaging" / "systemd").glob("*.service"):
        text = unit.read_text()
        assert "ExecStart=/opt/provisiond/bin/provisiond " in text
        (tmp_path / unit.name).write_text(text.replace("/opt/provisiond", str(installed)))
    units = sorted(str(p) for p in tmp_path.glob("*.service"))
    assert len(units) == 4  # serve, worker, gateway, netboot
    done = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr


class _running:
    """A role of the installed package, run from a directory outside the tree."""

    def __init__(self, venv: Path, role: str, env: dict[str, str], cwd: Path, port: int) -> None:
        self.log = cwd / f"{role}.log"
        self.process = subprocess.Popen([venv / "bin" / "provisiond", role], cwd=cwd, env=env,
                                        stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}/readyz"

    def __enter__(self) -> _running:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if requests.get(self.url, timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise AssertionError(f"not ready in 60 s: {self.log.read_text()}")

    def __exit__(self, *_: object) -> Iterator[None] | None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(60)
        return None
