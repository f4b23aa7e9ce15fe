"""The composer: layered variables, strict and sandboxed rendering, errors
that name the fragment and line, live reload, data never treated as code."""

import os
from pathlib import Path
from types import MappingProxyType

import pytest

from provisiond.errors import ProfileError, TemplateError
from provisiond.inventory.records import GroupVars, HostRecord, Nic
from provisiond.kickstart.composer import Composer, InstallContext
from provisiond.kickstart.profiles import ProfileStore

INSTALL = InstallContext("tok123", "http://pv.test:8080")


def make_host(**changes) -> HostRecord:
    values = dict(
        serial="SN1", hostname="h1.example.com", profile="p",
        nics=(Nic("52:54:00:00:00:01", "eth0", True),), ip="10.0.0.5", prefix=24, gateway="10.0.0.1",
        variables=MappingProxyType({}),
    )
    values.update(changes)
    return HostRecord(**values)


@pytest.fixture
def lab(tmp_path: Path):
    """A profile ``p`` with fragments written by the test."""
    fragments = tmp_path / "fragments"
    profiles = tmp_path / "profiles"
    fragments.mkdir()
    profiles.mkdir()

    def setup(fragment_texts: dict[str, str], variables: str = "{}", global_vars=None) -> Composer:
        for name, text in fragment_texts.items():
            (fragments / f"{name}.j2").write_text(text)
        (profiles / "p.yaml").write_text(
            "os: rocky-9\nks_version: RHEL9\ninstall_tree: http://m/os\nkernel: k\ninitrd: i\n"
            f"fragments: [{', '.join(fragment_texts)}]\nvariables: {variables}\n"
        )
        return Composer(fragments, ProfileStore(profiles), global_vars)

    setup.fragments = fragments  # type: ignore[attr-defined]
    return setup


def test_variables_layer_global_group_profile_host_one_off(lab):
    composer = lab({"a": "{{ x }} {{ g }} {{ p }} {{ h }} {{ o }}"}, variables="{p: profile, x: profile}",
                   global_vars={"x": "global", "g": "global", "p": "global", "h": "global", "o": "global"})
    host = make_host(
        group_vars=(GroupVars("low", 0, {"g": "low", "x": "low"}), GroupVars("high", 5, {"g": "high"})),
        variables=MappingProxyType({"h": "host", "o": "host"}),
    )
    assert composer.render(host, INSTALL, {"o": "one-off"}) == "profile high profile host one-off\n"
    merged = composer.variables(host)
    assert (merged["g"], merged["x"], merged["o"]) == ("high", "profile", "host")


def test_host_and_install_context(lab):
    composer = lab({"a": "{{ host.serial }} {{ host.netmask }} {{ host.primary_mac }} {{ install.done }}"})
    assert composer.render(make_host(), INSTALL) == (
        "SN1 255.255.255.0 52:54:00:00:00:01 http://pv.test:8080/install/tok123/done\n"
    )


def test_undefined_variable_names_fragment_and_line(lab):
    composer = lab({"first": "ok\n", "second": "line one\nline two {{ nope }}\n"})
    with pytest.raises(TemplateError) as info:
        composer.render(make_host(), INSTALL)
    assert info.value.details == {"fragment": "second", "line": 2}
    assert "'nope' is undefined" in str(info.value)


def test_syntax_error_names_fragment_and_line(lab):
    composer = lab({"a": "fine\n{% if %}\n"})
    with pytest.raises(TemplateError) as info:
        composer.render(make_host(), INSTALL)
    assert info.value.details == {"fragment": "a", "line": 2}


def test_missing_fragment_is_an_error(lab):
    composer = lab({"a": "x"})
    (lab.fragments / "a.j2").unlink()
    with pytest.raises(TemplateError, match="no fragment file") as info:
        composer.render(make_host(), INSTALL)
    assert info.value.details["fragment"] == "a"


def test_unknown_profile_is_a_profile_error(lab):
    composer = lab({"a": "x"})
    with pytest.raises(ProfileError, match="no longer exists"):
        composer.render(make_host(profile="gone"), INSTALL)


@pytest.mark.parametrize("payload", ["{{ 7*7 }}", "{% for x in range(3) %}x{% endfor %}", "{{ ''.__class__ }}"])
def test_data_is_never_template_code(lab, payload):
    composer = lab({"a": "{{ owner }}|{{ host.owner }}"})
    host = make_host(owner=payload, variables=MappingProxyType({"owner": payload}))
    assert composer.render(host, INSTALL) == f"{payload}|{payload}\n"


def test_sandbox_blocks_unsafe_attribute_access(lab):
    composer = lab({"a": "{{ ''.__class__.__mro__[1].__subclasses__() }}"})
    with pytest.raises(TemplateError) as info:
        composer.render(make_host(), INSTALL)
    assert info.value.details["fragment"] == "a"


def test_plain_root_password_is_refused_without_echoing_it(lab):
    composer = lab({"rootpw": "rootpw --iscrypted {{ pw | crypted }}"}, variables="{pw: hunter2}")
    with pytest.raises(TemplateError) as info:
        composer.render(make_host(), INSTALL)
    assert "hunter2" not in str(info.value)
    assert info.value.details["fragment"] == "rootpw"


def test_ks_quote_refuses_multi_line_values(lab):
    composer = lab({"a": "x --append={{ v | ks_quote }}"}, variables='{v: "a\\nb"}')
    with pytest.raises(TemplateError, match="one line"):
        composer.render(make_host(), INSTALL)


def test_fragment_changes_are_picked_up_without_restart(lab):
    composer = lab({"a": "old"})
    assert composer.render(make_host(), INSTALL) == "old\n"
    path = lab.fragments / "a.j2"
    path.write_text("new")
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 5))
    assert composer.render(make_host(), INSTALL) == "new\n"
