"""The agent's HTTPS client keeps one connection alive across calls (a TLS
handshake per poll would cost the gateway more than the poll) and makes a
new one when the server has closed the kept one."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from provisiond.agent.client import Client, HTTPError
from tests.agent.conftest import Pki


@pytest.fixture
def server(pki: Pki):
    """An HTTP/1.1 server over TLS that counts connections; ``close_next``
    makes it end the connection after its next answer."""
    seen: dict[str, Any] = {"connections": 0, "close_next": False}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            seen["connections"] += 1

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = 503 if self.path.endswith("/busy") else 200
            data = json.dumps({"runs": []} if status == 200 else {"error": "overloaded", "message": "busy"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 503:
                self.send_header("Retry-After", "7")
            if seen["close_next"]:
                seen["close_next"] = False
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.cert_pem), str(pki.key_pem))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    seen["url"] = f"https://127.0.0.1:{httpd.server_address[1]}"
    yield seen
    httpd.shutdown()
    httpd.server_close()


def test_calls_share_one_connection(server, pki):
    client = Client(server["url"], pki.ca_pem, "pva_" + "x" * 43)
    for _ in range(5):
        assert client.poll(0).body == {"runs": []}
    assert server["connections"] == 1
    client.close()


def test_a_connection_the_server_ended_is_made_again(server, pki):
    client = Client(server["url"], pki.ca_pem, "pva_" + "x" * 43)
    server["close_next"] = True
    client.poll(0)
    client.poll(0)
    assert server["connections"] == 2


def test_an_error_answer_keeps_the_connection_and_says_when_to_come_back(server, pki):
    client = Client(server["url"], pki.ca_pem, "pva_" + "x" * 43)
    with pytest.raises(HTTPError) as refused:
        client._call("/busy", {}, 5)
    assert (refused.value.status, refused.value.error, refused.value.retry_after) == (503, "overloaded", 7.0)
    client.poll(0)
    assert server["connections"] == 1
