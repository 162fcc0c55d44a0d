"""``agentgw launch --dry-run PROFILE``: the env rendered from config, resolved by the launcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.launcher.conftest import SHA, SNAPSHOTS, Host
from tests.unit.runner import agentgw

API = "mode: cli\nlisten: 127.77.0.3:8080\nenv:\n  LOG_LEVEL: info\n"
MCP = "mode: script\nexec: agent_mcp/serve.py\nlisten: 127.77.0.4:8765\n"


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    gateways = tmp_path / "etc" / "gateways"
    gateways.mkdir(parents=True)
    (gateways / "api.yaml").write_text(API)
    (gateways / "mcp.yaml").write_text(MCP)
    return tmp_path / "etc"




def test_off_host_dry_run_is_offline_and_says_so(
    etc: Path, tmp_path: Path
) -> None:
    """With no current symlink under --root, nothing on the host is read: runtime and sha are
    reported unresolved, and the command is the one the rendered env file would give."""
    root = tmp_path / "empty-root"
    code, out, err = agentgw("--root", str(root), "launch", "--dry-run", "api", "--etc", str(etc)
    )
    assert (code, err) == (0, "")
    shown = Host(root / "opt" / "agent").normalise(out)
    assert shown == (SNAPSHOTS / "cli-command-offline.txt").read_text()


def test_on_host_dry_run_resolves_the_promoted_release(
    etc: Path, host: Host
) -> None:
    """With the profile's current in place, the launcher resolves it: sha from the manifest and
    the script checked inside the release."""
    root = host.opt.parent.parent
    code, out, err = agentgw("--root", str(root),
                             "launch", "--dry-run", "mcp", "--etc", str(etc), "--json"
    )
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["offline"] is False
    assert doc["fields"]["sha"] == SHA
    assert doc["fields"]["runtime"] == str(host.release)
    assert doc["argv"] == ["/usr/bin/python3", "-s", f"{host.current('mcp')}/agent_mcp/serve.py"]


def test_refusal_is_exit_3_with_the_launchers_fix_as_hint(
    etc: Path, host: Host
) -> None:
    """A profile the launcher would refuse on start (exit 78) fails the dry run with exit 3."""
    host.current("api").unlink()
    host.current("api").symlink_to("../../releases/0000000-gone")
    root = host.opt.parent.parent
    code, out, err = agentgw("--root", str(root), "launch", "--dry-run", "api", "--etc", str(etc)
    )
    current = host.current("api")
    assert (code, out) == (3, "")
    assert err == (
        f"error: the launcher would refuse to start: AGENT_ROOT: {current} -> "
        "../../releases/0000000-gone is dangling\n"
        "hint: promote a release: agentgw promote api <sha> (or rollback)\n"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["launch", "api"], "error: only 'agentgw launch --dry-run PROFILE' is supported\n"),
        (["launch", "--dry-run", "nope"], "error: no profile named 'nope'\n"),
    ],
    ids=["without-dry-run", "unknown-profile"],
)
def test_usage_errors_exit_2(
    etc: Path, argv: list[str], expected: str
) -> None:
    """Only the dry run exists, and only for a configured profile."""
    code, out, err = agentgw(*argv, "--etc", str(etc))
    assert (code, out) == (2, "")
    assert err.splitlines(keepends=True)[0] == expected.format(etc=etc)
