"""The shipped files are rendered for the venv agentgw runs from; a packaged install leaves the
units to the package (init writes none into /etc/systemd/system)."""

from __future__ import annotations

from pathlib import Path

from agentgw.model.actions import RemovePath, UnitAction, WriteFile
from agentgw.paths import Layout
from agentgw.plan.host import Observed, init_files, plan_init
from agentgw.plan.shipped import (
    DEFAULT_VENV,
    PACKAGE_DIRS,
    Install,
    render_shipped,
    shipped_names,
    shipped_source,
    shipped_unit,
    shipped_units,
)
from tests.unit.plan.test_host_plan import after

REPO = Path(__file__).resolve().parents[3]
PACKAGED = Install(venv="/usr/lib/agentgw", packaged=True)


def test_every_file_of_the_data_dirs_renders_the_installed_venv() -> None:
    """Every file the package installs (the units) that names the make install's venv names
    the package's venv once rendered for it, and nothing else changes; the units that run
    agentgw run the rendered binary."""
    seen = 0
    for kind in PACKAGE_DIRS:
        for name in shipped_names(kind):
            source = shipped_source(kind, name)
            rendered = render_shipped(source, PACKAGED.venv)
            assert "/opt/agentgw" not in rendered
            assert source.replace(DEFAULT_VENV, PACKAGED.venv) == rendered
            seen += 1
    assert seen >= len(list((REPO / "systemd").iterdir()))
    for name in ("agentgw-registry.service", "agentgw-verify.service",
                 "agentgw-onfailure@.service", "agentgw-sandbox.service"):
        assert f"ExecStart={PACKAGED.agentgw} " in shipped_unit(name, PACKAGED)


def test_make_install_renders_the_sources_unchanged() -> None:
    """For the make venv the rendering is the source itself (what the repo's systemd/ says)."""
    for name in shipped_units():
        assert (REPO / "systemd" / name).read_text() == shipped_unit(name, Install())


def test_init_renders_the_units_for_the_running_venv(tmp_path: Path) -> None:
    """Not packaged: init writes the template and every shipped unit into /etc/systemd/system,
    the shipped ones pointing at the venv it runs from."""
    layout = Layout(tmp_path)
    install = Install(venv="/srv/agentgw/venv")
    empty = Observed(users=frozenset(), groups=frozenset(), paths={}, units={})
    actions = plan_init(layout, empty, "#!launcher\n", "default\n", install)
    files = {a.path: a.content for a in actions if isinstance(a, WriteFile)}
    registry = files[layout.unit_dir / "agentgw-registry.service"]
    assert "ExecStart=/srv/agentgw/venv/bin/agentgw registry serve" in registry
    assert "ExecPaths=/srv/agentgw/venv " in registry
    assert layout.template_unit in files
    assert plan_init(layout, after(actions, empty), "#!launcher\n", "default\n", install) == []


def test_packaged_init_writes_no_unit(tmp_path: Path) -> None:
    """Packaged: no unit file (template included) is written in /etc, so none shadows the
    package's in /usr/lib/systemd/system, and no daemon-reload is planned; the launcher, state
    dirs and default config are still installed, once."""
    layout = Layout(tmp_path)
    empty = Observed(users=frozenset(), groups=frozenset(), paths={}, units={})
    actions = plan_init(layout, empty, "#!launcher\n", "default\n", PACKAGED)
    written = {a.path for a in actions if isinstance(a, WriteFile)}
    assert not any(p.is_relative_to(layout.unit_dir) for p in written)
    assert {layout.launcher, layout.host_config} <= written
    assert not [a for a in actions if isinstance(a, UnitAction)]
    assert plan_init(layout, after(actions, empty), "#!launcher\n", "default\n", PACKAGED) == []


def test_packaged_init_removes_the_make_installs_unchanged_copies(tmp_path: Path) -> None:
    """Packaged, on a host a make install's init set up: its unchanged units in /etc (which
    would shadow the package's) are removed and systemd reloaded; an edited one stays."""
    layout = Layout(tmp_path)
    make = plan_init(layout, Observed(users=frozenset(), groups=frozenset(), paths={},
                                      units={}), "#!launcher\n", "default\n")
    host = after(make, Observed(users=frozenset(), groups=frozenset(), paths={}, units={}))
    edited = layout.unit_dir / "agentgw-verify.timer"
    kind, owner, group, mode, _ = host.paths[edited]
    host = Observed(users=host.users, groups=host.groups, units={},
                    paths={**host.paths, edited: (kind, owner, group, mode, "[Timer]\n")})
    actions = plan_init(layout, host, "#!launcher\n", "default\n", PACKAGED)
    removed = {a.path for a in actions if isinstance(a, RemovePath)}
    assert {layout.template_unit, layout.unit_dir / "agentgw-registry.service"} <= removed
    assert {p for p in init_files(layout) if p.is_relative_to(layout.unit_dir)} - removed == {
        edited}
    assert UnitAction(verb="daemon-reload", why="unit files changed") in actions
