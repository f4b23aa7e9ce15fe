"""``GET /boot/<name>``: kernels and initrds over HTTP, public, ranged, and
never a byte from outside the boot root."""

from __future__ import annotations

import dataclasses
import http.client
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisiond.config import Settings
from provisiond.services import Services
from provisiond.web.app import build_app

KERNEL = bytes(range(256)) * 64  # 16 KiB, every byte value
SECRET = b"root:x:0:0:outside the boot root\n"


@pytest.fixture
def boot_root(tmp_path: Path) -> Path:
    root = tmp_path / "pxelinux"
    (root / "images" / "pxeboot").mkdir(parents=True)
    (root / "images" / "pxeboot" / "vmlinuz").write_bytes(KERNEL)
    (root / "pxelinux.0").write_bytes(b"PXELINUX")
    (root / "empty.cfg").write_bytes(b"")
    (root / "alias").symlink_to("images/pxeboot/vmlinuz")  # inside: served
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    (root / "escape").symlink_to(outside / "secret")  # a file outside
    (root / "escape-dir").symlink_to(outside)  # a directory outside
    (root / "images" / "up").symlink_to("../..")  # the boot root's parent
    return root


@pytest.fixture
def boot_services(settings: Settings, boot_root: Path) -> Iterator[Services]:
    svc = Services.build(dataclasses.replace(settings, pxelinux_dir=boot_root))
    yield svc
    svc.db.dispose()


@pytest.fixture
def boot_client(boot_services: Services) -> Any:
    return build_app(services=boot_services).test_client()


def test_whole_file_without_a_token(boot_client: Any) -> None:
    response = boot_client.get("/boot/images/pxeboot/vmlinuz")
    assert response.status_code == 200
    assert response.data == KERNEL
    assert response.headers["Content-Length"] == str(len(KERNEL))
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers.get("ETag") and response.headers.get("Last-Modified")


def test_top_level_and_empty_files(boot_client: Any) -> None:
    assert boot_client.get("/boot/pxelinux.0").data == b"PXELINUX"
    response = boot_client.get("/boot/empty.cfg")
    assert response.status_code == 200 and response.data == b""


def test_head(boot_client: Any) -> None:
    response = boot_client.head("/boot/images/pxeboot/vmlinuz")
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(KERNEL))
    assert response.data == b""


@pytest.mark.parametrize("header, start, end", [
    ("bytes=0-0", 0, 0),
    ("bytes=100-1123", 100, 1123),
    ("bytes=16000-", 16000, len(KERNEL) - 1),
    ("bytes=-10", len(KERNEL) - 10, len(KERNEL) - 1),
])
def test_range_request(boot_client: Any, header: str, start: int, end: int) -> None:
    response = boot_client.get("/boot/images/pxeboot/vmlinuz", headers={"Range": header})
    assert response.status_code == 206
    assert response.data == KERNEL[start:end + 1]
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(KERNEL)}"
    assert response.headers["Content-Length"] == str(end - start + 1)


def test_unsatisfiable_range(boot_client: Any) -> None:
    response = boot_client.get("/boot/images/pxeboot/vmlinuz", headers={"Range": f"bytes={len(KERNEL)}-"})
    assert response.status_code == 416


