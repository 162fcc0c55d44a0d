"""Plan ``init`` and ``apply``: desired host state vs observed state -> a list of actions (pure)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentgw.model.actions import (
    Action,
    ArchiveDir,
    EnsureDir,
    EnsureGroup,
    EnsureUser,
    RemovePath,
    UnitAction,
    WriteFile,
    keep_running,
)
from agentgw.model.host import HostConfig
from agentgw.model.profile import Profile
from agentgw.paths import Layout, journald_unit, unit_name
from agentgw.plan.envfile import render_env
from agentgw.plan.relay import plan_relay_units, prune_relay_units, render_relay_dropin
from agentgw.plan.shipped import MAKE_INSTALL, Install, shipped_unit, shipped_units
from agentgw.plan.units import (
    ready_waiter_source,
    render_dropin,
    render_journald_conf,
    render_journald_dropin,
    render_template,
    sandbox_client_source,
)

ROOT = "root"
# The sandbox broker's own user: it runs no job (each is an agentgw-job@ unit, a DynamicUser
# of its own, given /dev/kvm), so it has no /dev/kvm; it owns nothing on disk.
SANDBOX_USER = "agentgw-sandbox"
SANDBOX_HOME = Path("/nonexistent")


@dataclass(frozen=True)
class Observed:
    """The slice of host state the planner reads (built by observe/, or by hand in tests)."""

    users: frozenset[str]
    groups: frozenset[str]
    # path -> (kind, owner, group, mode, content-or-None)
    paths: Mapping[Path, tuple[str, str, str, int, str | None]]
    leftovers: tuple[Path, ...] = ()
    profiles_on_host: frozenset[str] = frozenset()
    # unit -> (ActiveState, UnitFileState); empty when systemd is not managed (temp root)
    units: Mapping[str, tuple[str, str]] | None = None
    which: Mapping[str, Path | None] | None = None


def want_dir(observed: Observed, path: Path, owner: str, group: str, mode: int) -> list[Action]:
    have = observed.paths.get(path)
    if have is None:
        return [EnsureDir(path=path, owner=owner, group=group, mode=mode)]
    kind, h_owner, h_group, h_mode, _ = have
    if kind != "dir":
        return [EnsureDir(path=path, owner=owner, group=group, mode=mode, why=f"is a {kind}")]
    drift = []
    if (h_owner, h_group) != (owner, group):
        drift.append(f"owner {h_owner}:{h_group} -> {owner}:{group}")
    if h_mode != mode:
        drift.append(f"mode {h_mode:04o} -> {mode:04o}")
    if drift:
        return [EnsureDir(path=path, owner=owner, group=group, mode=mode, why=", ".join(drift))]
    return []


def want_file(
    observed: Observed, path: Path, content: str, owner: str, group: str, mode: int
) -> list[Action]:
    have = observed.paths.get(path)
    if have is None:
        return [WriteFile(path=path, content=content, owner=owner, group=group, mode=mode)]
    kind, h_owner, h_group, h_mode, h_content = have
    drift = []
    if kind != "file":
        drift.append(f"is a {kind}")
    if h_content != content:
        drift.append("content")
    if (h_owner, h_group) != (owner, group):
        drift.append(f"owner {h_owner}:{h_group} -> {owner}:{group}")
    if h_mode != mode:
        drift.append(f"mode {h_mode:04o} -> {mode:04o}")
    if not drift:
        return []
    return [
        WriteFile(
            path=path,
            content=content,
            owner=owner,
            group=group,
            mode=mode,
            old=h_content,
            why=", ".join(drift),
        )
    ]


def init_dirs(layout: Layout) -> list[tuple[Path, str, str, int]]:
    return [
        (layout.etc, ROOT, ROOT, 0o755),
        (layout.gateways_config, ROOT, ROOT, 0o755),
        # Private keys live here: root's alone, and no gateway or registry unit can read it.
        (layout.etc / "keys", ROOT, ROOT, 0o700),
        (layout.unit_dir, ROOT, ROOT, 0o755),
        (layout.opt, ROOT, ROOT, 0o755),
        (layout.lib, ROOT, ROOT, 0o755),
        (layout.releases, ROOT, ROOT, 0o755),
        (layout.opt / "gateways", ROOT, ROOT, 0o755),
        (layout.state, ROOT, ROOT, 0o700),
        # The host's proof-signing key: hidden from the registry and the gateways.
        (layout.state / "keys", ROOT, ROOT, 0o700),
        (layout.proofs, ROOT, ROOT, 0o700),
        (layout.locks, ROOT, ROOT, 0o700),
        (layout.intents, ROOT, ROOT, 0o700),
        (layout.archive, ROOT, ROOT, 0o700),
        # exec records and the self-test; systemd opens execs.jsonl for the broker (as root)
        (layout.sandbox_state, ROOT, ROOT, 0o700),
    ]


def init_files(layout: Layout) -> list[Path]:
    """The files ``plan_init`` manages (observe them to plan it)."""
    return [
        layout.launcher,
        layout.ready_waiter,
        layout.host_config,
        sandbox_client_path(layout),
        *init_units(layout),
    ]


def init_units(layout: Layout) -> list[Path]:
    """The template and every shipped unit (registry, sandbox broker, verify, the OnFailure=
    hook, sockets...) in /etc/systemd/system."""
    return [layout.template_unit, *(layout.unit_dir / name for name in shipped_units())]


def plan_units(layout: Layout, observed: Observed, install: Install) -> list[Action]:
    """Not packaged: each unit written for this install. Packaged: none written (the package
    owns them in /usr); a copy a ``make`` install's init left in /etc, unchanged, is removed,
    as it would shadow the package's (an edited one is the operator's and stays)."""
    if not install.packaged:
        return [
            a
            for path in init_units(layout)
            for a in want_file(
                observed, path, render_unit(path, layout, install), ROOT, ROOT, 0o644
            )
        ]
    return [
        RemovePath(path=path, why="shadows the package's unit in /usr/lib/systemd/system")
        for path in init_units(layout)
        if (have := observed.paths.get(path)) is not None
        and have[4] == render_unit(path, layout, MAKE_INSTALL)
    ]


def sandbox_client_path(layout: Layout) -> Path:
    return layout.lib / "agentgw_sandbox.py"


def plan_init(
    layout: Layout,
    observed: Observed,
    launcher: str,
    default_config: str,
    install: Install = MAKE_INSTALL,
) -> list[Action]:
    """Dirs, the units (unless packaged), the launcher, the sandbox broker's user and the
    gateways' client, and (only if absent) a default host config."""
    actions: list[Action] = []
    for path, owner, group, mode in init_dirs(layout):
        actions += want_dir(observed, path, owner, group, mode)
    units = plan_units(layout, observed, install)
    actions += units
    actions += want_file(observed, layout.launcher, launcher, ROOT, ROOT, 0o755)
    actions += want_file(observed, layout.ready_waiter, ready_waiter_source(), ROOT, ROOT, 0o755)
    if SANDBOX_USER not in observed.groups:
        actions.append(EnsureGroup(name=SANDBOX_USER))
    if SANDBOX_USER not in observed.users:
        actions.append(EnsureUser(name=SANDBOX_USER, group=SANDBOX_USER, home=SANDBOX_HOME))
    actions += want_file(
        observed, sandbox_client_path(layout), sandbox_client_source(), ROOT, ROOT, 0o644
    )
    if layout.host_config not in observed.paths:
        actions += want_file(observed, layout.host_config, default_config, ROOT, ROOT, 0o644)
    actions += [
        RemovePath(path=p, why="temp file of an interrupted write") for p in observed.leftovers
    ]
    if units and observed.units is not None:
        actions.append(UnitAction(verb="daemon-reload", why="unit files changed"))
    return actions


