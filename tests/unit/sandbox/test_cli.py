"""``agentgw exec`` / ``agentgw sandbox``: input handling that fails before any VM boots."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentgw.cli.sandbox import build_request, read_files
from agentgw.errors import AgentgwError
from tests.unit.runner import agentgw


def test_files_map_local_to_remote(tmp_path: Path) -> None:
    """LOCAL:REMOTE copies under REMOTE; a bare LOCAL keeps its base name."""
    (tmp_path / "a.txt").write_bytes(b"A")
    got = read_files((f"{tmp_path}/a.txt:in/x.txt", f"{tmp_path}/a.txt"))
    assert got == {"in/x.txt": b"A", "a.txt": b"A"}


@pytest.mark.parametrize("remote", ["../x", "/etc/passwd", "a/../../b"])
def test_files_cannot_escape_the_work_dir(tmp_path: Path, remote: str) -> None:
    """A REMOTE outside the job's directory is bad input."""
    (tmp_path / "a").write_bytes(b"")
    with pytest.raises(AgentgwError) as err:
        read_files((f"{tmp_path}/a:{remote}",))
    assert err.value.code == 2


def test_missing_local_file_is_bad_input(tmp_path: Path) -> None:
    """A LOCAL that cannot be read is reported before anything boots."""
    with pytest.raises(AgentgwError, match="cannot read"):
        read_files((f"{tmp_path}/missing:x",))


def test_request_limits_are_validated() -> None:
    """Out-of-range limits become one usage error naming the field."""
    with pytest.raises(AgentgwError, match="timeout_s") as err:
        build_request(("true",), timeout_s=-1)
    assert err.value.code == 2


def test_exec_refuses_a_bad_profile_name() -> None:
    """Profile names follow DESIGN.md; anything else exits 2 with a hint."""
    code, _, err = agentgw("exec", "Bad_Name", "--", "true")
    assert code == 2 and "bad profile name" in err


def test_exec_without_an_image_says_to_build_one(
    tmp_path: Path
) -> None:
    """No cached image: exit 1 and the hint to run 'agentgw sandbox build'."""
    argv = ["exec", "--direct", "--cache", str(tmp_path), "api", "--", "true"]
    code, _, err = agentgw(*argv)
    assert code == 1 and "agentgw sandbox build" in err


def test_commands_are_registered() -> None:
    """``sandbox`` and ``exec`` are shipped commands, not placeholders."""
    _, listing, _ = agentgw("--help")
    assert "sandbox" in listing
    _, help_text, _ = agentgw("exec", "--help")
    assert "--file LOCAL:REMOTE" in help_text and "not yet available" not in help_text
