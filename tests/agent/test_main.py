"""The agent's loop against a small HTTPS stub of provisiond's agent
endpoints (a CA and server certificate made here): enrollment with a
ticket, a run delivered, run and its result uploaded with its key; no run
twice; refusals, pending, backoff with Retry-After, and stopping.

A seam test: the real server's side is tested with the server."""

from __future__ import annotations

import json
import os
import signal
import ssl
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import pytest

from provisiond.agent import main as agent_main
from provisiond.agent import protocol, spool
from provisiond.agent.client import Client, ConnectionFailed, HTTPError
from provisiond.agent.main import Stopper
from provisiond.agent.spool import Spool
from tests.agent.conftest import Pki, make_pki

Reply = tuple[int, dict[str, Any], dict[str, str]]
Scripted = Union[Reply, Callable[["Request"], Reply]]


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Stub:
    """provisiond's agent endpoints: per path, scripted replies first, then
    the default (accepted, no runs, recorded)."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    scripted: dict[str, list[Scripted]] = field(default_factory=lambda: defaultdict(list))
    released: threading.Event = field(default_factory=threading.Event)

    def reply(self, request: Request) -> Reply:
        queue = self.scripted[request.path]
        if queue:
            answer = queue.pop(0)
            return answer(request) if callable(answer) else answer
        if request.path == protocol.ENROLL:
            return 201, {"agent_id": 1, "state": "accepted", "host": "S1"}, {}
        if request.path == protocol.POLL:
            return 200, {"runs": [], "server_time": "2026-01-01T00:00:00+00:00", "poll_after": 0}, {}
        if request.path.startswith(protocol.API_PREFIX + "/runs/"):
            return 200, {"recorded": True}, {}
        return 404, {"error": "not_found", "message": "not found"}, {}

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def results(self) -> list[Request]:
        return [r for r in self.requests if r.path.endswith("/result")]


def serve(pki: Pki) -> tuple[Stub, ThreadingHTTPServer]:
    stub = Stub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw or b"{}"))
            stub.requests.append(request)
            status, body, headers = stub.reply(request)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.cert_pem), str(pki.key_pem))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    stub.url = f"https://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return stub, server


@pytest.fixture
def stub(pki: Pki) -> Iterator[Stub]:
    stub, server = serve(pki)
    yield stub
    stub.released.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def agent_config(tmp_path: Path, pki: Pki, stub: Stub) -> Path:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"server_url": stub.url, "ca_file": str(pki.ca_pem),
                                "ca_fingerprint": pki.ca_fingerprint, "ticket": "ticket-from-post",
                                "state_dir": str(tmp_path / "state"), "poll_wait": 0, "log_level": "DEBUG"}))
    os.chmod(path, 0o600)
    return path


def delivery(run_id: int, script: str, attempt: int = 1) -> dict[str, Any]:
    return {"run_id": run_id, "job_id": 5, "type": "script", "timeout_seconds": 30, "lease_seconds": 90,
            "attempt": attempt, "payload": {"interpreter": "sh", "script": script, "args": [], "env": {},
                                            "user": None, "cwd": None, "success_codes": [0]}}


def runs(*items: dict[str, Any]) -> Reply:
    return 200, {"runs": list(items), "server_time": "2026-01-01T00:00:00+00:00", "poll_after": 0}, {}


class Sleeps:
    """The agent's waits, recorded instead of slept; stops the agent after ``limit``."""

    def __init__(self, stopper: Stopper, limit: int = 20) -> None:
        self.delays: list[float] = []
        self.stopper = stopper
        self.limit = limit

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if len(self.delays) >= self.limit:
            self.stopper.event.set()


def run_agent(config: Path, *args: str, limit: int = 20) -> tuple[int, Sleeps]:
    stopper = Stopper()
    sleeps = Sleeps(stopper, limit)
    code = agent_main.main(["--config", str(config), *args], stopper=stopper, sleep=sleeps)
    return code, sleeps


# ---------------------------------------------------------------- the happy path