def render_unit(path: Path, layout: Layout, install: Install) -> str:
    """The template relocated to the layout's /opt/agent; any other unit for the install."""
    if path == layout.template_unit:
        return render_template(layout)
    return shipped_unit(path.name, install)


def profile_dirs(
    profile: str, host: HostConfig, layout: Layout
) -> list[tuple[Path, str, str, int]]:
    user = host.user(profile)
    return [
        (layout.profile_dir(profile), ROOT, ROOT, 0o755),
        (layout.home(profile), user, user, 0o700),
        (layout.logs(profile), user, user, 0o700),
        (layout.dropin_dir(profile), ROOT, ROOT, 0o755),
        (layout.journald_dropin_dir(profile), ROOT, ROOT, 0o755),
        (layout.relay_dropin_dir(profile), ROOT, ROOT, 0o755),
    ]


def profile_files(profile: str, layout: Layout) -> list[Path]:
    """The files ``plan_profiles`` writes for a profile (observe them to plan it)."""
    return [
        layout.env_file(profile),
        layout.dropin(profile),
        layout.journald_conf(profile),
        layout.journald_dropin(profile),
        layout.relay_dropin(profile),
    ]


def denied_paths(profile: Profile, which: Mapping[str, Path | None] | None) -> list[Path]:
    """Absolute paths of the profile's denied tools; a bare name resolves on the host."""
    out: list[Path] = []
    for tool in profile.denied_tools:
        if tool.startswith("/"):
            out.append(Path(tool))
        elif which is not None:
            resolved = which.get(tool)
            if resolved is not None:
                out.append(resolved)
    return sorted(set(out))


