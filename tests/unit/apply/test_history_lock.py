"""The history log's hash chain, intent records and per-profile locks, on temp dirs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentgw.apply.history import append_history, read_history, verify_history
from agentgw.apply.intent import clear_intent, read_intent, set_phase, write_intent
from agentgw.apply.lock import profile_lock
from agentgw.errors import AgentgwError


def test_history_chain_verifies_and_filters_by_profile(tmp_path: Path) -> None:
    """Appended records chain to each other and verify clean; reading filters by profile."""
    log = tmp_path / "history.jsonl"
    append_history(log, "apply", "ok")
    append_history(log, "promote", "ok", "api", release="abc1234-r")
    append_history(log, "promote", "rolled_back", "core", reason="health")
    assert verify_history(log) == []
    assert [r.action for r in read_history(log, "api")] == ["promote"]
    assert [r.seq for r in read_history(log)] == [1, 2, 3]


@pytest.mark.parametrize("tamper", ["edit", "remove-middle", "remove-last", "reorder"])
def test_history_verify_detects_any_edit_or_removal(tmp_path: Path, tamper: str) -> None:
    """Editing a field, removing a line (middle or last) or reordering breaks verification."""
    log = tmp_path / "history.jsonl"
    for n in range(4):
        append_history(log, "promote", "ok", "api", n=n)
    lines = log.read_text().splitlines()
    if tamper == "edit":
        lines[1] = lines[1].replace('"ok"', '"rolled_back"')
    elif tamper == "remove-middle":
        del lines[1]
    elif tamper == "remove-last":
        del lines[-1]
    else:
        lines[1], lines[2] = lines[2], lines[1]
    log.write_text("\n".join(lines) + "\n")
    assert verify_history(log) != []


def test_history_head_lagging_one_line_after_a_kill_is_accepted(tmp_path: Path) -> None:
    """A kill between the append and the head update leaves a valid log, not a false alarm."""
    log = tmp_path / "history.jsonl"
    append_history(log, "apply", "ok")
    head = (tmp_path / "history.head").read_text()
    append_history(log, "apply", "ok")
    (tmp_path / "history.head").write_text(head)
    assert verify_history(log) == []


def test_intent_round_trip_and_phase_update(tmp_path: Path) -> None:
    """An intent is readable after each phase change and gone after clear."""
    intent = write_intent(
        tmp_path, op="promote", profile="api", target="b-r", previous="a-r", phase="locked"
    )
    assert read_intent(tmp_path, "api") == intent
    set_phase(tmp_path, intent, "flipped")
    again = read_intent(tmp_path, "api")
    assert again is not None and again.phase == "flipped"
    clear_intent(tmp_path, "api")
    assert read_intent(tmp_path, "api") is None


HOLD = """
import sys, time
from pathlib import Path
from agentgw.apply.lock import profile_lock
with profile_lock(Path(sys.argv[1]), "api", "promote"):
    print("held", flush=True)
    time.sleep(30)
"""


def test_second_locker_is_refused_naming_the_holder_and_dead_owner_frees_it(
    tmp_path: Path,
) -> None:
    """While another process holds api's lock: api is refused (exit 4, holder's pid named),
    core is free; once the holder is SIGKILLed the lock can be taken again."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(AgentgwError) as err, profile_lock(tmp_path, "api", "promote"):
            pass
        assert time.monotonic() - t0 < 1.0
        assert err.value.code == 4
        assert f"pid {holder.pid}" in err.value.message
        with profile_lock(tmp_path, "core", "promote"):
            pass
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    with profile_lock(tmp_path, "api", "promote"):
        held = json.loads((tmp_path / "api.lock").read_text())
    assert held["op"] == "promote"
