"""Planning init/apply is pure: config + observed state -> exact actions, none on a re-plan."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agentgw.config.load import Config, load_config
from agentgw.model.actions import (
    Action,
    ArchiveDir,
    EnsureDir,
    EnsureGroup,
    EnsureUser,
    RemovePath,
    UnitAction,
    WriteFile,
)
from agentgw.paths import Layout, relay_socket_unit
from agentgw.plan.host import Observed, plan_init, plan_profiles, render_plan

REPO = Path(__file__).resolve().parents[3]


def config(tmp_path: Path, host_yaml: str = "") -> Config:
    etc = tmp_path / "etc"
    (etc / "gateways").mkdir(parents=True)
    for name in ("core", "api", "mcp"):
        shutil.copy(REPO / "gateways" / f"{name}.yaml", etc / "gateways" / f"{name}.yaml")
    if host_yaml:
        (etc / "agentgw.yaml").write_text(host_yaml)
    return load_config(etc)


# Every profile's sandbox socket, already enabled and listening.
RELAYS = {relay_socket_unit(p): ("active", "enabled") for p in ("api", "core", "mcp")}


def empty(units: dict[str, tuple[str, str]] | None = None) -> Observed:
    return Observed(users=frozenset(), groups=frozenset(), paths={}, units=units)


def after(actions: list[Action], before: Observed) -> Observed:
    """The observed state once ``actions`` were carried out (a model of apply for planning)."""
    users, groups = set(before.users), set(before.groups)
    paths = dict(before.paths)
    for a in actions:
        if isinstance(a, EnsureGroup):
            groups.add(a.name)
        elif isinstance(a, EnsureUser):
            users.add(a.name)
        elif isinstance(a, EnsureDir):
            paths[a.path] = ("dir", a.owner, a.group, a.mode, None)
        elif isinstance(a, WriteFile):
            paths[a.path] = ("file", a.owner, a.group, a.mode, a.content)
    return Observed(
        users=frozenset(users),
        groups=frozenset(groups),
        paths=paths,
        units=before.units,
        which=before.which,
    )


def test_first_plan_creates_users_dirs_and_files_with_exact_modes(tmp_path: Path) -> None:
    """Each profile: a user and group, home/logs 0700 owned by it, env 0640 root:agent-<p>."""
    cfg, layout = config(tmp_path), Layout(tmp_path)
    actions = plan_profiles(cfg.profiles, cfg.host, layout, empty())
    groups = sorted(a.name for a in actions if isinstance(a, EnsureGroup))
    assert groups == ["agent-api", "agent-core", "agent-mcp"]
    dirs = {a.path: (a.owner, a.group, a.mode) for a in actions if isinstance(a, EnsureDir)}
    files = {a.path: (a.owner, a.group, a.mode) for a in actions if isinstance(a, WriteFile)}
    for p in ("core", "api", "mcp"):
        user = f"agent-{p}"
        assert dirs[layout.home(p)] == (user, user, 0o700)
        assert dirs[layout.logs(p)] == (user, user, 0o700)
        assert dirs[layout.profile_dir(p)] == ("root", "root", 0o755)
        assert files[layout.env_file(p)] == ("root", user, 0o640)
        assert files[layout.dropin(p)] == ("root", "root", 0o644)
    assert not [a for a in actions if isinstance(a, UnitAction)]


def test_replanning_after_apply_is_empty(tmp_path: Path) -> None:
    """Once the planned state is on the host, the plan is 'no changes'."""
    cfg, layout = config(tmp_path), Layout(tmp_path)
    first = plan_profiles(cfg.profiles, cfg.host, layout, empty())
    second = plan_profiles(cfg.profiles, cfg.host, layout, after(first, empty()))
    assert second == []
    assert render_plan(second) == "no changes"


def test_env_declares_runtime_once_and_dropin_never(tmp_path: Path) -> None:
    """The env file has exactly one PYTHONPATH (= current); the drop-in has none, and allows
    only the profile's own loopback /32 plus its egress, never localhost."""
    cfg, layout = config(tmp_path), Layout(tmp_path)
    actions = plan_profiles(cfg.profiles, cfg.host, layout, empty())
    files = {a.path: a.content for a in actions if isinstance(a, WriteFile)}
    env = files[layout.env_file("api")].splitlines()
    assert [x for x in env if x.startswith("PYTHONPATH")] == [f"PYTHONPATH={layout.current('api')}"]
    dropin = files[layout.dropin("api")]
    assert "PYTHONPATH" not in dropin
    allows = [x for x in dropin.splitlines() if x.startswith("IPAddressAllow=")]
    assert allows == [
        "IPAddressAllow=",
        "IPAddressAllow=127.77.0.3/32",
        "IPAddressAllow=198.51.100.0/24",
        "IPAddressAllow=10.20.0.0/16",
    ]
    assert "IPAddressDeny=any" in dropin
    assert "localhost" not in dropin
    assert "TimeoutStopSec=65" in dropin


