"""The settings' documentation, read from their definition so it cannot
drift: every field of :class:`provisiond.config.Settings` carries a ``#:``
comment, and from those comes

- the sample configuration file (``provisiond settings sample``, shipped as
  ``packaging/provisiond.yaml``): every setting, commented out at its default,
  with its meaning;
- the README's settings table (``provisiond settings table``).

Tests compare both files with what this module makes now.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from dataclasses import dataclass
from typing import Any

import yaml

from provisiond.config import Settings

#: Defaults that are not one value: shown in words instead.
_DESCRIBED_DEFAULTS = {
    "data_dir": "/var/lib/provisiond",  # as root; see its comment
    "boot_templates_dir": "(the shipped templates)",
}


@dataclass(frozen=True)
class SettingDoc:
    name: str
    default: Any
    doc: str
    section: str


def settings_docs() -> list[SettingDoc]:
    """Every setting in definition order, with its ``#:`` comment and section."""
    comments, sections = _comments()
    docs = []
    for item in dataclasses.fields(Settings):
        if item.name not in comments:
            raise LookupError(f"setting {item.name!r} has no #: comment in provisiond/config.py")
        default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        docs.append(SettingDoc(item.name, default, comments[item.name], sections.get(item.name, "general")))
    return docs


def _comments() -> tuple[dict[str, str], dict[str, str]]:
    """The ``#:`` lines just above each field, and the ``# -- section`` it is in."""
    lines = inspect.getsource(Settings).splitlines()
    comments: dict[str, str] = {}
    sections: dict[str, str] = {}
    section = "general"
    fields = {node.lineno - 1: node for node in ast.parse(textwrap.dedent("\n".join(lines))).body[0].body  # type: ignore[attr-defined]
              if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    for number, line in enumerate(lines):
        text = line.strip()
        if text.startswith("# --"):
            section = text.strip("# -").strip()
        if number in fields:
            name = fields[number].target.id  # type: ignore[union-attr]
            sections[name] = section
            above: list[str] = []
            for earlier in reversed(lines[:number]):
                if not earlier.strip().startswith("#:"):
                    break
                above.insert(0, earlier.strip()[2:].strip())
            if above:
                comments[name] = " ".join(above)
    return comments, sections


def _plain(doc: str) -> str:
    """Sphinx-style ``literal`` markup as Markdown/YAML-comment `literal`."""
    return doc.replace("``", "`")


def _shown(setting: SettingDoc) -> str:
    if setting.name in _DESCRIBED_DEFAULTS:
        return _DESCRIBED_DEFAULTS[setting.name]
    value = str(setting.default) if hasattr(setting.default, "__fspath__") else setting.default
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def sample_yaml() -> str:
    """A configuration file listing every setting, commented out at its default."""
    out = ["# provisiond settings: every one, at its default, with its meaning.",
           "# Generated from provisiond/config.py by `provisiond settings sample`.",
           "# Uncomment and change what this site needs. Each can also be set in the",
           "# environment as PROVISIOND_<NAME IN UPPER CASE>, which wins over this file.",
           "# Point provisiond at this file with --config or PROVISIOND_CONFIG."]
    section = None
    for setting in settings_docs():
        if setting.section != section:
            section = setting.section
            out += ["", f"# ---- {section}"]
        out.append("")
        out += [f"# {line}" for line in _wrap(_plain(setting.doc), 76)]
        out.append(f"# {setting.name}: {_shown(setting)}")
    return "\n".join(out) + "\n"


def markdown_table() -> str:
    """The README's settings table."""
    rows = ["| setting (`PROVISIOND_` + upper case in the environment) | default | meaning |",
            "| --- | --- | --- |"]
    for setting in settings_docs():
        meaning = _plain(setting.doc).replace("|", "\\|")
        default = _shown(setting) if setting.name in _DESCRIBED_DEFAULTS else f"`{_shown(setting)}`"
        rows.append(f"| `{setting.name}` | {default} | {meaning} |")
    return "\n".join(rows) + "\n"


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False) or [""]

