"""Client addresses behind reverse proxies, believed from trusted ones only.

With ``trusted_proxies`` set, a request whose direct peer is one of them has
its ``REMOTE_ADDR`` taken from ``X-Forwarded-For``: the right-most address in
it that is not itself a trusted proxy (each proxy appends the address it got
the request from; anything further left could have been written by the
client). ``X-Forwarded-Proto`` (http/https) is believed from them too. From
any other peer both headers are ignored, so nobody can put someone else's
address on a timeline (or past an install token's address binding).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any


class TrustedProxies:
    def __init__(self, app: Any, trusted: Iterable[str]) -> None:
        self.app = app
        self.networks = [ipaddress.ip_network(item, strict=False) for item in trusted]

    def trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        peer = environ.get("REMOTE_ADDR", "")
        if self.networks and self.trusted(peer):
            forwarded = [part.strip() for part in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
            client = next((hop for hop in reversed(forwarded) if not self.trusted(hop)), None)
            if client is not None and _is_address(client):
                environ["provisiond.proxy_addr"] = peer
                environ["REMOTE_ADDR"] = client
            scheme = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[-1].strip().lower()
            if scheme in ("http", "https"):
                environ["wsgi.url_scheme"] = scheme
        return self.app(environ, start_response)


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