def test_enroll_with_the_ticket_run_and_report(stub: Stub, agent_config: Path, tmp_path: Path):
    marker = tmp_path / "ran"
    stub.scripted[protocol.POLL].append(runs(delivery(41, f"echo ran >> {marker}; echo hello")))
    code, _ = run_agent(agent_config, "--once")
    assert code == 0
    assert stub.paths() == [protocol.ENROLL, protocol.POLL, "/agent/v1/runs/41/result"]
    enroll, poll, result = stub.requests
    credential = enroll.body["credential"]
    assert credential.startswith(protocol.CREDENTIAL_PREFIX) and enroll.body["ticket"] == "ticket-from-post"
    assert set(enroll.body) == {"credential", "ticket", "hostname", "machine_id", "serial", "version"}
    assert "authorization" not in enroll.headers
    assert poll.headers["authorization"] == f"Bearer {credential}" and poll.body == {"wait": 0}
    assert result.headers["authorization"] == f"Bearer {credential}"
    assert result.headers["content-type"] == "application/json"
    body = result.body
    assert len(body["key"]) == 32 and body["key"].isalnum()
    assert (body["status"], body["exit_code"], body["output"], body["output_truncated"], body["error"]) == (
        "succeeded", 0, "hello\n", False, None)
    assert body["started_at"] <= body["finished_at"]
    assert marker.read_text() == "ran\n"
    # The ticket is single-use: gone from the configuration, the rest kept.
    kept = json.loads(agent_config.read_text())
    assert "ticket" not in kept and kept["server_url"] == stub.url
    assert (os.stat(agent_config).st_mode & 0o777) == 0o600
    # The next start is the same agent, without a ticket.
    stub.requests.clear()
    assert run_agent(agent_config, "--once")[0] == 0
    assert stub.requests[0].body["credential"] == credential and "ticket" not in stub.requests[0].body


def test_a_run_delivered_again_is_not_run_again(stub: Stub, agent_config: Path, tmp_path: Path):
    marker = tmp_path / "ran"
    script = f"echo once >> {marker}"
    stub.scripted[protocol.POLL].append(runs(delivery(7, script)))
    assert run_agent(agent_config, "--once")[0] == 0
    first_key = stub.results()[0].body["key"]
    # Its lease ended before provisiond saw the result (say): delivered again.
    stub.scripted[protocol.POLL].append(runs(delivery(7, script, attempt=2)))
    stub.scripted["/agent/v1/runs/7/result"].append((200, {"recorded": False}, {}))
    assert run_agent(agent_config, "--once")[0] == 0
    assert marker.read_text() == "once\n"
    second = stub.results()[1].body
    assert second["key"] == first_key and second["status"] == "succeeded"


def test_a_run_under_way_when_the_agent_died_is_reported_not_rerun(stub: Stub, agent_config: Path, tmp_path: Path):
    marker = tmp_path / "ran"
    run = delivery(8, f"echo again >> {marker}")
    begun = Spool(tmp_path / "state").begin(run)  # the agent died after this, mid-run
    stub.scripted[protocol.POLL].append(runs({**run, "attempt": 2}))
    assert run_agent(agent_config, "--once")[0] == 0
    # Sent at startup, before the first poll, and again when it came again.
    assert stub.paths() == [protocol.ENROLL, "/agent/v1/runs/8/result", protocol.POLL, "/agent/v1/runs/8/result"]
    for result in stub.results():
        assert result.body["key"] == begun.key
        assert result.body["status"] == "failed" and result.body["error"] == spool.INTERRUPTED
    assert not marker.exists()


def test_results_not_acknowledged_are_sent_at_startup(stub: Stub, agent_config: Path, tmp_path: Path):
    stub.scripted[protocol.POLL].append(runs(delivery(9, "echo x")))
    stub.scripted["/agent/v1/runs/9/result"].append((502, {"error": "bad_gateway", "message": "down"}, {}))
    code, sleeps = run_agent(agent_config, limit=1)  # stops at the first wait: the result is not delivered
    assert code == 0 and len(sleeps.delays) == 1
    key = stub.results()[0].body["key"]
    stub.requests.clear()
    assert run_agent(agent_config, "--once")[0] == 0
    assert stub.paths() == [protocol.ENROLL, "/agent/v1/runs/9/result", protocol.POLL]
    assert stub.results()[0].body["key"] == key


