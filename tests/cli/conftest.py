"""Running provctl in tests: in-process through click's CliRunner (still real
HTTP to a live server) or as a real subprocess. Either way the environment
is the test's own: HOME is a temporary directory, so the developer's
``~/.config/provisiond/provctl.yaml`` and PROVISIOND_* variables never leak in."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisiond.cli.provctl import main

CLIENT_ENV = ("PROVISIOND_URL", "PROVISIOND_TOKEN", "PROVCTL_CONFIG")


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


@dataclass
class Provctl:
    """provctl pointed at ``url`` with ``token`` (``None``: not set)."""

    url: str | None
    token: str | None
    home: Path
    runner: CliRunner = field(default_factory=CliRunner)

    def environment(self, extra: Mapping[str, str | None]) -> dict[str, str | None]:
        env: dict[str, str | None] = {"HOME": str(self.home), "PROVISIOND_URL": self.url,
                                      "PROVISIOND_TOKEN": self.token, "PROVCTL_CONFIG": None}
        env.update(extra)
        return env

    def __call__(self, *args: str, status: int = 0, input: str | None = None,
                 env: Mapping[str, str | None] = {}) -> Outcome:
        """Run in-process; assert the exit status and that no exception escaped."""
        result = self.runner.invoke(main, list(args), input=input, env=self.environment(env))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        outcome = Outcome(result.exit_code, result.stdout, result.stderr)
        assert outcome.code == status, f"provctl {' '.join(args)}: {outcome}"
        return outcome

    def run(self, *args: str, status: int = 0, input: str | None = None,
            env: Mapping[str, str | None] = {}) -> Outcome:
        """Run as a real ``python -m provisiond.cli.provctl`` process."""
        environ = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV}
        environ.update({k: v for k, v in self.environment(env).items() if v is not None})
        done = subprocess.run([sys.executable, "-m", "provisiond.cli.provctl", *args], input=input,
                              capture_output=True, text=True, env=environ, timeout=60)
        outcome = Outcome(done.returncode, done.stdout, done.stderr)
        assert outcome.code == status, f"provctl {' '.join(args)}: {outcome}"
        assert "Traceback" not in outcome.stderr
        return outcome


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def provctl(live_server, admin_token: str, home: Path) -> Provctl:  # type: ignore[no-untyped-def]
    """provctl talking to a live ``provisiond serve`` with an admin token."""
    return Provctl(url=live_server.url, token=admin_token, home=home)


@pytest.fixture
def offline(home: Path) -> Provctl:
    """provctl with no server, no token and no config file."""
    return Provctl(url=None, token=None, home=home)


@pytest.fixture
def closed_url() -> str:
    """A URL on which nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def dying_url() -> Iterator[str]:
    """A URL whose server reads a whole request, then dies without answering
    (the connection closes), as a provisiond killed mid-request does."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += connection.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += connection.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A URL whose port accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
