"""The sample configuration file and the README's settings table are made
from the settings' definition: they list every setting, at its real
default, and cannot drift from it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from provisiond.config import Settings, load_settings
from provisiond.settings_doc import markdown_table, sample_yaml, settings_docs

REPO = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented():
    assert [d.name for d in settings_docs()] == [f.name for f in dataclasses.fields(Settings)]
    assert all(len(d.doc) > 10 for d in settings_docs())


def test_the_shipped_sample_is_the_generated_one():
    assert (REPO / "packaging" / "provisiond.yaml").read_text() == sample_yaml(), \
        "regenerate: provisiond settings sample > packaging/provisiond.yaml"


def test_the_readme_table_is_the_generated_one():
    readme = (REPO / "README.md").read_text()
    table = readme.split("<!-- settings:begin -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert table == markdown_table(), "regenerate the README's table: provisiond settings table"
    assert len(table.splitlines()) == 2 + len(dataclasses.fields(Settings))


def test_the_sample_uncommented_loads_and_gives_the_defaults(tmp_path: Path):
    """Each ``# name: value`` line, uncommented, is valid and is the default."""
    names = {d.name for d in settings_docs()} - {"data_dir", "boot_templates_dir"}  # described in words
    settings = [line[2:] for line in sample_yaml().splitlines() if re.match(r"# ([a-z_]+): ", line)
                and line[2:].split(":")[0] in names]
    assert len(settings) == len(names)
    config = tmp_path / "provisiond.yaml"
    config.write_text("\n".join(settings) + "\n")
    state = {"STATE_DIRECTORY": "/var/lib/provisiond"}
    from_sample, defaults = load_settings(config, environ=state), load_settings(environ=state)
    assert from_sample == defaults


@pytest.mark.parametrize("command", ["sample", "table"])
def test_the_command_prints_it(command):
    from click.testing import CliRunner

    from provisiond.cli.server import main

    result = CliRunner().invoke(main, ["settings", command])
    assert result.exit_code == 0
    assert result.output == (sample_yaml() if command == "sample" else markdown_table())
