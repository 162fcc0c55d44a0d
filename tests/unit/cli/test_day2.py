"""A non-root caller: a member of the admin group runs the day-2 commands through sudo (the
exact argv checked), members are refused apply/init, everyone else is refused with one line
and exit 2; root and commands that need no root are untouched."""

from __future__ import annotations

import os
import sys

import pytest

from agentgw.cli import day2
from agentgw.cli.main import main


def run_as(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
           args: list[str], *, member: bool) -> tuple[int | None, list[str], str]:
    """main(args) as uid 1000: (exit code or None when exec'ed, the exec'ed argv, stderr)."""
    execs: list[str] = []

    def fake_exec(path: str, argv: list[str]) -> None:
        execs.extend(argv)
        raise SystemExit(None)

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(day2, "is_member", lambda group: member)
    monkeypatch.setattr(day2, "admin_group", lambda: "agentgw")
    monkeypatch.setattr(day2.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(os, "execv", fake_exec)
    with pytest.raises(SystemExit) as exc:
        main(args)
    code = exc.value.code
    return (code if isinstance(code, int) else None), execs, capsys.readouterr().err


def test_member_promote_goes_through_sudo(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _, argv, _ = run_as(monkeypatch, capsys, ["promote", "api", "0123abc"], member=True)
    assert argv == ["sudo", "-n", "--", os.path.join(sys.prefix, "bin", "agentgw"),
                    "promote", "api", "0123abc"]


@pytest.mark.parametrize("args", [["apply"], ["init"], ["stop", "api"]])
def test_member_is_refused_setup_commands(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str],
                                          args: list[str]) -> None:
    code, argv, err = run_as(monkeypatch, capsys, args, member=True)
    assert (code, argv) == (2, [])
    assert err.splitlines()[0] == f"error: agentgw {args[0]} needs root"
    assert err.splitlines()[1].startswith("hint: members of group agentgw may run: promote")


def test_member_bad_flags_refused_before_sudo(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, argv, err = run_as(monkeypatch, capsys, ["promote", "api", "0123abc", "--etc", "/tmp"],
                             member=True)
    assert (code, argv) == (2, [])
    assert "is not allowed to group agentgw" in err


@pytest.mark.parametrize("args", [["promote", "api", "0123abc"], ["status"], ["history"]])
def test_outsider_is_refused(monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, argv, err = run_as(monkeypatch, capsys, args, member=False)
    assert (code, argv) == (2, [])
    lines = err.splitlines()
    assert lines[0] == f"error: agentgw {args[0]} needs root or membership of group agentgw"
    assert lines[1].startswith("hint: an admin adds you: usermod -aG agentgw")
    assert len(lines) == 2


def test_help_is_not_gated(monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    code, argv, _ = run_as(monkeypatch, capsys, ["promote", "--help"], member=False)
    assert (code, argv) == (0, [])


def test_relocated_root_is_not_gated(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    """Under --root DIR (a test or development tree) a non-member's plan runs as themselves."""
    monkeypatch.delenv("AGENTGW_ROOT", raising=False)
    code, argv, err = run_as(monkeypatch, capsys, ["--root", str(tmp_path), "plan"],
                             member=False)
    assert argv == [] and "needs root" not in err
    assert day2.relocated(["--root=/", "status"]) is False
    assert day2.relocated(["status"]) is False
