"""provisiond-agent runs on the hosts it manages, whose Python may be as
old as 3.9 (RHEL/Rocky 9's platform-python), with nothing installed but
the standard library. Three checks:

* vermin: no language feature or standard-library call newer than 3.9
  (required: under CI=true a missing vermin fails; ``pip install vermin``);
* no import outside the standard library (the AST's imports);
* a real Python 3.9, where this machine has one (Debian 12 packages none,
  and the project cannot download one, so this one skips without it; it is
  the only check that catches a runtime ``X | Y`` outside annotations):
  the zipapp's modules imported, the runners run, and the agent's whole
  loop against the HTTPS stub of test_main.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisiond.agent import bundle, protocol
from tests.agent.conftest import Pki
from tests.agent.test_main import delivery, runs, serve
from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "provisiond" / "agent"
PACKAGE_INIT = REPO / "provisiond" / "__init__.py"


def agent_sources() -> list[Path]:
    return sorted(AGENT.glob("*.py"))


# ---------------------------------------------------------------- vermin


def vermin() -> str | None:
    beside = Path(sys.executable).parent / "vermin"
    return str(beside) if beside.exists() else shutil.which("vermin")


def run_vermin(*paths: Path) -> subprocess.CompletedProcess[str]:
    program = vermin()
    require(program is not None, "vermin is not installed (pip install vermin)")
    assert program is not None
    # --no-config-file: the repository's setup.cfg is no vermin configuration.
    # Annotations are not evaluated: every agent module has `from __future__
    # import annotations`, so `X | None` in one is fine on 3.9.
    return subprocess.run([program, "--no-config-file", "--target=3.9-", "--no-tips", "--violations",
                           *map(str, paths)], capture_output=True, text=True, timeout=300)


def test_vermin_finds_nothing_newer_than_python_39():
    done = run_vermin(*agent_sources(), PACKAGE_INIT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_vermin_would_see_a_violation(tmp_path: Path):
    newer = tmp_path / "newer.py"
    newer.write_text("def f(x):\n    match x:\n        case 1:\n            return zip([1], [2], strict=True)\n")
    done = run_vermin(newer)
    assert done.returncode != 0 and "pattern matching" in done.stdout


def test_every_agent_module_postpones_its_annotations():
    """What lets the agent's code annotate with ``X | None`` on 3.9."""
    for path in agent_sources():
        tree = ast.parse(path.read_text(), str(path))
        futures = {alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                   and node.module == "__future__" for alias in node.names}
        assert "annotations" in futures or not tree.body, f"{path.name} needs: from __future__ import annotations"


