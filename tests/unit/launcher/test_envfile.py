"""The env file contract: agentgw renders it, the launcher reads it with systemd's rules.

The launcher's parser follows systemd 252's EnvironmentFile= parser; render_env's output, read
back by it, is exactly the variables agentgw declares plus the profile's own.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from agentgw.errors import AgentgwError, Exit
from agentgw.model.host import HostConfig
from agentgw.model.profile import Profile
from agentgw.paths import Layout
from agentgw.plan.envfile import check_env_entry, render_env, render_value, runtime_env

SYSTEMD_CASES = {
    "lf-lines": ("A=1\nB=2\n", {"A": "1", "B": "2"}),
    "bare-cr-ends-a-line": ("G=ok\rH=bad", {"G": "ok", "H": "bad"}),
    "crlf": ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
    "comments": ("# c\n; c\n  # indented\nA=1", {"A": "1"}),
    "mid-line-hash-is-value": ("A=x # y", {"A": "x # y"}),
    "whitespace-trimmed": ("  A  =  spaced  value  \n", {"A": "spaced  value"}),
    "single-quotes-literal": ("A='a \\n $b \"c\"'", {"A": 'a \\n $b "c"'}),
    "double-quotes-unescape": ('A="q\\"q \\$x \\\\ \\n"', {"A": 'q"q $x \\ \\n'}),
    "quoted-spans-lines": ("A='multi\nline'\nB=1", {"A": "multi\nline", "B": "1"}),
    "quote-then-text-joins": ('A="x"  y', {"A": "xy"}),
    "backslash-escapes": ("A=a\\ \\#b", {"A": "a #b"}),
    "backslash-newline-joins": ("A=line\\\ncontinued", {"A": "linecontinued"}),
    "comment-continues-over-escaped-newline": ("# c \\\nA=hidden\nB=1", {"B": "1"}),
    "empty-value": ("A=\nB=", {"A": "", "B": ""}),
    "no-equals-dropped": ("JUSTAKEY\nA=1", {"A": "1"}),
    "invalid-names-dropped": ("1A=x\nB C=y\nD-E=z\nF=ok", {"F": "ok"}),
    "last-assignment-wins": ("A=1\nA=2", {"A": "2"}),
    "nul-ends-the-file": ("A=1\nB=2\0C=3", {"A": "1", "B": "2"}),
}


@pytest.mark.parametrize("case", sorted(SYSTEMD_CASES))
def test_launcher_parses_env_files_as_systemd(launcher: ModuleType, case: str) -> None:
    """Line ends (LF or bare CR), comments, quotes, escapes and dropped names as in systemd 252."""
    text, expected = SYSTEMD_CASES[case]
    assert launcher.parse_env_file(text) == expected


def profile(**fields: object) -> Profile:
    base: dict[str, object] = {"name": "api", "mode": "cli", "listen": "127.77.0.3:8080"}
    return Profile.model_validate({**base, **fields})


def test_render_env_declares_the_runtime_once(tmp_path: Path) -> None:
    """Every contract variable, in order, with PYTHONPATH exactly once and equal to AGENT_ROOT."""
    layout = Layout(tmp_path)
    text = render_env(profile(env={"LOG_LEVEL": "info"}), HostConfig(), layout)
    current = layout.current("api")
    assignments = [line for line in text.splitlines() if not line.startswith("#")]
    assert assignments == [
        "AGENT_PROFILE=api",
        f"AGENT_ROOT={current}",
        f"PYTHONPATH={current}",
        f"AGENT_HOME={layout.home('api')}",
        f"AGENT_LOGS={layout.logs('api')}",
        "AGENT_GATEWAY_MODE=cli",
        "AGENT_LISTEN=127.77.0.3:8080",
        "AGENT_HEALTH_PATH=/health",
        "AGENT_DRAIN_S=30",
        "AGENT_PYTHON=/usr/bin/python3",
        "PYTHONUNBUFFERED=1",
        "LOG_LEVEL=info",
    ]


def test_unbuffered_unless_the_profile_says_otherwise(tmp_path: Path) -> None:
    """PYTHONUNBUFFERED=1 by default (lines reach the journal as they happen); a profile that
    sets PYTHONUNBUFFERED itself gets its own value, declared once."""
    layout = Layout(tmp_path)
    text = render_env(profile(env={"PYTHONUNBUFFERED": "0"}), HostConfig(), layout)
    lines = [line for line in text.splitlines() if line.startswith("PYTHONUNBUFFERED=")]
    assert lines == ["PYTHONUNBUFFERED=0"]


def test_script_mode_declares_the_script() -> None:
    """AGENT_PROFILE_EXEC appears in script mode only, relative to the release."""
    script = profile(name="mcp", mode="script", exec="agent_cli/mcp_server.py")
    env = runtime_env(script, HostConfig(), Layout(Path("/")))
    assert env["AGENT_PROFILE_EXEC"] == "agent_cli/mcp_server.py"
    assert "AGENT_PROFILE_EXEC" not in runtime_env(profile(), HostConfig(), Layout(Path("/")))


def test_rendered_env_reads_back_exactly(launcher: ModuleType, tmp_path: Path) -> None:
    """Values needing quotes (spaces, quotes, backslashes, $, #, non-ASCII) survive systemd's
    parser unchanged, and sort after agentgw's own variables."""
    tricky = {
        "GREETING": "  hello 'world' \"x\"  ",
        "PATTERN": "a\\b$HOME`x`#not-a-comment;",
        "UNICODE": "café ☕",
        "EMPTY": "",
    }
    layout = Layout(tmp_path)
    chosen = profile(env=tricky)
    parsed = launcher.parse_env_file(render_env(chosen, HostConfig(), layout))
    expected = {**runtime_env(chosen, HostConfig(), layout), **dict(sorted(tricky.items()))}
    assert list(parsed.items()) == list(expected.items())


def test_layout_paths_with_spaces_are_quoted(launcher: ModuleType, tmp_path: Path) -> None:
    """A root with spaces still yields one PYTHONPATH entry equal to AGENT_ROOT."""
    layout = Layout(tmp_path / "with space")
    parsed = launcher.parse_env_file(render_env(profile(), HostConfig(), layout))
    assert parsed["PYTHONPATH"] == parsed["AGENT_ROOT"] == str(layout.current("api"))
    assert render_value("a b") == '"a b"'


@pytest.mark.parametrize("reserved", ["AGENT_LISTEN", "AGENT_PYTHON", "AGENT_LOGS"])
def test_profile_env_cannot_redeclare_the_runtime(tmp_path: Path, reserved: str) -> None:
    """A profile env key agentgw declares itself would override it (systemd keeps the last)."""
    chosen = profile().model_copy(update={"env": {reserved: "/elsewhere"}})
    with pytest.raises(AgentgwError) as caught:
        render_env(chosen, HostConfig(), Layout(tmp_path))
    assert caught.value.message == f"gateways/api.yaml: env: {reserved} is reserved"
    assert caught.value.code == Exit.USAGE


@pytest.mark.parametrize(
    "value", ["a\nPYTHONPATH=/x", "a\rPYTHONPATH=/x", "a\0b", "tab\there", "nel\x85", "ls\u2028"]
)
def test_check_env_entry_refuses_line_breaking_values(value: str) -> None:
    """A control or line-break character could smuggle in a second assignment: refused."""
    with pytest.raises(AgentgwError) as caught:
        check_env_entry("GREETING", value)
    assert caught.value.message.startswith("env: GREETING: the value contains the control")


@pytest.mark.parametrize("key", ["", "1A", "A-B", "A B", "A=B", "É"])
def test_check_env_entry_refuses_invalid_names(key: str) -> None:
    """Only [A-Za-z_][A-Za-z0-9_]* names: systemd drops the others with only a warning."""
    with pytest.raises(AgentgwError) as caught:
        check_env_entry(key, "x")
    assert caught.value.message == f"env: {key!r} is not a valid variable name"