def test_a_failing_job_and_an_unknown_job_type_are_reported(stub: Stub, agent_config: Path):
    stub.scripted[protocol.POLL].append(runs(delivery(1, "echo no; exit 4"),
                                             {**delivery(2, "true"), "type": "reboot"}))
    assert run_agent(agent_config, "--once")[0] == 0
    first, second = (r.body for r in stub.results())
    assert (first["status"], first["exit_code"], first["output"]) == ("failed", 4, "no\n")
    assert (second["status"], second["error"]) == ("failed", "unknown job type reboot")


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("code", ["agent_rejected", "agent_denied", "agent_revoked"])
def test_a_refused_agent_exits_3(stub: Stub, agent_config: Path, code: str):
    stub.scripted[protocol.ENROLL].append((403, {"error": code, "message": "no"}, {}))
    assert run_agent(agent_config)[0] == 3
    assert stub.paths() == [protocol.ENROLL]


def test_revoked_while_polling_exits_3(stub: Stub, agent_config: Path):
    stub.scripted[protocol.POLL].append((403, {"error": "agent_revoked", "message": "this agent is revoked"}, {}))
    assert run_agent(agent_config)[0] == 3


@pytest.mark.parametrize(("status", "error"), [(410, "ticket_used"), (410, "ticket_expired"),
                                               (404, "ticket_unknown"), (409, "conflict")])
def test_a_refused_ticket_is_dropped_and_the_agent_waits_as_pending(stub: Stub, agent_config: Path, status: int,
                                                                    error: str):
    stub.scripted[protocol.ENROLL] += [(status, {"error": error, "message": "ticket refused"}, {}),
                                       (202, {"agent_id": 2, "state": "pending", "poll_after": 15}, {})]
    stub.scripted[protocol.POLL] += [(403, {"error": "agent_pending", "message": "wait", "poll_after": 15}, {})]
    code, _ = run_agent(agent_config, "--once")
    assert code == 0
    assert stub.paths() == [protocol.ENROLL, protocol.ENROLL, protocol.POLL]
    assert stub.requests[0].body["ticket"] == "ticket-from-post" and "ticket" not in stub.requests[1].body
    assert "ticket" not in json.loads(agent_config.read_text())


def test_a_ticket_for_an_install_not_finished_is_tried_again(stub: Stub, agent_config: Path):
    stub.scripted[protocol.ENROLL].append((409, {"error": "ticket_not_yet", "message": "not yet"}, {}))
    code, sleeps = run_agent(agent_config, "--once")
    assert code == 0 and len(sleeps.delays) == 1
    assert [r.body.get("ticket") for r in stub.requests[:2]] == ["ticket-from-post"] * 2


def test_a_pending_agent_polls_after_what_the_server_says_until_accepted(stub: Stub, agent_config: Path):
    stub.scripted[protocol.ENROLL].append((202, {"agent_id": 3, "state": "pending", "poll_after": 15}, {}))
    stub.scripted[protocol.POLL] += [(403, {"error": "agent_pending", "message": "wait", "poll_after": 12}, {})] * 2
    stub.scripted[protocol.POLL].append(runs(delivery(3, "echo accepted")))
    code, sleeps = run_agent(agent_config, limit=3)
    assert code == 0
    assert sleeps.delays[:2] == [12.0, 12.0]
    assert stub.results()[0].body["output"] == "accepted\n"


def test_an_unknown_credential_enrolls_again(stub: Stub, agent_config: Path):
    stub.scripted[protocol.POLL].append((401, {"error": "unauthorized", "message": "unknown agent credential"}, {}))
    code, _ = run_agent(agent_config, "--once")
    assert code == 0
    assert stub.paths()[:4] == [protocol.ENROLL, protocol.POLL, protocol.ENROLL, protocol.POLL]


def test_a_result_the_server_will_never_take_is_not_sent_again(stub: Stub, agent_config: Path):
    stub.scripted[protocol.POLL].append(runs(delivery(4, "true")))
    stub.scripted["/agent/v1/runs/4/result"].append((409, {"error": "result_recorded", "message": "no"}, {}))
    assert run_agent(agent_config, "--once")[0] == 0
    stub.requests.clear()
    assert run_agent(agent_config, "--once")[0] == 0
    assert stub.paths() == [protocol.ENROLL, protocol.POLL]


# ---------------------------------------------------------------- backoff


def test_503_with_retry_after_is_waited(stub: Stub, agent_config: Path):
    stub.scripted[protocol.POLL] += [(503, {"error": "busy", "message": "too many agents"}, {"Retry-After": "7"}),
                                     (429, {"error": "busy", "message": "still"}, {"Retry-After": "3"}),
                                     runs(delivery(5, "echo late"))]
    code, sleeps = run_agent(agent_config, "--once")
    assert code == 0
    assert len(sleeps.delays) == 2
    assert 7 <= sleeps.delays[0] <= 8 and 3 <= sleeps.delays[1] <= 5  # never sooner; jitter within the backoff
    assert stub.results()[0].body["output"] == "late\n"