# ---------------------------------------------------------------- standard library only


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(tree: ast.Module, module_level_only: bool) -> list[tuple[int, str]]:
    """(line, module) of each import the code can run: not under ``if
    TYPE_CHECKING:``, and (``module_level_only``) not inside a function."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for branch in node.orelse:
                visit(branch)
            return
        if module_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def outside_the_standard_library(source: str, module_level_only: bool = False) -> list[str]:
    bad = []
    for line, module in imported_modules(ast.parse(source), module_level_only):
        top = module.split(".")[0]
        if module.startswith("."):
            bad.append(f"line {line}: relative import {module} (the zipapp holds provisiond.agent by name)")
        elif top == "provisiond":
            if module != "provisiond" and module != "provisiond.agent" and not module.startswith("provisiond.agent."):
                bad.append(f"line {line}: {module} is provisiond's server side, not in the agent's zipapp")
        elif top not in sys.stdlib_module_names:
            bad.append(f"line {line}: {module} is not in the standard library")
    return bad


def test_the_agent_imports_only_the_standard_library_and_itself():
    problems = {path.name: outside_the_standard_library(path.read_text()) for path in agent_sources()}
    # provisiond/__init__.py: what importing it runs (create_app's import is
    # the server's and runs only when the server calls it).
    problems["provisiond/__init__.py"] = outside_the_standard_library(PACKAGE_INIT.read_text(),
                                                                       module_level_only=True)
    assert {name: found for name, found in problems.items() if found} == {}


def test_the_import_check_sees_what_it_must():
    source = ("import json\nimport requests\nfrom provisiond.config import Settings\nfrom . import x\n"
              "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import flask\n"
              "def f():\n    import yaml\n")
    assert [p.split(":")[0] for p in outside_the_standard_library(source)] == [
        "line 2", "line 3", "line 4", "line 9"]
    assert len(outside_the_standard_library(source, module_level_only=True)) == 3


# ---------------------------------------------------------------- a real Python 3.9


def python39() -> str | None:
    """A working Python 3.9 interpreter, if this machine has one (a pyenv
    shim that is not selected does not count)."""
    candidates = [shutil.which("python3.9"), "/usr/bin/python3.9", "/usr/local/bin/python3.9",
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))]
    for candidate in candidates:
        if not candidate or not os.path.exists(candidate):
            continue
        try:
            done = subprocess.run([candidate, "-I", "-c", "import sys; print(sys.version_info[:2])"],
                                  capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if done.returncode == 0 and done.stdout.strip() == "(3, 9)":
            return candidate
    return None


@pytest.fixture(scope="module")
def py39() -> str:
    found = python39()
    if found is None:
        # Not require(): no Debian 12 package nor any step of the project can
        # provide one; vermin above is the check that always runs.
        pytest.skip("no Python 3.9 interpreter on this machine (vermin checked the code)")
    return found


_SMOKE = r'''
import base64, hashlib, json, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import importlib
for name in sys.argv[2].split(","):
    importlib.import_module(name)
from provisiond.agent import runners
work = Path(tempfile.mkdtemp())
context = runners.Context(state_dir=work / "state")
content = b"made on 3.9\n"
out = {
    "sh": runners.run_job({"type": "script", "payload": {"script": "echo $1", "args": ["sh"]}}, context),
    "python": runners.run_job({"type": "script", "payload": {"interpreter": "python",
                               "script": "import sys; print(sys.version_info[:2])"}}, context),
    "timeout": runners.run_job({"type": "script", "timeout_seconds": 1,
                                "payload": {"script": "sleep 30 & wait"}}, context),
    "file": runners.run_job({"type": "file", "payload": {"dest": str(work / "f"), "mode": "0600",
                             "content_b64": base64.b64encode(content).decode(),
                             "sha256": hashlib.sha256(content).hexdigest()}}, context),
    "facts": runners.run_job({"type": "facts", "payload": {}}, context),
    "unknown": runners.run_job({"type": "nope", "payload": {}}, context),
}
print(json.dumps(out))
'''


def test_the_zipapp_works_on_python_39(py39: str, tmp_path: Path):
    pyz = tmp_path / "agent.pyz"
    bundle.build_zipapp(pyz)
    modules = ",".join(f"provisiond.agent.{p.stem}" for p in agent_sources() if p.stem != "__main__")
    done = subprocess.run([py39, "-I", "-c", _SMOKE, str(pyz), modules], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["sh"]["status"] == "succeeded" and results["sh"]["output"] == "sh\n"
    assert results["python"]["output"] == "(3, 9)\n"
    assert results["timeout"]["status"] == "timed_out"
    assert results["file"]["status"] == "succeeded", results["file"]
    assert results["facts"]["status"] == "succeeded" and json.loads(results["facts"]["output"])["python"].startswith(
        "3.9.")
    assert results["unknown"]["error"] == "unknown job type nope"


def test_the_agent_loop_on_python_39(py39: str, pki: Pki, tmp_path: Path):
    stub, server = serve(pki)
    try:
        stub.scripted[protocol.POLL].append(runs(delivery(77, 'echo "on $(basename $0)"')))
        config = tmp_path / "agent.json"
        config.write_text(json.dumps({"server_url": stub.url, "ca_file": str(pki.ca_pem),
                                      "ca_fingerprint": pki.ca_fingerprint, "ticket": "t",
                                      "state_dir": str(tmp_path / "state"), "poll_wait": 0}))
        pyz = tmp_path / "provisiond-agent.pyz"
        bundle.build_zipapp(pyz)
        done = subprocess.run([py39, "-I", str(pyz), "--config", str(config), "--once"], capture_output=True,
                              text=True, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert stub.paths() == [protocol.ENROLL, protocol.POLL, "/agent/v1/runs/77/result"]
    assert stub.results()[0].body["status"] == "succeeded" and stub.results()[0].body["output"] == "on job.sh\n"
    assert "ticket" not in json.loads(config.read_text())
