"""Field parsers: every value is either normalised or refused with a
ValidationError that names the field — never another exception."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisiond.errors import ValidationError
from provisiond.inventory import fields

RFC1123 = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*")


def refused(parse, *args, field: str):
    with pytest.raises(ValidationError) as info:
        parse(*args)
    assert info.value.field == field
    assert info.value.status == 400
    assert info.value.message.startswith(f"{field}: ")
    return info.value


# --------------------------------------------------------------------------- MAC


@pytest.mark.parametrize("spelling", [
    "52:54:00:ab:cd:ef",
    "52:54:00:AB:CD:EF",
    "52-54-00-ab-cd-ef",
    "52-54-00-AB-CD-EF",
    "5254.00ab.cdef",
    "5254.00AB.CDEF",
    "525400abcdef",
    "525400ABCDEF",
    "  52:54:00:ab:cd:ef\n",
])
def test_mac_spellings_normalise(spelling):
    assert fields.mac(spelling) == "52:54:00:ab:cd:ef"


@pytest.mark.parametrize("bad", [
    "", "52:54:00:ab:cd", "52:54:00:ab:cd:ef:01", "52:54-00:ab:cd:ef", "52.54.00.ab.cd.ef",
    "5254.00ab.cdef.0000", "52:54:00:ab:cd:eg", "52:54:00:ab:cd:ef\nx", "5254 00ab cdef",
    "01:00:5e:00:00:01",  # multicast
    "ff:ff:ff:ff:ff:ff",  # broadcast
    "00:00:00:00:00:00",
    "５２:54:00:ab:cd:ef",  # full-width digits
    None, 525400, ["52:54:00:ab:cd:ef"],
])
def test_mac_refused(bad):
    refused(fields.mac, bad, "nics[3].mac", field="nics[3].mac")


unicast = st.binary(min_size=6, max_size=6).filter(lambda b: not b[0] & 1 and any(b))


@given(unicast, st.sampled_from(["colon", "dash", "cisco", "bare"]), st.booleans())
def test_mac_every_spelling_round_trips(raw, style, upper):
    digits = raw.hex()
    spelled = {
        "colon": ":".join(digits[i:i + 2] for i in range(0, 12, 2)),
        "dash": "-".join(digits[i:i + 2] for i in range(0, 12, 2)),
        "cisco": ".".join(digits[i:i + 4] for i in range(0, 12, 4)),
        "bare": digits,
    }[style]
    if upper:
        spelled = spelled.upper()
    normal = fields.mac(spelled)
    assert normal == ":".join(f"{b:02x}" for b in raw)
    assert fields.mac(normal) == normal  # idempotent


@given(st.one_of(st.text(max_size=20), st.text(alphabet=st.sampled_from("0aF:-.\n "), max_size=18)))
def test_mac_any_text_is_refused_or_canonical(text):
    try:
        normal = fields.mac(text)
    except ValidationError as exc:
        assert exc.field == "mac"
        return
    assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", normal)
    assert int(normal[:2], 16) & 1 == 0


# --------------------------------------------------------------------------- host names


@pytest.mark.parametrize("value, expected", [
    ("web01", "web01"),
    ("Web01.Example.COM", "web01.example.com"),
    ("web01.example.com.", "web01.example.com"),  # fully qualified
    ("a-b.c-d", "a-b.c-d"),
    ("1web", "1web"),  # RFC 1123 allows a leading digit
    ("x" * 63 + ".example.com", "x" * 63 + ".example.com"),
    (".".join(["a" * 63] * 3) + "." + "b" * 61, ".".join(["a" * 63] * 3) + "." + "b" * 61),  # 253
])
def test_hostname_accepted(value, expected):
    assert fields.hostname(value) == expected


@pytest.mark.parametrize("bad", [
    "", ".", "..", "web01..", "web_01", "-web", "web-", "web.-x", "a..b", ".web",
    "x" * 64, ".".join(["a" * 63] * 4),  # 255 characters
    "10.0.0.1", "web.123",  # numeric last label
    "web 01", "wéb", "ſ.example.com", "\u212a.example.com",  # non-ASCII that folds to ASCII
    "web01\n", "web01\n.", "web\x00", None, 42, ["web"],
])
def test_hostname_refused(bad):
    refused(fields.hostname, bad, field="hostname")


# Characters near the edge of the rules: separators, a trailing newline, and
# non-ASCII letters that case-fold to ASCII ones (ſ → s, K (Kelvin) → k).
tricky = st.text(alphabet=st.sampled_from("aZ09-._ \n\t\x00ſKıİé."), max_size=12)


@given(st.one_of(st.text(), tricky, st.from_regex(r"[A-Za-z0-9.\-]{0,80}", fullmatch=True)))
@settings(max_examples=400)
def test_hostname_any_text_is_refused_or_rfc1123(text):
    try:
        name = fields.hostname(text)
    except ValidationError as exc:
        assert exc.field == "hostname"
        return
    assert RFC1123.fullmatch(name), name
    assert len(name) <= 253
    assert not name.split(".")[-1].isdigit()
    assert fields.hostname(name) == name
    assert name == text.removesuffix(".").lower()


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize("value, expected", [
    ("10.0.0.1", "10.0.0.1"), (" 192.168.1.20 ", "192.168.1.20"), ("169.254.0.5", "169.254.0.5"),
])
def test_ipv4_accepted(value, expected):
    assert fields.ipv4(value, "ip") == expected


@pytest.mark.parametrize("bad", [
    "", None, "10.0.0", "10.0.0.256", "10.0.0.1/24", "010.0.0.1", "::1", "fe80::1", "0.0.0.0",
    "127.0.0.1", "224.0.0.1", "255.255.255.255", "240.0.0.1", "host.example.com", 167772161, True,
])
def test_ipv4_refused(bad):
    refused(fields.ipv4, bad, "gateway", field="gateway")


@given(st.one_of(st.text(max_size=20), st.ip_addresses(v=4).map(str)))
def test_ipv4_any_text_is_refused_or_a_host_address(text):
    try:
        address = fields.ipv4(text, "dns")
    except ValidationError as exc:
        assert exc.field == "dns"
        return
    parsed = ipaddress.IPv4Address(address)
    assert str(parsed) == address
    assert not (parsed.is_multicast or parsed.is_loopback or parsed.is_unspecified or parsed.is_reserved)


@pytest.mark.parametrize("value, expected", [
    (24, 24), ("24", 24), (" 8 ", 8), (32, 32), (1, 1), (24.0, 24),
    ("255.255.255.0", 24), ("255.255.0.0", 16), ("255.255.255.255", 32), ("128.0.0.0", 1),
    (" 255.255.255.252 ", 30),
])
def test_prefix_accepted(value, expected):
    assert fields.prefix(value, "prefix") == expected


@pytest.mark.parametrize("bad", [
    0, 33, -1, "0", "abc", "", None, True, 24.5, "255.0.255.0", "255.255.255.1", "0.0.0.0",
    "0.0.0.255",  # a host mask, not a netmask
    "255.255.255", "256.0.0.0",
])
def test_prefix_refused(bad):
    refused(fields.prefix, bad, "netmask", field="netmask")


# --------------------------------------------------------------------------- numbers, flags, text


@pytest.mark.parametrize("value, expected", [(1, 1), ("16", 16), (" 16 ", 16), (16.0, 16), (4096, 4096)])
def test_integer_accepted(value, expected):
    assert fields.integer(value, "hardware.cpus", 1, 4096) == expected


@pytest.mark.parametrize("bad", [
    0, 4097, -1, "", "1.5", 1.5, "x", None, True, False, [1], {}, float("inf"), float("-inf"), float("nan"),
    "1e3", "9" * 5000,
])
def test_integer_refused(bad):
    refused(fields.integer, bad, "hardware.cpus", 1, 4096, field="hardware.cpus")


@given(st.one_of(st.floats(), st.text(max_size=12), st.integers(), st.none(), st.booleans()))
def test_integer_never_raises_anything_else(value):
    try:
        number = fields.integer(value, "bmc.port", 1, 65535)
    except ValidationError as exc:
        assert exc.field == "bmc.port"
        return
    assert isinstance(number, int) and 1 <= number <= 65535


@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), ("true", True), ("Yes", True), ("1", True), ("on", True), (1, True),
    ("false", False), ("NO", False), ("0", False), ("off", False), ("", False), (0, False),
])
def test_boolean_accepted(value, expected):
    assert fields.boolean(value, "protected") is expected


@pytest.mark.parametrize("bad", ["maybe", 2, None, [], "t"])
def test_boolean_refused(bad):
    refused(fields.boolean, bad, "protected", field="protected")


def test_text():
    assert fields.text(" ops ", "owner") == "ops"
    assert fields.text("", "owner") is None
    assert fields.text(None, "owner") is None
    assert fields.text(42, "owner") == "42"
    refused(fields.text, None, "owner", 128, True, field="owner")
    refused(fields.text, "x" * 129, "owner", field="owner")
    refused(fields.text, "two\nlines", "owner", field="owner")
    refused(fields.text, "nul\x00", "owner", field="owner")
    refused(fields.text, ["ops"], "owner", field="owner")
    refused(fields.text, True, "owner", field="owner")


@pytest.mark.parametrize("value", ["rack-a1", "site_hz1", "a", "A.b-c_d", "x" * 64, "9lives"])
def test_name_accepted(value):
    assert fields.name(value, "groups") == value


@pytest.mark.parametrize("bad", ["", "-a", ".a", "a b", "a/b", "x" * 65, "rack\n", "räck", None, 5])
def test_name_refused(bad):
    refused(fields.name, bad, "groups", field="groups")


def test_name_length_limit():
    assert fields.name("x" * 32, "nics[0].name", 32) == "x" * 32
    refused(fields.name, "x" * 33, "nics[0].name", 32, field="nics[0].name")


@pytest.mark.parametrize("value, expected", [
    ("SN0001", "SN0001"), (" 712DM2Y ", "712DM2Y"), ("CN-1234:78_9.a", "CN-1234:78_9.a"), (1234, "1234"),
])
def test_serial_accepted(value, expected):
    assert fields.serial(value) == expected


@pytest.mark.parametrize("bad", ["", " ", "-SN", "SN 1", "SN\n1", "x" * 65, None, True, 1.5, "序列号",
                                 "CZ/2024/001", "SN?1", "SN#1", "SN%2F1"])
def test_serial_refused(bad):
    refused(fields.serial, bad, field="serial")


# --------------------------------------------------------------------------- variables and lists


def test_variables_accepted():
    value = {"role": "web", "n": 3, "ratio": 0.5, "on": True, "none": None,
             "list": [1, "two", {"three": [3]}], "nested": {"Any Key": {"x-y": 1}}}
    assert fields.variables(value) == value
    assert fields.variables(None) == {}
    assert fields.variables("") == {}


@pytest.mark.parametrize("bad, field", [
    ([1, 2], "variables"),
    ("role=web", "variables"),
    ({"1role": 1}, "variables.1role"),
    ({"my-var": 1}, "variables.my-var"),
    ({"role\n": 1}, "variables.role\n"),
    ({"when": dt.date(2024, 1, 1)}, "variables.when"),
    ({"n": float("nan")}, "variables.n"),
    ({"n": {"deep": [1, float("inf")]}}, "variables.n.deep[1]"),
    ({"s": {1, 2}}, "variables.s"),
    ({"m": {1: "int key"}}, "variables.m"),
    ({"b": b"bytes"}, "variables.b"),
    ({"s": ["ok", "nul\x00"]}, "variables.s[1]"),
    ({"ntp_server": "10.0.0.1\n%pre\necho INJECTED\n%end"}, "variables.ntp_server"),
    ({"x": "carriage\rreturn"}, "variables.x"),
    ({"x": {"line\nbreak": 1}}, "variables.x.line\nbreak"),
    ({"x": "sep\u2028arator"}, "variables.x"),
    ({"x": "surrogate\ud800"}, "variables.x"),
    ({"x": "y" * (fields.MAX_VARIABLE_TEXT + 1)}, "variables.x"),
    ({f"v{i}": "y" * 4000 for i in range(20)}, "variables"),
    ({"x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}, "variables.x" + "[0]" * 32),
])
def test_variables_refused(bad, field):
    refused(fields.variables, bad, field=field)


def test_variables_alias_bomb_is_refused():
    value: object = ["lol"] * 10
    for _ in range(9):  # 10**9 leaves when expanded, from ten small lists
        value = [value] * 10
    refused(fields.variables, {"bomb": value}, field="variables")


# Any JSON value, except that text is one line of real text: no control
# characters or line separators (refused on purpose: a value rendered into a
# kickstart must not add a line; PostgreSQL's jsonb could not store NUL) and
# no lone surrogates.
json_text = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), json_values, max_size=5))
def test_variables_any_json_is_accepted_unchanged(value):
    assert fields.variables(value) == value


@given(st.dictionaries(st.text(max_size=5), st.one_of(json_values, st.dates(), st.binary(), st.floats()),
                       max_size=4))
def test_variables_anything_else_is_refused_with_its_path(value):
    try:
        result = fields.variables(value)
    except ValidationError as exc:
        assert exc.field.startswith("variables")
        return
    json.dumps(result, allow_nan=False)  # storable as JSON


def test_string_list():
    assert fields.string_list("a;b, c  d", "dns") == ["a", "b", "c", "d"]
    assert fields.string_list([" a ", "b"], "dns") == ["a", "b"]
    assert fields.string_list(None, "dns") == []
    assert fields.string_list("", "dns") == []
    refused(fields.string_list, [1], "dns", field="dns")
    refused(fields.string_list, {"a": 1}, "dns", field="dns")


def test_no_parser_lets_an_infinite_float_escape():
    for parse in (lambda v: fields.integer(v, "x", 1, 10), lambda v: fields.prefix(v, "x")):
        with pytest.raises(ValidationError):
            parse(math.inf)
