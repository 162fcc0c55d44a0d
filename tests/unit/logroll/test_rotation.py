"""Rotation of an append-only log (agentgw.logroll) on tmp_path: every state a kill can leave
on disk reads right and is finished by the next rotation; the broker's write-only descriptor
keeps working across a rotation; counters read from the logs never go down."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from agentgw.apply.history import append_history, verify_history
from agentgw.logroll import Retention, append_fd, dropped_path, read_log, rotate, rotated
from agentgw.model.history import history_tally
from agentgw.observe.counts import exec_tally, read_counts
from agentgw.registry.reads import recent_lines

SMALL = Retention(max_bytes=4096, keep=2)


def exec_line(profile: str, exit_code: int | None) -> bytes:
    record = {"time": "2026-12-04T08:00:00.000+00:00", "profile": profile, "uid": 0,
              "via": "broker", "argv_sha256": "0" * 64, "duration_s": 0.1,
              "exit_code": exit_code, "timed_out": False, "backend": "kvm", "warm": True,
              "pad": "x" * 200}
    return json.dumps(record).encode() + b"\n"


def history(tmp_path: Path, records: int) -> Path:
    log = tmp_path / "history.jsonl"
    for i in range(records):
        append_history(log, "promote", "ok", "api", release=f"r{i}")
    return log


def test_a_kill_after_the_copy_before_the_truncation(tmp_path: Path) -> None:
    """The live file still starts with all of .1 (the copy made, the truncation not): readers
    skip the copy, an append chains on, and the next rotate truncates; verify is green in
    every one of these states."""
    log = history(tmp_path, 20)
    shutil.copy(log, rotated(log, 1))  # the state a kill after the copy leaves
    assert verify_history(log) == []
    assert [line.n for line in read_log(log)[1]][:2] == [1, 2]
    assert len(read_log(log)[1]) == 20
    record = append_history(log, "rollback", "ok", "api", release="r0")
    assert record.seq == 21 and verify_history(log) == []
    assert rotate(log, Retention(max_bytes=1 << 20, keep=2), history_tally)  # finishes it
    assert log.read_bytes() == b""
    assert len(rotated(log, 1).read_bytes().splitlines()) == 21
    assert verify_history(log) == []


def more(log: Path, n: int = 16) -> None:
    for i in range(n):
        append_history(log, "promote", "ok", "api", release=f"m{i}")


def test_a_kill_between_two_shifts_leaves_a_gap_read_in_order(tmp_path: Path) -> None:
    """.1 and .3 without .2 (a kill after .2 -> .3, before .1 -> .2): read oldest first all the
    same, and the next rotation closes the gap and drops past the retention."""
    keep3 = Retention(max_bytes=4096, keep=3)
    log = history(tmp_path, 16)
    assert rotate(log, keep3, history_tally)
    more(log)
    assert rotate(log, keep3, history_tally)
    os.rename(rotated(log, 2), rotated(log, 3))  # the gap
    assert verify_history(log) == []
    more(log)
    assert rotate(log, keep3, history_tally)
    assert sorted(p.name for p in tmp_path.glob("history.jsonl.[0-9]")) == [
        "history.jsonl.1", "history.jsonl.2", "history.jsonl.3"]
    assert verify_history(log) == []
    assert len(read_log(log)[1]) == 48


def test_a_kill_after_counting_a_dropped_file_before_unlinking_it(tmp_path: Path) -> None:
    """.dropped already counts the file being dropped, which is still there (the kill came
    before its unlink): the next rotation only unlinks it, nothing is counted twice, and the
    chain still verifies."""
    log = history(tmp_path, 16)
    rotate(log, SMALL, history_tally)
    more(log)
    rotate(log, SMALL, history_tally)
    more(log)
    before = tmp_path / "before"
    before.mkdir()
    for path in tmp_path.glob("history.*"):
        shutil.copy(path, before / path.name)
    assert rotate(log, SMALL, history_tally)  # drops the first 16: .dropped is written
    shutil.copy(dropped_path(log), before / dropped_path(log).name)
    log = before / "history.jsonl"  # the kill's state: counted, nothing shifted yet
    assert rotate(log, SMALL, history_tally)
    assert json.loads(dropped_path(log).read_text())["lines"] == 16
    assert json.loads(dropped_path(log).read_text())["tally"] == {"api\tpromote\tok": 16}
    assert verify_history(log) == []


def test_counters_never_go_down_when_retention_drops_files(tmp_path: Path) -> None:
    """Promotes and exec counts read by the metrics stay the same through rotations that drop
    files: the dropped files' tallies are added back."""
    hist = history(tmp_path, 60)
    execs = tmp_path / "execs.jsonl"
    fd = os.open(execs, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # as the broker's stdout
    try:
        for i in range(60):
            append_fd(fd, exec_line("api" if i % 3 else "core", 0 if i % 2 else 1))
            if i % 15 == 14:
                rotate(execs, SMALL, exec_tally)
        append_fd(fd, exec_line("api", None))  # after rotations: into the live file
    finally:
        os.close(fd)
    before = read_counts(tmp_path / "none.jsonl", tmp_path / "none2.jsonl")
    assert before.promotes == {} and before.execs == {}
    for _ in range(3):
        rotate(hist, SMALL, history_tally)
        for _ in range(16):
            append_history(hist, "rollback", "failed", "api")
    counts = read_counts(hist, execs)
    assert dropped_path(hist).exists() and dropped_path(execs).exists()
    assert counts.promotes == {("api", "promote", "ok"): 60, ("api", "rollback", "failed"): 48}
    assert counts.execs == {("api", "ok"): 20, ("api", "nonzero"): 20, ("core", "ok"): 10,
                            ("core", "nonzero"): 10, ("api", "error"): 1}
    assert execs.read_bytes().count(b"\n") == 1  # the descriptor wrote into the live file


def test_the_registry_shows_recent_execs_across_a_rotation(tmp_path: Path) -> None:
    """Right after a rotation the live exec log is empty: /v1/sandbox's newest records come
    from execs.jsonl.1, then from both files, newest last."""
    execs = tmp_path / "execs.jsonl"
    lines = [exec_line("api", n) for n in range(20)]
    execs.write_bytes(b"".join(lines))
    assert rotate(execs, SMALL, exec_tally)
    assert recent_lines(execs, 3) == [line.rstrip(b"\n") for line in lines[-3:]]
    newer = exec_line("core", 0)
    with execs.open("ab") as f:
        f.write(newer)
    assert recent_lines(execs, 2) == [lines[-1].rstrip(b"\n"), newer.rstrip(b"\n")]


def test_counters_skip_the_copy_an_interrupted_rotation_left(tmp_path: Path) -> None:
    """The live file still starting with the copy just written to .1 (a kill before the
    truncation) counts once, before and after the next rotate finishes the job."""
    execs = tmp_path / "execs.jsonl"
    execs.write_bytes(b"".join(exec_line("api", 0) for _ in range(20)))
    assert rotate(execs, SMALL, exec_tally)
    execs.write_bytes(b"".join(exec_line("core", 1) for _ in range(3)))
    expected = {("api", "ok"): 20, ("core", "nonzero"): 3}
    assert read_counts(tmp_path / "h.jsonl", execs).execs == expected
    os.rename(rotated(execs, 1), rotated(execs, 2))
    shutil.copy(execs, rotated(execs, 1))  # the kill's state
    assert read_counts(tmp_path / "h.jsonl", execs).execs == expected
    assert rotate(execs, Retention(max_bytes=1 << 20, keep=2), exec_tally)
    assert execs.read_bytes() == b""
    assert read_counts(tmp_path / "h.jsonl", execs).execs == expected
