"""Every history record names who ran the operation (the sudo caller, else the uid's name);
records written before that field existed still read and chain, and ``history`` shows it."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentgw.apply.history import append_history, line_hash, read_history, verify_history
from agentgw.cli.main import cli


def test_actor_is_the_sudo_caller_as_root(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    """As root under sudo: SUDO_USER; without it: the real uid's name."""
    log = tmp_path / "history.jsonl"
    monkeypatch.setattr(os, "getuid", lambda: 0)
    monkeypatch.setenv("SUDO_USER", "alice")
    first = append_history(log, "promote", "ok", "api", release="abc")
    monkeypatch.delenv("SUDO_USER")
    second = append_history(log, "rollback", "ok", "api")
    assert (first.actor, second.actor) == ("alice", "root")
    assert [r.actor for r in read_history(log)] == ["alice", "root"]
    assert verify_history(log) == []


def test_sudo_user_is_not_trusted_without_root(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """A non-root caller cannot name someone else by setting SUDO_USER."""
    uid = os.getuid() or 65534
    monkeypatch.setattr(os, "getuid", lambda: uid)
    monkeypatch.setenv("SUDO_USER", "alice")
    record = append_history(tmp_path / "history.jsonl", "apply", "ok")
    assert record.actor == pwd.getpwuid(uid).pw_name


def test_old_records_without_actor_read_and_chain(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    """A line written by an older agentgw (no actor) validates, chains to the next record, and
    shows as '-' in the text history and null in --json."""
    log = tmp_path / "var" / "lib" / "agentgw" / "history.jsonl"
    log.parent.mkdir(parents=True)
    old = {"seq": 1, "time": "2026-01-01T00:00:00Z", "action": "promote", "profile": "api",
           "result": "ok", "detail": {"release": "old"}, "machine": None, "prev": "0" * 64}
    line = json.dumps(old).encode()
    log.write_bytes(line + b"\n")
    log.with_name("history.head").write_text(json.dumps({"count": 1, "hash": line_hash(line)}))
    monkeypatch.setattr(os, "getuid", lambda: 0)
    monkeypatch.setenv("SUDO_USER", "alice")
    append_history(log, "promote", "ok", "api", release="new")
    assert verify_history(log) == []
    runner = CliRunner()
    text = runner.invoke(cli, ["--root", str(tmp_path), "history"]).output.splitlines()
    assert text[0].split()[2:4] == ["-", "promote"]
    assert text[1].split()[2:4] == ["alice", "promote"]
    doc = json.loads(runner.invoke(cli, ["--root", str(tmp_path), "history", "--json"]).output)
    assert [r["actor"] for r in doc["records"]] == [None, "alice"]
