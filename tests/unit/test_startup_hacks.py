"""What agentgw's start-up speed tricks rely on (STYLE.md: each in one place, with the benchmark
row that justifies it, and a test that pins what it relies on).

- agentgw/__init__.py sets PYDANTIC_DISABLE_PLUGINS: pydantic must honour the value.
- cli/main.run ends with os._exit: the exit status and every byte of output must still be
  the ones main() gives. It also turns the garbage collector off while the command's modules
  are imported: the command itself must run with it on.
- bus/lean.py plants a bare ``pystemd`` package: the introspection layer must stay unloaded,
  pystemd stays the minor version this was measured with, and bus/wire.SIGNATURES (which
  replaces pystemd's signature table) agrees with that table wherever both know a property.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys

import pytest

import agentgw  # noqa: F401 - its import sets the pydantic switch under test
from agentgw.bus.wire import SIGNATURES

PYSTEMD_MINOR = "0.15"


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=False, timeout=60)


def test_pydantic_honours_the_plugin_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """agentgw sets PYDANTIC_DISABLE_PLUGINS=__all__ (unless the operator set it), and
    pydantic's plugin loader then loads none."""
    from pydantic.plugin import _loader

    assert os.environ.get("PYDANTIC_DISABLE_PLUGINS") == "__all__"
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "__all__")
    assert tuple(_loader.get_plugins()) == ()


def test_run_exits_like_main_with_all_output() -> None:
    """run() (os._exit at the end) gives main()'s exit status and flushes its output: a usage
    error exits 2 with its error line, --version exits 0 with the version."""
    entry = "from agentgw.cli.main import run; run()"
    bad = python(entry, "no-such-command")
    assert (bad.returncode, bad.stderr.splitlines()[0].startswith("error: ")) == (2, True)
    version = python(entry, "--version")
    assert (version.returncode, version.stdout) == (0, f"agentgw, version {agentgw.__version__}\n")


def test_the_collector_is_off_while_a_command_is_imported_and_on_when_it_runs() -> None:
    probe = """
import gc, click
from agentgw.cli import commands, main

@click.command()
def probe() -> None:
    print("running", gc.isenabled())

def load(name):
    print("importing", gc.isenabled())
    return probe

commands.load = load
main.run()
"""
    out = python(probe, "probe")
    assert (out.returncode, out.stdout) == (0, "importing False\nrunning True\n"), out.stderr


def test_bus_imports_pystemd_without_its_introspection_layer() -> None:
    """After importing agentgw.bus, pystemd's D-Bus core is loaded and its package __init__
    (systemd1, lxml) is not."""
    probe = python("import sys, agentgw.bus; from pystemd.dbuslib import DBus; "
                   "print(sorted(m for m in ('pystemd.systemd1', 'pystemd.base', 'lxml') "
                   "if m in sys.modules))")
    assert (probe.returncode, probe.stdout) == (0, "[]\n"), probe.stderr


def test_pystemd_is_the_minor_version_the_bus_layer_was_measured_with() -> None:
    """bus/lean.py relies on pystemd's package layout; a new minor needs a new look."""
    version = importlib.metadata.version("pystemd")
    assert ".".join(version.split(".")[:2]) == PYSTEMD_MINOR, version


def test_wire_signatures_agree_with_pystemds_table() -> None:
    """Every transient-unit property that pystemd's own table knows has the same signature in
    bus/wire.SIGNATURES (the rest are newer systemd properties pystemd does not list)."""
    probe = python("from pystemd.systemd1.unit_signatures import KNOWN_UNIT_SIGNATURES as K; "
                   "print({k.decode(): v.decode() for k, v in K.items() if isinstance(v, bytes)})")
    assert probe.returncode == 0, probe.stderr
    theirs: dict[str, str] = ast.literal_eval(probe.stdout)
    shared = sorted(SIGNATURES.keys() & theirs.keys())
    assert len(shared) > len(SIGNATURES) // 2
    assert {k: SIGNATURES[k] for k in shared} == {k: theirs[k] for k in shared}
