"""PATCH semantics for hosts and groups: JSON Merge Patch (RFC 7396).

A patch is a document of the fields to change: a mapping merges into the
current value, key by key and all the way down (``variables``, ``bmc``,
``hardware``); ``null`` removes a key (clears a field, drops a variable); any
other value, lists included, replaces. ``PATCH /api/v1/hosts/<sn>`` and
``provctl hosts edit --set a.b=v`` (which sends ``{"a": {"b": v}}``) mean the
same thing.

The algorithm is RFC 7396 section 2, written out (eleven lines in the RFC;
the PyPI packages for it are unmaintained). A host document then needs three
rules of its own, applied after the merge: the short form ``macs`` replaces
``nics``, ``netmask`` replaces ``prefix`` (and back), and a ``null`` BMC
password clears the stored password rather than leaving it unmentioned
(which keeps it).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from provisiond.errors import ValidationError


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: ``target`` with ``patch`` applied (neither is changed)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


#: Keys of a host document that replace another when patched (short forms).
_REPLACES = {"macs": "nics", "nics": "macs", "netmask": "prefix", "prefix": "netmask"}


def patch_host(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """The host document ``current`` (as the API shows it, output-only keys
    removed) with ``patch`` merged in."""
    if not isinstance(patch, Mapping):
        raise ValidationError("body", "a patch is a JSON object of the fields to change")
    base = dict(current)
    for key, replaced in _REPLACES.items():
        if patch.get(key) is not None:
            base.pop(replaced, None)
    merged = merge_patch(base, patch)
    bmc_patch = patch.get("bmc")
    if isinstance(bmc_patch, Mapping) and "password" in bmc_patch and bmc_patch["password"] is None:
        if isinstance(merged.get("bmc"), dict):
            merged["bmc"]["password"] = None  # cleared, not "not mentioned"
    return merged
