"""Profiles: inheritance, validation with the file and key named, live reload."""

import os
from pathlib import Path

import pytest

from provisiond.config import SHIPPED_FRAGMENTS, SHIPPED_PROFILES
from provisiond.errors import NotFound, ProfileError
from provisiond.kickstart.profiles import ProfileStore

BASE = """
os: rocky-9
ks_version: RHEL9
install_tree: http://mirror/os/
kernel: vmlinuz
initrd: initrd.img
fragments: [header]
variables: {a: 1, b: 1}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


def test_shipped_profiles_differ_in_partitions_and_packages():
    store = ProfileStore(SHIPPED_PROFILES)
    assert {"default", "web_server", "mysql_server"} <= store.names()
    default, web, mysql = (store.get(n) for n in ("default", "web_server", "mysql_server"))
    assert web.extends == mysql.extends == "default"
    assert web.fragments == default.fragments  # inherited
    assert len({str(p.variables["partitions"]) + str(p.variables["volume_group"]) for p in (default, web, mysql)}) == 3
    assert len({str(p.variables["packages_extra"]) for p in (default, web, mysql)}) == 3
    assert web.variables["root_password_hash"] == default.variables["root_password_hash"]  # merged


def test_extends_replaces_keys_and_merges_variables(tmp_path):
    write(tmp_path, "base", BASE)
    write(tmp_path, "child", "extends: base\nkernel: other\nvariables: {b: 2, c: 3}\n")
    child = ProfileStore(tmp_path).get("child")
    assert child.kernel == "other"
    assert child.initrd == "initrd.img"
    assert child.install_tree == "http://mirror/os"
    assert dict(child.variables) == {"a": 1, "b": 2, "c": 3}


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"base": BASE + "colour: red\n"}, "unknown key 'colour'"),
        ({"base": BASE, "child": "extends: nowhere\n"}, "extends unknown profile 'nowhere'"),
        ({"a": BASE + "extends: b\n", "b": BASE + "extends: a\n"}, "loop"),
        ({"base": "os: x\n"}, "key 'ks_version' is required"),
        ({"base": BASE.replace("fragments: [header]", "fragments: header")}, "fragments must be a list"),
        ({"base": BASE + "name: other\n"}, "must match the file name"),
        ({"base": "os: [unclosed\n"}, "cannot read profile"),
    ],
)
def test_invalid_profiles_name_the_file_and_problem(tmp_path, files, needle):
    for name, text in files.items():
        write(tmp_path, name, text)
    with pytest.raises(ProfileError) as info:
        ProfileStore(tmp_path).all()
    assert needle in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_unknown_profile_is_not_found(tmp_path):
    write(tmp_path, "base", BASE)
    with pytest.raises(NotFound):
        ProfileStore(tmp_path).get("missing")


def test_changes_are_picked_up_without_restart(tmp_path):
    path = write(tmp_path, "base", BASE)
    store = ProfileStore(tmp_path)
    assert store.get("base").kernel == "vmlinuz"
    path.write_text(BASE.replace("kernel: vmlinuz", "kernel: vmlinuz-new"))
    os.utime(path, ns=(1, 10**18))  # a distinct mtime even within one clock tick
    assert store.get("base").kernel == "vmlinuz-new"
    write(tmp_path, "added", BASE)
    assert "added" in store.names()
    path.write_text("broken: [")
    with pytest.raises(ProfileError):
        store.all()
    path.write_text(BASE)
    assert store.get("base").kernel == "vmlinuz"


def test_a_site_profile_extends_the_shipped_default_without_copying_it(tmp_path):
    """The search path: site directories first, the shipped one last."""
    write(tmp_path, "edge", "extends: default\ndescription: edge router\nvariables: {packages_extra: [frr]}\n")
    store = ProfileStore((tmp_path, SHIPPED_PROFILES))
    edge = store.get("edge")
    assert edge.fragments == store.get("default").fragments
    assert list(edge.variables["packages_extra"]) == ["frr"]
    assert edge.chain == (str(tmp_path / "edge.yaml"), str(SHIPPED_PROFILES / "default.yaml"))
    assert {"default", "web_server", "mysql_server", "edge"} <= store.names()


def test_a_site_default_shadows_and_may_extend_the_shipped_one(tmp_path):
    write(tmp_path, "default", "extends: default\nvariables: {timezone: Asia/Shanghai}\n")
    store = ProfileStore((tmp_path, SHIPPED_PROFILES))
    default = store.get("default")
    assert default.variables["timezone"] == "Asia/Shanghai"
    assert default.variables["lang"] == "en_US.UTF-8"  # from the shipped default below it
    assert store.get("web_server").variables["timezone"] == "Asia/Shanghai"  # shipped web_server extends the site's
    assert default.source == str(tmp_path / "default.yaml")


def test_a_profile_that_extends_its_own_name_needs_one_further_down(tmp_path):
    write(tmp_path, "lonely", BASE + "extends: lonely\n")
    with pytest.raises(ProfileError, match="its own name, but no later directory"):
        ProfileStore((tmp_path, SHIPPED_PROFILES)).all()


def test_a_profile_whose_own_values_do_not_fit_its_types_is_refused(tmp_path):
    write(tmp_path, "base", BASE + "variable_types: {a: word}\n".replace("a: word", "a: {list: word}"))
    with pytest.raises(ProfileError, match=r"base.yaml: variables.a: expected a list of one word"):
        ProfileStore(tmp_path).all()


def test_types_are_inherited_and_a_child_may_redeclare_them(tmp_path):
    write(tmp_path, "base", BASE + "variable_types: {a: integer, b: optional integer}\n")
    write(tmp_path, "child", "extends: base\nvariables: {a: x}\nvariable_types: {a: word}\n")
    store = ProfileStore(tmp_path)
    assert set(store.get("child").types) == {"a", "b"}
    assert store.get("child").types["a"].words.startswith("one word")
    assert store.get("base").types["a"].words == "a whole number"


def test_the_check_finds_fragments_using_undeclared_variables(tmp_path):
    from provisiond.kickstart.check import check_profiles
    from provisiond.kickstart.composer import Composer

    fragments = tmp_path / "fragments"
    fragments.mkdir()
    (fragments / "header.j2").write_text("lang {{ lang }}\n# {{ host.serial }} {{ profile.name }}\n{{ motd }}\n")
    write(tmp_path, "base", BASE.replace("variables: {a: 1, b: 1}", "variables: {lang: en}") +
          "variable_types: {lang: word}\n")
    store = ProfileStore(tmp_path)
    problems = check_profiles(store, Composer(fragments, store))
    assert [(p.profile, p.message) for p in problems] == [
        ("base", "fragment 'header' uses variable 'motd', which the profile's variable_types do not declare")]


def test_the_shipped_profiles_declare_every_variable_their_fragments_use():
    from provisiond.kickstart.check import check_profiles
    from provisiond.kickstart.composer import Composer

    store = ProfileStore(SHIPPED_PROFILES)
    assert check_profiles(store, Composer(SHIPPED_FRAGMENTS, store)) == []


def test_a_global_variable_of_the_wrong_type_stops_start_up():
    from provisiond.errors import ConfigError
    from provisiond.kickstart.check import check_settings_variables

    store = ProfileStore(SHIPPED_PROFILES)
    check_settings_variables({"ntp_server": "10.0.0.1", "motd": "anything"}, store)
    with pytest.raises(ConfigError, match=r"variables.ntp_server: expected a host name or an IPv4 address"):
        check_settings_variables({"ntp_server": "10.0.0.1 --x"}, store)
