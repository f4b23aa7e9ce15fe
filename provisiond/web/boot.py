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
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import NotFound as NoSuchFile
from werkzeug.routing import PathConverter

from provisiond.errors import NotFound
from provisiond.netboot.paths import UnsafeName, resolve_inside
from provisiond.web import services

log = logging.getLogger("provisiond.web.boot")

bp = Blueprint("boot", __name__)


class AnyPathConverter(PathConverter):
    """``path``, but also matching a leading ``/``: an absolute name reaches
    :func:`resolve` (and is refused and logged there) instead of being
    redirected by slash merging."""

    regex = ".+?"
    part_isolating = False


@bp.record_once
def _register_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters.setdefault("bootpath", AnyPathConverter)


def resolve(root: Path, name: str) -> str:
    """The path of ``name`` relative to the real ``root``; else a logged 404.

    The result names the file the request will get, with every symlink
    resolved, so that what is checked is what is served. The check itself
    is :func:`provisiond.netboot.paths.resolve_inside`, shared with TFTP.
    """
    try:
        return resolve_inside(root, name)
    except UnsafeName as refused:
        log.warning("refused boot file request %r: %s", name, refused.reason)
        raise NotFound(f"no boot file {name!r}") from None


@bp.get("/boot/<bootpath:name>", merge_slashes=False)
def file(name: str) -> Response:
    root = services().settings.pxelinux_dir
    relative = resolve(root, name)
    try:
        return send_from_directory(os.path.realpath(root), relative, conditional=True, max_age=None)
    except NoSuchFile:  # missing, a directory, or gone since resolve()
        raise NotFound(f"no boot file {name!r}") from None
