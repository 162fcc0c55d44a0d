"""collect_status over a fabricated host: temp layout, fake /proc, fake systemd; and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from agentgw.cli.status import exit_code, render_table
from agentgw.errors import Exit
from agentgw.model.status import human_bytes, human_duration
from agentgw.observe.status import UNIT_PATTERN, collect_status, read_release
from agentgw.paths import Layout
from tests.unit.runner import agentgw
from tests.unit.status.support import (
    FakeSystemd,
    add_release,
    config,
    link,
    run_process,
    service,
)

NOW = 1_700_000_100.0


def host(tmp_path: Path) -> tuple[Layout, Path]:
    layout = Layout(tmp_path / "root")
    proc = tmp_path / "proc"
    a = add_release(layout, "aaaaaaa", "one", 1)
    b = add_release(layout, "bbbbbbb", "two", 2)
    # api: promoted to b (previous a), running b -> aligned
    link(layout, "api", "current", b)
    link(layout, "api", "previous", a)
    run_process(layout, proc, "api", 101, b, sha="bbbbbbb")
    # core: current flipped to b, but its process started on a -> not aligned
    link(layout, "core", "current", b)
    run_process(layout, proc, "core", 102, a, sha="aaaaaaa")
    # mcp: nothing promoted, not running -> unknown
    return layout, proc


def test_one_unit_listing_covers_every_profile(tmp_path: Path) -> None:
    """One service_statuses call (ListUnitsByPatterns + property reads) serves all profiles."""
    layout, proc = host(tmp_path)
    sd = FakeSystemd([service("api", 101), service("core", 102)])
    statuses = collect_status(layout, config(tmp_path), sd, now=NOW, proc=proc)
    assert [[UNIT_PATTERN]] == sd.calls
    assert ["api", "core", "mcp"] == [s.profile for s in statuses]


def test_aligned_stale_and_unpromoted_profiles(tmp_path: Path) -> None:
    """api runs its promoted release (yes); core runs the release before a flip (no);
    mcp has neither a release nor a process (unknown)."""
    layout, proc = host(tmp_path)
    sd = FakeSystemd([service("api", 101), service("core", 102)])
    api, core, mcp = collect_status(layout, config(tmp_path), sd, now=NOW, proc=proc)
    assert ("yes", "no", "unknown") == (api.aligned.state, core.aligned.state, mcp.aligned.state)
    assert "restart to load it" in core.aligned.reason
    assert "no release promoted" == mcp.aligned.reason
    assert ("bbbbbbb-two", "bbbbbbb", 2) == (api.release.name, api.release.sha,  # type: ignore[union-attr]
                                              api.release.version)  # type: ignore[union-attr]
    assert "aaaaaaa-one" == api.previous.name  # type: ignore[union-attr]
    assert (101, 100.0, 2, 50 * 1024 * 1024) == (api.main_pid, api.uptime_s, api.restarts,
                                                 api.memory_bytes)
    assert ("inactive", "dead", None, None) == (mcp.active_state, mcp.sub_state, mcp.main_pid,
                                               mcp.restarts)


def test_without_systemd_every_unit_is_unknown(tmp_path: Path) -> None:
    """sd=None (no systemd here): state and alignment are unknown, with the reason."""
    layout, proc = host(tmp_path)
    statuses = collect_status(layout, config(tmp_path), None, now=NOW, proc=proc)
    assert {("unknown", "unknown")} == {(s.active_state, s.aligned.state) for s in statuses}
    assert "systemd is not available here" == statuses[0].aligned.reason
    assert "bbbbbbb-two" == statuses[0].release.name  # type: ignore[union-attr]


def test_wrong_pythonpath_in_the_live_process_is_not_aligned(tmp_path: Path) -> None:
    """The process's own environment decides, not the env file: a second entry -> no."""
    layout = Layout(tmp_path / "root")
    proc = tmp_path / "proc"
    b = add_release(layout, "bbbbbbb", "two")
    link(layout, "api", "current", b)
    run_process(layout, proc, "api", 7, b, sha="bbbbbbb",
                pythonpath=f"{layout.current('api')}:/srv/old")
    (api,) = collect_status(layout, config(tmp_path, ("api",)), FakeSystemd([service("api", 7)]),
                            now=NOW, proc=proc)
    assert ("no", True) == (api.aligned.state, "2 PYTHONPATH entries" in api.aligned.reason)


def test_release_links_that_are_not_releases(tmp_path: Path) -> None:
    """Dangling links, targets outside releases/ and manifests naming another tree are flagged."""
    layout = Layout(tmp_path / "root")
    releases = layout.releases
    add_release(layout, "ccccccc", "c")
    other = tmp_path / "elsewhere"
    other.mkdir()
    link(layout, "a", "current", releases / "gone-x")
    link(layout, "b", "current", other)
    renamed = releases / "ddddddd-d"
    (releases / "ccccccc-c").rename(renamed)
    link(layout, "c", "current", renamed)
    problems = {p: read_release(layout.current(p), releases).problem  # type: ignore[union-attr]
                for p in ("a", "b", "c")}
    assert problems["a"] is not None and "dangling" in problems["a"]
    assert problems["b"] is not None and "not a release" in problems["b"]
    assert "manifest.json names ccccccc-c" == problems["c"]
    assert read_release(layout.current("none"), releases) is None