def plan_profiles(
    profiles: Mapping[str, Profile],
    host: HostConfig,
    layout: Layout,
    observed: Observed,
    *,
    prune: bool = False,
    stamp: str = "",
) -> list[Action]:
    """Users, dirs, env files and drop-ins for every profile; units for promoted ones.

    ``stamp`` names this run's archive directory (``--prune`` moves data there, never deletes).
    """
    actions = _plan_users(profiles, host, layout, observed)
    reload = False
    unit_ops: list[Action] = []
    for name, profile in sorted(profiles.items()):
        files, ops, changed_units = _plan_profile(name, profile, host, layout, observed)
        actions += files
        unit_ops += ops
        reload = reload or changed_units
    if prune:
        for gone in sorted(observed.profiles_on_host - set(profiles)):
            actions_gone, reload_gone = plan_prune(gone, layout, observed, stamp)
            actions += actions_gone
            reload = reload or reload_gone
    actions += [
        RemovePath(path=p, why="temp file of an interrupted write") for p in observed.leftovers
    ]
    if observed.units is not None and reload:
        actions.append(UnitAction(verb="daemon-reload", why="drop-ins changed"))
    return actions + unit_ops


def _plan_users(
    profiles: Mapping[str, Profile], host: HostConfig, layout: Layout, observed: Observed
) -> list[Action]:
    """A group and a user per profile (one shared pair in convenience mode), where missing."""
    actions: list[Action] = []
    owners: dict[str, str] = {}
    for name in sorted(profiles):
        owners.setdefault(host.user(name), name)
    for user, first in owners.items():
        if user not in observed.groups:
            actions.append(EnsureGroup(name=user))
        if user not in observed.users:
            # A shared (convenience) user has no single home: it gets the gateways dir.
            home = layout.home(first) if host.isolated else layout.opt / "gateways"
            actions.append(EnsureUser(name=user, group=user, home=home))
    return actions


