"""Names a client asks for, checked against the boot root (TFTP and HTTP).

One rule for every protocol that serves files from ``settings.pxelinux_dir``:
a requested name is served only if it is a plain relative name and the file
it resolves to (every symlink followed) lies inside the real boot root. What
is checked is what is served: :func:`resolve_inside` returns the resolved
path, and callers open that.

Refused, each with its own reason for the log: an empty name, a NUL byte, a
backslash (a Windows separator a client may hope we honour), an absolute
path, a ``..`` segment, any of those hidden behind percent-encoding
(``%2e%2e``, ``%2f``, ``%5c``, ``%00``, also encoded twice), the root itself,
and anything that resolves outside the root.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote


class UnsafeName(ValueError):
    """A requested name that must not be served; ``reason`` says why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name!r}: {reason}")
        self.name = name
        self.reason = reason


def unsafe_reason(name: str) -> str | None:
    """Why ``name`` is not a plain relative name, or None if it is one."""
    reason = _plain_reason(name)
    if reason is not None:
        return reason
    decoded = name
    for _ in range(3):  # %252e%252e decodes twice to '..'
        if "%" not in decoded:
            break
        decoded = unquote(decoded, errors="replace")
        reason = _plain_reason(decoded)
        if reason is not None:
            return f"percent-encoded {reason}"
    return None


def resolve_inside(root: str | os.PathLike[str], name: str) -> str:
    """The path of ``name`` relative to the real ``root``, symlinks resolved.

    Raises :class:`UnsafeName` when the name is not plain or resolves to the
    root itself or outside it. Whether the file exists is the caller's
    business (a missing file is not a refusal).
    """
    reason = unsafe_reason(name)
    if reason is None:
        real_root = os.path.realpath(root)
        target = os.path.realpath(os.path.join(real_root, name))
        if target == real_root:
            reason = "names the boot root itself"
        elif os.path.commonpath([real_root, target]) != real_root:
            reason = f"resolves outside the boot root (to {target})"
        else:
            return os.path.relpath(target, real_root)
    raise UnsafeName(name, reason)


def real_path_inside(root: str | os.PathLike[str], name: str) -> Path:
    """Like :func:`resolve_inside`, but the absolute resolved path."""
    return Path(os.path.realpath(root)) / resolve_inside(root, name)


def _plain_reason(name: str) -> str | None:
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
