"""Types of template variables, as profiles declare them (``variable_types:``).

A profile says what each variable its fragments use must be, so that a value
of the wrong kind is refused when it is written (400 naming the variable and
the expected type), not found when an installer fetches its kickstart at
boot time (500 for every host that uses it). The declarations are written
in a short notation and checked with JSON Schema (``jsonschema``)::

    variable_types:
      timezone: word                      # a named type
      ntp_server: optional host           # may also be null (or not set)
      selinux: {enum: [enforcing, permissive, disabled]}
      packages_extra: {list: package}
      partitions: {list: {record: {mount: mount_point, fstype: word, size: size_mib, grow: optional boolean}}}
      volume_group: {nullable: true, record: {name: word, volumes: {list: ...}}}
      anything: {schema: {type: object}}  # plain JSON Schema, for what the notation lacks
      db_password: secret text            # never shown: API answers, exports and errors mask it
      api_key: {secret: true, type: optional word}

Named types keep a value inside one kickstart token: a ``word`` has no
space, quote or shell character and does not start with ``-`` (so it cannot
add an option), a ``url`` no space or quote, a ``package`` is a package,
group (``@core``) or exclusion (``-nginx``) name. Every text value is one
line already (:func:`provisiond.inventory.fields.variables`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.exceptions import ValidationError as Mismatch

from provisiond.errors import ProfileError


@dataclass(frozen=True)
class Named:
    """A named type: its JSON Schema and how an error message says it."""

    schema: Mapping[str, Any]
    words: str


def _text(pattern: str, words: str, max_length: int = 1024) -> Named:
    return Named({"type": "string", "pattern": f"^(?:{pattern})$", "maxLength": max_length}, words)


_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = rf"{_LABEL}(?:\.{_LABEL})*\.?"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_NETMASK_OCTET = r"(?:255|254|252|248|240|224|192|128|0)"

NAMED: dict[str, Named] = {
    "text": Named({"type": "string", "maxLength": 4096}, "one line of text"),
    "word": _text(r"[A-Za-z0-9_.:/+@=,][A-Za-z0-9_.:/+@=,-]*",
                  "one word (letters, digits and _ . : / + @ = , -, not starting with '-')", 255),
    "hostname": _text(_HOSTNAME, "a host name (RFC 1123)", 253),
    "ipv4": _text(_IPV4, "an IPv4 address", 15),
    "host": _text(f"{_IPV4}|{_HOSTNAME}", "a host name or an IPv4 address", 253),
    # Contiguous masks only: 255.255.255.x, 255.255.x.0, 255.x.0.0, x.0.0.0.
    "netmask": _text(rf"255\.255\.255\.{_NETMASK_OCTET}|255\.255\.{_NETMASK_OCTET}\.0|255\.{_NETMASK_OCTET}\.0\.0"
                     rf"|{_NETMASK_OCTET}\.0\.0\.0", "a dotted netmask (255.255.255.0)", 15),
    "url": _text(r"(?:https?|ftp|nfs)://[^\s\"'\\<>`]+", "a URL (http, https, ftp or nfs; no spaces or quotes)"),
    "crypt_hash": _text(r"\$(?:1|5|6|y|2[aby])\$[./A-Za-z0-9$=,]+",
                        "a crypt(3) password hash ($6$... or $y$...; never a plain password)"),
    "package": _text(r"-?(?:@\^?)?[A-Za-z0-9_][A-Za-z0-9_.+:*~^-]*",
                     "a package, @group or -exclusion name", 255),
    "mount_point": _text(r"/[A-Za-z0-9_.+/-]*|swap|biosboot|none|(?:pv|raid|btrfs)\.[A-Za-z0-9_]+",
                         "a mount point (/, /var/log, swap, biosboot, pv.01...)", 255),
    "integer": Named({"type": "integer"}, "a whole number"),
    "size_mib": Named({"type": "integer", "minimum": 1, "maximum": 1 << 40}, "a size in MiB (a whole number ≥ 1)"),
    "boolean": Named({"type": "boolean"}, "true or false"),
}
_NULL = {"type": "null"}
#: ``optional host``: a host, or null (or not set).
OPTIONAL = "optional "
#: ``secret text``: a value no answer, export, event, log or error shows.
SECRET = "secret "


@dataclass(frozen=True)
class VariableType:
    """One declared variable: its compiled validator and its type in words."""

    name: str
    #: The declaration as the profile wrote it.
    spec: Any
    schema: Mapping[str, Any]
    words: str
    nullable: bool
    validator: Draft202012Validator
    #: Declared secret: its value is masked wherever it would be shown.
    secret: bool = False

    def problem(self, value: Any) -> tuple[str, str] | None:
        """None when ``value`` fits; else (path inside the value, what is
        wrong). A secret's value is never quoted."""
        error = next(self.validator.iter_errors(value), None)
        if error is None:
            return None
        deepest = _deepest(error)
        if self.secret:
            return _path(deepest), f"expected {self.words} (the value is secret and not shown)"
        return _path(deepest), _say(deepest)


