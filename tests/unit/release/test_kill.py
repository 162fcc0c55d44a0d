"""``release add`` killed with SIGKILL at moments spread over its whole run, each followed by a
rerun: every run ends in exactly the tree of a clean add, with no temp or trash left."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from agentgw.paths import Layout
from tests.unit.release.support import SHA, make_keys, snapshot, work_in_progress, write_tree

RUNS = 20
SEED = 20250102
# Fixed, so the killed add and its rerun build byte-identical manifests and signatures.
ENV = {**os.environ, "SOURCE_DATE_EPOCH": "1735787045"}
ENTRY = "from agentgw.cli.main import main; main()"


def agentgw(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", ENTRY, "--root", str(root), *args]


def big_tree(root: Path, rng: random.Random) -> Path:
    """Enough files that writing them (each fsynced) is a good part of an add's run time."""
    write_tree(root)
    for d in range(15):
        package = root / "agent_cli" / f"mod{d}"
        package.mkdir()
        for f in range(20):
            (package / f"part{f}.py").write_bytes(rng.randbytes(rng.randint(1, 4096)))
    return root


def start(root: Path, args: tuple[str, ...]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        agentgw(root, *args), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def wait_for_writing(proc: subprocess.Popen[bytes], layout: Layout) -> None:
    """Return once the add created the releases dir (or ended): its writing phase began."""
    while not layout.releases.exists() and proc.poll() is None:
        time.sleep(0.001)


def state(layout: Layout) -> str:
    """Where the kill landed, as the host shows it."""
    if not layout.releases.exists():
        return "before-writing"
    if work_in_progress(layout):
        return "mid-build"
    if layout.release(SHA, "release").exists():
        return "complete"
    return "between-steps"


def remove(root: Path) -> None:
    for here, dirs, _ in os.walk(root):
        for name in dirs:
            path = Path(here, name)
            if not path.is_symlink():
                path.chmod(0o700)
    shutil.rmtree(root)


def test_release_add_killed_at_random_moments_converges_on_rerun(tmp_path: Path) -> None:
    """20 adds SIGKILLed at random moments, each rerun: the rerun succeeds, reports the
    leftover it removed, and leaves a clean add's exact tree (files, modes, manifest,
    signature, version counter) with no .tmp-*/.trash-* behind.

    Even runs are killed a random time after start (anywhere in start-up or work), odd runs a
    random time after writing began, so kills land mid-build however slow start-up is.
    """
    rng = random.Random(SEED)
    src = big_tree(tmp_path / "src", rng)
    key = make_keys(tmp_path / "keys").trusted
    args = ("release", "add", str(src), "--sha", SHA, "--sign-key", str(key))

    clean = Layout(tmp_path / "clean")
    started = time.monotonic()
    proc = start(clean.root, args)
    wait_for_writing(proc, clean)
    writing = time.monotonic()
    assert proc.wait() == 0
    total, build = time.monotonic() - started, time.monotonic() - writing
    expected = snapshot(clean.root)
    assert len(expected) > 300

    landed: Counter[str] = Counter()
    for run in range(RUNS):
        layout = Layout(tmp_path / f"run{run}")
        share = (run // 2 + rng.random()) / (RUNS // 2)
        victim = start(layout.root, args)
        if run % 2:
            wait_for_writing(victim, layout)
        time.sleep(share * (build if run % 2 else total))
        victim.kill()
        assert victim.wait() in (0, -9)
        where = state(layout)
        landed[where] += 1
        leftovers = work_in_progress(layout)

        rerun = subprocess.run(agentgw(layout.root, *args), env=ENV, capture_output=True, text=True)
        context = f"run {run} killed at {share:.0%} ({where}): {rerun.stderr}"
        assert rerun.returncode == 0, context
        for name in leftovers:
            assert f"removed leftover {name} of an interrupted run" in rerun.stderr, context
        assert snapshot(layout.root) == expected, context
        assert work_in_progress(layout) == [], context
        remove(layout.root)
    assert landed["mid-build"] >= 3, f"too few kills landed while building: {landed}"
