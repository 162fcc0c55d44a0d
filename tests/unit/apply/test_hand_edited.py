"""A host edited by hand: current or previous replaced by a directory, a release removed.
promote, rollback and restart stop before touching anything and say how to repair; nothing
made by hand is deleted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentgw.apply.control import Controller
from agentgw.config.load import load_config
from agentgw.errors import AgentgwError, Exit
from agentgw.observe.gateway import GatewayProbe
from agentgw.paths import Layout

REPO = Path(__file__).resolve().parents[3]


class NoSystemd:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"systemd must not be touched: {name}")


def controller(tmp_path: Path) -> Controller:
    layout = Layout(tmp_path)
    (layout.etc / "gateways").mkdir(parents=True)
    (layout.etc / "gateways" / "api.yaml").write_text((REPO / "gateways/api.yaml").read_text())
    layout.releases.mkdir(parents=True)
    layout.profile_dir("api").mkdir(parents=True)
    config = load_config(layout.etc)
    return Controller(layout, config, NoSystemd(), GatewayProbe(layout), lambda line: None)


@pytest.mark.parametrize("slot", ["current", "previous"])
def test_a_directory_in_place_of_a_link_is_named_and_kept(tmp_path: Path, slot: str) -> None:
    """promote and rollback: exit 1 naming the directory and the repair; its content stays."""
    ctl = controller(tmp_path)
    made = ctl.layout.profile_dir("api") / slot
    made.mkdir()
    (made / "work").write_text("someone's")
    for call in (lambda: ctl.promote("api", "3f9c2e1"), lambda: ctl.rollback("api")):
        with pytest.raises(AgentgwError) as info:
            call()
        assert info.value.code == Exit.FAILED
        assert f"{made} is a directory, not agentgw's symlink" in info.value.message
        assert f"mv {made} {made}.by-hand" in info.value.hint
    assert (made / "work").read_text() == "someone's"


def test_a_removed_release_is_named_with_the_way_out(tmp_path: Path) -> None:
    """previous (rollback) or current (restart) pointing at a release that is gone."""
    ctl = controller(tmp_path)
    for slot in ("current", "previous"):
        (ctl.layout.profile_dir("api") / slot).symlink_to("../../releases/3f9c2e1-gone")
    with pytest.raises(AgentgwError) as info:
        ctl.rollback("api")
    assert "previous -> 3f9c2e1-gone, which is no longer in" in info.value.message
    assert "agentgw rollback api --to SHA" in info.value.hint
    with pytest.raises(AgentgwError) as info:
        ctl.restart("api")
    assert "current -> 3f9c2e1-gone, which is no longer in" in info.value.message
