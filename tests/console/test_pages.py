"""The pages: what they show, and their actions going through the same
service layer as the API (audited with the logged-in user)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from provisiond import models
from provisiond.actions import hosts as host_actions
from provisiond.actions.principal import SYSTEM, Role
from tests.console.conftest import csrf_of, page_csrf
from tests.inventory.conftest import snapshot  # noqa: F401  (a fixture)


def _text(response) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)[:3000]
    return response.get_data(as_text=True)


def _serials(html: str) -> list[str]:
    return re.findall(r'<tr data-serial="([^"]+)">', html)


def test_the_dashboard_counts_hosts_queue_failures_and_events(browse, client, auth, services):
    viewer = browse(Role.VIEWER)
    assert client.post("/api/v1/hosts/SN-NEW-0001/install", headers=auth).status_code == 201
    assert client.post("/api/v1/hosts/SN-NEW-0001/cancel", headers=auth).status_code == 200
    html = _text(viewer.get("/console/"))
    assert re.search(r'data-state="failed">.*?<td class="num">1</td>', html, re.S)
    assert re.search(r'data-state="idle">.*?<td class="num">2</td>', html, re.S)
    assert "Global</th><td class=\"num\">0</td><td class=\"num\">" in html
    assert "SN-NEW-0001" in html and "failed: cancelled" in html  # the failure and its reason
    assert "install cancelled by token tests" in html  # the recent events, and the failure's own line
    assert 'hx-trigger="every 2s"' in html
    live = _text(viewer.get("/console/live/dashboard"))
    assert "<html" not in live and 'id="state-counts"' in live


def test_the_hosts_page_searches_filters_sorts_and_pages(browse, services):
    viewer = browse(Role.VIEWER)
    assert _serials(_text(viewer.get("/console/hosts"))) == ["712DM2Y", "SN-NEW-0001", "SN-WEB-0001"]
    for query, expected in (("q=00:26:B9:35:E9:AB", ["712DM2Y"]), ("q=00-26-b9", ["712DM2Y"]),
                            ("q=10.0.0.21", ["SN-WEB-0001"]), ("q=new01", ["SN-NEW-0001"]),
                            ("q=sn-", ["SN-NEW-0001", "SN-WEB-0001"]), ("q=nothing", []),
                            ("owner=web-team", ["SN-WEB-0001"]), ("profile=mysql_server", ["712DM2Y"]),
                            ("group=rack-a1", ["712DM2Y", "SN-WEB-0001"]), ("state=idle&q=web", ["SN-WEB-0001"]),
                            ("state=failed", []),
                            ("sort=hostname&dir=desc", ["SN-WEB-0001", "SN-NEW-0001", "712DM2Y"])):
        html = _text(viewer.get(f"/console/hosts?{query}"))
        assert _serials(html) == expected, query
    html = _text(viewer.get("/console/hosts?sort=hostname"))
    assert 'aria-sort="ascending"' in html
    assert 'href="/console/hosts?sort=hostname&amp;dir=desc"' in html  # the header sorts the other way


def test_paging_is_done_by_the_server(browse, services):
    document = "hosts:\n" + "".join(
        f"  - {{serial: PG{i:04d}, hostname: pg{i:04d}.example.com, macs: ['52:54:01:00:{i // 256:02x}:{i % 256:02x}'],"
        f" profile: default}}\n" for i in range(60))
    host_actions.import_file(services, SYSTEM, document, "many.yaml", "yaml")
    viewer = browse(Role.VIEWER)
    first = _text(viewer.get("/console/hosts?q=PG&size=25"))
    assert _serials(first) == [f"PG{i:04d}" for i in range(25)]
    assert "60 hosts match; page 1 of 3" in first and 'rel="next"' in first and 'rel="prev"' not in first
    last = _text(viewer.get("/console/hosts?q=PG&size=25&page=3"))
    assert _serials(last) == [f"PG{i:04d}" for i in range(50, 60)] and 'rel="next"' not in last


def test_the_host_page_shows_the_record_hardware_and_timeline(browse, client, auth, services):
    from tests.conftest import install_token, matching_report

    assert client.post("/api/v1/hosts/712DM2Y/install", headers=auth).status_code == 201
    token = install_token(services, "712DM2Y")
    assert client.get(f"/install/{token}/ks").status_code == 200
    report = {**matching_report(), "cpus": 8}  # one CPU socket missing
    assert client.post(f"/install/{token}/pre-report", json=report).status_code == 409
    html = _text(browse(Role.VIEWER).get("/console/hosts/712DM2Y"))
    assert "db01.example.com" in html and "mysql_server" in html and "00:26:b9:35:e9:aa" in html
    assert re.search(r'<tr class="differs"><th scope="row">CPUs</th><td>16</td>\s*<td>8 <strong', html)
    assert re.search(r'<tr><th scope="row">Memory \(MiB\)</th><td>65536</td>\s*<td>64000</td>', html)
    assert "CPU count: the machine has 8, the data source expects 16" in html
    assert "failed: hw mismatch" in html
    assert "install armed by token tests" in html and 'id="timeline"' in html
    live = _text(browse(Role.VIEWER).get("/console/live/hosts/712DM2Y"))
    assert "<html" not in live and "hardware mismatch" in live


def test_a_viewer_sees_no_action_buttons(browse):
    html = _text(browse(Role.VIEWER).get("/console/hosts/SN-WEB-0001"))
    assert "Reinstall" not in html and "Cancel the install" not in html
    assert 'id="reinstall"' in _text(browse(Role.OPERATOR).get("/console/hosts/SN-WEB-0001"))


def test_reinstall_and_cancel_from_the_host_page_are_the_api_actions(browse, services):
    operator = browse(Role.OPERATOR)
    page = _text(operator.get("/console/hosts/SN-WEB-0001/reinstall"))
    assert 'id="confirm"' not in page  # not protected, not in service: no hostname to type
    response = operator.post("/console/hosts/SN-WEB-0001/reinstall", data={"csrf_token": csrf_of(page)})
    assert response.status_code == 303 and response.headers["Location"] == "/console/hosts/SN-WEB-0001?did=reinstall"
    html = _text(operator.get(response.headers["Location"]))
    assert "Reinstall armed" in html and 'data-state="armed"' in html and "install armed by user otto" in html
    assert 'id="cancel"' in html
    response = operator.post("/console/hosts/SN-WEB-0001/cancel", data={"csrf_token": csrf_of(html)})
    assert response.status_code == 303
    assert "failed: cancelled" in _text(operator.get("/console/hosts/SN-WEB-0001"))
    with services.db.read() as session:
        audit = [(e.principal, e.action, e.targets, e.outcome) for e in session.scalars(
            select(models.AuditEntry).where(models.AuditEntry.action.like("installs.%")).order_by(models.AuditEntry.id))]
    assert audit == [("user otto", "installs.arm", "|SN-WEB-0001|", "ok"),
                     ("user otto", "installs.cancel", "|SN-WEB-0001|", "ok")]


@pytest.mark.parametrize("typed", [None, "", "web01", "db01.example.com"])
def test_a_protected_host_needs_its_hostname_typed(browse, services, snapshot, typed):
    host_actions.edit(services, SYSTEM, "SN-WEB-0001", {"protected": True})
    operator = browse(Role.OPERATOR)
    page = _text(operator.get("/console/hosts/SN-WEB-0001/reinstall"))
    assert "This host is protected" in page and '<label for="confirm">' in page
    before = snapshot()
    data = {"csrf_token": csrf_of(page)}
    if typed is not None:
        data["confirm"] = typed
    response = operator.post("/console/hosts/SN-WEB-0001/reinstall", data=data)
    assert response.status_code == 400
    assert "type its hostname, web01.example.com, to confirm" in response.get_data(as_text=True)
    assert snapshot() == before


def test_a_protected_host_is_reinstalled_once_its_hostname_is_typed(browse, services):
    host_actions.edit(services, SYSTEM, "SN-WEB-0001", {"protected": True})
    operator = browse(Role.OPERATOR)
    page = _text(operator.get("/console/hosts/SN-WEB-0001/reinstall"))
    response = operator.post("/console/hosts/SN-WEB-0001/reinstall",
                             data={"csrf_token": csrf_of(page), "confirm": "web01.example.com"})
    assert response.status_code == 303
    assert "(forced: host is protected)" in _text(operator.get("/console/hosts/SN-WEB-0001"))


def test_a_refused_action_says_why_on_the_page(browse, client, auth):
    assert client.post("/api/v1/hosts/SN-WEB-0001/install", headers=auth).status_code == 201
    operator = browse(Role.OPERATOR)
    response = operator.post("/console/hosts/SN-WEB-0001/reinstall", data={"csrf_token": page_csrf(operator)})
    assert response.status_code == 409 and response.mimetype == "text/html"
    assert "is already armed (an install is under way)" in response.get_data(as_text=True)


def test_reinstall_with_power_queues_the_bmc_operations(browse, services):
    operator = browse(Role.OPERATOR)
    page = _text(operator.get("/console/hosts/712DM2Y/reinstall"))
    assert 'id="power" name="power" value="on" checked' in page
    response = operator.post("/console/hosts/712DM2Y/reinstall", data={"csrf_token": csrf_of(page), "power": "on"})
    assert response.status_code == 303
    with services.db.read() as session:
        queued = session.scalars(select(models.PowerOperation.requested_by)).all()
    assert queued and set(queued) == {"user otto"}


def test_the_dashboard_counts_agents_online_offline_and_pending(browse, services):
    import datetime as dt

    now = models.utcnow()
    with services.db.write() as session:
        for i, (state, seen) in enumerate((("accepted", now), ("accepted", now - dt.timedelta(hours=1)),
                                           ("accepted", None), ("pending", now), ("rejected", now))):
            session.add(models.Agent(state=state, credential_hash=f"{i:064d}", last_seen_at=seen))
    html = _text(browse(Role.VIEWER).get("/console/live/dashboard"))
    assert re.search(r"<dt>Online</dt><dd>1</dd>\s*<dt>Offline</dt><dd>2</dd>\s*"
                     r"<dt>Waiting for a decision</dt><dd>1</dd>", html)


def test_a_host_in_service_needs_its_hostname_typed_too(browse, services):
    from sqlalchemy import update

    with services.db.write() as session:  # as the hand-off leaves it (tests/agents walks there for real)
        session.execute(update(models.Host).where(models.Host.serial == "SN-WEB-0001").values(state="ready"))
    operator = browse(Role.OPERATOR)
    page = _text(operator.get("/console/hosts/SN-WEB-0001/reinstall"))
    assert "This host is in service (ready)" in page
    refused = operator.post("/console/hosts/SN-WEB-0001/reinstall", data={"csrf_token": csrf_of(page)})
    assert refused.status_code == 400
    armed = operator.post("/console/hosts/SN-WEB-0001/reinstall",
                          data={"csrf_token": csrf_of(page), "confirm": "web01.example.com"})
    assert armed.status_code == 303
    assert "forced: host is in service (ready)" in _text(operator.get("/console/hosts/SN-WEB-0001"))