def test_conditional_requests(boot_client: Any) -> None:
    first = boot_client.get("/boot/images/pxeboot/vmlinuz")
    etag = first.headers["ETag"]
    again = boot_client.get("/boot/images/pxeboot/vmlinuz", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    since = boot_client.get("/boot/images/pxeboot/vmlinuz",
                            headers={"If-Modified-Since": first.headers["Last-Modified"]})
    assert since.status_code == 304
    # A stale If-Range gets the whole file, not a range of the new one.
    stale = boot_client.get("/boot/images/pxeboot/vmlinuz", headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.data == KERNEL


def test_symlink_inside_the_root_is_served(boot_client: Any) -> None:
    response = boot_client.get("/boot/alias")
    assert response.status_code == 200 and response.data == KERNEL


def _assert_refused(response: Any) -> None:
    assert response.status_code == 404, response.status_code
    assert response.is_json, response.data[:200]
    assert response.get_json()["error"] == "not_found"
    assert SECRET not in response.data


TRAVERSAL = [
    # (URL as sent, why it is refused)
    ("/boot/../outside/secret", "'..' segment"),
    ("/boot/images/../../outside/secret", "'..' segment"),
    ("/boot/images/pxeboot/../../../outside/secret", "'..' segment"),
    ("/boot/%2e%2e/outside/secret", "'..' segment"),
    ("/boot/%2E%2E/outside/secret", "'..' segment"),
    ("/boot/images/%2e%2e/%2e%2e/outside/secret", "'..' segment"),
    ("/boot/..%2foutside%2fsecret", "'..' segment"),
    ("/boot/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "'..' segment"),
    ("/boot/..", "'..' segment"),
    ("/boot//etc/passwd", "absolute path"),
    ("/boot/%2fetc%2fpasswd", "absolute path"),
    ("/boot/%2F%2Fetc/passwd", "absolute path"),
    ("/boot/..%5coutside%5csecret", "backslash"),
    ("/boot/images%5cpxeboot%5cvmlinuz", "backslash"),
    ("/boot/..\\outside\\secret", "backslash"),
    ("/boot/images/%00vmlinuz", "NUL"),
    ("/boot/escape", "outside the boot root"),
    ("/boot/escape-dir/secret", "outside the boot root"),
    ("/boot/images/up/outside/secret", "outside the boot root"),
    ("/boot/.", "boot root itself"),
]


@pytest.mark.parametrize("url, reason", TRAVERSAL)
def test_traversal_is_refused_and_logged(boot_client: Any, caplog: pytest.LogCaptureFixture,
                                         url: str, reason: str) -> None:
    with caplog.at_level(logging.WARNING, logger="provisiond.web.boot"):
        response = boot_client.get(url)
    _assert_refused(response)
    refusals = [r.getMessage() for r in caplog.records if r.name == "provisiond.web.boot"]
    assert len(refusals) == 1 and reason in refusals[0], refusals


@pytest.mark.parametrize("url", ["/boot/nothing", "/boot/images/pxeboot/initrd.img", "/boot/images",
                                 "/boot/images/pxeboot/", "/boot/images/pxeboot/vmlinuz/x"])
def test_missing_file_or_directory_is_json_404(boot_client: Any, url: str) -> None:
    _assert_refused(boot_client.get(url))


def test_missing_root_is_json_404(settings: Settings, tmp_path: Path) -> None:
    svc = Services.build(dataclasses.replace(settings, pxelinux_dir=tmp_path / "no-such-dir"))
    try:
        _assert_refused(build_app(services=svc).test_client().get("/boot/pxelinux.0"))
    finally:
        svc.db.dispose()


def test_admin_token_is_not_needed_but_harmless(boot_client: Any) -> None:
    response = boot_client.get("/boot/pxelinux.0", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 200


def test_default_client_has_the_route(client: Any) -> None:
    """The shipped app (default settings) has the route and answers JSON."""
    response = client.get("/boot/no-such-file-anywhere")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


def test_over_real_http(settings: Settings, boot_root: Path, boot_services: Services,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Through gunicorn, with raw request lines no client normalised."""
    from tests.conftest import LiveServer

    _ = boot_services.vault  # the key exists before the workers start
    monkeypatch.setenv("PROVISIOND_PXELINUX_DIR", str(boot_root))
    server = LiveServer(settings, workers=1)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

        def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
            conn.putrequest("GET", path, skip_accept_encoding=True)
            for key, value in (headers or {}).items():
                conn.putheader(key, value)
            conn.endheaders()
            response = conn.getresponse()
            return response.status, response.read(), response.headers

        status, body, _ = get("/boot/images/pxeboot/vmlinuz")
        assert status == 200 and body == KERNEL
        status, body, headers = get("/boot/images/pxeboot/vmlinuz", {"Range": "bytes=256-511"})
        assert status == 206 and body == KERNEL[256:512]
        assert headers["Content-Range"] == f"bytes 256-511/{len(KERNEL)}"
        for path in ("/boot/../outside/secret", "/boot/%2e%2e/outside/secret", "/boot//etc/passwd",
                     "/boot/escape", "/boot/..%5coutside%5csecret"):
            status, body, headers = get(path)
            assert status == 404, path
            assert headers["Content-Type"] == "application/json" and SECRET not in body, path
        conn.close()
    finally:
        server.stop()
