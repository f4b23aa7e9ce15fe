"""Compose a host's kickstart from its profile's fragments.

Fragments are Jinja2 files ``<name>.j2`` in the fragment directories (the
site's, then the shipped ones), rendered in a ``SandboxedEnvironment`` with ``StrictUndefined``. Compiled templates are
cached and re-compiled when their file changes. The whole kickstart is
rendered to one string before anything is returned: a missing variable, a
missing fragment or a template error raises :class:`TemplateError` naming the
fragment and line, never a partial file.

Variables layer, lowest first: global (settings) < groups (by priority) <
profile < host < one-off. Values from the data source are data: they are
passed to templates as values and never compiled as template code.
"""

from __future__ import annotations

import functools
import ipaddress
import shlex
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from provisiond.errors import NotFound, ProfileError, TemplateError
from provisiond.events import has_control
from provisiond.inventory.records import HostRecord
from provisiond.kickstart.profiles import Profile, ProfileStore

FRAGMENT_SUFFIX = ".j2"
_CRYPT = re.compile(r"^\$(1|5|6|y|2[aby])\$[./A-Za-z0-9$=,]+$")


@dataclass(frozen=True)
class InstallContext:
    """What the installer needs to call back. ``token`` is the one-time
    install token; in an admin preview it is the literal ``PREVIEW``."""

    token: str
    base_url: str

    @property
    def urls(self) -> dict[str, str]:
        root = f"{self.base_url.rstrip('/')}/install/{self.token}"
        return {
            "kickstart": f"{root}/ks",
            "pre_report": f"{root}/pre-report",
            "slot": f"{root}/slot",
            "progress": f"{root}/progress",
            "done": f"{root}/done",
            "failed": f"{root}/failed",
            "agent": f"{root}/agent",
            "agent_download": f"{self.base_url.rstrip('/')}/agent/v1/provisiond-agent.pyz",
            "agent_ca": f"{self.base_url.rstrip('/')}/agent/v1/ca.pem",
            "agent_unit": f"{self.base_url.rstrip('/')}/agent/v1/provisiond-agent.service",
        }


#: Names every fragment sees without a profile declaring them: the
#: host's record, its profile, the installer's callback URLs and the agent
#: bundle the ``post-agent`` fragment installs (see :meth:`Composer.render`).
CONTEXT_NAMES = frozenset({"host", "profile", "install", "agent"})


