"""promote / rollback on a real systemd: alignment proofs, automatic rollback, siblings,
recovery after SIGKILL in every phase, and the per-profile lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import (
    AGENTGW,
    ETC,
    OPT,
    Releases,
    agentgw,
    current,
    main_pid,
    paused_promote,
    setup_host,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    releases = setup_host(tmp_path_factory.mktemp("build"))
    for p in ("core", "api", "mcp"):
        agentgw("promote", p, releases.a, "--allow-downgrade")
    yield releases


def environ_pythonpath(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return [e.decode()[len("PYTHONPATH="):] for e in raw if e.startswith(b"PYTHONPATH=")]


def assert_aligned(profile: str, release_prefix: str) -> None:
    """The running process has exactly one PYTHONPATH = current, current -> the release, and
    its cwd is the profile's home; the journal holds the banner with the release's sha."""
    pid, _ = main_pid(profile)
    assert pid > 0
    link = OPT / "gateways" / profile / "current"
    assert environ_pythonpath(pid) == [str(link)]
    assert current(profile).startswith(release_prefix)
    assert os.readlink(f"/proc/{pid}/cwd") == str(OPT / "gateways" / profile / "home")
    launch = json.loads((OPT / "gateways" / profile / "logs/launch.json").read_text())
    manifest = json.loads((link.resolve() / "manifest.json").read_text())
    assert launch["pid"] == pid and launch["sha"] == manifest["sha"]
    # The gateway's own journal (LogNamespace=), read as users do: agentgw logs.
    journal = agentgw("logs", profile, "-o", "cat", "--no-pager").stdout
    banner = [line for line in journal.splitlines() if line.startswith("agentgw-launch ")]
    assert banner and f"sha={manifest['sha']}" in banner[-1]


def test_scenario_promote_broken_variants_roll_back_and_rollback(rel: Releases) -> None:
    """Three profiles on A; api -> B aligned with siblings untouched; each broken variant is
    rolled back to B with its reason; `rollback api` returns to A; the history verifies."""
    for p in ("core", "api", "mcp"):
        assert_aligned(p, rel.a)
    siblings = {p: main_pid(p) for p in ("core", "mcp")}
    out = json.loads(agentgw("promote", "api", rel.b, "--json").stdout)
    assert out["result"] == "ok" and out["siblings_unchanged"] is True
    assert_aligned("api", rel.b)
    reasons = {
        rel.crash: "restart job failed",
        rel.unhealthy: "readiness: health: GET http://127.77.0.3:8080/v1/health never answered 200",
        rel.wrongsha: "the gateway reports sha",
    }
    for sha, why in reasons.items():
        proc = agentgw("promote", "api", sha, "--json", check=False)
        assert proc.returncode == 1, proc.stderr
        record = json.loads(proc.stdout)
        assert record["result"] == "rolled_back"
        assert why in record["reason"]
        assert record["siblings_unchanged"] is True
        assert_aligned("api", rel.b)
    assert {p: main_pid(p) for p in ("core", "mcp")} == siblings
    back = json.loads(agentgw("rollback", "api", "--to", rel.a, "--json").stdout)
    assert back["result"] == "ok"
    assert_aligned("api", rel.a)
    history = json.loads(agentgw("history", "api", "--json").stdout)["records"]
    assert [h["result"] for h in history[-4:]] == ["rolled_back"] * 3 + ["ok"]
    agentgw("history", "--verify")


@pytest.mark.parametrize("phase", ["locked", "intent", "flipped", "restarted", "health-wait",
                                   "committed"])
@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_sigkill_in_each_phase_is_recovered(rel: Releases, phase: str, attempt: int) -> None:
    """A promote killed with SIGKILL at ``phase``: `current` never dangles, and the next
    command (a promote) repairs first, says so, and ends aligned; the history verifies."""
    # Always a real switch: to the release api is not on now (A is older: --allow-downgrade).
    target = rel.b if current("api").startswith(rel.a) else rel.a
    with paused_promote("api", target, phase):
        pass  # killed with SIGKILL at the end of the block
    link = OPT / "gateways/api/current"
    assert link.resolve().is_dir(), "current must never dangle"
    nxt = agentgw("promote", "api", target, "--allow-downgrade")
    if phase not in ("locked", "committed"):
        assert "recover" in nxt.stdout
    assert_aligned("api", target)
    agentgw("history", "--verify")


def test_concurrent_promotes_of_one_profile_exactly_one_wins(rel: Releases) -> None:
    """Two promotes of api at once: one succeeds, the other exits 4 within 1 s naming the
    holder's pid."""
    target = rel.b if current("api").startswith(rel.a) else rel.a
    env = dict(os.environ, AGENTGW_FAULT_PAUSE="health-wait")
    first = subprocess.Popen([AGENTGW, "promote", "api", target, "--allow-downgrade"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert first.stderr is not None
    try:
        for line in first.stderr:
            if line.startswith("agentgw: paused"):
                break
        t0 = time.monotonic()
        second = agentgw("promote", "api", target, "--allow-downgrade", check=False)
        elapsed = time.monotonic() - t0
        assert second.returncode == 4
        assert elapsed < 1.0
        assert f"locked by pid {first.pid}" in second.stderr
        other = agentgw("promote", "core", rel.a, "--allow-downgrade")
        assert other.returncode == 0
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stderr.close()
    agentgw("promote", "api", target, "--allow-downgrade")
    assert_aligned("api", target)


def test_concurrent_promotes_of_different_profiles_both_succeed(rel: Releases) -> None:
    """api and mcp promoted at the same moment, three times: each succeeds, and neither counts
    the other's restart (its own operation) as a disturbed sibling; core is untouched."""
    core = main_pid("core")
    overlapped = 0
    for _ in range(3):
        targets = {p: rel.b if current(p).startswith(rel.a) else rel.a for p in ("api", "mcp")}
        procs = {p: subprocess.Popen([AGENTGW, "promote", p, t, "--allow-downgrade", "--json"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for p, t in targets.items()}
        for p, proc in procs.items():
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"{p}: {out}\n{err}"
            record = json.loads(out)
            assert record["siblings_unchanged"] is True and record["siblings_changed"] == []
            overlapped += bool(record["siblings_own_ops"])
            assert_aligned(p, targets[p])
    # The windows did overlap (else this test proves nothing): the other's restart was seen,
    # and put down to its own operation.
    assert overlapped > 0
    assert main_pid("core") == core
    agentgw("history", "--verify")


def test_settle_rolls_back_a_release_that_dies_after_its_first_answer(rel: Releases) -> None:
    """With health.settle_s, a release that answers /health once and then exits is rolled
    back instead of committed."""
    path = ETC / "gateways" / "mcp.yaml"
    original = path.read_text()
    start = rel.b if current("mcp").startswith(rel.b) else rel.a
    agentgw("promote", "mcp", start, "--allow-downgrade")
    try:
        path.write_text(original.replace("health:\n", "health:\n  settle_s: 1.5\n", 1))
        assert "settle_s: 1.5" in path.read_text()
        proc = agentgw("promote", "mcp", rel.crashloop, "--json", check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        record = json.loads(proc.stdout)
        assert record["result"] == "rolled_back"
        assert "did not settle" in record["reason"]
        assert [p["name"] for p in record["phases"]].count("settle") >= 1
        assert_aligned("mcp", start)
    finally:
        path.write_text(original)
    agentgw("history", "--verify")


def test_unless_current_does_nothing_only_when_it_runs_aligned(rel: Releases) -> None:
    """promote --unless-current: on the running, aligned release nothing happens (result
    unchanged, same MainPID, no history record); on a stopped gateway it promotes and proves."""
    agentgw("promote", "mcp", rel.b, "--allow-downgrade")
    before, records = main_pid("mcp"), len(agentgw("history", "mcp", "--json").stdout)
    again = json.loads(agentgw("promote", "mcp", rel.b, "--unless-current", "--json").stdout)
    assert (again["result"], again["release"]) == ("unchanged", current("mcp"))
    assert main_pid("mcp") == before
    assert len(agentgw("history", "mcp", "--json").stdout) == records
    subprocess.run(["systemctl", "stop", "agent-gateway@mcp.service"], check=True)
    proved = json.loads(agentgw("promote", "mcp", rel.b, "--unless-current", "--json").stdout)
    assert proved["result"] == "ok"
    assert_aligned("mcp", rel.b)
    agentgw("promote", "mcp", rel.a, "--allow-downgrade")