def test_connection_failures_back_off_exponentially_with_jitter(stub: Stub, agent_config: Path, tmp_path: Path):
    config = json.loads(agent_config.read_text())
    config["server_url"] = "https://127.0.0.1:1"  # nothing listens there
    agent_config.write_text(json.dumps(config))
    code, sleeps = run_agent(agent_config, limit=8)
    assert code == 0 and len(sleeps.delays) == 8
    for n, delay in enumerate(sleeps.delays):
        assert 0 <= delay <= min(60, 2 ** n)
    assert "ticket" in json.loads(agent_config.read_text())  # never enrolled: the ticket is kept


def test_a_server_error_on_a_result_is_retried_and_success_resets_the_backoff(stub: Stub, agent_config: Path):
    stub.scripted[protocol.POLL].append(runs(delivery(6, "true")))
    stub.scripted["/agent/v1/runs/6/result"] += [(500, {"error": "internal", "message": "oops"}, {})] * 3
    code, sleeps = run_agent(agent_config, "--once")
    assert code == 0 and len(sleeps.delays) == 3
    assert len(stub.results()) == 4 and len({r.body["key"] for r in stub.results()}) == 1


# ---------------------------------------------------------------- TLS


def test_only_the_pinned_ca_is_trusted(stub: Stub, tmp_path: Path):
    other = make_pki(tmp_path / "other")
    client = Client(stub.url, other.ca_pem, "pva_" + "x" * 43)
    with pytest.raises(ConnectionFailed, match="not trusted"):
        client.poll(0)
    assert stub.requests == []


def test_a_ca_file_that_does_not_match_the_pin_stops_the_agent(stub: Stub, agent_config: Path, tmp_path: Path):
    config = json.loads(agent_config.read_text())
    config["ca_fingerprint"] = make_pki(tmp_path / "other").ca_fingerprint
    agent_config.write_text(json.dumps(config))
    assert run_agent(agent_config)[0] == 2
    assert stub.requests == []


def test_http_errors_carry_what_the_agent_acts_on(stub: Stub, pki: Pki):
    stub.scripted[protocol.POLL].append((429, {"error": "busy", "message": "later", "position": 3},
                                         {"Retry-After": "11"}))
    client = Client(stub.url, pki.ca_pem, "pva_" + "x" * 43)
    with pytest.raises(HTTPError) as caught:
        client.poll(0)
    error = caught.value
    assert (error.status, error.error, error.message, error.retry_after) == (429, "busy", "later", 11.0)
    assert error.body["position"] == 3 and error.transient and "pva_" not in str(error) + repr(client)


# ---------------------------------------------------------------- stopping


def test_sigterm_abandons_a_long_poll(stub: Stub, agent_config: Path):
    config = json.loads(agent_config.read_text())
    config["poll_wait"] = 30
    agent_config.write_text(json.dumps(config))

    def parked(request: Request) -> Reply:
        stub.released.wait(request.body["wait"])
        return runs()

    stub.scripted[protocol.POLL].append(parked)
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.monotonic()
    try:
        code = agent_main.main(["--config", str(agent_config)])
    finally:
        timer.cancel()
    assert code == 0 and time.monotonic() - started < 10  # not the 30 s the poll was parked for
    assert stub.paths() == [protocol.ENROLL, protocol.POLL]
    assert signal.getsignal(signal.SIGTERM) == before  # the agent's handler is gone with it


def test_sigterm_during_a_run_finishes_it_and_uploads_its_result(stub: Stub, agent_config: Path):
    stub.scripted[protocol.POLL].append(runs(delivery(12, f"kill -TERM {os.getpid()}; sleep 0.5; echo finished")))
    code = agent_main.main(["--config", str(agent_config)])
    assert code == 0
    assert stub.paths() == [protocol.ENROLL, protocol.POLL, "/agent/v1/runs/12/result"]
    assert stub.results()[0].body["output"] == "finished\n"


def test_version(capsys: pytest.CaptureFixture[str]):
    assert agent_main.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("provisiond-agent ")
