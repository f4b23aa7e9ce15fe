"""The declarations of template variable types, on their own."""

from __future__ import annotations

import pytest

from provisiond.errors import ProfileError
from provisiond.kickstart.variable_types import NAMED, declare


@pytest.mark.parametrize(("kind", "good", "bad"), [
    ("word", ["en_US.UTF-8", "Asia/Shanghai", "Etc/GMT+8", "us", "sda"], ["-x", "a b", "a\"b", "$(id)", "`id`", "a;b",
                                                                         "", "%pre"]),
    ("hostname", ["ntp.example.com", "a-1.b"], ["-a.b", "a_b", "a b"]),
    ("ipv4", ["10.0.0.1", "255.255.255.255"], ["10.0.0.256", "10.0.0", "1.2.3.4 --x"]),
    ("host", ["10.0.0.1", "ntp.example.com"], ["10.0.0.1 --x", "--x", "a b"]),
    ("netmask", ["255.255.255.0", "255.255.0.0", "255.128.0.0", "0.0.0.0", "255.255.255.255"],
     ["255.0.255.0", "255.255.255.1", "24"]),
    ("url", ["http://mirror/os", "https://a.b/c?d=e", "nfs://srv/export"], ["http://a b", "file:///etc/passwd",
                                                                           'http://a"b', "ftp://x`id`"]),
    ("crypt_hash", ["$6$salt$abcdefgh/.", "$y$j9T$salt$hash"], ["changeme", "$6$a b", ""]),
    ("package", ["nginx", "@core", "-nginx", "@^minimal-environment", "kernel-devel.x86_64", "perl(CPAN)"[:4]],
     ["nginx php", "-", "$(id)", "--nogpgcheck"]),
    ("mount_point", ["/", "/var/log", "swap", "pv.01"], ["var", "/a b", "--x"]),
    ("integer", [0, -3, 10], ["1", 1.5, True]),
    ("size_mib", [1, 20480], [0, -1, "10"]),
    ("boolean", [True, False], ["yes", 1, None]),
])
def test_named_types(kind, good, bad):
    declared = declare("v", kind, "test")
    for value in good:
        assert declared.problem(value) is None, (kind, value)
    for value in bad:
        assert declared.problem(value) is not None, (kind, value)
    assert declared.words == NAMED[kind].words


def test_optional_types_also_take_null():
    assert declare("v", "optional host", "test").problem(None) is None
    assert declare("v", "host", "test").problem(None) is not None
    assert declare("v", {"nullable": True, "list": "word"}, "test").problem(None) is None


def test_compound_types_say_where_inside_the_value_and_what():
    partitions = declare("partitions", {"list": {"record": {"mount": "mount_point", "size": "size_mib",
                                                            "grow": "optional boolean"}}}, "test")
    assert partitions.problem([{"mount": "/", "size": 10}]) is None
    assert partitions.problem([{"mount": "/", "size": 10}, {"mount": "/x", "size": 0}]) == (
        "[1].size", "expected a size in MiB (a whole number ≥ 1), got 0")
    assert partitions.problem([{"mount": "/"}]) == ("[0]", "the field 'size' is missing")
    assert partitions.problem([{"mount": "/", "size": 1, "colour": "red"}]) == (
        "[0]", "the field 'colour' is not one it takes")
    assert partitions.problem("5")[1].startswith("expected a list of {mount: ")
    assert declare("s", {"enum": ["a", "b"]}, "test").problem("c") == ("", "expected one of a, b, got 'c'")
    schema = declare("s", {"schema": {"type": "object", "required": ["x"]}}, "test")
    assert schema.problem({"x": 1}) is None and schema.problem({}) is not None


@pytest.mark.parametrize("spec", ["nosuchtype", "optional nosuchtype", 5, {"list": "word", "enum": [1]},
                                  {"record": {}}, {"enum": []}, {"schema": "x"}, {"list": "word", "colour": 1},
                                  {"schema": {"type": "no-such-json-type"}}])
def test_a_bad_declaration_is_a_profile_error(spec):
    with pytest.raises(ProfileError, match="profiles/x.yaml: variable_types.v"):
        declare("v", spec, "profiles/x.yaml")
