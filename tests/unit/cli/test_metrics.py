"""agentgw metrics: the registry's figures computed by the command, printed or written as a
node_exporter textfile (atomically, 0644); a missing directory is a usage error."""

from __future__ import annotations

import stat
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from agentgw.paths import Layout
from tests.unit.registry.conftest import fabricate
from tests.unit.runner import agentgw


def host(tmp_path: Path) -> Layout:
    layout, _, _ = fabricate(tmp_path)
    gateways = layout.etc / "gateways"
    gateways.mkdir(parents=True)
    for i, name in enumerate(("api", "core", "mcp")):
        (gateways / f"{name}.yaml").write_text(f"mode: cli\nlisten: 127.77.0.{i + 2}:8080\n")
    return layout


def test_textfile_holds_every_profiles_figures(tmp_path: Path) -> None:
    """DIR/agentgw.prom parses, mode 0644, with build info, each profile's state set and the
    exec counters from execs.jsonl; stdout names the file. Without --textfile: the same text."""
    layout = host(tmp_path)
    out = tmp_path / "textfile"
    out.mkdir()
    code, stdout, stderr = agentgw("--root", str(layout.root), "metrics", "--textfile", str(out))
    assert (code, stdout, stderr) == (0, f"wrote {out / 'agentgw.prom'}\n", "")
    written = out / "agentgw.prom"
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    families = {f.name: f for f in text_string_to_metric_families(written.read_text())}
    assert {"agentgw_build_info", "agentgw_profile_state", "agentgw_sandbox_execs"} <= set(
        families)
    states = {s.labels["profile"] for s in families["agentgw_profile_state"].samples}
    assert states == {"api", "core", "mcp"}
    execs = {(s.labels["profile"], s.value) for s in families["agentgw_sandbox_execs"].samples
             if s.name.endswith("_total")}
    assert execs == {("api", 2.0), ("core", 1.0)}
    assert [p.name for p in out.iterdir()] == ["agentgw.prom"]  # no temp file left
    code, printed, _ = agentgw("--root", str(layout.root), "metrics")
    assert code == 0 and "agentgw_profile_state{" in printed


def test_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    """Exit 2 with the reason and a hint; nothing is written."""
    layout = host(tmp_path)
    code, _, stderr = agentgw("--root", str(layout.root), "metrics", "--textfile",
                              str(tmp_path / "nowhere"))
    assert code == 2
    assert "no such directory" in stderr and "hint:" in stderr
    assert not (tmp_path / "nowhere").exists()
