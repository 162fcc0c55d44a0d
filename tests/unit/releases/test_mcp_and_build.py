"""The mcp profile's script entrypoint, the build of release trees, and a start via the launcher."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.unit.releases.conftest import PYTHON, REPO, Built, Host, Notifications

LAUNCHER = REPO / "launcher" / "launch"


def test_mcp_script_serves_json_rpc_and_health(host: Host, notifications: Notifications) -> None:
    """Run as the launcher runs script mode: READY=1, /health, and JSON-RPC on POST /mcp."""
    mcp = host.promote("mcp")
    script = f"{mcp.current}/agent_cli/mcp_server.py"
    gateway = host.start(mcp, notifications, argv=[PYTHON, "-s", script])
    assert gateway.get("/health")[1]["profile"] == "mcp"
    status, body = gateway.request(
        "POST", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "initialize"}
    )
    assert status == 200
    assert body["result"]["serverInfo"] == {"name": "agent_cli-mcp", "version": mcp.sha}
    listed = gateway.request("POST", "/mcp", {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert listed == (200, {"jsonrpc": "2.0", "id": 2, "result": {"tools": []}})
    unknown = gateway.request("POST", "/mcp", {"jsonrpc": "2.0", "id": 3, "method": "x"})
    assert unknown[1]["error"] == {"code": -32601, "message": "unknown method 'x'"}
    assert gateway.stop()[0] == 0


def test_launcher_starts_the_release_it_names(host: Host, notifications: Notifications) -> None:
    """End to end: the banner's pid and sha are the serving process's and its /health's."""
    api = host.promote("api")
    gateway = host.start(api, notifications, argv=[str(LAUNCHER)], AGENT_PYTHON=PYTHON)
    status, health = gateway.get("/health")
    code, err = gateway.stop()
    banner = err.splitlines()[0]
    assert banner.startswith(f"agentgw-launch profile=api pid={gateway.proc.pid} ")
    assert f" runtime={api.release} sha={api.sha} mode=cli " in banner
    assert (status, health["pid"], health["sha"], code) == (200, gateway.proc.pid, api.sha, 0)


def tree_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_build_makes_a_good_tree_and_one_per_variant(built: dict[str, Built]) -> None:
    """good is releases/agent_cli as is; each variant differs only by its VARIANT marker;
    VERSION holds each tree's own sha."""
    faults = (REPO / "releases" / "variants").iterdir()
    assert sorted(built) == sorted(["good", *(path.name for path in faults)])
    assert {"crash", "unhealthy", "wrongsha", "forkbomb", "ignoreterm"} <= set(built)
    good = tree_files(built["good"].tree)
    source = tree_files(REPO / "releases" / "agent_cli")
    assert {k.removeprefix("agent_cli/"): v for k, v in good.items() if k != "VERSION"} == {
        k: v for k, v in source.items() if "__pycache__" not in k
    }
    for label, build in built.items():
        files = tree_files(build.tree)
        assert files["VERSION"] == f"{build.sha}\n".encode()
        if label != "good":
            assert files.pop("agent_cli/VARIANT") == f"{label}\n".encode()
        assert {k: v for k, v in files.items() if k != "VERSION"} == {
            k: v for k, v in good.items() if k != "VERSION"
        }
    assert len({b.sha for b in built.values()}) == len(built)


def test_build_is_reproducible(built: dict[str, Built], tmp_path: Path) -> None:
    """The same sources give the same shas, and a rebuild over old output replaces it."""
    out = tmp_path / "again"
    for _ in range(2):
        result = subprocess.run(
            [str(REPO / "scripts" / "build-releases"), "--out", os.fspath(out)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    shas = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert shas == {label: b.sha for label, b in built.items()}
    assert sorted(p.name for p in out.iterdir()) == sorted(built)
