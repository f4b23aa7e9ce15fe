"""Boot files over HTTP: kernels, initrds and stage files (``/boot/<name>``).

Served from ``settings.pxelinux_dir`` (the same root TFTP serves the boot
loader from) with werkzeug's ``send_from_directory``: conditional requests
(ETag, Last-Modified) and byte ranges, and the file body handed to the WSGI
server's file wrapper (``sendfile`` under gunicorn). Public: an installer
fetches its kernel before it has anything but a URL.

Only regular files that resolve inside the root are served. A name with
``..`` segments, an absolute path, a backslash or a NUL, or one that
resolves (through a symlink) outside the root, is answered with the same
404 as a missing file, and the refusal is logged with its reason.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Blueprint, Response, send_from_directory
from werkzeug.exceptions import NotFound as NoSuchFile
from werkzeug.routing import PathConverter

from provisiond.errors import NotFound
from provisiond.web import services

log = logging.getLogger("provisiond.web.boot")

bp = Blueprint("boot", __name__)


class AnyPathConverter(PathConverter):
    """``path``, but also matching a leading ``/``: an absolute name reaches
    :func:`resolve` (and is refused and logged there) instead of being
    redirected by slash merging."""

    regex = ".+?"
    part_isolating = False


bp.record_once(lambda state: state.app.url_map.converters.setdefault("bootpath", AnyPathConverter))


def resolve(root: Path, name: str) -> str:
    """The path of ``name`` relative to the real ``root``; else a logged 404.

    The result names the file the request will get, with every symlink
    resolved, so that what is checked is what is served.
    """
    reason = _unsafe(name)
    if reason is None:
        real_root = os.path.realpath(root)
        target = os.path.realpath(os.path.join(real_root, name))
        if target == real_root:
            reason = "names the boot root itself"
        elif os.path.commonpath([real_root, target]) != real_root:
            reason = f"resolves outside the boot root (to {target})"
        else:
            return os.path.relpath(target, real_root)
    log.warning("refused boot file request %r: %s", name, reason)
    raise NotFound(f"no boot file {name!r}")


def _unsafe(name: str) -> str | None:
    if not name:
        return "empty name"
    if "\x00" in name:
        return "NUL byte in the name"
    if "\\" in name:
        return "backslash in the name"
    if name.startswith("/") or os.path.isabs(name):
        return "absolute path"
    if any(part == ".." for part in name.split("/")):
        return "'..' segment in the name"
    return None


@bp.get("/boot/<bootpath:name>", merge_slashes=False)
def file(name: str) -> Response:
    root = services().settings.pxelinux_dir
    relative = resolve(root, name)
    try:
        return send_from_directory(os.path.realpath(root), relative, conditional=True, max_age=None)
    except NoSuchFile:  # missing, a directory, or gone since resolve()
        raise NotFound(f"no boot file {name!r}") from None