def test_proof_and_history_records_reach_the_status(tmp_path: Path) -> None:
    """The proof record gives isolation and its age; the history log gives the last promote."""
    layout, proc = host(tmp_path)
    layout.proofs.mkdir(parents=True)
    (layout.proofs / "api.json").write_text(json.dumps({
        "profile": "api", "time": "2023-11-14T22:13:20Z", "isolated": True,
        "checks": [{"name": "cross-read", "result": "passed", "evidence": "EACCES"}],
        "signature": "sig"}))
    layout.history.write_text(json.dumps({
        "seq": 1, "time": "2023-11-14T22:10:00Z", "action": "promote", "profile": "api",
        "result": "ok", "detail": {"release": "bbbbbbb-two"}, "prev": "0" * 64}) + "\n")
    sd = FakeSystemd([service("api", 101, started=NOW - 200)])
    api, core, _ = collect_status(layout, config(tmp_path), sd, now=NOW, proc=proc)
    assert ("isolated", 100.0) == (api.isolation.state, api.isolation.proof_age_s)
    assert "unproven" == core.isolation.state
    assert ("promote", "ok", "bbbbbbb-two") == (
        api.last_promote.action, api.last_promote.result, api.last_promote.release)  # type: ignore[union-attr]
    assert core.last_promote is None


def test_table_and_exit_code(tmp_path: Path) -> None:
    """The table has one header and one row per profile plus a reason per non-aligned profile;
    a "no" exits 3, an "unknown" alone does not."""
    layout, proc = host(tmp_path)
    sd = FakeSystemd([service("api", 101), service("core", 102)])
    statuses = collect_status(layout, config(tmp_path), sd, now=NOW, proc=proc)
    lines = render_table(statuses).splitlines()
    assert lines[0].split()[:3] == ["PROFILE", "STATE", "PID"]
    assert lines[1].split()[:3] == ["api", "active/running", "101"]
    assert any(line.startswith("core: aligned no: ") for line in lines)
    assert any(line.startswith("mcp: aligned unknown: ") for line in lines)
    assert Exit.VERIFY == exit_code(statuses)
    assert Exit.OK == exit_code([statuses[0], statuses[2]])


def test_human_units() -> None:
    """Durations and sizes print short, like systemctl."""
    assert ["-", "45s", "12m03s", "5h07m", "3d04h"] == [
        human_duration(s) for s in (None, 45, 723, 5 * 3600 + 7 * 60, 3 * 86400 + 4 * 3600)]
    assert ["-", "512B", "1.5K", "230.0M", "2.0G"] == [
        human_bytes(b) for b in (None, 512, 1536, 230 * 1024**2, 2 * 1024**3)]




def test_cli_status_json_under_a_relocated_root(
    tmp_path: Path
) -> None:
    """`agentgw --root R status --json` reads R's config and links; systemd is not asked
    (it does not manage R), so alignment is unknown and the exit is 0. An unknown profile
    is bad input (exit 2)."""
    root = tmp_path / "root"
    gateways = root / "etc" / "agentgw" / "gateways"
    gateways.mkdir(parents=True)
    (gateways / "api.yaml").write_text("mode: cli\nlisten: 127.77.0.3:8080\n")
    layout = Layout(root)
    link(layout, "api", "current", add_release(layout, "bbbbbbb", "two"))
    code, out, err = agentgw("--root", str(root), "status", "--json")
    assert 0 == code, err
    (api,) = json.loads(out)["profiles"]
    assert ("api", "unknown", "bbbbbbb-two") == (api["profile"], api["aligned"]["state"],
                                                 api["release"]["name"])
    code, out, err = agentgw("--root", str(root), "status", "nosuch")
    assert (Exit.USAGE, "error: no profile named 'nosuch'") == (code, err.splitlines()[0])
    code, out, _ = agentgw("--root", str(root), "status")
    assert 0 == code
    assert ["api", "unknown/unknown"] == out.splitlines()[1].split()[:2]


def test_a_failed_start_is_judged_and_shown_under_the_table(tmp_path: Path) -> None:
    """A unit down after a failed start gets its cause and fix in the status record and a note
    under the table; a running one gets none."""
    from agentgw.model.status import ProfileStatus, StartFailure

    failure = StartFailure(readiness="notify", cause="readiness: notify: no READY=1", fix="x")
    row = {"profile": "api", "unit": "agent-gateway@api.service", "load_state": "loaded",
           "active_state": "failed", "sub_state": "failed",
           "aligned": {"state": "unknown", "reason": "not running"},
           "isolation": {"state": "unproven", "reason": "no proof"},
           "start_failure": failure.model_dump()}
    text = render_table([ProfileStatus.model_validate(row)])
    assert "api: start failed: readiness: notify: no READY=1; fix: x" in text.splitlines()