class Composer:
    def __init__(self, fragments_dirs: Path | Sequence[Path], profiles: ProfileStore,
                 global_variables: Mapping[str, Any] | None = None, agent: Any = None) -> None:
        """``fragments_dirs``: where fragments are looked up, first match wins
        (a site's directories, then the shipped one). ``agent``: what the
        ``post-agent`` fragment installs (``agent.sha256``;
        an :class:`provisiond.agents.download.AgentBundle`)."""
        self.agent = agent
        self.fragments_dirs = (fragments_dirs,) if isinstance(fragments_dirs, Path) else tuple(fragments_dirs)
        self.profiles = profiles
        self.global_variables = dict(global_variables or {})
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader([str(d) for d in self.fragments_dirs]),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            auto_reload=True,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            cache_size=1000,
            finalize=_one_line_output,
        )
        self.env.filters["crypted"] = _crypted
        self.env.filters["ks_quote"] = _ks_quote
        self.env.filters["sh_quote"] = _sh_quote

    # -- variables -----------------------------------------------------------

    def variables(self, host: HostRecord, one_off: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The merged variables, lowest layer first: global < groups < profile < host < one-off."""
        return self._merged(host, self._profile(host), one_off)

    def _merged(self, host: HostRecord, profile: Profile, one_off: Mapping[str, Any] | None) -> dict[str, Any]:
        groups = [group.variables for group in host.group_vars]  # already sorted by priority, lowest first
        return layered(profile, self.global_variables, groups, host.variables, one_off)

    # -- rendering -----------------------------------------------------------

    def render(self, host: HostRecord, install: InstallContext,
               one_off: Mapping[str, Any] | None = None) -> str:
        profile = self._profile(host)
        # One context for every fragment, Jinja's globals included, so that
        # each fragment's context shares it instead of copying it.
        context: dict[str, Any] = dict(self.env.globals)
        context.update(self._merged(host, profile, one_off))
        context.update(host=host_context(host), profile=profile_context(profile),
                       install={"token": install.token, **install.urls}, agent=self.agent)
        parts = [self._render_fragment(name, context) for name in profile.fragments]
        return "".join(part if part.endswith("\n") else part + "\n" for part in parts if part.strip())

    def render_text(self, host: HostRecord, source: str, one_off: Mapping[str, Any] | None = None,
                    name: str = "template") -> str:
        """A file's text rendered for ``host`` in the same sandbox, with the
        same layered variables (``one_off``: the job's own, on top), and
        ``host`` and ``profile`` as in fragments. A value is data: it is
        never rendered again."""
        profile = self._profile(host)
        context: dict[str, Any] = dict(self.env.globals)
        context.update(self._merged(host, profile, one_off))
        context.update(host=host_context(host), profile=profile_context(profile))
        try:
            template = self.env.from_string(source)
            return template.render(context)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"syntax error: {exc.message}", fragment=name, line=exc.lineno) from None
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"undefined variable: {exc.message}", fragment=name) from None
        except jinja2.TemplateError as exc:
            raise TemplateError(str(exc.message or exc), fragment=name) from None

    def _profile(self, host: HostRecord) -> Profile:
        try:
            return self.profiles.get(host.profile)
        except NotFound:
            raise ProfileError(f"host {host.serial} uses profile {host.profile!r}, which no longer exists") from None

    def _render_fragment(self, name: str, context: dict[str, Any]) -> str:
        filename = name + FRAGMENT_SUFFIX
        try:
            template = self.env.get_template(filename)
        except jinja2.TemplateNotFound:
            where = ", ".join(str(d) for d in self.fragments_dirs)
            raise TemplateError(f"no fragment file {filename} in {where}", fragment=name) from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"syntax error: {exc.message}", fragment=name, line=exc.lineno) from None
        try:
            try:
                # template.render(context), without copying the context (it
                # is only read: a fragment's own {% set %} lands in its Context).
                return self.env.concat(  # type: ignore[attr-defined,no-any-return]
                    template.root_render_func(template.new_context(context, shared=True)))
            except Exception:
                self.env.handle_exception()  # re-raised with template line numbers, as render() does
        except TemplateError as exc:
            raise TemplateError(exc.message, fragment=name, line=_template_line(exc.__traceback__, template))
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"undefined variable: {exc.message}", fragment=name,
                                line=_template_line(exc.__traceback__, template)) from None
        except jinja2.TemplateError as exc:
            raise TemplateError(str(exc.message or exc), fragment=name,
                                line=_template_line(exc.__traceback__, template)) from None
        except Exception as exc:  # a filter or test raised: still name the place
            raise TemplateError(f"{type(exc).__name__}: {exc}", fragment=name,
                                line=_template_line(exc.__traceback__, template)) from None


def layered(profile: Profile, global_variables: Mapping[str, Any], groups: Iterable[Mapping[str, Any]],
            host_variables: Mapping[str, Any], one_off: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A host's variables, lowest layer first: global < groups (lowest
    priority first) < profile < host < one-off; a layer replaces a variable
    a lower one set. Below everything, a declared variable that may be null
    is null until a layer sets it."""
    merged: dict[str, Any] = {name: None for name, kind in profile.types.items() if kind.nullable}
    merged.update(global_variables)
    for group in groups:
        merged.update(group)
    merged.update(profile.variables)
    merged.update(host_variables)
    merged.update(one_off or {})
    return merged


def _template_line(tb: TracebackType | None, template: jinja2.Template) -> int | None:
    """The template line of the innermost traceback frame inside ``template``."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == template.filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def host_context(host: HostRecord) -> dict[str, Any]:
    """The ``host`` namespace templates see: data, never the BMC secret."""
    return {
        "serial": host.serial,
        "hostname": host.hostname,
        "shortname": host.hostname.split(".")[0],
        "ip": host.ip,
        "prefix": host.prefix,
        "netmask": None if host.prefix is None else _netmask(host.prefix),
        "gateway": host.gateway,
        "dns": list(host.dns),
        "primary_mac": host.primary_mac,
        "nics": [{"mac": n.mac, "name": n.name, "primary": n.primary} for n in host.nics],
        "bmc_address": host.bmc.address if host.bmc else None,
        "manufacturer": host.manufacturer,
        "model": host.model,
        "cpus": host.cpus,
        "memory_mib": host.memory_mib,
        "disks": [{"name": d.name, "size_gb": d.size_gb, "model": d.model} for d in host.disks or ()],
        "os": host.os,
        "owner": host.owner,
        "groups": list(host.groups),
        "site": host.site,
        "rack": host.rack,
    }


@functools.lru_cache(maxsize=64)
def _netmask(prefix: int) -> str:
    return str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask)


def profile_context(profile: Profile) -> dict[str, Any]:
    return {
        "name": profile.name,
        "os": profile.os,
        "install_tree": profile.install_tree,
        "kernel": profile.kernel,
        "initrd": profile.initrd,
        "kernel_args": profile.kernel_args,
    }


def _one_line_output(value: Any) -> Any:
    """Every ``{{ expression }}`` of a fragment: a value may never add a line
    (or a section) to the kickstart, whatever path it came in by. Writes
    refuse such values already; this is the last guard."""
    if isinstance(value, str) and has_control(value):
        raise TemplateError("a value would add a line to the kickstart (it holds a line break or another "
                            "control character)")
    return value


def _sh_quote(value: Any) -> str:
    """Quote a value for a shell script in ``%pre``/``%post``: one word,
    nothing in it expanded (``$(...)``, backticks, ``;``)."""
    return shlex.quote(str(value))


def _crypted(value: Any) -> str:
    """Pass a crypt(3) hash through; refuse anything that looks like a plain password."""
    if not isinstance(value, str) or not _CRYPT.match(value):
        raise TemplateError("root password must be a crypt(3) hash ($6$... or $y$...), never plain text")
    return value


def _ks_quote(value: Any) -> str:
    """Quote a value for a kickstart command argument."""
    text = str(value)
    if any(ch in text for ch in "\n\r\x00"):
        raise TemplateError("a kickstart argument must be one line")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
