"""Field parsers for the data source: each returns the normalised value or
raises :class:`~provisiond.errors.ValidationError` naming the field."""

from __future__ import annotations

import ipaddress
import json
import math
import re
from typing import Any

from provisiond.errors import ValidationError
from provisiond.events import CONTROL

# Patterns are used with fullmatch (``$`` would accept a trailing newline)
# and spell out ASCII ranges (IGNORECASE would let "ſ" and "K" (Kelvin) in).
_HEX = re.compile(r"[0-9a-f]{12}")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Serial numbers: letters, digits, ``_ . : -`` (no ``/``: every serial must
#: be addressable as one URL path segment). Compared regardless of case.
_SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: At most this many values (counting nested ones) in one variables mapping.
MAX_VARIABLE_NODES = 100_000


def mac(value: Any, field: str = "mac") -> str:
    """``aa:bb:cc:dd:ee:ff``, ``AA-BB-CC-DD-EE-FF``, ``aabb.ccdd.eeff`` or
    ``aabbccddeeff`` → ``aa:bb:cc:dd:ee:ff``."""
    if not isinstance(value, str):
        raise ValidationError(field, f"expected a MAC address, got {value!r}")
    text = value.strip().lower()
    if re.fullmatch(r"[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}", text):
        digits = text.replace(":", "").replace("-", "")
    elif re.fullmatch(r"[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}", text):
        digits = text.replace(".", "")
    else:
        digits = text
    if not _HEX.fullmatch(digits):
        raise ValidationError(field, f"{value!r} is not a MAC address (e.g. 52:54:00:12:34:56)")
    if int(digits[:2], 16) & 1:
        raise ValidationError(field, f"{value!r} is a multicast address, not a NIC's MAC")
    if digits == "000000000000":
        raise ValidationError(field, f"{value!r} is the all-zero MAC")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def hostname(value: Any, field: str = "hostname") -> str:
    """An RFC 1123 host name (labels of letters, digits and hyphens), lower-cased."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "a host name is required")
    text = value.removesuffix(".")  # one trailing dot: the fully qualified form
    if len(text) > 253:
        raise ValidationError(field, f"{value!r} is longer than 253 characters")
    labels = text.split(".")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise ValidationError(
                field,
                f"{value!r} is not an RFC 1123 host name "
                "(labels of 1-63 letters, digits or hyphens, not starting or ending with a hyphen)",
            )
    if labels[-1].isdigit():
        raise ValidationError(field, f"{value!r} is not an RFC 1123 host name (the last label is numeric)")
    return text.lower()


def ipv4(value: Any, field: str) -> str:
    try:
        address = ipaddress.IPv4Address(str(value).strip()) if value not in (None, "") else None
    except ValueError:
        address = None
    if address is None or isinstance(value, bool):
        raise ValidationError(field, f"{value!r} is not an IPv4 address")
    if address.is_unspecified or address.is_multicast or address.is_loopback or address.is_reserved:
        raise ValidationError(field, f"{value} is not a usable host address")
    return str(address)


def prefix(value: Any, field: str = "prefix") -> int:
    """A prefix length (``24``) or a dotted netmask (``255.255.255.0``)."""
    if isinstance(value, str) and "." in value:
        return _netmask(value, field)
    return integer(value, field, 1, 32)


def _netmask(value: str, field: str) -> int:
    # IPv4Network also takes host masks (0.0.0.255) and 0.0.0.0: insist on
    # the netmask spelling of a prefix length of 1-32.
    try:
        length = ipaddress.IPv4Network(f"0.0.0.0/{value.strip()}").prefixlen
    except ValueError:
        length = None
    if length is None or length < 1 or str(ipaddress.IPv4Network(f"0.0.0.0/{length}").netmask) != value.strip():
        raise ValidationError(field, f"{value!r} is not a netmask (e.g. 255.255.255.0)")
    return length


def integer(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise ValidationError(field, f"expected a whole number, got {value!r}")
    if isinstance(value, str):
        value = value.strip()
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: float("inf")
        raise ValidationError(field, f"expected a whole number, got {value!r}") from None
    if isinstance(value, float) and value != number:
        raise ValidationError(field, f"expected a whole number, got {value!r}")
    if not low <= number <= high:
        raise ValidationError(field, f"{number} is out of range ({low}-{high})")
    return number


def boolean(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "yes", "1", "on", "false", "no", "0", "off", ""}:
        return value.strip().lower() in {"true", "yes", "1", "on"}
    if value in (0, 1):
        return bool(value)
    raise ValidationError(field, f"expected true or false, got {value!r}")


def text(value: Any, field: str, max_length: int = 128, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise ValidationError(field, "is required")
        return None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValidationError(field, f"expected text, got {value!r}")
    result = str(value).strip()
    if len(result) > max_length:
        raise ValidationError(field, f"longer than {max_length} characters")
    one_line(result, field)
    return result or None


#: Lone UTF-16 surrogates: JSON's "\ud800" escapes decode to them, but they
#: are not text (no encoding, the database's included, can store them).
_SURROGATE = re.compile("[\ud800-\udfff]")


def one_line(value: str, field: str) -> str:
    """``value`` if it is one line of real text: no line breaks or other
    control characters (which would forge lines in a timeline or a
    kickstart) and no lone surrogates; else a 400 naming ``field``."""
    proper_text(value, field)
    found = CONTROL.search(value)
    if found:
        raise ValidationError(field, f"must be one line of text without control characters "
                                     f"(found {found.group()!r} at position {found.start()})")
    return value


def proper_text(value: str, field: str) -> str:
    """``value`` if it holds no lone UTF-16 surrogate; else a 400 naming ``field``."""
    found = _SURROGATE.search(value)
    if found:
        raise ValidationError(field, f"holds a lone UTF-16 surrogate ({found.group()!r} at position "
                                     f"{found.start()}), which is not text")
    return value


def name(value: Any, field: str, max_length: int = 64) -> str:
    """A group, profile or site name: letters, digits, ``_.-``."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or len(value) > max_length:
        raise ValidationError(
            field, f"{value!r} is not a valid name (letters, digits, '_', '.', '-'; at most {max_length})"
        )
    return value


def serial(value: Any, field: str = "serial") -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _SERIAL.fullmatch(value.strip()):
        raise ValidationError(field, f"{value!r} is not a serial number (letters, digits, '_', '.', ':', '-'; "
                                     "at most 64)")
    return value.strip()


def serial_key(serial: str) -> str:
    """What serial numbers are compared by: the same serial in any case is one host."""
    return serial.lower()


def variables(value: Any, field: str = "variables") -> dict[str, Any]:
    """Free-form template variables: a mapping with identifier keys whose
    values are JSON (text, numbers, true/false, null, lists, mappings).
    Every text in it is one line (a value rendered into a kickstart must not
    be able to add a line or a section), at most :data:`MAX_VARIABLE_TEXT`
    characters; the whole mapping at most :data:`MAX_VARIABLES_BYTES` as
    JSON and :data:`MAX_DEPTH` levels deep."""
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise ValidationError(field, "expected a mapping of variable names to values")
    for key in value:
        if not isinstance(key, str) or not _VARIABLE.fullmatch(key):
            raise ValidationError(f"{field}.{key}", "variable names are identifiers (letters, digits, '_')")
    _check_json(value, field)
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > MAX_VARIABLES_BYTES:
        raise ValidationError(field, f"{size} bytes as JSON; at most {MAX_VARIABLES_BYTES} are accepted")
    return dict(value)


#: Limits of one variables mapping (a host's, a group's): characters of one
#: text value, bytes of the whole mapping as JSON, levels of nesting.
MAX_VARIABLE_TEXT = 4096
MAX_VARIABLES_BYTES = 64 * 1024
MAX_DEPTH = 32


def _check_json(value: dict[str, Any], field: str) -> None:
    """Variables are stored as JSON: only text, numbers, booleans, null, lists
    and mappings with text keys (YAML dates, NaN or sets are refused here,
    not by the database). Bounded, so that a YAML alias bomb is refused too."""
    pending: list[tuple[str, Any, int]] = [(f"{field}.{key}", item, 1) for key, item in value.items()]
    seen = 0
    while pending:
        where, item, depth = pending.pop()
        seen += 1
        if seen > MAX_VARIABLE_NODES:
            raise ValidationError(field, f"more than {MAX_VARIABLE_NODES} values")
        if depth > MAX_DEPTH:
            raise ValidationError(where, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise ValidationError(where, f"mapping keys must be text, got {key!r}")
                one_line(key, f"{where}.{key}")
                pending.append((f"{where}.{key}", inner, depth + 1))
        elif isinstance(item, list):
            pending.extend((f"{where}[{index}]", inner, depth + 1) for index, inner in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValidationError(where, f"{item!r} cannot be stored (JSON has no NaN or infinity)")
        elif item is not None and not isinstance(item, (str, int, float, bool)):
            raise ValidationError(where, f"a {type(item).__name__} cannot be stored; use text, a number, "
                                         "true/false, a list or a mapping")
        elif isinstance(item, str):
            if len(item) > MAX_VARIABLE_TEXT:
                raise ValidationError(where, f"{len(item)} characters; at most {MAX_VARIABLE_TEXT} are accepted")
            one_line(item, where)


def check_tree(value: Any, root: str) -> None:
    """A parsed document (JSON or YAML) fit to be read field by field: no
    lone surrogate in any text or key, at most :data:`MAX_DEPTH` levels deep.
    A 400 names the field (``variables.a[2]``) where it is not."""
    pending: list[tuple[str, Any, int]] = [(root, value, 0)]
    while pending:
        where, item, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ValidationError(where or "body", f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            for key, inner in item.items():
                path = f"{where}.{key}" if where else str(key)
                if isinstance(key, str):
                    proper_text(key, path)
                pending.append((path, inner, depth + 1))
        elif isinstance(item, list):
            pending.extend((f"{where}[{index}]", inner, depth + 1) for index, inner in enumerate(item))
        elif isinstance(item, str):
            proper_text(item, where or "body")


def string_list(value: Any, field: str) -> list[str]:
    """A list given as a YAML/JSON list or as ``a;b;c`` (CSV)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in re.split(r"[;,\s]+", value) if part.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value]
    raise ValidationError(field, f"expected a list of strings, got {value!r}")