def test_drift_in_mode_and_content_is_planned_with_a_diff(tmp_path: Path) -> None:
    """A chmod and a hand edit show as one '~' action naming both, with a unified diff."""
    cfg, layout = config(tmp_path), Layout(tmp_path)
    state = after(plan_profiles(cfg.profiles, cfg.host, layout, empty()), empty())
    env = layout.env_file("api")
    kind, o, g, _, content = state.paths[env]
    assert content is not None
    paths = dict(state.paths)
    paths[env] = (kind, o, g, 0o644, content + "EXTRA=1\n")
    drifted = Observed(users=state.users, groups=state.groups, paths=paths, units=None)
    actions = plan_profiles(cfg.profiles, cfg.host, layout, drifted)
    assert [a.describe() for a in actions] == [
        f"~ file {env} root:agent-api 0640 (content, mode 0644 -> 0640)"
    ]
    assert "    -EXTRA=1" in render_plan(actions)


def test_units_start_once_a_release_is_promoted(tmp_path: Path) -> None:
    """With systemd managed: no unit action without `current`; enable+start once it exists;
    a running unit whose drop-in changed is restarted."""
    cfg, layout = config(tmp_path), Layout(tmp_path)
    units = {"agent-gateway@api.service": ("inactive", "disabled"), **RELAYS}
    base = after(plan_profiles(cfg.profiles, cfg.host, layout, empty(units)), empty(units))
    paths = dict(base.paths)
    assert plan_profiles(cfg.profiles, cfg.host, layout, base) == []
    paths[layout.current("api")] = ("symlink", "root", "root", 0o777, None)
    promoted = Observed(users=base.users, groups=base.groups, paths=paths, units=units)
    verbs = [
        (a.verb, a.unit)
        for a in plan_profiles(cfg.profiles, cfg.host, layout, promoted)
        if isinstance(a, UnitAction)
    ]
    assert verbs == [
        ("enable", "agent-gateway@api.service"),
        ("start", "agent-gateway@api.service"),
    ]
    running = {"agent-gateway@api.service": ("active", "enabled"), **RELAYS}
    paths[layout.dropin("api")] = ("file", "root", "root", 0o644, "stale\n")
    changed = Observed(users=base.users, groups=base.groups, paths=paths, units=running)
    verbs = [
        (a.verb, a.unit)
        for a in plan_profiles(cfg.profiles, cfg.host, layout, changed)
        if isinstance(a, UnitAction)
    ]
    assert verbs == [("daemon-reload", ""), ("restart", "agent-gateway@api.service")]


def test_journal_settings_restart_a_running_journald_only(tmp_path: Path) -> None:
    """A changed journald.conf of the profile: reload, restart its journald if it runs (the
    gateway keeps running: its stream survives in journald's fd store); none if it is idle."""
    cfg, layout = config(tmp_path), Layout(tmp_path)
    base = after(plan_profiles(cfg.profiles, cfg.host, layout, empty({})), empty({}))
    paths = dict(base.paths)
    paths[layout.journald_conf("api")] = ("file", "root", "root", 0o644, "stale\n")
    for state, expected in (
        ("active", [("daemon-reload", ""), ("restart", "systemd-journald@agentgw-api.service")]),
        ("inactive", [("daemon-reload", "")]),
    ):
        units = {"systemd-journald@agentgw-api.service": (state, "static"), **RELAYS}
        observed = Observed(users=base.users, groups=base.groups, paths=paths, units=units)
        actions = plan_profiles(cfg.profiles, cfg.host, layout, observed)
        assert [(a.verb, a.unit) for a in actions if isinstance(a, UnitAction)] == expected
        written = [a.path for a in actions if isinstance(a, WriteFile)]
        assert written == [layout.journald_conf("api")]


def test_prune_archives_data_and_never_deletes_it(tmp_path: Path) -> None:
    """A profile on the host but not configured: stopped, disabled, home and logs archived."""
    cfg, layout = config(tmp_path), Layout(tmp_path)
    paths = {
        layout.home("old"): ("dir", "agent-old", "agent-old", 0o700, None),
        layout.logs("old"): ("dir", "agent-old", "agent-old", 0o700, None),
        layout.env_file("old"): ("file", "root", "agent-old", 0o640, "X=1\n"),
        layout.journald_conf("old"): ("file", "root", "root", 0o644, "[Journal]\n"),
        layout.profile_dir("old"): ("dir", "root", "root", 0o755, None),
    }
    units = {"agent-gateway@old.service": ("active", "enabled")}
    observed = Observed(
        users=frozenset(),
        groups=frozenset(),
        paths=paths,
        profiles_on_host=frozenset({"old"}),
        units=units,
    )
    actions = plan_profiles(cfg.profiles, cfg.host, layout, observed, prune=True, stamp="T")
    old = [a for a in actions if "old" in a.describe()]
    assert [type(a).__name__ for a in old] == [
        "UnitAction",
        "UnitAction",
        "ArchiveDir",
        "ArchiveDir",
        "RemovePath",
        "RemovePath",
        "RemovePath",
    ]
    archived = {a.path: a.dest for a in old if isinstance(a, ArchiveDir)}
    assert archived == {
        layout.home("old"): layout.archive / "old-T" / "home",
        layout.logs("old"): layout.archive / "old-T" / "logs",
    }
    removed = [a.path for a in old if isinstance(a, RemovePath)]
    assert layout.home("old") not in removed and layout.logs("old") not in removed
    assert plan_profiles(cfg.profiles, cfg.host, layout, observed, prune=False, stamp="T") == [
        a for a in actions if "old" not in a.describe()
    ]


