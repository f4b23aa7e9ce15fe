"""Helpers for the data-source tests: valid host documents, a raw snapshot
of every table (to prove that a refused write changed nothing), and the
shape of an API error."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from provisiond.models import Base
from provisiond.services import Services

PROFILES = frozenset({"default", "mysql_server", "web_server"})
YAML = {"Content-Type": "application/yaml"}
CSV = {"Content-Type": "text/csv"}


def mac_for(n: int, nic: int = 0) -> str:
    return f"52:54:{0x10 + nic:02x}:00:{n // 256:02x}:{n % 256:02x}"  # never a demo host's MAC


def host_doc(n: int, **overrides: Any) -> dict[str, Any]:
    """A complete, valid host document; ``n`` keeps every unique value apart."""
    doc: dict[str, Any] = {
        "serial": f"SN{n:04d}",
        "hostname": f"host{n}.example.com",
        "nics": [{"mac": mac_for(n), "name": "eth0", "primary": True},
                 {"mac": mac_for(n, 1), "name": "eth1", "primary": False}],
        "ip": f"10.20.{n // 200}.{n % 200 + 10}",
        "prefix": 16,
        "gateway": "10.20.0.1",
        "dns": ["10.20.0.2", "10.20.0.3"],
        "bmc": {"type": "ipmi", "address": f"192.168.{n // 200}.{n % 200 + 10}", "port": 623, "user": "admin"},
        "hardware": {"manufacturer": "Dell Inc.", "model": "PowerEdge R740", "cpus": 32, "memory_mib": 131072,
                     "disks": [{"name": "sda", "size_gb": 480, "model": None}]},
        "profile": "default",
        "os": "rocky-9",
        "owner": "ops",
        "groups": [],
        "site": "hz1",
        "rack": "a1",
        "protected": False,
        "variables": {"role": "web", "index": n},
    }
    for key, value in overrides.items():
        doc[key] = copy.deepcopy(value)
    return doc


def minimal_doc(n: int, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"serial": f"SN{n:04d}", "hostname": f"host{n}.example.com",
                           "macs": [mac_for(n)], "profile": "default"}
    doc.update(overrides)
    return doc


Snapshot = dict[str, list[tuple[Any, ...]]]


@pytest.fixture
def snapshot(services: Services) -> Callable[[], Snapshot]:
    """Every row of every table, in primary-key order: equal snapshots mean
    the database holds exactly the same data. The audit trail is left out:
    a refused request is recorded there, and that is all it changes."""

    def take() -> Snapshot:
        result: Snapshot = {}
        with services.db.read() as session:
            for table in Base.metadata.sorted_tables:
                if table.name == "audit":
                    continue
                query = select(table).order_by(*table.primary_key.columns)
                result[table.name] = [tuple(row) for row in session.execute(query)]
        return result

    return take


def assert_error(response: Any, status: int, field: str | None = None, *, contains: str | None = None) -> dict:
    """An error answer: the status, ``{"error", "message"}`` and the field."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert isinstance(body, dict), response.get_data(as_text=True)
    assert isinstance(body.get("error"), str) and body["error"]
    assert isinstance(body.get("message"), str) and body["message"]
    if field is not None:
        assert body.get("field") == field, body
        if body["error"] in ("invalid", "duplicate"):  # ValidationError: "[file:line: ]field: problem"
            assert f"{field}: " in body["message"], body
    if contains is not None:
        assert contains in body["message"], body
    return body


def export(client: Any, auth: dict[str, str], fmt: str) -> str:
    response = client.get(f"/api/v1/export/hosts?format={fmt}", headers=auth)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def import_file(client: Any, auth: dict[str, str], text: str | bytes, filename: str,
                fmt: str | None = None) -> Any:
    query = f"filename={filename}" + (f"&format={fmt}" if fmt else "")
    body = text.encode() if isinstance(text, str) else text
    return client.post(f"/api/v1/import/hosts?{query}", data=body, headers={**auth, "Content-Type": "text/plain"})


def create(client: Any, auth: dict[str, str], doc: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/v1/hosts", json=doc, headers=auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()
