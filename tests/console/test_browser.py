"""The console in a real browser (Debian's chromium, driven by Playwright)
against a real server (``provisiond run``: serve and worker), while the
test plays the installer over HTTP."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect

from provisiond.actions import hosts as host_actions
from provisiond.actions import users as user_actions
from provisiond.actions.principal import SYSTEM
from tests.conftest import DEMO_HOSTS, LiveServer, install_token, matching_report
from tests.console.conftest import PASSWORD, USERS

#: Live panels poll every 2 s: allow a few rounds.
LIVE = 8_000


@pytest.fixture
def server(settings: Any, services: Any) -> Any:
    """A running provisiond with the demo hosts and one user per role."""
    host_actions.import_file(services, SYSTEM, DEMO_HOSTS.read_text(), DEMO_HOSTS.name, "yaml")
    for name, role in USERS.items():
        user_actions.create(services, SYSTEM, name, role, PASSWORD)
    services.vault  # the key exists before the workers start
    live = LiveServer(settings, workers=1)
    yield live
    live.stop()


def log_in(page: Page, server: LiveServer, name: str, password: str = PASSWORD) -> None:
    page.goto(server.url + "/console/")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_log_in_a_wrong_password_and_log_out(page: Page, server: LiveServer, screenshots: Any) -> None:
    log_in(page, server, "otto", "not the password")
    expect(page.get_by_role("alert")).to_have_text("wrong user name or password")
    screenshots(page, "login-refused")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.locator("#who")).to_have_text("otto")
    expect(page.locator("#state-counts tr[data-state=idle] td")).to_have_text("3")
    screenshots(page, "dashboard")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("status")).to_have_text("You are logged out.")
    page.goto(server.url + "/console/hosts")
    expect(page).to_have_url(re.compile(r"/console/login"))
    screenshots(page, "login")


def test_a_viewer_reads_and_is_refused_a_write(page: Page, server: LiveServer, screenshots: Any) -> None:
    log_in(page, server, "vera")
    page.get_by_role("link", name="Hosts").click()
    page.get_by_label("Search").fill("00:26:b9")  # by MAC
    page.get_by_role("button", name="Find").click()
    expect(page.locator("#hosts tbody tr")).to_have_count(1)
    expect(page.locator("#match-count")).to_contain_text("1 host matches")
    page.get_by_role("link", name="Hosts").click()
    screenshots(page, "hosts")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    screenshots(page, "hosts-phone")
    page.set_viewport_size({"width": 1280, "height": 720})
    page.get_by_role("link", name="SN-WEB-0001").click()
    expect(page.get_by_role("heading", name=re.compile("Host SN-WEB-0001"))).to_be_visible()
    expect(page.get_by_role("link", name="Reinstall…")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel the install")).to_have_count(0)
    token = page.locator("meta[name=csrf-token]").get_attribute("content")
    refused = page.request.post(server.url + "/console/hosts/SN-WEB-0001/reinstall", form={"csrf_token": token})
    assert refused.status == 403
    assert "vera is a viewer; this needs the operator role" in refused.text()
    expect(page.locator("#state .badge")).to_have_text("idle")


def test_the_keyboard_alone_logs_in_and_reaches_a_host(page: Page, server: LiveServer, screenshots: Any) -> None:
    page.goto(server.url + "/console/")
    page.keyboard.type("ada")  # the user name field has the focus
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.get_by_role("link", name="Hosts").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Hosts")).to_be_visible()
    page.get_by_label("Search").focus()
    page.keyboard.type("web01")
    page.keyboard.press("Enter")
    expect(page.locator("#hosts tbody tr")).to_have_count(1)
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.get_by_role("link", name="SN-WEB-0001").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("link", name="Reinstall…")).to_be_visible()
    screenshots(page, "host-phone")


def _installer(server: LiveServer, token: str) -> Any:
    def call(step: str, **kwargs: Any) -> requests.Response:
        method = "GET" if step == "ks" else "POST"
        response = requests.request(method, f"{server.url}/install/{token}/{step}", timeout=10, **kwargs)
        assert response.status_code == 200, (step, response.text)
        return response
    return call


def test_reinstall_from_the_host_page_and_watch_it_live(page: Page, server: LiveServer, services: Any,
                                                       screenshots: Any, context: Any) -> None:
    log_in(page, server, "otto")
    dashboard = context.new_page()
    dashboard.goto(server.url + "/console/")
    page.goto(server.url + "/console/hosts/712DM2Y")
    page.get_by_role("link", name="Reinstall…").click()
    expect(page.get_by_role("heading", name=re.compile("Reinstall 712DM2Y"))).to_be_visible()
    page.get_by_label(re.compile("Power-cycle it now")).uncheck()  # the test is the installer; no BMC here
    screenshots(page, "reinstall")
    page.get_by_role("button", name="Reinstall db01.example.com").click()
    expect(page.get_by_role("status")).to_contain_text("Reinstall armed")
    badge = page.locator("#state .badge")
    expect(badge).to_have_text("armed")
    expect(page.locator("#timeline")).to_contain_text("install armed by user otto")
    page.evaluate("window.notReloaded = true")

    installer = _installer(server, install_token(services, "712DM2Y"))
    installer("ks")
    expect(badge).to_have_text("booting", timeout=LIVE)
    installer("pre-report", json=matching_report())
    expect(badge).to_have_text("verifying", timeout=LIVE)
    expect(page.locator("#hardware tr", has_text="CPUs")).to_contain_text("16")
    installer("slot")
    expect(badge).to_have_text("installing", timeout=LIVE)
    expect(dashboard.locator("#state-counts tr[data-state=installing] td")).to_have_text("1", timeout=LIVE)
    installer("done")
    expect(badge).to_have_text("installed", timeout=LIVE)
    expect(page.locator("#timeline")).to_contain_text("hardware matches the data source")
    expect(dashboard.locator("#state-counts tr[data-state=installed] td")).to_have_text("1", timeout=LIVE)
    assert page.evaluate("window.notReloaded") is True  # all of it without a reload
    screenshots(page, "host")
    screenshots(dashboard, "dashboard-after-install")


def test_a_protected_host_needs_its_hostname_typed(page: Page, server: LiveServer, services: Any) -> None:
    host_actions.edit(services, SYSTEM, "SN-WEB-0001", {"protected": True})
    log_in(page, server, "otto")
    page.goto(server.url + "/console/hosts/SN-WEB-0001/reinstall")
    expect(page.get_by_role("note")).to_contain_text("This host is protected")
    button = page.get_by_role("button", name="Reinstall web01.example.com")
    button.click()  # nothing typed: the browser itself holds the form back (required)
    expect(page).to_have_url(re.compile(r"/reinstall$"))
    page.get_by_label(re.compile("Hostname of the host to reinstall")).fill("web01")
    page.get_by_role("button", name="Reinstall web01.example.com").click()
    expect(page.get_by_role("alert")).to_contain_text("type its hostname, web01.example.com, to confirm")
    assert _state(server, services, "SN-WEB-0001") == "idle"
    page.get_by_label(re.compile("Hostname of the host to reinstall")).fill("web01.example.com")
    page.get_by_role("button", name="Reinstall web01.example.com").click()
    expect(page.locator("#state .badge")).to_have_text("armed")
    expect(page.locator("#timeline")).to_contain_text("forced: host is protected")


def test_a_post_without_its_csrf_token_is_refused(page: Page, server: LiveServer, services: Any,
                                                  screenshots: Any) -> None:
    log_in(page, server, "ada")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    for form in ({}, {"csrf_token": "forged"}):
        response = page.request.post(server.url + "/console/hosts/SN-WEB-0001/reinstall", form=form)
        assert response.status == 403 and "security token" in response.text()
    form = (f'<form method="post" action="{server.url}/console/hosts/SN-WEB-0001/reinstall">'
            '<button>go</button></form>')
    # A form of another site posting here: SameSite=Lax keeps the session
    # cookie at home, so the request is not even logged in.
    page.route("http://attacker.test/", lambda route: route.fulfill(body=form, content_type="text/html"))
    page.goto("http://attacker.test/")
    page.get_by_role("button", name="go").click()
    expect(page.locator("h1")).to_contain_text("401")
    # A form injected into a page of this console, without the token: 403.
    page.goto(server.url + "/console/")
    page.set_content(form)
    page.get_by_role("button", name="go").click()
    expect(page.locator("h1")).to_contain_text("403")
    expect(page.get_by_role("alert")).to_contain_text("security token")
    assert _state(server, services, "SN-WEB-0001") == "idle"
    page.goto(server.url + "/console/hosts/NO-SUCH-HOST")
    expect(page.locator("h1")).to_contain_text("404")
    screenshots(page, "error")


def _state(server: LiveServer, services: Any, serial: str) -> str:
    from provisiond.inventory import hosts as host_store

    with services.db.read() as session:
        return host_store.load_record(session, serial).state



def test_pages_read_without_javascript(browser: Any, server: LiveServer) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        log_in(page, server, "vera")
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
        expect(page.locator("#state-counts tr[data-state=idle] td")).to_have_text("3")
        page.get_by_role("link", name="Hosts").click()
        page.get_by_label("State").select_option("idle")
        page.get_by_label("Owner").select_option("ops")
        page.get_by_role("button", name="Find").click()
        expect(page.locator("#hosts tbody tr")).to_have_count(1)
        page.get_by_role("link", name="Hostname").click()  # sorting is a link
        expect(page.locator("th[aria-sort=ascending]")).to_have_text(re.compile("Hostname"))
        page.get_by_role("link", name="712DM2Y").click()
        expect(page.locator("#timeline")).to_contain_text("added by import")
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("status")).to_have_text("You are logged out.")
    finally:
        context.close()
