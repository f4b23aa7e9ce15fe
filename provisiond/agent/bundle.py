"""The agent program as one file: a zipapp of ``provisiond/__init__.py``
and ``provisiond/agent/*.py`` (standard library only), which any Python
3.9+ runs as ``provisiond-agent``. provisiond serves it at
``protocol.DOWNLOAD`` with its SHA-256, and an install's ``%post`` checks
that checksum before it installs it.

The build is deterministic (sorted entries, fixed timestamps and modes), so
every provisiond process, and every host of a cluster, builds the same
bytes from the same sources and announces the same checksum.

Standard library only; runs on Python 3.9.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import List, Tuple

from provisiond import __version__
from provisiond.agent.atomic import write_atomic

SHEBANG = b"#!/usr/bin/env python3\n"
#: The earliest time a zip file can hold: no build time in the bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_MAIN = f'''"""provisiond-agent {__version__}: runs provisiond's jobs on this host
(built by provisiond.agent.bundle)."""

import sys

from provisiond.agent.main import main

sys.exit(main())
'''


def sources() -> List[Tuple[str, bytes]]:
    """(name in the archive, content) of every file the agent needs, sorted."""
    agent_dir = Path(__file__).resolve().parent
    package_dir = agent_dir.parent
    files = [("provisiond/__init__.py", (package_dir / "__init__.py").read_bytes())]
    files += [(f"provisiond/agent/{path.name}", path.read_bytes()) for path in agent_dir.glob("*.py")]
    files.append(("__main__.py", _MAIN.encode("utf-8")))
    return sorted(files)


def build_bytes() -> bytes:
    """The zipapp's bytes: the shebang, then the archive."""
    buffer = io.BytesIO()
    buffer.write(SHEBANG)
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in sources():
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, whatever builds it
            info.external_attr = 0o100644 << 16
            archive.writestr(info, content, compresslevel=9)
    return buffer.getvalue()


def build_zipapp(dest: Path) -> str:
    """Write the agent's zipapp to ``dest`` (mode 0755, atomically: a
    download never gets half a file) and return its SHA-256 in hex."""
    data = build_bytes()
    write_atomic(Path(dest), data, mode=0o755)
    return hashlib.sha256(data).hexdigest()