def declare(name: str, spec: Any, where: str) -> VariableType:
    """Compile the declaration ``spec`` of variable ``name`` (``where``
    names the profile file for errors)."""
    secret, bare = _secret(spec, f"{where}: variable_types.{name}")
    schema, words, nullable = _compile(bare, f"{where}: variable_types.{name}")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ProfileError(f"{where}: variable_types.{name}: not a valid JSON Schema: {exc.message}") from None
    return VariableType(name, spec, schema, words, nullable, Draft202012Validator(schema), secret)


def _secret(spec: Any, where: str) -> tuple[bool, Any]:
    """(declared secret, the type without the mark): ``secret T`` or
    ``{secret: true, type: T}``; only a variable as a whole is secret."""
    if isinstance(spec, str) and spec.startswith(SECRET):
        return True, spec.removeprefix(SECRET).strip()
    if isinstance(spec, Mapping) and "secret" in spec:
        if spec["secret"] is not True or set(spec) != {"secret", "type"}:
            raise ProfileError(f"{where}: a secret is declared 'secret T' or {{secret: true, type: T}}")
        return True, spec["type"]
    return False, spec


def _compile(spec: Any, where: str) -> tuple[dict[str, Any], str, bool]:
    """(JSON Schema, words, may be null) of one type declaration; the schema
    carries its words as its ``description``, for error messages."""
    schema, words, nullable = _compile_bare(spec, where)
    return {**schema, "description": words}, words, nullable


def _compile_bare(spec: Any, where: str) -> tuple[dict[str, Any], str, bool]:
    if isinstance(spec, str):
        nullable = spec.startswith(OPTIONAL)
        named = NAMED.get(spec.removeprefix(OPTIONAL).strip())
        if named is None:
            raise ProfileError(f"{where}: unknown type {spec!r} (known: {', '.join(sorted(NAMED))}, each also as "
                               "'optional T'; or {list: T}, {record: {...}}, {enum: [...]}, {schema: ...})")
        return _maybe_null(dict(named.schema), named.words, nullable)
    if not isinstance(spec, Mapping):
        raise ProfileError(f"{where}: a type is a name (word, optional host...) or a mapping "
                           "({list: T}, {record: ...})")
    nullable = spec.get("nullable", False)
    kinds = [k for k in ("list", "record", "enum", "schema") if k in spec]
    unknown = set(spec) - {"list", "record", "enum", "schema", "nullable"}
    if len(kinds) != 1 or unknown or not isinstance(nullable, bool):
        raise ProfileError(f"{where}: a type mapping has exactly one of list, record, enum or schema "
                           "(and optionally nullable: true)")
    kind = kinds[0]
    if kind == "list":
        items, words, _ = _compile(spec["list"], f"{where}.list")
        return _maybe_null({"type": "array", "items": items}, f"a list of {words}", nullable)
    if kind == "record":
        return _maybe_null(*_record(spec["record"], where), nullable)
    if kind == "enum":
        values = spec["enum"]
        if not isinstance(values, list) or not values:
            raise ProfileError(f"{where}: enum is a list of the values allowed")
        return _maybe_null({"enum": list(values)}, "one of " + ", ".join(map(str, values)), nullable)
    if not isinstance(spec["schema"], Mapping):
        raise ProfileError(f"{where}: schema is a JSON Schema mapping")
    return dict(spec["schema"]), "a value matching the profile's JSON Schema", nullable


def _record(fields: Any, where: str) -> tuple[dict[str, Any], str]:
    if not isinstance(fields, Mapping) or not fields:
        raise ProfileError(f"{where}: record is a mapping of field names to types")
    properties, required, words = {}, [], []
    for field, spec in fields.items():
        schema, word, nullable = _compile(spec, f"{where}.record.{field}")
        properties[str(field)] = schema
        if not nullable:
            required.append(str(field))
        words.append(f"{field}: {word}{' (optional)' if nullable else ''}")
    schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return schema, "{" + ", ".join(words) + "}"


def _maybe_null(schema: dict[str, Any], words: str, nullable: bool) -> tuple[dict[str, Any], str, bool]:
    if not nullable:
        return schema, words, False
    return {"anyOf": [{**schema, "description": words}, _NULL]}, f"{words}, or null", True


def _deepest(error: Mismatch) -> Mismatch:
    """The most specific error (inside anyOf, the branch that got furthest)."""
    while error.context:
        error = max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
    return error


def _path(error: Mismatch) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)


def _say(error: Mismatch) -> str:
    """What is wrong, in the declaration's own words."""
    if error.validator == "required":
        missing = next((f for f in error.validator_value if f not in error.instance), "?")
        return f"the field {missing!r} is missing"
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"the field {extra[0] if extra else '?'!r} is not one it takes"
    words = error.schema.get("description") or error.message
    return f"expected {words}, got {_short(error.instance)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
