"""What the Debian build installs besides the venv: the shipped files rendered for
/usr/lib/agentgw (scripts/render-shipped), a man page per command and the shell completions
(scripts/gen-docs), and maintainer scripts that never name a gateway instance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agentgw.cli import commands

REPO = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "supervisor")}


def script(name: str, *args: str) -> str:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], env=ENV,
                          capture_output=True, text=True, check=True).stdout


def test_render_shipped_installs_every_unit_for_the_package_venv(tmp_path: Path) -> None:
    """Every unit of systemd/ lands in usr/lib/systemd/system, 0644, naming the package's
    venv wherever the source names the make venv, and nothing else differs."""
    script("render-shipped", "/usr/lib/agentgw", str(tmp_path))
    units = tmp_path / "usr/lib/systemd/system"
    assert sorted(p.name for p in (REPO / "systemd").iterdir()) == sorted(
        p.name for p in units.iterdir())
    for unit in units.iterdir():
        source = (REPO / "systemd" / unit.name).read_text()
        assert source.replace("/opt/agentgw/venv", "/usr/lib/agentgw") == unit.read_text()
        assert 0o644 == unit.stat().st_mode & 0o777
    assert "ExecStart=/usr/lib/agentgw/bin/agentgw registry serve" in (
        units / "agentgw-registry.service").read_text()


def test_gen_docs_writes_a_page_per_command_and_three_completions(tmp_path: Path) -> None:
    """agentgw.1 lists every command; each top-level command has its page with a NAME line;
    bash, zsh and fish completion name the _AGENTGW_COMPLETE variable."""
    script("gen-docs", str(tmp_path))
    pages = {p.name for p in (tmp_path / "man").iterdir()}
    for name in commands.names():
        assert f"agentgw-{name}.1" in pages, name
        assert f"agentgw\\-{name} \\- " in (tmp_path / "man" / f"agentgw-{name}.1").read_text()
    main = (tmp_path / "man" / "agentgw.1").read_text()
    assert all(f"\\fB{name}\\fR" in main for name in commands.names())
    for name in ("agentgw.bash", "_agentgw", "agentgw.fish"):
        assert "_AGENTGW_COMPLETE" in (tmp_path / "completion" / name).read_text(), name


def test_maintainer_scripts_never_act_on_a_gateway_but_when_asked_to_purge_all() -> None:
    """postinst and prerm name no agent-gateway@ unit (an upgrade or a remove never touches a
    gateway); postrm stops them only in its purge-all branch."""
    for name in ("agentgw.postinst", "agentgw.prerm"):
        code = [line for line in (REPO / "debian" / name).read_text().splitlines()
                if not line.lstrip().startswith("#")]
        assert not [line for line in code if "agent-gateway" in line], name
    postrm = (REPO / "debian" / "agentgw.postrm").read_text()
    start = postrm.index("purge_everything() {")
    body = postrm[start:postrm.index("\n}\n", start)]
    assert [line for line in postrm.splitlines() if "'agent-gateway@*'" in line] == [
        line for line in body.splitlines() if "'agent-gateway@*'" in line] != []