def test_convenience_mode_uses_one_shared_user(tmp_path: Path) -> None:
    """isolation: convenience -> one user for every profile (reported as not isolated)."""
    cfg, layout = config(tmp_path, "isolation: convenience\n"), Layout(tmp_path)
    actions = plan_profiles(cfg.profiles, cfg.host, layout, empty())
    users = [a.name for a in actions if isinstance(a, EnsureUser)]
    assert len(users) == 1
    assert not cfg.host.isolated


@pytest.mark.parametrize("present", [False, True])
def test_init_installs_template_launcher_and_default_config_once(
    tmp_path: Path, present: bool
) -> None:
    """init plans the template (0644), launcher (0755) and a default config only when absent."""
    layout = Layout(tmp_path)
    paths = {}
    if present:
        paths[layout.host_config] = ("file", "root", "root", 0o600, "isolation: convenience\n")
    observed = Observed(users=frozenset(), groups=frozenset(), paths=paths)
    actions = plan_init(layout, observed, "#!launcher\n", "default\n")
    written = {a.path: a.mode for a in actions if isinstance(a, WriteFile)}
    assert written[layout.template_unit] == 0o644
    assert written[layout.launcher] == 0o755
    assert (layout.host_config in written) is (not present)
    assert plan_init(layout, after(actions, observed), "#!launcher\n", "default\n") == []


def test_each_profile_gets_its_sandbox_socket_with_its_group(tmp_path: Path) -> None:
    """apply writes each profile's socket drop-in (SocketGroup= the profile's user: agent-<p>,
    or the shared user in convenience mode), reloads, then enables and starts the socket
    unit; a running one whose group changed is restarted; prune stops and disables it."""
    cfg, layout = config(tmp_path), Layout(tmp_path)
    actions = plan_profiles(cfg.profiles, cfg.host, layout, empty({}))
    dropins = {a.path: a.content for a in actions if isinstance(a, WriteFile)}
    assert dropins[layout.relay_dropin("api")].endswith("[Socket]\nSocketGroup=agent-api\n")
    verbs = [(a.verb, a.unit) for a in actions if isinstance(a, UnitAction)]
    assert verbs[0] == ("daemon-reload", "")
    assert verbs[1:3] == [("enable", "agentgw-sandbox-relay@api.socket"),
                          ("start", "agentgw-sandbox-relay@api.socket")]
    shared = cfg.host.model_copy(update={"isolation": "convenience"})
    base = after(actions, empty(dict(RELAYS)))
    regrouped = plan_profiles(cfg.profiles, shared, layout, base)
    changed = {a.path: a.content for a in regrouped if isinstance(a, WriteFile)}
    assert changed[layout.relay_dropin("core")].endswith(f"SocketGroup={shared.user('core')}\n")
    assert ("restart", "agentgw-sandbox-relay@core.socket") in [
        (a.verb, a.unit) for a in regrouped if isinstance(a, UnitAction)]
    gone = Observed(users=base.users, groups=base.groups, paths=base.paths,
                    units={**RELAYS, "agentgw-sandbox-relay@mcp.service": ("active", "static")},
                    profiles_on_host=frozenset({"api", "core", "mcp", "old"}))
    old = {"agentgw-sandbox-relay@old.socket": ("active", "enabled"),
           "agentgw-sandbox-relay@old.service": ("active", "static")}
    pruned = plan_profiles(cfg.profiles, cfg.host, layout,
                           Observed(users=gone.users, groups=gone.groups, paths=gone.paths,
                                    units={**dict(gone.units or {}), **old},
                                    profiles_on_host=gone.profiles_on_host),
                           prune=True, stamp="x")
    assert [(a.verb, a.unit) for a in pruned if isinstance(a, UnitAction)] == [
        ("stop", "agentgw-sandbox-relay@old.service"),
        ("stop", "agentgw-sandbox-relay@old.socket"),
        ("disable", "agentgw-sandbox-relay@old.socket"),
    ]
