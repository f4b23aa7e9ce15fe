"""Helpers for the server side of agents: an install driven to INSTALLED
with its agent's configuration fetched, and agent calls over "HTTPS" (the
Flask client with an https base URL, as the gateway serves them)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.conftest import matching_report

SN = "712DM2Y"
HTTPS = "https://gateway.test"


def new_credential() -> str:
    return "pva_" + secrets.token_urlsafe(32)


class AgentCalls:
    """One agent's calls, as the agent program makes them."""

    def __init__(self, client: Any, credential: str | None = None, machine_id: str = "", serial: str = "",
                 hostname: str = "node.example.com") -> None:
        self.client = client
        self.credential = credential or new_credential()
        self.identity = {"hostname": hostname, "machine_id": machine_id or secrets.token_hex(16),
                         "serial": serial, "version": "test"}

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}

    def enroll(self, ticket: str | None = None) -> Any:
        body = {"credential": self.credential, **self.identity, **({"ticket": ticket} if ticket else {})}
        return self.client.post("/agent/v1/enroll", json=body, base_url=HTTPS)

    def poll(self, wait: float = 0) -> Any:
        return self.client.post("/agent/v1/poll", json={"wait": wait}, headers=self.headers, base_url=HTTPS)

    def finish_handoff(self) -> None:
        """Answer the hand-off jobs (each succeeds) until none is left."""
        while runs := self.poll().get_json()["runs"]:
            for run in runs:
                assert self.result(run["run_id"], f"handoff{run['run_id']:08d}", output="{}").status_code == 200

    def result(self, run_id: int, key: str, status: str = "succeeded", exit_code: int | None = 0,
               output: str = "ok\n", **extra: Any) -> Any:
        body = {"key": key, "status": status, "exit_code": exit_code, "output": output, **extra}
        return self.client.post(f"/agent/v1/runs/{run_id}/result", json=body, headers=self.headers, base_url=HTTPS)


@pytest.fixture
def installed(client: Any, auth: dict[str, str], demo_data: None, arm: Any) -> Any:
    """``installed(serial)``: arm, install and finish the host; returns the
    agent configuration its %post fetched (with the ticket)."""
    def _installed(serial: str = SN, report: dict[str, Any] | None = None) -> dict[str, Any]:
        token = arm(serial)
        base = f"/install/{token}"
        assert client.get(f"{base}/ks").status_code == 200
        assert client.post(f"{base}/pre-report", json=report or matching_report(serial)).status_code == 200
        assert client.post(f"{base}/slot").status_code == 200
        config = client.post(f"{base}/agent")
        assert config.status_code == 200, config.get_json()
        assert client.post(f"{base}/done").status_code == 200
        return dict(config.get_json())
    return _installed


def host_state(client: Any, auth: dict[str, str], serial: str = SN) -> str:
    return str(client.get(f"/api/v1/hosts/{serial}", headers=auth).get_json()["state"])


def timeline(client: Any, auth: dict[str, str], serial: str = SN) -> list[dict[str, Any]]:
    return list(client.get(f"/api/v1/hosts/{serial}/events", headers=auth).get_json()["events"])