def _plan_profile(
    name: str, profile: Profile, host: HostConfig, layout: Layout, observed: Observed
) -> tuple[list[Action], list[Action], bool]:
    """One profile's dirs and files, its unit operations, and whether systemd must reload."""
    actions: list[Action] = []
    for path, owner, group, mode in profile_dirs(name, host, layout):
        actions += want_dir(observed, path, owner, group, mode)
    env = want_file(
        observed,
        layout.env_file(name),
        render_env(profile, host, layout),
        ROOT,
        host.user(name),
        0o640,
    )
    dropin = want_file(
        observed,
        layout.dropin(name),
        render_dropin(profile, host, layout, denied_paths(profile, observed.which)),
        ROOT,
        ROOT,
        0o644,
    )
    journal = want_file(
        observed, layout.journald_conf(name), render_journald_conf(profile), ROOT, ROOT, 0o644
    ) + want_file(
        observed,
        layout.journald_dropin(name),
        render_journald_dropin(profile),
        ROOT,
        ROOT,
        0o644,
    )
    relay = want_file(observed, layout.relay_dropin(name), render_relay_dropin(host.user(name)),
                      ROOT, ROOT, 0o644)
    actions += env + dropin + journal + relay
    unit_ops = plan_journald(name, observed) if journal else []
    unit_ops += plan_unit(name, layout, observed, changed=bool(env or dropin))
    unit_ops += plan_relay_units(name, observed.units, changed=bool(relay))
    return actions, unit_ops, bool(dropin) or bool(journal) or bool(relay)


def plan_unit(name: str, layout: Layout, observed: Observed, *, changed: bool) -> list[Action]:
    """Enable and start a profile's unit once a release is promoted (``current`` exists)."""
    if observed.units is None or layout.current(name) not in observed.paths:
        return []
    unit = unit_name(name)
    return keep_running(
        unit, observed.units.get(unit, ("", "")), enable_why="a release is promoted",
        restart_why="env file or drop-in changed" if changed else None,
    )


def plan_journald(name: str, observed: Observed) -> list[Action]:
    """The profile's journald reads its settings when it starts: restart it if it runs (its
    fd store keeps the gateway's log stream across the restart); else it starts with them."""
    if observed.units is None:
        return []
    unit = journald_unit(name)
    active, _ = observed.units.get(unit, ("", ""))
    if active in ("active", "activating", "reloading"):
        return [UnitAction(verb="restart", unit=unit, why="its journal settings changed")]
    return []


def plan_prune(
    name: str, layout: Layout, observed: Observed, stamp: str
) -> tuple[list[Action], bool]:
    """Stop and disable a removed profile; archive its home and logs; drop its generated files.

    Its journal (/var/log/journal/<machine-id>.agentgw-<name>) is kept where it is."""
    unit = unit_name(name)
    actions: list[Action] = []
    if observed.units is not None:
        active, enabled = observed.units.get(unit, ("", ""))
        if active not in ("", "inactive", "failed"):
            actions.append(UnitAction(verb="stop", unit=unit, why="profile removed"))
        if enabled == "enabled":
            actions.append(UnitAction(verb="disable", unit=unit, why="profile removed"))
    actions += prune_relay_units(name, observed.units)
    dest = layout.archive / f"{name}-{stamp}"
    for sub in (layout.home(name), layout.logs(name)):
        if sub in observed.paths:
            actions.append(ArchiveDir(path=sub, dest=dest / sub.name, why="profile removed"))
    for path in (
        layout.env_file(name),
        layout.dropin(name),
        layout.dropin_dir(name),
        layout.journald_conf(name),
        layout.journald_dropin(name),
        layout.journald_dropin_dir(name),
        layout.relay_dropin(name),
        layout.relay_dropin_dir(name),
        layout.current(name),
        layout.previous(name),
        layout.profile_dir(name),
    ):
        if path in observed.paths:
            actions.append(RemovePath(path=path, why="profile removed"))
    generated = (layout.dropin(name), layout.journald_dropin(name), layout.relay_dropin(name))
    return actions, any(path in observed.paths for path in generated)


def render_plan(actions: Sequence[Action]) -> str:
    """A readable diff: one line per action, and a unified diff for changed file contents."""
    if not actions:
        return "no changes"
    out: list[str] = []
    for action in actions:
        out.append(action.describe())
        if (
            isinstance(action, WriteFile)
            and action.old is not None
            and action.old != action.content
        ):
            diff = difflib.unified_diff(
                action.old.splitlines(),
                action.content.splitlines(),
                fromfile=f"{action.path} (host)",
                tofile=f"{action.path} (planned)",
                lineterm="",
            )
            out += ["    " + line for line in diff]
    return "\n".join(out)
