"""Console logs carry colour codes unless NO_COLOR is set (no-color.org); when stderr is the
journal, events go as journald-native entries with PRIORITY and AGENTGW_* fields."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import sys
from pathlib import Path

import pytest
import structlog

from agentgw import log


@pytest.fixture(autouse=True)
def restore() -> object:
    """Each test configures structlog; the previous configuration is put back after."""
    saved = structlog.get_config()
    yield None
    structlog.configure(**saved)
    log.configure(debug=False, json=None)


def warning_text(monkeypatch: pytest.MonkeyPatch, no_color: str | None) -> str:
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    log.configure(debug=False, json=False)
    log._apply()  # noqa: SLF001 - the renderer is chosen here, from the environment
    log.get_logger("t").warning("disk_low", free_mb=12)
    return err.getvalue()


@pytest.mark.parametrize(("no_color", "coloured"), [(None, True), ("", True), ("1", False)])
def test_no_color_turns_colour_codes_off(
    monkeypatch: pytest.MonkeyPatch, no_color: str | None, coloured: bool
) -> None:
    """Unset or empty NO_COLOR: ANSI codes; set to anything: none, same words."""
    text = warning_text(monkeypatch, no_color)
    assert "disk_low" in text and "free_mb" in text
    assert ("\x1b[" in text) is coloured


def journal_entries(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, stream_matches: bool, debug: bool = False
) -> tuple[list[dict[str, str]], str]:
    """Log a few events with stderr a file (and JOURNAL_STREAM naming it, or another file);
    the datagrams a fake journald socket received, parsed, and what reached stderr."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(tmp_path / "journal.sock"))
    server.setblocking(False)
    monkeypatch.setattr(log, "JOURNAL_SOCKET", str(tmp_path / "journal.sock"))
    err = (tmp_path / "stderr").open("w+")
    named = err if stream_matches else (tmp_path / "other").open("w")
    st = os.fstat(named.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    monkeypatch.setattr(sys, "stderr", err)
    log.configure(debug=debug, json=None)
    log._apply()  # noqa: SLF001 - the journal is chosen here, from the environment
    logger = log.get_logger("t")
    logger.info("chatty", n=1)
    logger.summary("promote_finished", profile="api", release="abc1234-a", phases={"ready": 3})
    logger.error("boom", reason="two\nlines")
    entries = []
    while True:
        try:
            entries.append(parse_datagram(server.recv(65536)))
        except BlockingIOError:
            break
    server.close()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    err.close()
    named.close()
    return entries, (tmp_path / "stderr").read_text()


def parse_datagram(data: bytes) -> dict[str, str]:
    """journald's native protocol, read back (KEY=value lines; KEY\\n<le64 size><bytes>\\n)."""
    out: dict[str, str] = {}
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            out[key.decode()] = value.decode()
            data = rest
        else:
            size = struct.unpack("<Q", rest[:8])[0]
            out[line.decode()] = rest[8:8 + size].decode()
            assert rest[8 + size:9 + size] == b"\n"
            data = rest[9 + size:]
    return out


def test_journal_native_entries_when_stderr_is_the_journal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With JOURNAL_STREAM naming stderr: one native entry per event, with MESSAGE, PRIORITY
    from the level, SYSLOG_IDENTIFIER and the event's keys as AGENTGW_* fields (a multi-line
    value in the binary form); the summary passes without --debug, a plain info does not;
    nothing is written to stderr."""
    entries, stderr = journal_entries(monkeypatch, tmp_path, stream_matches=True)
    assert stderr == ""
    assert [e["AGENTGW_EVENT"] for e in entries] == ["promote_finished", "boom"]
    summary, boom = entries
    assert summary["PRIORITY"] == "6" and boom["PRIORITY"] == "3"
    assert summary["SYSLOG_IDENTIFIER"] == "agentgw"
    assert summary["AGENTGW_PROFILE"] == "api" and summary["AGENTGW_RELEASE"] == "abc1234-a"
    assert summary["AGENTGW_PHASES"] == '{"ready": 3}'
    assert summary["MESSAGE"].startswith("promote_finished profile=api release=abc1234-a")
    assert boom["AGENTGW_REASON"] == "two\nlines"


def test_journal_with_debug_keeps_info_events(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--debug lets plain info events through too (priority 6)."""
    entries, _ = journal_entries(monkeypatch, tmp_path, stream_matches=True, debug=True)
    assert [(e["AGENTGW_EVENT"], e["PRIORITY"]) for e in entries] == [
        ("chatty", "6"), ("promote_finished", "6"), ("boom", "3")]


def test_text_when_stderr_is_not_the_journal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """JOURNAL_STREAM inherited but stderr redirected elsewhere: JSON lines on stderr, no
    datagram; the summary line is there without --debug, the plain info is not."""
    entries, stderr = journal_entries(monkeypatch, tmp_path, stream_matches=False)
    assert entries == []
    events = [json.loads(line)["event"] for line in stderr.splitlines()]
    assert events == ["promote_finished", "boom"]


def test_field_names_are_journal_field_names() -> None:
    """Keys become upper-case AGENTGW_ names of letters, digits and underscores."""
    assert log.field_name("exit-code") == "AGENTGW_EXIT_CODE"
    assert log.field_name("x" * 80) == "AGENTGW_" + "X" * 56
