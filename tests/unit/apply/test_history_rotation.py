"""The history rotates by size and its hash chain runs on across the files: ``agentgw rotate``
(the CLI, with the bound from agentgw.yaml) and ``agentgw history [--verify]`` on tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

from agentgw.apply.history import append_history
from agentgw.logroll import Retention, rotated
from agentgw.paths import Layout
from tests.unit.runner import agentgw

PER_FILE = 16  # records of ~270 bytes each: over the 4096-byte bound


def host(tmp_path: Path, keep: int) -> Layout:
    layout = Layout(tmp_path)
    layout.etc.mkdir(parents=True)
    (layout.etc / "agentgw.yaml").write_text(f"rotation:\n  max_bytes: 4096\n  keep: {keep}\n")
    return layout


def fill(layout: Layout, rounds: int) -> None:
    """``rounds`` times: PER_FILE promotes, then ``agentgw rotate`` (which must rotate)."""
    for r in range(rounds):
        for i in range(PER_FILE):
            append_history(layout.history, "promote", "ok", "api", release=f"r{r}-{i}")
        code, out, err = agentgw("--root", str(layout.root), "rotate")
        assert (code, err) == (0, ""), out
        assert f"{layout.history}: rotated\n" in out


def verify(layout: Layout) -> tuple[int, str]:
    code, out, _ = agentgw("--root", str(layout.root), "history", "--verify")
    return code, out


def test_verify_is_green_across_three_rotated_files_and_the_live_one(tmp_path: Path) -> None:
    """Three rotations (keep 3) and a few more records: .3 .2 .1 and the live file hold every
    record, seq runs 1..N across them, each file's first record chains to the last of the file
    before it, and `history --verify` says so (exit 0)."""
    layout = host(tmp_path, keep=3)
    fill(layout, 3)
    append_history(layout.history, "rollback", "ok", "api", release="r0-0")
    names = sorted(p.name for p in layout.history.parent.glob("history.jsonl*"))
    assert names == ["history.jsonl", "history.jsonl.1", "history.jsonl.2", "history.jsonl.3"]
    total = 3 * PER_FILE + 1
    assert verify(layout) == (0, f"history: {total} records, chain intact\n")
    code, out, _ = agentgw("--root", str(layout.root), "history", "--json")
    seqs = [r["seq"] for r in json.loads(out)["records"]]
    assert (code, seqs) == (0, list(range(1, total + 1)))
    first_of_2 = json.loads(rotated(layout.history, 2).read_bytes().split(b"\n")[0])
    assert first_of_2["seq"] == PER_FILE + 1


def test_retention_drops_the_oldest_and_the_chain_still_verifies(tmp_path: Path) -> None:
    """keep 2 and four rotations: two files are dropped; the retained records start at the
    dropped count + 1 and chain to the dropped last hash kept in history.jsonl.dropped."""
    layout = host(tmp_path, keep=2)
    fill(layout, 4)
    assert not rotated(layout.history, 3).exists()
    dropped = json.loads(layout.history.with_name("history.jsonl.dropped").read_text())
    assert dropped["lines"] == 2 * PER_FILE
    assert dropped["tally"] == {"api\tpromote\tok": 2 * PER_FILE}
    code, out = verify(layout)
    assert (code, out) == (0, f"history: {2 * PER_FILE} records, chain intact\n")
    record = append_history(layout.history, "promote", "ok", "api", release="after")
    assert record.seq == 4 * PER_FILE + 1
    assert verify(layout)[0] == 0


def test_a_record_edited_in_a_rotated_file_is_found(tmp_path: Path) -> None:
    """Editing the last record of history.jsonl.2 breaks the chain where history.jsonl.1
    starts: verify exits 3 and names the crossing."""
    layout = host(tmp_path, keep=3)
    fill(layout, 3)
    old = rotated(layout.history, 2)
    lines = old.read_bytes().split(b"\n")
    lines[-2] = lines[-2].replace(b'"result":"ok"', b'"result":"failed"')
    old.write_bytes(b"\n".join(lines))
    code, out = verify(layout)
    assert code == 3
    assert out == ("history: history.jsonl.1 line 1: chain broken across files (it does not "
                   "follow the last record before this file: a file edited, removed or "
                   "reordered)\n")


def test_a_rotated_file_removed_is_found(tmp_path: Path) -> None:
    """Removing the oldest retained file (with an earlier one dropped, so there is an anchor)
    is a broken chain, not a shorter history."""
    layout = host(tmp_path, keep=2)
    fill(layout, 3)
    rotated(layout.history, 2).unlink()
    code, out = verify(layout)
    assert code == 3
    assert out.startswith("history: history.jsonl.1 line 1: chain broken")
    assert f"sequence {2 * PER_FILE + 1}, expected {PER_FILE + 1}" in out


def test_a_bound_below_4096_is_a_usage_error_and_rotates_nothing(tmp_path: Path) -> None:
    """rotation.max_bytes: 10 is refused in one line with the allowed range (exit 2); the log
    is left as it was."""
    layout = host(tmp_path, keep=2)
    (layout.etc / "agentgw.yaml").write_text("rotation:\n  max_bytes: 10\n")
    for i in range(PER_FILE):
        append_history(layout.history, "promote", "ok", "api", release=f"r{i}")
    before = layout.history.read_bytes()
    code, out, err = agentgw("--root", str(layout.root), "rotate")
    assert (code, out) == (2, "")
    assert err == ("error: agentgw.yaml:2: rotation.max_bytes: must be at least 4096, got 10\n"
                   "hint: rotate a log once it is over this many bytes, 4096 to 1 GiB\n")
    assert layout.history.read_bytes() == before and not rotated(layout.history, 1).exists()


def test_appends_rotate_the_history_past_the_bound_themselves(tmp_path: Path) -> None:
    """With a retention passed (as promote, rollback, restart, recovery, apply and the
    OnFailure hook pass agentgw.yaml's), an append that takes the log over the bound rotates it:
    no timer is needed. 100 records of ~270 bytes over a 4096-byte bound, keep 3: at most 3
    rotated files plus the live one, every live file under bound + one record, and
    `history --verify` green across the files and the dropped ones' anchor."""
    layout = host(tmp_path, keep=3)
    retention = Retention(max_bytes=4096, keep=3)
    for i in range(100):
        record = append_history(layout.history, "promote", "ok", "api", release=f"r{i}",
                                retention=retention)
        assert record.seq == i + 1
        assert layout.history.stat().st_size <= 4096
    names = sorted(p.name for p in layout.history.parent.glob("history.jsonl*"))
    assert names == ["history.jsonl", "history.jsonl.1", "history.jsonl.2", "history.jsonl.3",
                     "history.jsonl.dropped"]
    dropped = json.loads(layout.history.with_name("history.jsonl.dropped").read_text())
    assert dropped["tally"] == {"api\tpromote\tok": dropped["lines"]} and dropped["lines"] > 0
    assert verify(layout) == (0, f"history: {100 - dropped['lines']} records, chain intact\n")
    code, out, _ = agentgw("--root", str(layout.root), "history", "--json")
    seqs = [r["seq"] for r in json.loads(out)["records"]]
    assert (code, seqs) == (0, list(range(dropped["lines"] + 1, 101)))


def test_an_append_after_a_cut_line_counts_every_record(tmp_path: Path) -> None:
    """A kill can leave a last line cut short. The next append cannot take its sequence number
    from that line, so it counts the retained records (and the chain reports the cut line)."""
    layout = host(tmp_path, keep=3)
    for i in range(3):
        append_history(layout.history, "promote", "ok", "api", release=f"r{i}")
    with layout.history.open("ab") as f:
        f.write(b'{"seq": 4, "time": "2026-')
    record = append_history(layout.history, "promote", "ok", "api", release="after")
    assert record.seq == 5
    code, out = verify(layout)
    assert code != 0 and "history.jsonl line 4: not a history record" in out
