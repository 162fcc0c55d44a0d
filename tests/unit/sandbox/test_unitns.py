"""A job unit's own mounts: read from mountinfo, the guarded list pinned against the unit file,
and a mount gone since the start is reported (and the unit refuses its job)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agentgw.sandbox import gvisor, jobunit, unitns
from agentgw.sandbox.jobspec import Prepare, render_prepare
from tests.unit.sandbox.test_jobspec import FakeSandbox

UNIT_FILE = Path(__file__).resolve().parents[3] / "systemd" / "agentgw-job@.service"

MOUNTINFO = """\
25 1 0:22 / / ro,relatime shared:1 - ext4 /dev/vda rw
30 25 0:27 / /tmp rw,nosuid,nodev - tmpfs tmpfs rw
31 25 0:28 / /var/cache/agentgw ro - tmpfs tmpfs ro
32 31 0:22 /var/cache/agentgw/sandbox /var/cache/agentgw/sandbox ro - ext4 /dev/vda rw
33 25 0:29 / /home ro - tmpfs tmpfs ro
34 33 0:30 / /home ro - tmpfs tmpfs ro
35 25 0:31 / /mnt/with\\040space rw - tmpfs tmpfs rw
"""


def test_mountinfo_lines_give_ids_and_unescaped_points_and_the_top_mount_is_kept() -> None:
    assert unitns.mounts(MOUNTINFO)[-1] == (35, "/mnt/with space")
    assert unitns.mounts("garbage\n\n") == []
    snap = unitns.snapshot(MOUNTINFO)
    assert snap == {"/tmp": 30, "/var/cache/agentgw": 31, "/var/cache/agentgw/sandbox": 32,
                    "/home": 34}  # /home: the top one; / and /mnt are not guarded


def test_a_guarded_mount_gone_is_reported_others_coming_and_going_are_not() -> None:
    snap = unitns.snapshot(MOUNTINFO)
    assert unitns.undone(snap, MOUNTINFO + "40 25 0:40 / /media rw - tmpfs t rw\n") == []
    without_home = "".join(line + "\n" for line in MOUNTINFO.splitlines()
                           if " /home " not in line and "/mnt" not in line)
    assert unitns.undone(snap, without_home) == ["/home"]
    # the same path mounted again by another mount is not the unit's own
    remounted = without_home + "41 25 0:41 / /home rw - ext4 /dev/vdb rw\n"
    assert unitns.undone(snap, remounted) == ["/home"]
    assert unitns.undone(snap, "") == sorted(snap)  # unreadable: nothing holds
    assert unitns.undone({}, "") == []


def test_the_guarded_paths_are_the_unit_files_own_mounts() -> None:
    text = UNIT_FILE.read_text()
    paths = {"/tmp", "/var/tmp"} if re.search(r"(?m)^PrivateTmp=yes$", text) else set()
    if re.search(r"(?m)^PrivateDevices=yes$", text):
        paths.add("/dev")
    for key in ("InaccessiblePaths", "TemporaryFileSystem", "BindReadOnlyPaths"):
        for value in re.findall(rf"(?m)^{key}=(.*)$", text):
            for word in value.split():
                paths.add(word.lstrip("-").split(":")[0])
    assert set(unitns.GUARDED) == paths


def test_our_own_mountinfo_reads() -> None:
    assert unitns.mounts(unitns.read())[0][0] > 0


def test_the_job_unit_refuses_its_job_once_its_mounts_changed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    box = FakeSandbox()
    monkeypatch.setattr(gvisor, "prepare", lambda spec: box)
    lines = render_prepare(Prepare("gvisor")) + b'{"argv": ["true"]}\n'
    guard = unitns.snapshot(MOUNTINFO)
    monkeypatch.setattr(unitns, "read", lambda: MOUNTINFO.replace("/home", "/elsewhere"))
    out = io.BytesIO()
    assert jobunit.serve_one(io.BytesIO(lines), out, guard) == 1
    answer = out.getvalue().splitlines()[-1]
    assert b'"error":"unavailable"' in answer and b"/home" in answer
    assert box.jobs == [] and box.closed == 0  # refused before its sandbox was prepared
    assert "mounts changed since it started (/home" in capsys.readouterr().err
    # changed after the sandbox was prepared (a prepared unit held a while): refused at the job
    reads = iter([MOUNTINFO, MOUNTINFO.replace("/home", "/elsewhere")])
    monkeypatch.setattr(unitns, "read", lambda: next(reads))
    out = io.BytesIO()
    assert jobunit.serve_one(io.BytesIO(lines), out, guard) == 1
    assert b'"error":"unavailable"' in out.getvalue().splitlines()[-1]
    assert box.jobs == [] and box.closed == 1
    monkeypatch.setattr(unitns, "read", lambda: MOUNTINFO)
    out = io.BytesIO()
    assert jobunit.serve_one(io.BytesIO(lines), out, guard) == 0
    assert len(box.jobs) == 1


WATCH = r"""
import subprocess, sys, threading, time
from agentgw.sandbox import unitns
point = sys.argv[1]
subprocess.run(["mount", "-t", "tmpfs", "guarded", point], check=True)
subprocess.run(["mount", "-t", "tmpfs", "other", point + "-other"], check=True)
guard = unitns.snapshot(unitns.read(), [point])
found = []
watch = threading.Thread(target=lambda: found.append(unitns.wait_undone(guard)), daemon=True)
watch.start()
time.sleep(0.3)
subprocess.run(["umount", point + "-other"], check=True)  # a change, not the unit's own
time.sleep(0.3)
print("after other:", found, flush=True)
t0 = time.monotonic()
subprocess.run(["umount", point], check=True)
watch.join(5)
print("after own:", found, round(time.monotonic() - t0, 3))
"""


def test_the_wait_wakes_on_the_kernels_mount_change_and_only_the_units_own_ends_it(
    tmp_path: Path,
) -> None:
    """In a mount namespace of its own (unshare: the host's mounts are untouched), the watch
    sleeps through another mount going away and returns the guarded path once its mount is."""
    point = tmp_path / "guarded"
    point.mkdir()
    (tmp_path / "guarded-other").mkdir()
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", WATCH,
         str(point)], capture_output=True, text=True, timeout=30,
        env={"PYTHONPATH": os.pathsep.join(sys.path), "PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    other, own = proc.stdout.splitlines()
    assert other == "after other: []"
    assert own.startswith(f"after own: [['{point}']]"), own
    assert float(own.rsplit(" ", 1)[1]) < 2.0  # woken by the change, not by a poll interval
    assert unitns.wait_undone({}) == []
