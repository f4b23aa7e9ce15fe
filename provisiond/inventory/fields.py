"""Field parsers for the data source: each returns the normalised value or
raises :class:`~provisiond.errors.ValidationError` naming the field."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from provisiond.errors import ValidationError

_HEX = re.compile(r"^[0-9a-f]{12}$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SERIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
    if not _HEX.match(digits):
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
    text = value.rstrip(".")
    if len(text) > 253:
        raise ValidationError(field, f"{value!r} is longer than 253 characters")
    labels = text.split(".")
    for label in labels:
        if not _LABEL.match(label):
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
    if address.is_unspecified or address.is_multicast or address.is_loopback:
        raise ValidationError(field, f"{value} is not a usable host address")
    return str(address)


def prefix(value: Any, field: str = "prefix") -> int:
    """A prefix length (``24``) or a dotted netmask (``255.255.255.0``)."""
    if isinstance(value, str) and "." in value:
        try:
            return ipaddress.IPv4Network(f"0.0.0.0/{value.strip()}").prefixlen
        except ValueError:
            raise ValidationError(field, f"{value!r} is not a netmask") from None
    number = integer(value, field, 1, 32)
    return number


def integer(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise ValidationError(field, f"expected a whole number, got {value!r}")
    if isinstance(value, str):
        value = value.strip()
    try:
        number = int(value)
    except (TypeError, ValueError):
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
    if any(ch in result for ch in "\r\n\x00"):
        raise ValidationError(field, "must be one line")
    return result or None


def name(value: Any, field: str) -> str:
    """A group, profile or site name: letters, digits, ``_.-``."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValidationError(field, f"{value!r} is not a valid name (letters, digits, '_', '.', '-'; at most 64)")
    return value


def serial(value: Any, field: str = "serial") -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _SERIAL.match(value.strip()):
        raise ValidationError(field, f"{value!r} is not a serial number (letters, digits, '_.:/-'; at most 64)")
    return value.strip()


def variables(value: Any, field: str = "variables") -> dict[str, Any]:
    """Free-form template variables: a mapping with identifier keys."""
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise ValidationError(field, "expected a mapping of variable names to values")
    for key in value:
        if not isinstance(key, str) or not _VARIABLE.match(key):
            raise ValidationError(f"{field}.{key}", "variable names are identifiers (letters, digits, '_')")
    return dict(value)


def string_list(value: Any, field: str) -> list[str]:
    """A list given as a YAML/JSON list or as ``a;b;c`` (CSV)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in re.split(r"[;,\s]+", value) if part.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value]
    raise ValidationError(field, f"expected a list of strings, got {value!r}")
